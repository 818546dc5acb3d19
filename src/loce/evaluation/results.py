"""Detection results files: reading, validation and column form.

A results file is the LVIS/COCO results format: a JSON list with one dict per detection,
``{"image_id": int, "category_id": int, "score": float, "bbox": [x, y, w, h]}`` plus, for
mask evaluation, ``"segmentation": {"size": [h, w], "counts": str}`` (compressed RLE, as
``pycocotools.mask.encode`` writes it once ``counts`` is decoded to ``str``).

Validation turns every problem into one :class:`~loce.errors.ResultsError` that names the
file, the detection's index in the list, the key, and the fix. What is checked:

- the file exists and holds a JSON list, and the list is not empty;
- every detection is a dict with ``image_id``, ``category_id``, ``score``, and ``bbox`` for box
  evaluation or ``segmentation`` for mask evaluation;
- ids are integers that exist in the ground truth (the message names one bad detection and
  counts them all);
- scores and box coordinates are finite numbers (not booleans, not ``null``); box width and
  height are not negative. A
  box with zero width or height is legal; like lvis-api, evaluation drops detections of zero
  area after the per-image cap;
- masks are compressed RLE (polygons and uncompressed RLE are refused with the
  ``pycocotools.mask`` call that converts them) whose ``size`` is the image's ``[h, w]``
  (a mask of another size would be compared pixel-by-pixel with the wrong image), and whose
  ``counts`` decode: characters ``'0'`` to ``'o'``, no unfinished run length, no negative
  run, runs that fit in the ``h * w`` pixels of the image (:func:`mask_areas`);
- for masks, either every detection has a ``bbox`` or none has: lvis-api takes the area that
  decides small/medium/large from the box when there is one and from the mask otherwise.

Everything is checked column-wise with numpy; the only per-detection Python loops are the
list comprehensions that pull one key out of each dict, and the type checks of masks. A
results *file* is read into the same columns without a dict per detection by
:mod:`loce.evaluation.results_file`, which shares these checks.
"""

from __future__ import annotations

import itertools
import json
import operator
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hotcoco
import numpy as np

from loce.errors import ResultsError


@dataclass
class DetectionColumns:
    """Validated detections in column form, in results-file order.

    Attributes:
        image_ids: ``[N]`` int64.
        category_ids: ``[N]`` int64.
        scores: ``[N]`` float64, finite.
        boxes: ``[N, 4]`` float64 ``[x, y, w, h]`` with ``w, h >= 0``, or None when the
            detections carry no boxes (mask results without ``bbox``).
        segmentations: N compressed RLE dicts, or None when masks were not asked for or
            stay in the results file (:mod:`loce.evaluation.results_file`).
        mask_areas: ``[N]`` float64, the foreground pixels of each mask, or None without
            masks.
        box_areas: ``[N]`` float64 ``w * h``, kept instead of ``boxes`` when only masks are
            evaluated from a file (the box then only decides the object's size); else None.
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray | None = None
    segmentations: list[dict[str, Any]] | None = None
    mask_areas: np.ndarray | None = None
    box_areas: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.image_ids.shape[0])

    @property
    def has_boxes(self) -> bool:
        """Whether the detections came with boxes (``boxes`` or ``box_areas``)."""
        return self.boxes is not None or self.box_areas is not None

    def subset(self, keep: np.ndarray) -> DetectionColumns:
        """The detections where ``keep`` (``[N]`` bool) is true, in the same order."""
        index = np.flatnonzero(keep)
        return DetectionColumns(
            image_ids=self.image_ids[index],
            category_ids=self.category_ids[index],
            scores=self.scores[index],
            boxes=None if self.boxes is None else self.boxes[index],
            segmentations=(
                None if self.segmentations is None else [self.segmentations[i] for i in index]
            ),
            mask_areas=None if self.mask_areas is None else self.mask_areas[index],
            box_areas=None if self.box_areas is None else self.box_areas[index],
        )


def load_results_json(path: str | os.PathLike[str]) -> Any:
    """Read a results file with the standard JSON parser.

    Returns:
        The parsed JSON value (a list for a well-formed file; the caller validates it).

    Raises:
        ResultsError: the file is missing, unreadable or not JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise ResultsError(
            f"{path}: results file not found; pass the JSON file written by prediction "
            "(a list of {image_id, category_id, score, bbox[, segmentation]})."
        )
    try:
        with path.open("rb") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError) as err:
        raise ResultsError(f"{path}: cannot read the results file ({err}).") from None
    except json.JSONDecodeError as err:
        raise ResultsError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno}); "
            "a results file is a JSON list of detection dicts."
        ) from None


