"""LVIS and COCO annotation files: loading, validation, indexing and the training dataset.

Three layers, each usable on its own:

* :func:`load_lvis_json` and :func:`validate_lvis` read and check an annotation file (a path or
  an already-parsed dict). They do not need torch, so evaluation code can reuse them.
* :class:`LVISIndex` indexes a validated file once, in linear time with numpy: images by id,
  annotations grouped by image, the category table (label ``i`` in ``1..K`` is category id
  ``cat_ids[i - 1]``; background is label 0), per-category frequency (``'r'``/``'c'``/``'f'``)
  and per-image label sets. Polygon coordinates are packed into flat float64 arrays, so the
  index of LVIS v1 train (1.27M annotations) holds a few numpy arrays instead of millions of
  Python objects; this keeps memory low and avoids the copy-on-write growth that Python lists
  cause in forked data-loader workers. Masks are decoded lazily, per item.
* :class:`LVISDataset` turns an index plus an image folder into ``(image, target)`` items.

Shape shorthand used below: ``N`` annotations kept for one image, ``H``/``W`` image height and
width in pixels, ``K`` foreground classes (labels ``1..K``).

Supported formats:

* LVIS v1: images are named by ``coco_url``; the file is looked up under the image root by the
  URL's last two components (``train2017/000000123456.jpg``), then by its last component.
* LVIS v0.5: images are named by ``file_name`` (``COCO_val2014_000000123456.jpg``); when that
  file does not exist, the COCO-2017 name (the last 16 characters) is tried as well, since
  LVIS images are distributed as COCO-2017 files.
* COCO: ``file_name``; annotations with ``iscrowd = 1`` are kept in the index but never become
  training targets.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import numpy as np

from loce.data.image_io import Decoder, check_decoder, read_rgb
from loce.data.rle import rle_problem
from loce.errors import DataError
from loce.memory import paused_gc

if TYPE_CHECKING:
    import torch

__all__ = [
    "LVISDataset",
    "LVISIndex",
    "load_lvis_json",
    "read_rgb",
    "validate_lvis",
]

_MISSING = object()
_MAX_LISTED = 5  # problems spelled out in one error message; the rest are counted
_FREQUENCIES = ("r", "c", "f")
# Polygons are converted to numpy in blocks of this many polygons, which bounds the temporary
# Python list that numpy needs for strict type inference.
_POLY_BLOCK = 200_000

Format = Literal["lvis_v1", "lvis_v0.5", "coco"]


# --------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------


def _source_name(path_or_dict: Any) -> str:
    if isinstance(path_or_dict, Mapping):
        return "<annotation dict>"
    return os.fspath(path_or_dict)


def load_lvis_json(path_or_dict: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Read an LVIS/COCO annotation file.

    Args:
        path_or_dict: a path to a JSON file, or an already-parsed annotation dict (returned as
            is, so callers can accept both).

    Returns:
        The parsed JSON object.

    Raises:
        DataError: the file does not exist, cannot be read, is not valid JSON, or its top level
            is not a JSON object.
    """
    if isinstance(path_or_dict, Mapping):
        return dict(path_or_dict)
    path = os.fspath(path_or_dict)
    try:
        with open(path, "rb") as f:
            text = f.read()
        with paused_gc():
            # msgspec reads standard JSON into the same objects twice as fast; anything it
            # declines (NaN tokens, integers beyond 64 bits, bad syntax) is read again by
            # the standard parser, whose values and messages the checks expect.
            try:
                data = msgspec.json.decode(text)
            except msgspec.DecodeError:
                data = json.loads(text)
        del text
    except FileNotFoundError:
        raise DataError(
            f"{path}: annotation file not found. Fix: check the path (it is resolved relative "
            f"to the current directory {os.getcwd()})."
        ) from None
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}: not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}. "
            "Fix: the file may be truncated or not an annotation file; re-download or "
            "regenerate it."
        ) from None
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not a UTF-8 JSON file ({e.reason} at byte {e.start}). Fix: pass the "
            "annotation .json file, not an archive or image."
        ) from None
    except OSError as e:
        raise DataError(f"{path}: cannot read annotation file: {e.strerror or e}.") from None
    if not isinstance(data, dict):
        raise DataError(
            f"{path}: top level must be a JSON object with 'images', 'annotations' and "
            f"'categories'; found a JSON {_json_type(data)}. Fix: pass an LVIS or COCO "
            "annotation file (a results file is a list; use it with evaluation instead)."
        )
    return data