def top_k_per_group(groups: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Select the ``k`` highest-scoring detections of each group.

    With ``groups`` = image ids this is LVIS's per-image cap (across categories); with
    category ids it is AP_fixed's per-category cap over the dataset. Ties in score keep the
    earlier detection (results-file order), as lvis-api's stable sort does.

    Args:
        groups: ``[N]`` int, the group of each detection.
        scores: ``[N]`` float, the score of each detection.
        k: detections kept per group, >= 1.

    Returns:
        ``[N]`` bool mask of the kept detections.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = groups.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    if groups.dtype.kind in "iu" and int(groups.min()) >= 0 and int(groups.max()) < 4 * n + 2**20:
        # The common case needs no sort: no group exceeds k.
        if int(np.bincount(groups).max()) <= k:
            return np.ones(n, dtype=bool)
    # Sort by group, then score descending, then position (lexsort: last key is primary).
    order = np.lexsort((np.arange(n), -scores, groups))
    sorted_groups = groups[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    # Rank of each sorted detection within its group.
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    keep = np.zeros(n, dtype=bool)
    keep[order[rank < k]] = True
    return keep


# --------------------------------------------------------------------------------------
# Validation of a results list
# --------------------------------------------------------------------------------------

_FORMAT_HINT = "every detection needs image_id, category_id, score and bbox [x, y, w, h]"


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _column(results: list[Any], key: str, source: str, fix: str) -> list[Any]:
    """``[d[key] for d in results]`` with an error naming the first detection that lacks it."""
    try:
        return [d[key] for d in results]
    except (KeyError, TypeError, IndexError):
        pass
    for i, d in enumerate(results):
        if not isinstance(d, dict):
            raise ResultsError(
                f"{source}: detection {i} is a {type(d).__name__} ({_describe(d)}), not a dict; "
                f"{_FORMAT_HINT}."
            )
        if key not in d:
            keys = ", ".join(map(str, d)) or "none"
            raise ResultsError(f"{source}: detection {i} has no '{key}' (its keys: {keys}); {fix}.")
    raise AssertionError("unreachable: the comprehension failed but every item has the key")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _numeric_array(values: list[Any], kinds: str) -> np.ndarray | None:
    """``np.asarray(values)`` if it is numeric of one of the dtype ``kinds``, else None.

    The dtype is inferred, not forced, so strings such as ``"0.5"`` are refused rather than
    converted.
    """
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError, OverflowError):
        return None
    return arr if arr.dtype.kind in kinds else None


def _has_bool(values: list[Any]) -> bool:
    """Whether any value is a bool (numpy turns ``[1, True]`` into numbers silently)."""
    types = set(map(type, values))
    return bool in types or np.bool_ in types


def _checked_array(values: list[Any], kinds: str, key: str, source: str, ok, what: str):
    """``values`` as a 1-d numeric array of numpy ``kinds`` (None when numpy could not make
    one of them: the caller converts); a ResultsError naming the first value that is not
    ``ok`` (not ``what``) when numpy's conversion was refused or would mix in bools."""
    arr = _numeric_array(values, kinds)
    if arr is None or arr.ndim != 1 or _has_bool(values):
        for i, v in enumerate(values):
            if not ok(v):
                raise ResultsError(
                    f"{source}: detection {i} has '{key}' = {_describe(v)}; "
                    f"'{key}' must be {what}."
                )
        return None
    return arr


def _int_column(values: list[Any], key: str, source: str) -> np.ndarray:
    arr = _checked_array(values, "iu", key, source, _is_int, "an integer id")
    try:
        return np.asarray(values if arr is None else arr, dtype=np.int64)
    except OverflowError:
        raise ResultsError(
            f"{source}: some '{key}' values do not fit in a 64-bit integer; ids must be "
            "the integer ids of the annotation file."
        ) from None


def _refuse_first(bad: np.ndarray, message) -> None:
    """A ResultsError for the first true entry of ``bad`` (``[N]`` bool), if any, with the
    text ``message(index, number of true entries)``."""
    if bad.any():
        raise ResultsError(message(int(np.argmax(bad)), int(bad.sum())))


def check_known_ids(
    ids: np.ndarray, known: np.ndarray, key: str, source: str, gt_source: str
) -> None:
    what = "an image" if key == "image_id" else "a category"
    _refuse_first(~np.isin(ids, known), lambda first, count: (
        f"{source}: detection {first} has {key} {int(ids[first])}, which is not {what} of "
        f"the ground truth {gt_source} ({count} detection(s) in all have unknown {key}s); "
        "evaluate against the annotation file the detections were made for."))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
        v, (bool, np.bool_)
    )


def _float_column(values: list[Any], key: str, source: str) -> np.ndarray:
    arr = _checked_array(values, "iuf", key, source, _is_number, "a number")
    if arr is None:
        raise AssertionError("unreachable: conversion failed but every value is a number")
    return check_finite(arr.astype(np.float64, copy=False), key, source)


def check_finite(arr: np.ndarray, key: str, source: str) -> np.ndarray:
    """``arr`` (``[N]`` float64) if every value is finite; else a ResultsError naming one."""
    _refuse_first(~np.isfinite(arr), lambda i, count: (
        f"{source}: detection {i} has '{key}' = {arr[i]} ({count} non-finite "
        f"'{key}' value(s) in all); drop or repair these detections before evaluating."))
    return arr


def _box_column(values: list[Any], source: str) -> np.ndarray:
    boxes = _numeric_array(values, "iuf")
    if (
        boxes is None
        or boxes.ndim != 2
        or boxes.shape[1] != 4
        or _has_bool(list(itertools.chain.from_iterable(values)))
    ):
        for i, v in enumerate(values):
            ok = (
                isinstance(v, (list, tuple, np.ndarray))
                and len(v) == 4
                and all(_is_number(x) for x in v)
            )
            if not ok:
                raise ResultsError(
                    f"{source}: detection {i} has 'bbox' = {_describe(v)}; 'bbox' must be four "
                    "numbers [x, y, w, h] (COCO xywh, not xyxy)."
                )
        raise AssertionError("unreachable: conversion failed but every box is 4 numbers")
    return check_boxes(boxes.astype(np.float64, copy=False), source)


def check_boxes(boxes: np.ndarray, source: str) -> np.ndarray:
    """``boxes`` (``[N, 4]`` float64 xywh) if finite with ``w, h >= 0``; else a ResultsError."""
    _refuse_first(~np.isfinite(boxes).all(axis=1), lambda i, count: (
        f"{source}: detection {i} has 'bbox' = {boxes[i].tolist()} ({count} "
        "box(es) with NaN or infinite coordinates in all); drop or repair these detections."))
    _refuse_first((boxes[:, 2:] < 0).any(axis=1), lambda i, count: (
        f"{source}: detection {i} has 'bbox' = {boxes[i].tolist()} with a negative width or "
        f"height ({count} such box(es)); boxes are [x, y, w, h]: convert "
        "[x1, y1, x2, y2] boxes with w = x2 - x1, h = y2 - y1."))
    return boxes


def check_mask_sizes(
    sizes: np.ndarray,
    image_ids: np.ndarray,
    gt_image_ids: np.ndarray,
    gt_sizes: np.ndarray,
    source: str,
) -> None:
    """Raise a ResultsError when a mask's ``size`` (``[N, 2]``) is not its image's ``(h, w)``."""
    expected = gt_sizes[np.searchsorted(gt_image_ids, image_ids)]
    _refuse_first((sizes != expected).any(axis=1), lambda i, count: (
        f"{source}: detection {i} has a mask of size {sizes[i].tolist()} but image "
        f"{int(image_ids[i])} is {expected[i].tolist()} (h, w) ({count} such "
        "mask(s)); encode masks at the image's original size, not the network's input size."))


_AREA_BATCH = 65_536
_COUNTS = operator.itemgetter("counts")

# The two problems of a counts string that the engine's RLE decoder does not refuse: a
# character above 'o' (it refuses those below '0'), and a last character that continues a
# run length.
_BAD_CHAR = "a character below ASCII '0' or above ASCII 'o'"
_TRUNCATED = "the string ends inside a run length"


def _rle_message(source: str, index: int, counts: Any, size: Sequence[int], reason: str) -> str:
    return (
        f"{source}: detection {index} has a 'segmentation' whose counts {_describe(counts)} is "
        f"not a compressed RLE of a {size[0]}x{size[1]} mask ({reason}); write masks with "
        "pycocotools.mask.encode and store counts as str, unchanged."
    )