def validate_lvis(
    data: Mapping[str, Any],
    source: str = "<annotation dict>",
    *,
    require_federated: bool = False,
    require_file_names: bool = True,
) -> None:
    """Check an LVIS/COCO annotation dict and raise one error listing what is wrong.

    Checks: the top-level lists; every image, annotation and category is an object with its
    required keys and types (ids are integers, ``width``/``height`` positive integers, each
    image has ``file_name`` or ``coco_url``, ``bbox`` is 4 finite numbers with width and height
    ``>= 0``, ``segmentation`` is a list of polygons with an even number ``>= 6`` of finite
    coordinates or an RLE dict whose ``size`` is the image's ``[height, width]`` and whose
    ``counts`` decode to run lengths covering exactly that many pixels, ``frequency`` is ``'r'``, ``'c'`` or ``'f'``); no duplicate ids; every annotation's
    ``image_id`` and ``category_id`` and every id in ``neg_category_ids`` /
    ``not_exhaustive_category_ids`` exist. The work is linear in the file size.

    Args:
        data: the parsed annotation file.
        source: the file name to put in messages.
        require_federated: also require the LVIS evaluation fields: ``neg_category_ids`` and
            ``not_exhaustive_category_ids`` on every image and ``frequency`` on every category.
        require_file_names: require an image file name (``file_name`` or ``coco_url``) on every
            image; evaluation, which opens no image, passes False.

    Raises:
        DataError: naming ``source``, the first few problems (key path or index, what was
            found, how to fix it) and how many there are in all.
    """
    with paused_gc():
        _check_and_extract(data, source, require_federated=require_federated,
                           require_file_names=require_file_names)


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _show(v: Any, limit: int = 40) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Problems:
    """Collects problems; keeps the first few spelled out and counts the rest."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.listed: list[str] = []
        self.count = 0

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.listed) < _MAX_LISTED:
            self.listed.append(text)

    def add_rows(self, rows: Sequence[int] | np.ndarray, describe: Any) -> None:
        """Add one problem per row; only the first few are described (``describe(row)``)."""
        n = len(rows)
        if n == 0:
            return
        room = max(0, _MAX_LISTED - len(self.listed))
        for r in list(rows[:room]):
            self.listed.append(describe(int(r)))
        self.count += n

    def raise_if_any(self) -> None:
        if not self.count:
            return
        head = f"{self.source}: invalid annotation file: {self.count} problem"
        head += "s" if self.count != 1 else ""
        lines = [head + (":" if self.count == 1 else f" (first {len(self.listed)} shown):")]
        lines += [f"  - {t}" for t in self.listed]
        if self.count > len(self.listed):
            lines.append(f"  ... and {self.count - len(self.listed)} more of the same kinds.")
        raise DataError("\n".join(lines))


@dataclass
class _Extracted:
    """Columns pulled out of a validated annotation dict (internal)."""

    image_ids: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    file_names: list[str]
    cat_ids: np.ndarray  # sorted
    cat_names: list[str]
    cat_frequencies: list[str | None]
    ann_ids: np.ndarray
    ann_image_rows: np.ndarray
    ann_labels: np.ndarray
    ann_bbox: np.ndarray
    ann_iscrowd: np.ndarray
    seg_kind: np.ndarray
    ann_poly_offsets: np.ndarray
    poly_offsets: np.ndarray
    coords: np.ndarray
    rles: dict[int, dict[str, Any]]
    format: Format


def _element_rows(
    items: list[Any], section: str, problems: _Problems
) -> tuple[list[dict[str, Any]], set[int]]:
    """Replace non-object entries by ``{}`` (after reporting them) so columns can be read."""
    bad = [i for i, it in enumerate(items) if type(it) is not dict]
    if not bad:
        return items, set()
    problems.add_rows(
        bad,
        lambda i: (
            f"{section}[{i}]: expected a JSON object, found a {_json_type(items[i])}. "
            f"Fix: every entry of '{section}' must be an object."
        ),
    )
    return [it if type(it) is dict else {} for it in items], set(bad)


def _int_column(
    items: list[dict[str, Any]],
    key: str,
    where: Any,
    problems: _Problems,
    skip: set[int],
    *,
    fix: str,
    positive: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a required integer field. Returns (values with -1 where invalid, valid mask)."""
    vals = [it.get(key, _MISSING) for it in items]
    n = len(vals)
    out: np.ndarray | None = None
    if set(map(type, vals)) <= {int}:  # fast path: every value is a plain int (not bool)
        try:
            out = np.array(vals, dtype=np.int64)
        except OverflowError:
            out = None
    if out is not None:
        ok = out > 0 if positive else np.ones(n, bool)
    else:
        lo, hi = (1 if positive else -(2**63)), 2**63
        ok = np.fromiter((type(v) is int and lo <= v < hi for v in vals), bool, n)
        out = np.fromiter((v if t else -1 for v, t in zip(vals, ok, strict=True)), np.int64, n)
    out[~ok] = -1
    bad = np.flatnonzero(~ok)
    if skip:
        bad = np.asarray([i for i in bad.tolist() if i not in skip], dtype=np.int64)

    def describe(i: int) -> str:
        v = vals[i]
        if v is _MISSING:
            return f"{where(i)}: '{key}' is missing. Fix: {fix}"
        kind = "a positive integer" if positive else "an integer"
        return f"{where(i)}: '{key}' must be {kind}, found {_show(v)}. Fix: {fix}"

    problems.add_rows(bad, describe)
    return out, ok


def _report_duplicates(
    ids: np.ndarray, valid: np.ndarray, section: str, problems: _Problems
) -> None:
    rows = np.flatnonzero(valid)
    if rows.size < 2:
        return
    vals = ids[rows]
    order = np.argsort(vals, kind="stable")
    sv = vals[order]
    dup = np.flatnonzero(sv[1:] == sv[:-1]) + 1
    if dup.size == 0:
        return
    first = rows[order[dup - 1]]
    second = rows[order[dup]]
    problems.add_rows(
        np.arange(dup.size),
        lambda k: (
            f"{section}[{first[k]}] and {section}[{second[k]}] have the same id "
            f"{int(ids[second[k]])}. Fix: ids must be unique within '{section}'; renumber or "
            "remove the duplicate."
        ),
    )


def _lookup(sorted_ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``values`` in ``sorted_ids`` and whether each was found."""
    if sorted_ids.size == 0:
        return np.zeros(values.shape, np.int64), np.zeros(values.shape, bool)
    pos = np.searchsorted(sorted_ids, values)
    pos_c = np.minimum(pos, sorted_ids.size - 1)
    return pos_c, sorted_ids[pos_c] == values


def _check_and_extract(
    data: Mapping[str, Any],
    source: str,
    *,
    require_federated: bool = False,
    require_file_names: bool = True,
) -> _Extracted:
    problems = _Problems(source)
    if not isinstance(data, Mapping):
        problems.add(
            f"top level: expected a JSON object with 'images', 'annotations' and 'categories', "
            f"found a {_json_type(data)}. Fix: pass an LVIS or COCO annotation file."
        )
        problems.raise_if_any()
    for key in ("images", "categories", "annotations"):
        if key not in data:
            if key == "annotations":
                continue  # image-info files (e.g. LVIS test) have no annotations
            problems.add(
                f"top level: key '{key}' is missing (found keys {sorted(data)[:8]}). Fix: an "
                f"LVIS/COCO annotation file has top-level 'images', 'annotations', 'categories'."
            )
        elif not isinstance(data[key], list):
            problems.add(
                f"'{key}': expected a list, found a {_json_type(data[key])}. Fix: '{key}' must "
                "be a JSON list of objects."
            )
    problems.raise_if_any()

    # ---- categories ------------------------------------------------------------------------
    cats, cat_skip = _element_rows(data["categories"], "categories", problems)
    cat_where = lambda i: f"categories[{i}]"  # noqa: E731
    cat_ids, cat_ok = _int_column(
        cats, "id", cat_where, problems, cat_skip, fix="give every category an integer 'id'."
    )
    _report_duplicates(cat_ids, cat_ok, "categories", problems)
    names: list[str] = []
    freqs: list[str | None] = []
    for i, c in enumerate(cats):
        name = c.get("name", _MISSING)
        if type(name) is not str and i not in cat_skip:
            problems.add(
                f"{cat_where(i)} (id {_show(c.get('id'))}): 'name' "
                + ("is missing" if name is _MISSING else f"must be a string, found {_show(name)}")
                + ". Fix: give every category a string 'name'."
            )
        names.append(name if type(name) is str else "")
        fq = c.get("frequency", _MISSING)
        if fq is _MISSING:
            if require_federated and i not in cat_skip:
                problems.add(
                    f"{cat_where(i)} (id {_show(c.get('id'))}): 'frequency' is missing. Fix: "
                    "LVIS evaluation needs 'frequency' ('r', 'c' or 'f') on every category."
                )
            freqs.append(None)
        elif fq not in _FREQUENCIES:
            problems.add(
                f"{cat_where(i)} (id {_show(c.get('id'))}): 'frequency' must be 'r', 'c' or 'f',"
                f" found {_show(fq)}. Fix: use LVIS's rare/common/frequent codes."
            )
            freqs.append(None)
        else:
            freqs.append(fq)
    cat_order = np.argsort(cat_ids, kind="stable")
    sorted_cat_ids = cat_ids[cat_order]

    # ---- images ----------------------------------------------------------------------------
    imgs, img_skip = _element_rows(data["images"], "images", problems)
    img_where = lambda i: f"images[{i}]"  # noqa: E731
    image_ids, img_ok = _int_column(
        imgs, "id", img_where, problems, img_skip, fix="give every image an integer 'id'."
    )
    _report_duplicates(image_ids, img_ok, "images", problems)

    def img_where_id(i: int) -> str:
        return f"images[{i}] (id {image_ids[i]})" if img_ok[i] else f"images[{i}]"

    size_fix = "'width' and 'height' are the image size in pixels (positive integers)."
    heights, _ = _int_column(
        imgs, "height", img_where_id, problems, img_skip, fix=size_fix, positive=True
    )
    widths, _ = _int_column(
        imgs, "width", img_where_id, problems, img_skip, fix=size_fix, positive=True
    )
    file_names: list[str] = []
    uses_url = False
    for i, im in enumerate(imgs):
        fn = im.get("file_name", _MISSING)
        if type(fn) is str and fn:
            file_names.append(fn)
            continue
        url = im.get("coco_url", _MISSING)
        if type(url) is str and url:
            # LVIS v1: ".../train2017/000000123456.jpg" -> "train2017/000000123456.jpg"
            file_names.append("/".join(url.rstrip("/").rsplit("/", 2)[-2:]))
            uses_url = True
            continue
        file_names.append("")
        if i not in img_skip and require_file_names:
            problems.add(
                f"{img_where_id(i)}: no image file name: 'file_name' is "
                f"{'missing' if fn is _MISSING else _show(fn)} and 'coco_url' is "
                f"{'missing' if url is _MISSING else _show(url)}. Fix: give each image a "
                "'file_name' (COCO, LVIS v0.5) or a 'coco_url' (LVIS v1)."
            )
    fed_keys = ("neg_category_ids", "not_exhaustive_category_ids")
    fed_vals: list[int] = []
    fed_rows: list[int] = []
    fed_key_of: list[int] = []
    for i, im in enumerate(imgs):
        for k, key in enumerate(fed_keys):
            v = im.get(key, _MISSING)
            if v is _MISSING:
                if require_federated and i not in img_skip:
                    problems.add(
                        f"{img_where_id(i)}: '{key}' is missing. Fix: LVIS evaluation needs "
                        f"'{fed_keys[0]}' and '{fed_keys[1]}' (lists of category ids) on every "
                        "image."
                    )
                continue
            if type(v) is not list or not all(type(x) is int for x in v):
                problems.add(
                    f"{img_where_id(i)}: '{key}' must be a list of integer category ids, found "
                    f"{_show(v)}. Fix: write a list such as [3, 17]."
                )
                continue
            fed_vals.extend(v)
            fed_rows.extend([i] * len(v))
            fed_key_of.extend([k] * len(v))
    if fed_vals:
        _, found = _lookup(sorted_cat_ids, np.asarray(fed_vals, np.int64))
        bad = np.flatnonzero(~found)
        problems.add_rows(
            bad,
            lambda j: (
                f"{img_where_id(fed_rows[j])}: '{fed_keys[fed_key_of[j]]}' lists category "
                f"id {fed_vals[j]}, which is not in 'categories'. Fix: remove it or add the "
                "category."
            ),
        )
    img_order = np.argsort(image_ids, kind="stable")
    sorted_image_ids = image_ids[img_order]

    # ---- annotations -----------------------------------------------------------------------
    raw_anns = data.get("annotations", [])
    anns, ann_skip = _element_rows(raw_anns, "annotations", problems)
    n_ann = len(anns)
    ann_ids, ann_ok = _int_column(
        anns,
        "id",
        lambda i: f"annotations[{i}]",
        problems,
        ann_skip,
        fix="give every annotation a unique integer 'id'.",
    )
    _report_duplicates(ann_ids, ann_ok, "annotations", problems)

    def ann_where(i: int) -> str:
        return f"annotations[{i}] (id {ann_ids[i]})" if ann_ok[i] else f"annotations[{i}]"

    ann_img, ann_img_ok = _int_column(
        anns,
        "image_id",
        ann_where,
        problems,
        ann_skip,
        fix="give every annotation the integer 'image_id' of its image.",
    )
    ann_cat, ann_cat_ok = _int_column(
        anns,
        "category_id",
        ann_where,
        problems,
        ann_skip,
        fix="give every annotation the integer 'category_id' of its category.",
    )
    pos, found = _lookup(sorted_image_ids, ann_img)
    bad = np.flatnonzero(ann_img_ok & ~found)
    problems.add_rows(
        bad,
        lambda i: (
            f"{ann_where(i)}: image_id {ann_img[i]} is not in 'images'. Fix: remove the "
            "annotation or add its image."
        ),
    )
    ann_image_rows = np.full(n_ann, -1, np.int64)
    ann_image_rows[found] = img_order[pos[found]]
    cpos, cfound = _lookup(sorted_cat_ids, ann_cat)
    bad = np.flatnonzero(ann_cat_ok & ~cfound)
    problems.add_rows(
        bad,
        lambda i: (
            f"{ann_where(i)}: category_id {ann_cat[i]} is not in 'categories'. Fix: "
            "remove the annotation or add the category."
        ),
    )
    ann_labels = np.where(cfound, cpos + 1, 0).astype(np.int64)

    ann_bbox = _bbox_column(anns, ann_where, problems, ann_skip)

    crowd_vals = [a.get("iscrowd", 0) for a in anns]
    if set(map(type, crowd_vals)) <= {int, bool}:
        crowd_arr = np.array(crowd_vals, dtype=np.int64).reshape(n_ann)
        bad = np.flatnonzero((crowd_arr != 0) & (crowd_arr != 1))
    else:
        bad = np.asarray(
            [i for i, v in enumerate(crowd_vals) if v not in (0, 1) or type(v) not in (int, bool)],
            dtype=np.int64,
        )
    problems.add_rows(
        bad,
        lambda i: (
            f"{ann_where(i)}: 'iscrowd' must be 0 or 1, found {_show(crowd_vals[i])}. "
            "Fix: use 0 for single objects and 1 for crowd regions (COCO convention)."
        ),
    )
    ann_iscrowd = np.fromiter((v is True or v == 1 for v in crowd_vals), bool, n_ann)

    seg = _segmentation_columns(anns, ann_where, problems, ann_image_rows, heights, widths)

    problems.raise_if_any()
    has_freq = any(f is not None for f in freqs)
    fmt = "lvis_v1" if uses_url else ("lvis_v0.5" if has_freq else "coco")
    return _Extracted(
        image_ids=image_ids,
        heights=heights,
        widths=widths,
        file_names=file_names,
        cat_ids=sorted_cat_ids,
        cat_names=[names[i] for i in cat_order],
        cat_frequencies=[freqs[i] for i in cat_order],
        ann_ids=ann_ids,
        ann_image_rows=ann_image_rows,
        ann_labels=ann_labels,
        ann_bbox=ann_bbox,
        ann_iscrowd=ann_iscrowd,
        format=fmt,
        **seg,
    )


def _bbox_column(
    anns: list[dict[str, Any]], where: Any, problems: _Problems, skip: set[int]
) -> np.ndarray:
    fix = "'bbox' is [x, y, width, height] in pixels: 4 finite numbers, width and height >= 0."
    n = len(anns)
    boxes = [a.get("bbox", _MISSING) for a in anns]
    arr: np.ndarray | None = None
    if n:
        try:
            arr = np.array(boxes)  # fast path: numpy infers int/float only if all are numbers
        except (ValueError, TypeError):
            arr = None
        if arr is not None and not (
            arr.ndim == 2 and arr.shape[1] == 4 and arr.dtype.kind in "iuf"
        ):
            arr = None
    if arr is None:
        # Slow path, only for files with a problem: find the offending rows one by one.
        good = [
            type(b) is list and len(b) == 4 and all(type(x) in (int, float) for x in b)
            for b in boxes
        ]
        bad = [i for i, g in enumerate(good) if not g and i not in skip]

        def describe(i: int) -> str:
            b = boxes[i]
            if b is _MISSING:
                return f"{where(i)}: 'bbox' is missing. Fix: {fix}"
            return f"{where(i)}: 'bbox' must be 4 numbers, found {_show(b)}. Fix: {fix}"

        problems.add_rows(bad, describe)
        arr = np.array([b if g else [0.0, 0.0, 0.0, 0.0] for b, g in zip(boxes, good, strict=True)])
    arr = arr.astype(np.float64, copy=False).reshape(n, 4)
    finite = np.isfinite(arr).all(axis=1)
    bad = np.flatnonzero(~finite)
    problems.add_rows(
        bad, lambda i: f"{where(i)}: 'bbox' has a non-finite value {_show(boxes[i])}. Fix: {fix}"
    )
    neg = np.flatnonzero(finite & ((arr[:, 2] < 0) | (arr[:, 3] < 0)))
    problems.add_rows(
        neg,
        lambda i: (
            f"{where(i)}: 'bbox' has a negative width or height {_show(boxes[i])}. Fix: {fix}"
        ),
    )
    return arr


def _segmentation_columns(
    anns: list[dict[str, Any]],
    where: Any,
    problems: _Problems,
    image_rows: np.ndarray,
    heights: np.ndarray,
    widths: np.ndarray,
) -> dict[str, Any]:
    """Pack polygons into flat arrays; keep RLE dicts aside; report malformed entries."""
    fix = (
        "'segmentation' is a list of polygons [[x1, y1, x2, y2, ...], ...] (each with an even "
        "number >= 6 of finite coordinates) or an RLE {'size': [height, width], 'counts': ...}."
    )
    n = len(anns)
    seg_kind = np.zeros(n, np.int8)  # 0 missing, 1 polygons, 2 RLE
    n_polys = np.zeros(n, np.int64)
    polys: list[Any] = []
    rles: dict[int, dict[str, Any]] = {}
    bad_type: list[int] = []
    for i, a in enumerate(anns):
        s = a.get("segmentation", _MISSING)
        t = type(s)
        if t is list:
            seg_kind[i] = 1
            n_polys[i] = len(s)
            polys.extend(s)
        elif t is dict:
            seg_kind[i] = 2
            rles[i] = s
        elif s is not _MISSING:
            bad_type.append(i)
    problems.add_rows(
        bad_type,
        lambda i: (
            f"{where(i)}: 'segmentation' must be a list of polygons or an RLE object, "
            f"found {_show(anns[i]['segmentation'])}. Fix: {fix}"
        ),
    )
    ann_poly_offsets = np.zeros(n + 1, np.int64)
    np.cumsum(n_polys, out=ann_poly_offsets[1:])
    lens = np.fromiter((len(p) if type(p) is list else -1 for p in polys), np.int64, len(polys))
    bad_poly = np.flatnonzero((lens < 6) | (lens % 2 == 1))
    owner = lambda j: int(np.searchsorted(ann_poly_offsets, j, side="right") - 1)  # noqa: E731
    if bad_poly.size:
        # one problem per annotation, not per polygon
        bad_anns = np.unique(np.searchsorted(ann_poly_offsets, bad_poly, side="right") - 1)
        problems.add_rows(
            bad_anns,
            lambda i: (
                f"{where(i)}: 'segmentation' has a polygon that is not a list of an even "
                f"number >= 6 of coordinates: {_show(anns[i]['segmentation'])}. Fix: {fix}"
            ),
        )
        lens = np.where(lens < 0, 0, lens)
        for j in bad_poly:
            polys[j] = []
        lens[bad_poly] = 0
    poly_offsets = np.zeros(len(polys) + 1, np.int64)
    np.cumsum(lens, out=poly_offsets[1:])
    blocks: list[np.ndarray] = []
    for start in range(0, len(polys), _POLY_BLOCK):
        part = polys[start : start + _POLY_BLOCK]
        flat = list(chain.from_iterable(part))
        arr = np.array(flat) if flat else np.zeros(0)
        if arr.dtype.kind not in "iuf":
            # find the first few polygons with a non-number coordinate
            bad_p = [
                start + j for j, p in enumerate(part) if not all(type(x) in (int, float) for x in p)
            ]
            bad_anns = sorted({owner(j) for j in bad_p})
            problems.add_rows(
                bad_anns,
                lambda i: (
                    f"{where(i)}: 'segmentation' has a coordinate that is not a number: "
                    f"{_show(anns[i]['segmentation'])}. Fix: {fix}"
                ),
            )
            arr = np.zeros(len(flat))
        blocks.append(arr.astype(np.float64, copy=False))
    coords = np.concatenate(blocks) if blocks else np.zeros(0, np.float64)
    nonfinite = np.flatnonzero(~np.isfinite(coords))
    if nonfinite.size:
        poly_of = np.searchsorted(poly_offsets, nonfinite, side="right") - 1
        bad_anns = np.unique(np.searchsorted(ann_poly_offsets, poly_of, side="right") - 1)
        problems.add_rows(
            bad_anns,
            lambda i: f"{where(i)}: 'segmentation' has a non-finite coordinate. Fix: {fix}",
        )
    for i, r in rles.items():
        size, counts = r.get("size", _MISSING), r.get("counts", _MISSING)
        size_ok = type(size) is list and len(size) == 2 and all(type(x) is int for x in size)
        counts_ok = type(counts) is str or (
            type(counts) is list and all(type(x) is int for x in counts)
        )
        if not (size_ok and counts_ok):
            problems.add(
                f"{where(i)}: RLE 'segmentation' needs 'size' [height, width] (integers) and "
                f"'counts' (a string or a list of integers), found keys {sorted(r)[:4]}. "
                f"Fix: {fix}"
            )
            continue
        row = int(image_rows[i])
        if row >= 0 and size != [int(heights[row]), int(widths[row])]:
            problems.add(
                f"{where(i)}: RLE 'size' {size} differs from its image's [height, width] "
                f"[{int(heights[row])}, {int(widths[row])}]. Fix: encode the mask at the image "
                "size given in 'images'."
            )
            continue
        problem = rle_problem(counts, size[0], size[1])
        if problem is not None:
            problems.add(f"{where(i)}: {problem}. Fix: re-encode the mask with pycocotools "
                         "(mask.encode) at the image size.")
    return {
        "seg_kind": seg_kind,
        "ann_poly_offsets": ann_poly_offsets,
        "poly_offsets": poly_offsets,
        "coords": coords,
        "rles": rles,
    }


# --------------------------------------------------------------------------------------------
# Index
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class LVISIndex:
    """A validated LVIS/COCO annotation file, indexed for fast per-image access.

    Build it with :meth:`from_json`. Images are rows ``0..I-1`` in file order; annotations are
    rows ``0..A-1`` in file order. Labels are ``1..K`` with ``cat_ids[label - 1]`` the category
    id (sorted ascending); label 0 is background and never appears here.

    Attributes:
        source: the file name (or ``"<annotation dict>"``) used in messages.
        format: ``"lvis_v1"`` (images named by ``coco_url``), ``"lvis_v0.5"`` (``file_name``
            plus category frequencies) or ``"coco"``.
        image_ids: ``[I]`` int64, image ids in file order.
        heights, widths: ``[I]`` int64 image sizes from the file.
        file_names: ``[I]`` numpy unicode array, image paths relative to an image root.
        cat_ids: the ``K`` category ids, sorted; label ``i`` is ``cat_ids[i - 1]``.
        cat_names: the ``K`` category names in label order.
        frequencies: ``'r'``/``'c'``/``'f'`` per label when every category has one, else None.
        label_of: category id -> label.
        ann_ids: ``[A]`` int64 annotation ids.
        ann_image_rows: ``[A]`` int64 image row of each annotation.
        ann_labels: ``[A]`` int64 label (``1..K``) of each annotation.
        ann_bbox: ``[A, 4]`` float64 boxes as in the file, ``(x, y, w, h)``.
        ann_iscrowd: ``[A]`` bool COCO crowd flag.
    """

    source: str
    format: Format
    image_ids: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    file_names: np.ndarray
    cat_ids: list[int]
    cat_names: list[str]
    frequencies: list[str] | None
    label_of: dict[int, int]
    ann_ids: np.ndarray
    ann_image_rows: np.ndarray
    ann_labels: np.ndarray
    ann_bbox: np.ndarray
    ann_iscrowd: np.ndarray
    _seg_kind: np.ndarray = field(repr=False)
    _ann_poly_offsets: np.ndarray = field(repr=False)
    _poly_offsets: np.ndarray = field(repr=False)
    _coords: np.ndarray = field(repr=False)
    _rles: dict[int, dict[str, Any]] = field(repr=False)
    _ann_order: np.ndarray = field(repr=False)
    _image_starts: np.ndarray = field(repr=False)
    _row_of_id: dict[int, int] = field(repr=False)

    @classmethod
    def from_json(
        cls,
        path_or_dict: str | os.PathLike[str] | Mapping[str, Any],
        *,
        source: str | None = None,
    ) -> LVISIndex:
        """Load, validate and index an annotation file (or a parsed dict).

        Args:
            path_or_dict: JSON path or parsed dict.
            source: name used in messages; defaults to the path.

        Raises:
            DataError: unreadable file or invalid content (see :func:`validate_lvis`).
        """
        name = source or _source_name(path_or_dict)
        data = load_lvis_json(path_or_dict)
        ex = _check_and_extract(data, name)
        del data  # the index keeps compact arrays only; let the parsed JSON go
        return cls._from_extracted(ex, name)

    @classmethod
    def _from_extracted(cls, ex: _Extracted, source: str) -> LVISIndex:
        n_img = ex.image_ids.size
        # Group annotations by image with one stable sort: annotations of image row r are
        # _ann_order[_image_starts[r]:_image_starts[r + 1]], in file order.
        order = np.argsort(ex.ann_image_rows, kind="stable")
        counts = (
            np.bincount(ex.ann_image_rows, minlength=n_img)
            if order.size
            else np.zeros(n_img, np.int64)
        )
        starts = np.zeros(n_img + 1, np.int64)
        np.cumsum(counts, out=starts[1:])
        freqs = ex.cat_frequencies
        cat_ids = [int(c) for c in ex.cat_ids]
        return cls(
            source=source,
            format=ex.format,
            image_ids=ex.image_ids,
            heights=ex.heights,
            widths=ex.widths,
            file_names=np.array(ex.file_names, dtype=str) if ex.file_names else np.zeros(0, "U1"),
            cat_ids=cat_ids,
            cat_names=ex.cat_names,
            frequencies=[str(f) for f in freqs] if freqs and None not in freqs else None,
            label_of={c: i + 1 for i, c in enumerate(cat_ids)},
            ann_ids=ex.ann_ids,
            ann_image_rows=ex.ann_image_rows,
            ann_labels=ex.ann_labels,
            ann_bbox=ex.ann_bbox,
            ann_iscrowd=ex.ann_iscrowd,
            _seg_kind=ex.seg_kind,
            _ann_poly_offsets=ex.ann_poly_offsets,
            _poly_offsets=ex.poly_offsets,
            _coords=ex.coords,
            _rles=ex.rles,
            _ann_order=order,
            _image_starts=starts,
            _row_of_id={int(v): i for i, v in enumerate(ex.image_ids.tolist())},
        )

    # ---- sizes -----------------------------------------------------------------------------

    @property
    def num_images(self) -> int:
        return int(self.image_ids.size)

    @property
    def num_annotations(self) -> int:
        return int(self.ann_ids.size)

    @property
    def num_classes(self) -> int:
        """K, the number of foreground classes."""
        return len(self.cat_ids)

    # ---- lookups ---------------------------------------------------------------------------

    def image_row(self, image_id: int) -> int:
        """Row of an image id. Raises KeyError for an unknown id."""
        return self._row_of_id[int(image_id)]

    def annotations_of(self, row: int) -> np.ndarray:
        """Annotation rows (int64, file order) of image row ``row``."""
        return self._ann_order[self._image_starts[row] : self._image_starts[row + 1]]

    def segmentation(self, ann_row: int) -> list[list[float]] | dict[str, Any] | None:
        """The annotation's segmentation as in the file: polygons, an RLE dict, or None."""
        kind = self._seg_kind[ann_row]
        if kind == 1:
            lo, hi = self._ann_poly_offsets[ann_row], self._ann_poly_offsets[ann_row + 1]
            po, xy = self._poly_offsets, self._coords
            return [xy[po[j] : po[j + 1]].tolist() for j in range(lo, hi)]
        if kind == 2:
            return self._rles[int(ann_row)]
        return None

    def has_segmentation(self) -> np.ndarray:
        """``[A]`` bool: whether each annotation has a segmentation."""
        return self._seg_kind > 0

    def image_labels(self, ann_mask: np.ndarray | None = None) -> list[np.ndarray]:
        """Sorted unique labels per image row, from all non-crowd annotations.

        Args:
            ann_mask: optional ``[A]`` bool; only annotations where it is True count.

        Returns:
            One int64 array per image row.
        """
        keep = ~self.ann_iscrowd if ann_mask is None else (ann_mask & ~self.ann_iscrowd)
        rows, labels = self.ann_image_rows[keep], self.ann_labels[keep]
        k1 = self.num_classes + 1
        pairs = np.unique(rows * k1 + labels)  # sorted by (row, label), duplicates removed
        pr, pl = pairs // k1, pairs % k1
        bounds = np.searchsorted(pr, np.arange(self.num_images + 1))
        return [pl[bounds[r] : bounds[r + 1]] for r in range(self.num_images)]

    def categories(self) -> list[dict[str, Any]]:
        """The category table in label order: ``{"id", "name", "frequency"?}`` per label."""
        out = []
        for i, (cid, name) in enumerate(zip(self.cat_ids, self.cat_names, strict=True)):
            entry: dict[str, Any] = {"id": cid, "name": name}
            if self.frequencies is not None:
                entry["frequency"] = self.frequencies[i]
            out.append(entry)
        return out


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


def _candidate_paths(root: Path, rel: str) -> list[Path]:
    """Where an image named ``rel`` may live under ``root`` (see the module docstring)."""
    out = [root / rel]
    base = rel.rsplit("/", 1)[-1]
    if base != rel:
        out.append(root / base)
    # LVIS v0.5 names images COCO_val2014_000000123456.jpg; the COCO-2017 file is the
    # 12-digit id plus extension (the last 16 characters).
    if base.startswith("COCO_") and len(base) > 16:
        out.append(root / base[-16:])
        if base != rel:
            out.append(root / rel.rsplit("/", 1)[0] / base[-16:])
    return out


class LVISDataset:
    """LVIS v0.5 / v1 or COCO instance segmentation as ``(image, target)`` items.

    A map-style dataset (``__len__`` + ``__getitem__``) usable with
    ``torch.utils.data.DataLoader``. Torch is imported lazily, so importing this module (for
    :func:`validate_lvis`) stays cheap.

    Each item is ``(image, target)``:

    * ``image``: ``[3, H, W]`` float32 RGB in ``[0, 1]`` (decoded with Pillow, or OpenCV as
      the original's mmcv, see ``decoder``);
    * ``target["boxes"]``: ``[N, 4]`` float32 ``(x1, y1, x2, y2)``; the file's ``(x, y, w, h)``
      becomes ``(x, y, x + w, y + h)``, clipped to the image;
    * ``target["labels"]``: ``[N]`` int64 in ``1..K``;
    * ``target["masks"]``: ``[N, H, W]`` uint8 in ``{0, 1}`` (only with ``with_masks``);
    * ``target["image_id"]``: int;
    * ``target["orig_size"]``: ``[2]`` int64 ``(H, W)`` of the file's image;
    * ``target["scale_factor"]``: ``[4]`` float32 ``(sx, sy, sx, sy)`` from the original
      image to the current one (ones until a resize transform changes it), so that
      ``boxes / scale_factor`` maps predictions back to the original image.

    Crowd annotations never become targets. Boxes with no area after clipping to the image
    (or narrower/shorter than ``min_box_size`` pixels) are dropped together with their masks;
    the dataset warns once, at construction, with their count.

    Args:
        ann_file: annotation JSON path, parsed dict, or an :class:`LVISIndex`.
        image_root: folder holding the images (see the module docstring for name lookup).
        train: training mode. Sets the default of ``filter_empty``.
        transforms: callable ``(image, target) -> (image, target)`` applied last.
        filter_empty: drop images with no usable annotation; default ``train``.
        with_masks: decode instance masks (needs ``segmentation`` on every annotation).
        min_box_size: a box is kept when its clipped width and height are both positive and at
            least this many pixels; ``0`` keeps every box with positive area. (MMDetection
            drops boxes whose unclipped width or height is below 1 px; ``1.0`` is the nearest
            setting.)
        decoder: "pillow" or "opencv" (:func:`loce.data.image_io.read_rgb`); the test
            pipeline picks it with ``data.test_resize`` (:func:`loce.build.build_test_decoder`).
    """

    def __init__(
        self,
        ann_file: str | os.PathLike[str] | Mapping[str, Any] | LVISIndex,
        image_root: str | os.PathLike[str],
        *,
        train: bool,
        transforms: Any = None,
        filter_empty: bool | None = None,
        with_masks: bool = True,
        min_box_size: float = 0.0,
        decoder: Decoder = "pillow",
    ) -> None:
        self.decoder = check_decoder(decoder)
        index = ann_file if isinstance(ann_file, LVISIndex) else LVISIndex.from_json(ann_file)
        self.index = index
        self.image_root = Path(image_root)
        if not self.image_root.is_dir():
            raise DataError(
                f"image root {self.image_root} is not a folder (annotations: {index.source}). "
                "Fix: pass the folder that holds the images."
            )
        self.train = train
        self.transforms = transforms
        self.with_masks = with_masks
        self.filter_empty = train if filter_empty is None else filter_empty
        if min_box_size < 0 or not math.isfinite(min_box_size):
            raise ValueError(f"min_box_size must be a finite number >= 0, got {min_box_size}")

        # Clipped xyxy boxes of every annotation, computed once (vectorised).
        rows = index.ann_image_rows
        w_img = index.widths[rows].astype(np.float64)
        h_img = index.heights[rows].astype(np.float64)
        x, y, bw, bh = index.ann_bbox.T
        x1, y1 = np.clip(x, 0, w_img), np.clip(y, 0, h_img)
        x2, y2 = np.clip(x + bw, 0, w_img), np.clip(y + bh, 0, h_img)
        self._boxes_xyxy = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)
        non_crowd = ~index.ann_iscrowd
        # sizes of the float32 boxes the model will see
        cw = self._boxes_xyxy[:, 2] - self._boxes_xyxy[:, 0]
        ch = self._boxes_xyxy[:, 3] - self._boxes_xyxy[:, 1]
        big = (cw > 0) & (ch > 0) & (cw >= min_box_size) & (ch >= min_box_size)
        self._usable = non_crowd & big
        dropped = np.flatnonzero(non_crowd & ~big)
        self.num_dropped_boxes = int(dropped.size)
        if dropped.size:
            first = int(dropped[0])
            warnings.warn(
                f"{index.source}: dropped {dropped.size} of {index.num_annotations} annotation "
                f"boxes that are empty after clipping to their image"
                + (f" or smaller than {min_box_size} px" if min_box_size > 0 else "")
                + f" (first: annotations[{first}] (id {int(index.ann_ids[first])}), bbox "
                f"{index.ann_bbox[first].tolist()}).",
                stacklevel=2,
            )
        if with_masks:
            missing = np.flatnonzero(self._usable & ~index.has_segmentation())
            if missing.size:
                i = int(missing[0])
                raise DataError(
                    f"{index.source}: {missing.size} annotations have no 'segmentation' (first: "
                    f"annotations[{i}] (id {int(index.ann_ids[i])})), so masks cannot be built. "
                    "Fix: add segmentations, or build the dataset with with_masks=False for "
                    "box-only training."
                )

        # Usable annotations grouped by image (file order within an image).
        order = np.flatnonzero(self._usable[index._ann_order])
        usable_sorted = index._ann_order[order]
        per_image = np.bincount(rows[usable_sorted], minlength=index.num_images)
        starts = np.zeros(index.num_images + 1, np.int64)
        np.cumsum(per_image, out=starts[1:])
        self._usable_sorted, self._usable_starts = usable_sorted, starts

        image_rows = np.arange(index.num_images)
        if self.filter_empty:
            image_rows = image_rows[per_image > 0]
            if image_rows.size == 0:
                raise DataError(
                    f"{index.source}: no image has a usable annotation ({index.num_images} "
                    f"images, {index.num_annotations} annotations, {int(index.ann_iscrowd.sum())}"
                    f" crowd, {dropped.size} empty boxes), so there is nothing to train on. "
                    "Fix: pass the training annotation file, or filter_empty=False."
                )
        self.rows = image_rows  # dataset item i is image row self.rows[i]

    # ---- what samplers and batching need (no image decoding) -------------------------------

    def __len__(self) -> int:
        return int(self.rows.size)

    @property
    def num_classes(self) -> int:
        """K, the number of foreground classes (labels ``1..K``)."""
        return self.index.num_classes

    @property
    def categories(self) -> list[dict[str, Any]]:
        """Category table in label order (label ``i`` is ``categories[i - 1]``)."""
        return self.index.categories()

    @property
    def cat_ids(self) -> list[int]:
        return self.index.cat_ids

    @property
    def label_of(self) -> dict[int, int]:
        return self.index.label_of

    @property
    def frequencies(self) -> list[str] | None:
        """``'r'``/``'c'``/``'f'`` per label (LVIS), or None when the file has none."""
        return self.index.frequencies

    @property
    def image_ids(self) -> list[int]:
        return self.index.image_ids[self.rows].tolist()

    @property
    def image_sizes(self) -> list[tuple[int, int]]:
        """``(height, width)`` per item, from the annotation file."""
        h, w = self.index.heights[self.rows].tolist(), self.index.widths[self.rows].tolist()
        return list(zip(h, w, strict=True))

    @property
    def image_labels(self) -> list[list[int]]:
        """Sorted unique labels per item, from its usable annotations (for samplers)."""
        per_row = self.index.image_labels(self._usable)
        return [per_row[r].tolist() for r in self.rows.tolist()]

    def annotation_rows(self, i: int) -> np.ndarray:
        """Index rows of the annotations that become item ``i``'s targets."""
        r = self.rows[i]
        return self._usable_sorted[self._usable_starts[r] : self._usable_starts[r + 1]]

    # ---- items -----------------------------------------------------------------------------

    def image_path(self, i: int) -> Path:
        """Path of item ``i``'s image file (the first candidate that exists)."""
        r = int(self.rows[i])
        cands = _candidate_paths(self.image_root, str(self.index.file_names[r]))
        for p in cands:
            if p.is_file():
                return p
        raise DataError(
            f"image file not found for image id {int(self.index.image_ids[r])} "
            f"({self.index.source}, images[{r}]): looked for "
            + ", ".join(str(p) for p in cands)
            + ". Fix: point the image root at the folder that holds the images"
            + (
                " (for LVIS v1, the COCO folder containing train2017/ and val2017/)."
                if self.index.format == "lvis_v1"
                else "."
            )
        )

    def load_image(self, i: int) -> torch.Tensor:
        """Item ``i``'s image as ``[3, H, W]`` float32 in ``[0, 1]``."""
        import torch

        r = int(self.rows[i])
        image_id = int(self.index.image_ids[r])
        path = self.image_path(i)
        rgb = read_rgb(path, self.decoder, what=f"image id {image_id}")
        h, w = int(self.index.heights[r]), int(self.index.widths[r])
        if rgb.shape[:2] != (h, w):
            raise DataError(
                f"image file {path} (image id {image_id}) is {rgb.shape[0]}x{rgb.shape[1]} "
                f"(HxW) but {self.index.source} says {h}x{w}. Fix: use the original image "
                "files the annotations were made for."
            )
        return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div_(255.0)

    def decode_masks(self, ann_rows: np.ndarray, height: int, width: int) -> np.ndarray:
        """Decode annotations' masks with pycocotools.

        Args:
            ann_rows: ``[N]`` annotation rows.
            height, width: image size (RLE sizes were checked against it at load time).

        Returns:
            ``[N, H, W]`` uint8 in ``{0, 1}``.
        """
        from pycocotools import mask as mask_utils

        if len(ann_rows) == 0:
            return np.zeros((0, height, width), np.uint8)
        rles = []
        for a in ann_rows.tolist():
            seg = self.index.segmentation(a)
            try:
                if isinstance(seg, list):
                    if seg:
                        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
                    else:  # an empty polygon list: an empty mask
                        rle = mask_utils.encode(np.zeros((height, width), np.uint8, order="F"))
                else:
                    assert isinstance(seg, dict)
                    if isinstance(seg["counts"], list):  # uncompressed RLE
                        rle = mask_utils.frPyObjects(seg, height, width)
                    else:
                        rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
                rles.append(rle)
            except Exception as e:  # pycocotools raises bare Exceptions on malformed RLEs
                raise DataError(
                    f"{self.index.source}: annotations[{a}] (id {int(self.index.ann_ids[a])}): "
                    f"cannot decode 'segmentation': {e}. Fix: re-encode the mask with "
                    "pycocotools (polygons or RLE at the image size)."
                ) from None
        masks = mask_utils.decode(rles)  # [H, W, N], Fortran order
        return np.ascontiguousarray(masks.transpose(2, 0, 1))

    def get_target(self, i: int) -> dict[str, Any]:
        """Item ``i``'s target without decoding the image (see the class docstring)."""
        import torch

        r = int(self.rows[i])
        h, w = int(self.index.heights[r]), int(self.index.widths[r])
        anns = self.annotation_rows(i)
        target: dict[str, Any] = {
            "boxes": torch.from_numpy(self._boxes_xyxy[anns].reshape(-1, 4)),
            "labels": torch.from_numpy(self.index.ann_labels[anns].astype(np.int64)),
            "image_id": int(self.index.image_ids[r]),
            "orig_size": torch.tensor([h, w], dtype=torch.int64),
            "scale_factor": torch.ones(4, dtype=torch.float32),
        }
        if self.with_masks:
            target["masks"] = torch.from_numpy(self.decode_masks(anns, h, w))
        return target

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} out of range for a dataset of {len(self)} images")
        i = i % len(self)
        image = self.load_image(i)
        target = self.get_target(i)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def __repr__(self) -> str:
        return (
            f"LVISDataset({self.index.source!r}, images={len(self)}, "
            f"classes={self.num_classes}, train={self.train}, format={self.index.format!r})"
        )