def _counts_text_problem(counts: Sequence[Any]) -> tuple[int, str] | None:
    """``(index, reason)`` of the first counts string with a bad character or an unfinished
    last run length, or None; vectorised over the concatenated characters."""
    try:
        texts = counts
        joined = "".join(counts)
    except TypeError:  # some counts are bytes
        texts = [c.decode("latin-1") if isinstance(c, bytes) else c for c in counts]
        joined = "".join(texts)
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    ends = np.cumsum(lengths)
    if joined.isascii():
        chars = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
    else:
        chars = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    # Unsigned arithmetic: a character below '0' wraps around to a large value.
    bad = (chars - chars.dtype.type(48)) >= 64
    first_bad = None
    if bad.any():
        first_bad = int(np.searchsorted(ends, int(np.argmax(bad)), side="right"))
    nonempty = np.flatnonzero(lengths > 0)
    last = chars[ends[nonempty] - 1].astype(np.int64) - 48
    unfinished = nonempty[(last >= 0) & (last < 64) & ((last & 0x20) != 0)]
    first_unfinished = int(unfinished[0]) if unfinished.size else None
    if first_bad is None and first_unfinished is None:
        return None
    if first_unfinished is None or (first_bad is not None and first_bad <= first_unfinished):
        return int(first_bad), _BAD_CHAR
    return first_unfinished, _TRUNCATED


def mask_areas(rles: Sequence[dict[str, Any]], source: str, offset: int = 0) -> np.ndarray:
    """``[N]`` float64 foreground areas of compressed RLE masks, each checked to decode.

    A ``counts`` string is refused when it has a character outside ``'0'``..``'o'``, ends
    inside a run length (checked here, vectorised), or decodes to a negative run or to runs
    that add up to more than the ``h * w`` pixels of its ``size`` (the engine's RLE decoder
    checks these); the message names the first such detection.

    Args:
        rles: ``{"size": [h, w], "counts": str | bytes}`` dicts, sizes already checked.
        source: name of the results in messages.
        offset: index of ``rles[0]`` in the results (for messages).
    """
    out = np.empty(len(rles), dtype=np.float64)
    for lo in range(0, len(rles), _AREA_BATCH):
        batch = rles[lo : lo + _AREA_BATCH]
        problem = _counts_text_problem(list(map(_COUNTS, batch)))
        if problem is not None:
            j, reason = problem
            raise ResultsError(_rle_message(source, offset + lo + j, batch[j]["counts"],
                                            batch[j]["size"], reason))  # fmt: skip
        try:
            out[lo : lo + len(batch)] = hotcoco.mask.area(list(batch))
            continue
        except (ValueError, TypeError, OverflowError):
            pass
        for j, rle in enumerate(batch):
            try:
                hotcoco.mask.area(rle)
            except (ValueError, TypeError, OverflowError) as err:
                raise ResultsError(_rle_message(source, offset + lo + j, rle["counts"],
                                                rle["size"], str(err))) from None  # fmt: skip
        raise AssertionError("unreachable: the batch failed but every mask decodes")
    return out


def _segm_column(
    values: list[Any],
    image_ids: np.ndarray,
    gt_image_ids: np.ndarray,
    gt_sizes: np.ndarray,
    source: str,
) -> tuple[list[dict[str, Any]], np.ndarray]:
    sizes = np.zeros((len(values), 2), dtype=np.int64)
    for i, s in enumerate(values):
        if isinstance(s, list):
            raise ResultsError(
                f"{source}: detection {i} has a polygon 'segmentation'; results need compressed "
                "RLE masks: encode them with pycocotools.mask.encode(np.asfortranarray(mask)) "
                "(or mask.frPyObjects(polygons, h, w)) and store counts as str."
            )
        if not isinstance(s, dict) or "counts" not in s or "size" not in s:
            raise ResultsError(
                f"{source}: detection {i} has 'segmentation' = {_describe(s)}; expected a "
                "compressed RLE dict {'size': [h, w], 'counts': str} from pycocotools.mask.encode."
            )
        counts, size = s["counts"], s["size"]
        if not isinstance(counts, (str, bytes)):
            raise ResultsError(
                f"{source}: detection {i} has an uncompressed RLE 'segmentation' (counts is a "
                f"{type(counts).__name__}); compress it with "
                "pycocotools.mask.frPyObjects(rle, h, w) and store counts as str."
            )
        if (
            not isinstance(size, (list, tuple))
            or len(size) != 2
            or not all(_is_int(x) for x in size)
        ):
            raise ResultsError(
                f"{source}: detection {i} has 'segmentation.size' = {_describe(size)}; "
                "expected [height, width] as two integers."
            )
        sizes[i] = size
    check_mask_sizes(sizes, image_ids, gt_image_ids, gt_sizes, source)
    return values, mask_areas(values, source)


def _check_results_list(results: Any, source: str) -> None:
    """Refuse results that are not a list, or an empty one."""
    if not isinstance(results, list):
        raise ResultsError(
            f"{source}: expected a JSON list of detections, found a {type(results).__name__}; "
            f"{_FORMAT_HINT} (COCO/LVIS results format)."
        )
    if not results:
        raise ResultsError(
            f"{source}: the results list is empty, so there is nothing to evaluate; check that "
            "prediction ran on the evaluation images and kept its detections."
        )


def _results_boxes(results: list[Any], iou_types: Sequence[str], source: str) -> np.ndarray | None:
    """``[N, 4]`` boxes, checked; None for mask results without boxes (all or none has one)."""
    boxes = None
    if "bbox" in iou_types:
        boxes = _box_column(
            _column(
                results,
                "bbox",
                source,
                "box evaluation needs a 'bbox' [x, y, w, h] in every detection",
            ),
            source,
        )
    elif "bbox" in results[0]:
        boxes = _box_column(
            _column(
                results,
                "bbox",
                source,
                "detection 0 has a 'bbox', so every detection needs one (the box area decides "
                "small/medium/large); give all detections a bbox or none",
            ),
            source,
        )
    elif any("bbox" in d for d in results):
        i = next(i for i, d in enumerate(results) if "bbox" in d)
        raise ResultsError(
            f"{source}: detection {i} has a 'bbox' but detection 0 has none; give every "
            "detection a bbox or none (the box area, when present, decides small/medium/large)."
        )
    return boxes


def validate_results(
    results: Any,
    *,
    gt_image_ids: np.ndarray,
    gt_image_sizes: np.ndarray,
    gt_category_ids: np.ndarray,
    iou_types: Sequence[str],
    source: str = "results",
    gt_source: str = "annotation file",
) -> DetectionColumns:
    """Validate a results list and return it in column form.

    Args:
        results: the parsed results (should be a list of dicts).
        gt_image_ids: ``[I]`` int64, sorted ids of the ground-truth images.
        gt_image_sizes: ``[I, 2]`` int64, ``(height, width)`` of each image in ``gt_image_ids``.
        gt_category_ids: ``[C]`` int64, ids of the ground-truth categories.
        iou_types: the evaluations that will run (``"bbox"``, ``"segm"``); decides whether
            boxes and masks are required.
        source: name of the results in messages (the file path, or "results").
        gt_source: name of the ground truth in messages.

    Returns:
        The detections as :class:`DetectionColumns`; ``boxes`` is None only for mask results
        without boxes, ``segmentations`` is None unless ``"segm"`` is in ``iou_types``.

    Raises:
        ResultsError: on the first problem found (see the module docstring for the list).
    """
    _check_results_list(results, source)
    image_ids = _int_column(_column(results, "image_id", source, _FORMAT_HINT), "image_id", source)
    category_ids = _int_column(
        _column(results, "category_id", source, _FORMAT_HINT), "category_id", source
    )
    check_known_ids(image_ids, gt_image_ids, "image_id", source, gt_source)
    check_known_ids(category_ids, gt_category_ids, "category_id", source, gt_source)
    scores = _float_column(_column(results, "score", source, _FORMAT_HINT), "score", source)

    segmentations = areas = None
    if "segm" in iou_types:
        segmentations, areas = _segm_column(
            _column(
                results,
                "segmentation",
                source,
                "mask (segm) evaluation needs an RLE 'segmentation' in every detection; "
                "evaluate bbox only, or add masks",
            ),
            image_ids,
            gt_image_ids,
            gt_image_sizes,
            source,
        )
    boxes = _results_boxes(results, iou_types, source)
    return DetectionColumns(image_ids, category_ids, scores, boxes, segmentations, areas)


# --------------------------------------------------------------------------------------
# Fast screen of a results file (used before handing the file to the evaluation engine)
# --------------------------------------------------------------------------------------

# A "bbox" array whose third or fourth number (width or height) starts with a minus sign.
_NEGATIVE_SIZE = re.compile(rb'"bbox"\s*:\s*\[\s*[^,\]]*,\s*[^,\]]*,\s*(?:[^,\]]*,\s*)?-')
# Any number after a comma that starts with a minus sign: a cheap pre-filter for the above
# (compressed RLE strings contain neither "," nor "-").
_COMMA_MINUS = re.compile(rb",\s*-")
_CHUNK = 1 << 25
_FEW_MINUS = 4096
JSON_SPACE = b" \t\r\n"
"""The whitespace bytes of JSON."""


def _comma_minus(data: bytes) -> bool:
    """Whether some minus sign in ``data`` follows a comma (whitespace between allowed).

    :data:`_COMMA_MINUS`, looked up from each minus sign when there are few (in box results
    they come from scores like ``9e-05``): the regex scans the whole chunk at a fraction of
    the speed of ``bytes.find``.
    """
    if data.count(b"-") > _FEW_MINUS:
        return _COMMA_MINUS.search(data) is not None
    i = data.find(b"-")
    while i >= 0:
        j = i - 1
        while j >= 0 and data[j] in JSON_SPACE:
            j -= 1
        if j >= 0 and data[j] == ord(","):
            return True
        i = data.find(b"-", i + 1)
    return False


@dataclass
class ResultsFileScan:
    """What a byte-level pass over a results file found.

    Attributes:
        is_list: the JSON text starts with ``[``.
        bbox_keys: occurrences of the key ``"bbox"``.
        score_keys: occurrences of the key ``"score"``.
        negative_size: some box has a negative width or height.
        literals: occurrences of ``null`` (the engine reads a ``null`` score as no score;
            a compressed RLE string cannot contain it). Booleans need no screen: the
            engine's parser refuses them where a number is expected.
    """

    is_list: bool = False
    bbox_keys: int = 0
    score_keys: int = 0
    negative_size: bool = False
    literals: int = 0


_LITERALS = (b"null",)
_KEYS = (b'"bbox"', b'"score"', *_LITERALS)
# A box that straddles two chunks is searched in the previous chunk's tail plus the next.
_BOX_OVERLAP = 1024


def scan_results_file(path: str | os.PathLike[str]) -> ResultsFileScan:
    """Count keys and look for negative box sizes without parsing the JSON.

    This is a screen, not a validator: the engine parses the file itself (much faster than
    Python's ``json``), and the screen covers what that parser accepts silently — a missing
    ``bbox`` or ``score`` shows as a key count below the number of detections, a ``null``
    value as a literal count above zero, a negative
    width or height as a match of a pattern on the text, a top-level object (the engine
    reads a COCO-style dict as results) as ``is_list`` false. Any doubt sends the file to
    :func:`validate_results`, which is exact. The file is read in 32 MiB chunks.
    """
    scan = ResultsFileScan()
    counts = dict.fromkeys(_KEYS, 0)
    tail = b""
    first = True
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            if first:
                scan.is_list = block.lstrip().startswith(b"[")
                first = False
            # Keys inside the chunk, then those that straddle its start: a key of length L
            # that straddles lies within the L - 1 bytes either side, and one that does not
            # cannot fit in them. No chunk is copied.
            for key in _KEYS:
                seam = tail[-(len(key) - 1) :] + block[: len(key) - 1] if tail else b""
                counts[key] += block.count(key) + seam.count(key)
            if not scan.negative_size:
                # A minus sign is rare in box results (compressed RLE never has one): the
                # patterns run only on chunks, with the previous tail, that contain one.
                window = tail[-_BOX_OVERLAP:]
                if b"-" in block or b"-" in window:
                    boxes = window + block
                    if _comma_minus(boxes) and _NEGATIVE_SIZE.search(boxes):
                        scan.negative_size = True
            tail = block[-_BOX_OVERLAP:]
    scan.bbox_keys = counts[b'"bbox"']
    scan.score_keys = counts[b'"score"']
    scan.literals = sum(counts[w] for w in _LITERALS)
    return scan


def file_has_masks(path: str | os.PathLike[str]) -> bool:
    """Whether a results file contains the key ``"segmentation"`` (read until found)."""
    key = b'"segmentation"'
    tail = b""
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            if key in tail + block:
                return True
            tail = block[-(len(key) - 1) :]
    return False
