"""LVIS box and mask evaluation on the hotcoco engine.

The numbers are lvis-api's (``lvis`` 0.5.3), computed by hotcoco's LVIS mode
(``COCOeval(..., lvis_style=True)``), which follows lvis-api's matching and accumulation and
is one to two orders of magnitude faster. This module adds input validation, the two
protocols, two corrections that make the engine agree with lvis-api in corner cases (below),
the per-category AP and recall by frequency group, and a printable table; it computes no AP
itself.

Protocols
---------
``"standard"`` (LVIS, Gupta et al. 2019): each image keeps its ``max_dets`` (300)
highest-scoring detections *across all categories* (ties keep results-file order), then
federated matching per image and category: a detection of a category that is neither
annotated in the image nor listed in its ``neg_category_ids`` is not evaluated; an unmatched
detection of a category in ``not_exhaustive_category_ids`` is ignored rather than counted as
a false positive. AP is averaged over IoU 0.50:0.05:0.95 and 101 recall points, per category,
then over categories; APr/APc/APf average the categories whose ``frequency`` is r/c/f.

``"fixed"`` (AP_fixed, Dave et al. 2021, "Evaluating Large-Vocabulary Object Detectors: The
Devil is in the Details"): no per-image cap; instead each category keeps its
``dets_per_class`` (10,000) highest-scoring detections over the whole dataset (ties keep
results-file order), and the rest of the protocol is the standard one. It stops AP from
depending on how a detector spreads a fixed per-image budget over 1,000+ categories. For
masks, each detection's area (which decides small/medium/large and the "area > 0" filter)
is its mask's even when it has a box: the authors' script removes ``bbox`` from mask results
before lvis-api reads them. The selection is therefore made per IoU type.

``"pooled"`` (AP_pool, the same paper): the selection of the fixed protocol, the standard
per-image, per-category matching, then one precision-recall curve per group of categories
(all, r, c, f) over the detections of all its categories, instead of one per category
averaged; area range "all" only. Reported as ``AP-pooled``, ``AP-pooled-r``, ``-c``, ``-f``.
The engine has no pooled accumulation: this module pools the engine's per-image matching
results (``eval_imgs``) itself, as the authors' ``LVISPooledEval`` pools lvis-api's.

Both per-class protocols warn, in one line, when some categories have fewer detections than
the cap: the predictions were then made with too low a per-class limit (``loce predict
--dets-per-class``) and the metric is lower than the detector deserves.

Where the engine needs help to match lvis-api
---------------------------------------------
- lvis-api's evaluation index keeps only annotations and detections of area > 0 (a box of
  zero width or height, an empty mask); the engine evaluates them. This module leaves them
  out: zero-area annotations when loading the ground truth, zero-area detections after the
  cap (lvis-api caps in its results loader, before the index drops them).
- The engine's LVIS mode keeps at most ``params.max_dets`` (300) detections per image *and
  category*; lvis-api has no such limit. Under a per-image cap of 300 it never binds; for a
  larger cap, no cap or the fixed protocol this module raises the limit above any pair's
  count.
The tests compare both protocols with lvis-api on generated and real LVIS data to 1e-9.

Undefined values
----------------
A metric over an empty set (APr when no rare category has ground truth, APs without small
objects, the AP of a category without annotations) is ``-1``, as lvis-api reports it. JSON
has no NaN, and -1 can never be a real AP.

Speed
-----
Given a results *file* for box evaluation under the standard protocol, the engine parses it
(in Rust, about 6× faster than Python's ``json`` and without a Python object per detection)
after a byte-level screen (:func:`~loce.evaluation.results.scan_results_file`); any doubt
about the file, and any zero-area box in it, sends it through the column route. Every other
file is read into columns by :func:`~loce.evaluation.results_file.read_results_columns`
(typed decoding in blocks, every check vectorised, masks measured by the engine's RLE
decoder) and, for masks, parsed a second time by the engine, which keeps the masks; the
selection is applied to the engine's set by writing each detection's area (-1 for those left
out) and filtering on area > 0. A file the typed decoding refuses, and an in-memory list, go
through ``json.load`` and :func:`~loce.evaluation.results.validate_results`, which name the
bad detection.

Why masks are read twice: the engine checks neither a mask's ``size`` against its image nor
its ``counts`` (it evaluates a malformed RLE as some other mask), and it offers no way to
read its parsed detections back as columns. Those checks therefore need loce's own pass over
the file, which costs about three times the engine's parse (36 against 13 CPU s for masks of
20,000 images); mask evaluation from a file takes about twice the engine's time alone.
Passing the parsed masks to the engine instead of the file costs more than its parse (a
Python dict per mask).

The ground truth is parsed by msgspec with Python's cyclic garbage collector paused
(:func:`~loce.memory.paused_gc`) and checked by the data layer, then loaded by the engine.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import hotcoco
import numpy as np

from loce.data.lvis.validate import load_lvis_json, validate_lvis
from loce.errors import DataError, LoceError, ResultsError
from loce.evaluation.results import (
    DetectionColumns,
    load_results_json,
    scan_results_file,
    top_k_per_group,
    validate_results,
)
from loce.evaluation.results_file import read_results_columns
from loce.memory import trim_heap

IouType = Literal["bbox", "segm"]
Protocol = Literal["standard", "fixed", "pooled"]
IOU_TYPES: tuple[str, ...] = ("bbox", "segm")
PROTOCOLS: tuple[str, ...] = ("standard", "fixed", "pooled")
PER_CLASS_PROTOCOLS: tuple[str, ...] = ("fixed", "pooled")

METRIC_KEYS: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf",
    "AR", "ARs", "ARm", "ARl", "ARr", "ARc", "ARf",
)  # fmt: skip
"""Summary metrics, fractions in [0, 1] or -1. ``AR*`` is recall at ``max_dets`` detections
per image (lvis-api's ``AR@300``); ``ARr/ARc/ARf`` average it over a frequency group."""

TABLE_KEYS: tuple[str, ...] = METRIC_KEYS[:9]
FREQUENCIES: tuple[str, ...] = ("r", "c", "f")
POOLED_KEYS: tuple[str, ...] = ("AP-pooled", "AP-pooled-r", "AP-pooled-c", "AP-pooled-f")
"""Metrics of the pooled protocol: AP of the pooled curve of all categories and of each group."""


@dataclass
class GroundTruth:
    """An LVIS annotation set loaded into the engine, with the indexes validation needs.

    Attributes:
        coco: the engine's dataset.
        source: name of the annotations in messages (the path, or "ground truth").
        image_ids: ``[I]`` int64, sorted image ids.
        image_sizes: ``[I, 2]`` int64, ``(height, width)`` of each image in ``image_ids``.
        category_ids: ``[C]`` int64, sorted category ids.
        frequencies: ``[C]`` str, ``"r"``, ``"c"`` or ``"f"`` of each category in
            ``category_ids``.
        dropped_annotations: annotations of area <= 0 left out of evaluation, as lvis-api
            leaves them out.
    """

    coco: Any
    source: str
    image_ids: np.ndarray
    image_sizes: np.ndarray
    category_ids: np.ndarray
    frequencies: np.ndarray
    dropped_annotations: int = 0


# --------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------


def _check_gt_records(
    images: Any, categories: Any, source: str, *, federated_keys: bool
) -> None:
    """Checks on the image and category records; raises DataError naming the record."""
    if not isinstance(images, list) or not images:
        raise DataError(
            f"{source}: 'images' is missing or empty; an LVIS annotation file lists its images "
            "with id, height, width, neg_category_ids and not_exhaustive_category_ids."
        )
    if not isinstance(categories, list) or not categories:
        raise DataError(
            f"{source}: 'categories' is missing or empty; LVIS evaluation needs the category "
            "list with ids and frequency (r/c/f)."
        )
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or "id" not in cat:
            raise DataError(f"{source}: categories[{i}] has no 'id'.")
        if cat.get("frequency") not in FREQUENCIES:
            raise DataError(
                f"{source}: category {cat['id']} (categories[{i}]) has frequency "
                f"{cat.get('frequency')!r}; LVIS categories need 'frequency' r, c or f (from "
                "the training image count: <10, 10-99, >=100)."
            )
    keys = ("id", "height", "width")
    if federated_keys:
        keys += ("neg_category_ids", "not_exhaustive_category_ids")
    for i, img in enumerate(images):
        for key in keys:
            if not isinstance(img, dict) or key not in img:
                raise DataError(
                    f"{source}: images[{i}] has no '{key}'; LVIS images need id, height, "
                    "width, neg_category_ids and not_exhaustive_category_ids (a COCO file "
                    "lacks the last two: LVIS evaluation needs an LVIS v0.5/v1 file)."
                )


def _is_empty(ann: Any) -> bool:
    area = ann.get("area") if isinstance(ann, dict) else None
    return isinstance(area, (int, float)) and area <= 0


def _without_empty(gt: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """Drop annotations of area <= 0, which lvis-api ignores (its index keeps area > 0)."""
    annotations = [a for a in gt["annotations"] if not _is_empty(a)]
    return {**gt, "annotations": annotations}, len(gt["annotations"]) - len(annotations)


def _index_gt(
    coco: Any, images: list[dict], categories: list[dict], source: str, dropped: int
) -> GroundTruth:
    image_ids = np.asarray([img["id"] for img in images], dtype=np.int64)
    sizes = np.asarray([(img["height"], img["width"]) for img in images], dtype=np.int64)
    order = np.argsort(image_ids, kind="stable")
    cat_ids = np.asarray([c["id"] for c in categories], dtype=np.int64)
    freqs = np.asarray([c["frequency"] for c in categories])
    cat_order = np.argsort(cat_ids, kind="stable")
    return GroundTruth(
        coco=coco,
        source=source,
        image_ids=image_ids[order],
        image_sizes=sizes[order],
        category_ids=cat_ids[cat_order],
        frequencies=freqs[cat_order],
        dropped_annotations=dropped,
    )


def load_ground_truth(gt: str | os.PathLike[str] | Mapping[str, Any] | GroundTruth) -> GroundTruth:
    """Load LVIS annotations (v0.5 or v1) for evaluation.

    Args:
        gt: path to the annotation json, or the parsed dict, or an already loaded
            :class:`GroundTruth` (returned as is).

    Raises:
        DataError: the file is missing or unreadable, or lacks what LVIS evaluation needs
            (images with sizes and the federated ``neg_category_ids`` /
            ``not_exhaustive_category_ids`` lists, categories with ``frequency``).
    """
    if isinstance(gt, GroundTruth):
        return gt
    if isinstance(gt, Mapping):
        source = "ground truth"
        for key in ("images", "annotations", "categories"):
            if not isinstance(gt.get(key), list):
                raise DataError(
                    f"{source}: '{key}' is missing or not a list; an LVIS annotation dict has "
                    "images, annotations and categories lists."
                )
        _validate_gt(gt, source)
        kept, dropped = _without_empty(gt)
        coco = _engine_call(lambda: hotcoco.COCO(kept), source, DataError)
        return _index_gt(coco, gt["images"], gt["categories"], source, dropped)
    if not isinstance(gt, (str, os.PathLike)):
        raise TypeError(f"gt must be a path or a dict, got {type(gt).__name__}")

    path = Path(gt)
    source = str(path)
    if not path.is_file():
        raise DataError(
            f"{source}: annotation file not found; pass an LVIS v0.5/v1 annotation json "
            "(for example lvis_v1_val.json, or annotations/val.json of `loce synth`)."
        )
    parsed = load_lvis_json(path)
    _validate_gt(parsed, source)
    del parsed  # freed, and the heap trimmed, before the engine reads the file
    trim_heap()
    coco = _engine_call(lambda: hotcoco.COCO(source), source, DataError)
    images = list(coco.imgs.values())
    categories = list(coco.cats.values())
    dropped = 0
    stats = coco.stats()
    if stats["annotation_count"] and stats["annotation_area"]["min"] <= 0:
        # Rare: annotations of zero area, which lvis-api leaves out. Read the file again
        # rather than keep its Python objects alive through the engine's load.
        kept, dropped = _without_empty(load_lvis_json(path))
        coco = _engine_call(lambda: hotcoco.COCO(kept), source, DataError)
    return _index_gt(coco, images, categories, source, dropped)


def _validate_gt(data: Mapping[str, Any], source: str) -> None:
    """The data layer's checks (types, ids, references, boxes, masks) plus the LVIS fields.

    Image file names are not required: evaluation opens no image.
    """
    _check_gt_records(data.get("images"), data.get("categories"), source, federated_keys=True)
    validate_lvis(data, source, require_federated=True, require_file_names=False)


# --------------------------------------------------------------------------------------
# Detections
# --------------------------------------------------------------------------------------


def _engine_call(fn: Any, source: str, error: type[Exception]) -> Any:
    """Run an engine call, turning its input errors into ``error`` naming ``source``.

    loce's own errors raised inside ``fn`` already name the file and pass through as they are.
    """
    try:
        return fn()
    except LoceError:
        raise
    except (ValueError, OSError, KeyError, TypeError) as err:
        raise error(f"{source}: {err}") from None


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Silence writes to file descriptor 2 (the engine warns there about unknown ids).

    Used only around the fast parse of a results file: when the engine warns, the exact
    validation runs next and reports the same problem as a ResultsError.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable descriptor 2: nothing to hide
        saved = None
    if saved is None:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _fast_load_boxes(truth: GroundTruth, path: Path, max_dets: int | None) -> Any | None:
    """Parse a box results file with the engine and apply the per-image cap.

    Returns None when the file needs the exact validation (see the module docstring).
    """
    scan = scan_results_file(path)
    trim_heap()
    try:
        with _native_stderr_silenced():
            dt = truth.coco.load_res(str(path))
    except (ValueError, OSError, RuntimeError, TypeError, KeyError):
        return None
    stats = dt.stats()  # one pass for the count and the smallest area
    n = stats["annotation_count"]
    clean = (
        n > 0
        and scan.is_list
        and not dt.load_warnings
        and scan.bbox_keys == n
        and scan.score_keys == n
        and not scan.negative_size
        and not scan.literals
    )
    if not clean:
        return None
    if stats["annotation_area"]["min"] <= 0:
        # lvis-api caps each image first, then leaves out detections of zero area; the
        # column route does exactly that.
        return None
    return dt.cap_detections_per_image(max_dets)


def _areas(dets: DetectionColumns, iou_type: str, protocol: str) -> np.ndarray:
    """``[N]`` float64: the area lvis-api gives each detection.

    The box's when the results have boxes (``w * h``), else the mask's; for masks under the
    per-class protocols always the mask's, as the authors' scripts drop ``bbox`` first.
    """
    if iou_type == "segm" and (not dets.has_boxes or protocol in PER_CLASS_PROTOCOLS):
        assert dets.mask_areas is not None
        return dets.mask_areas
    if dets.boxes is None:
        assert dets.box_areas is not None
        return dets.box_areas
    return dets.boxes[:, 2] * dets.boxes[:, 3]


def _select(
    dets: DetectionColumns,
    protocol: str,
    max_dets: int | None,
    dets_per_class: int,
    area: np.ndarray,
) -> np.ndarray:
    """``[N]`` bool: the detections the protocol evaluates.

    The cap comes first and detections of zero ``area`` (``[N]``) are left out after it, in
    lvis-api's order (its results loader caps; its evaluation index keeps area > 0).
    """
    if protocol in PER_CLASS_PROTOCOLS:
        keep = top_k_per_group(dets.category_ids, dets.scores, dets_per_class)
    elif max_dets is None:
        keep = np.ones(len(dets), dtype=bool)
    else:
        keep = top_k_per_group(dets.image_ids, dets.scores, max_dets)
    return keep & (area > 0)


def _warn_short_classes(truth: GroundTruth, dets: DetectionColumns, dets_per_class: int) -> None:
    """One-line warning when some categories have fewer detections than the per-class cap."""
    counts = np.zeros(truth.category_ids.shape[0], dtype=np.int64)
    np.add.at(counts, np.searchsorted(truth.category_ids, dets.category_ids), 1)
    short = int((counts < dets_per_class).sum())
    if short:
        warnings.warn(
            f"{short} of {counts.shape[0]} categories have fewer than {dets_per_class} "
            "detections; AP-fixed and AP-pooled expect that many per class (predict with "
            f"`loce predict --dets-per-class {dets_per_class}`).",
            UserWarning,
            stacklevel=3,
        )


def _columns_to_engine(
    truth: GroundTruth, dets: DetectionColumns, iou_type: str, area: np.ndarray
) -> Any:
    """Build the engine's detection set from in-memory columns; row ``i`` becomes id ``i + 1``."""
    boxes = dets.boxes
    if iou_type == "segm" and boxes is None:
        # Mask results without boxes: lvis-api takes the box from the mask.
        assert dets.segmentations is not None
        boxes = np.asarray(hotcoco.mask.to_bbox(dets.segmentations), dtype=np.float64)
    assert boxes is not None
    table = np.column_stack(
        [dets.image_ids, boxes, dets.scores, dets.category_ids]
    ).astype(np.float64)
    if iou_type == "bbox":
        return truth.coco.load_res(table)
    assert dets.segmentations is not None
    dt = truth.coco.load_res(table, segmentation=dets.segmentations)
    dt.update_anns(ids=np.arange(1, len(dets) + 1), area=area)
    return dt


def _file_to_engine(
    truth: GroundTruth, path: Path, keep: np.ndarray, area: np.ndarray, engine_area: bool
) -> Any:
    """The engine's detection set parsed from the results file itself (masks stay in Rust),
    with each detection's ``area`` (``[N]``) and only the detections where ``keep``.

    ``engine_area``: ``area`` is the one the engine computes when it reads the file (the
    box's), so only the detections left out need writing. The selection is applied by giving
    the detections left out area -1 and filtering on area > 0 (row ``i`` is id ``i + 1``).
    Returns a set marked as capped, so that the engine evaluates it as is.
    """
    trim_heap()  # the columns were just freed
    with _native_stderr_silenced():
        dt = hotcoco.LVISResults(truth.coco, str(path), max_dets=None)  # marked as capped
    count = len(dt.get_ann_ids())
    if count != keep.shape[0]:  # the file changed since it was checked, or the engine differs
        raise ResultsError(
            f"{path}: the engine read {count} detections where the checks read "
            f"{keep.shape[0]}; the file may have been rewritten during evaluation: run again."
        )
    ids = np.arange(1, keep.shape[0] + 1)
    if keep.all():
        if not engine_area:
            dt.update_anns(ids=ids, area=area)
        return dt
    if engine_area:
        dt.update_anns(ids=ids[~keep], area=np.full(int((~keep).sum()), -1.0))
    else:
        dt.update_anns(ids=ids, area=np.where(keep, area, -1.0))
    smallest = float(np.nextafter(0.0, 1.0))
    kept = dt.filter(area_rng=[smallest, float("inf")], drop_empty_images=False)
    del dt  # the last reference: freed before the copy below
    return kept.cap_detections_per_image(None)


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------


def _mean_valid(values: np.ndarray, axis: int | tuple[int, ...] | None = None) -> Any:
    """Mean over entries > -1 (lvis-api's rule for undefined entries); -1 where none."""
    valid = values > -1
    count = valid.sum(axis=axis)
    total = np.where(valid, values, 0.0).sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), -1.0)


def _run_engine(
    truth: GroundTruth, dt: Any, iou_type: str, pair_limit: int
) -> tuple[dict[str, float], dict[int, float]]:
    """Evaluate a capped detection set; returns the summary and per-category AP.

    ``pair_limit`` must be at least the largest number of detections of one category in one
    image: the engine's LVIS mode keeps only ``params.max_dets[-1]`` detections per
    (image, category) pair, which lvis-api does not do. Its default of 300 never binds under
    a per-image cap of 300, but would under a larger cap, no cap, or the fixed protocol.
    """
    ev = hotcoco.COCOeval(truth.coco, dt, iou_type, lvis_style=True)
    if pair_limit != 300:
        params = ev.params
        params.max_dets = [pair_limit]
        ev.params = params
    ev.evaluate()
    ev.accumulate()
    ev.summary_lines()  # computes the summary without printing it
    summary = ev.get_results()
    # "AR@300" -> "AR": the cap is reported in params, keys stay fixed.
    metrics = {key.split("@")[0]: float(value) for key, value in summary.items()}

    params = ev.params
    cat_ids = np.asarray(params.cat_ids, dtype=np.int64)
    assert np.array_equal(cat_ids, truth.category_ids), "engine category order differs"
    area_all = list(params.area_rng_lbl).index("all")
    # precision: [T iou thresholds, R recall points, K categories, A areas, M max-dets]
    precision = np.asarray(ev.eval["precision"], dtype=np.float64)
    # recall: [T, K, A, M]
    recall = np.asarray(ev.eval["recall"], dtype=np.float64)
    per_category_ap = _mean_valid(precision[:, :, :, area_all, -1], axis=(0, 1))
    for freq in FREQUENCIES:
        group = truth.frequencies == freq
        metrics[f"AR{freq}"] = float(_mean_valid(recall[:, group, area_all, -1]))
    missing = [k for k in METRIC_KEYS if k not in metrics]
    assert not missing, f"engine summary lacks {missing}"
    ordered = {k: metrics[k] for k in METRIC_KEYS}
    per_category = {int(c): float(ap) for c, ap in zip(cat_ids, per_category_ap)}
    return ordered, per_category


@dataclass
class _PoolColumns:
    """Matching results of one image chunk, flattened for pooling.

    Attributes:
        scores: ``[D]`` float64, detection scores, entries in lvis-api's order.
        groups: ``[D]`` int64, category index (into ``truth.category_ids``) of each detection.
        matched: ``[T, D]`` bool, matched at each IoU threshold.
        ignored: ``[T, D]`` bool, ignored at each IoU threshold.
        gt_counts: ``[C]`` int64, ground truth not ignored, per category.
    """

    scores: np.ndarray
    groups: np.ndarray
    matched: np.ndarray
    ignored: np.ndarray
    gt_counts: np.ndarray


def _pool_chunk(entries: list[dict[str, Any]], cat_index: dict[int, int], num_thrs: int,
                num_cats: int) -> _PoolColumns:  # fmt: skip
    gt_counts = np.zeros(num_cats, dtype=np.int64)
    scores, groups, matched, ignored = [], [], [], []
    for e in entries:
        k = cat_index[e["category_id"]]
        gt_counts[k] += int(np.count_nonzero(~np.asarray(e["gtIgnore"], dtype=bool)))
        if len(e["dtScores"]):
            scores.append(np.asarray(e["dtScores"], dtype=np.float64))
            groups.append(np.full(len(e["dtScores"]), k, dtype=np.int64))
            matched.append(np.asarray(e["dtMatched"], dtype=bool))
            ignored.append(np.asarray(e["dtIgnore"], dtype=bool))
    if not scores:
        empty = np.zeros((num_thrs, 0), dtype=bool)
        return _PoolColumns(np.zeros(0), np.zeros(0, np.int64), empty, empty, gt_counts)
    return _PoolColumns(np.concatenate(scores), np.concatenate(groups),
                        np.concatenate(matched, axis=1), np.concatenate(ignored, axis=1),
                        gt_counts)  # fmt: skip


def _pooled_precision(
    pool: _PoolColumns, members: np.ndarray, rec_thrs: np.ndarray
) -> np.ndarray:
    """``[T, R]`` interpolated precision of one pooled curve, -1 when the pool has no ground truth.

    Args:
        pool: every chunk's matching results, concatenated in image order.
        members: ``[C]`` bool, the categories of the pool.
        rec_thrs: ``[R]`` recall thresholds.
    """
    num_gt = int(pool.gt_counts[members].sum())
    if num_gt == 0:
        return np.full((1, rec_thrs.shape[0]), -1.0)
    chosen = members[pool.groups]
    if not chosen.any():
        return np.zeros((1, rec_thrs.shape[0]))
    scores = pool.scores[chosen]
    order = np.argsort(-scores, kind="mergesort")
    matched = pool.matched[:, chosen][:, order]
    ignored = pool.ignored[:, chosen][:, order]
    return interpolated_precision(matched, ignored, num_gt, rec_thrs)


def interpolated_precision(
    matched: np.ndarray, ignored: np.ndarray, num_gt: int, rec_thrs: np.ndarray
) -> np.ndarray:
    """``[T, R]`` precision at each recall threshold of one ranked list, lvis-api's way.

    Args:
        matched: ``[T, D]`` bool, each detection (best score first) matched at each IoU
            threshold.
        ignored: ``[T, D]`` bool, ignored (counted neither as true nor as false positive).
        num_gt: ground truth of the list, > 0.
        rec_thrs: ``[R]`` recall thresholds.
    """
    tp = np.cumsum(matched & ~ignored, axis=1, dtype=np.float64)
    fp = np.cumsum(~matched & ~ignored, axis=1, dtype=np.float64)
    recall = tp / num_gt
    precision = tp / (tp + fp + np.spacing(1))
    # Interpolation: the best precision at any higher recall.
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    out = np.zeros((tp.shape[0], rec_thrs.shape[0]))
    for t in range(tp.shape[0]):
        index = np.searchsorted(recall[t], rec_thrs, side="left")
        inside = index < recall.shape[1]
        out[t, inside] = precision[t, index[inside]]
    return out


_POOL_CHUNK_IMAGES = 2_000


def area_all_eval(
    truth: GroundTruth, dt: Any, iou_type: str, pair_limit: int,
    iou_thrs: Sequence[float] | None = None,
) -> Any:  # fmt: skip
    """The engine's LVIS evaluation of ``dt`` at area range "all" only.

    Args:
        pair_limit: detections kept per image and category (see :func:`_run_engine`).
        iou_thrs: IoU thresholds; None keeps LVIS's ten.
    """
    ev = hotcoco.COCOeval(truth.coco, dt, iou_type, lvis_style=True)
    params = ev.params
    params.max_dets = [pair_limit]
    labels = list(params.area_rng_lbl)
    params.area_rng = [params.area_rng[labels.index("all")]]
    params.area_rng_lbl = ["all"]
    if iou_thrs is not None:
        params.iou_thrs = list(iou_thrs)
    ev.params = params
    return ev


def _run_pooled(truth: GroundTruth, dt: Any, iou_type: str, pair_limit: int) -> dict[str, float]:
    """AP-pooled of all categories and of each frequency group (area range "all" only).

    The engine matches a chunk of images at a time (matching is per image, so this is
    exact), and each chunk's results are flattened to arrays before the next, which bounds
    the memory of the engine's per-image result dicts.
    """
    ev = area_all_eval(truth, dt, iou_type, pair_limit)
    params = ev.params
    num_thrs = len(params.iou_thrs)
    rec_thrs = np.asarray(params.rec_thrs, dtype=np.float64)
    cat_index = {int(c): k for k, c in enumerate(truth.category_ids)}
    num_cats = truth.category_ids.shape[0]
    chunks = []
    for lo in range(0, truth.image_ids.shape[0], _POOL_CHUNK_IMAGES):
        image_ids = truth.image_ids[lo : lo + _POOL_CHUNK_IMAGES]
        params.img_ids = [int(i) for i in image_ids]
        ev.params = params
        ev.evaluate()
        image_index = {int(i): k for k, i in enumerate(image_ids)}
        entries = [e for e in ev.eval_imgs if e is not None]
        # lvis-api's order: image-major, then category.
        entries.sort(key=lambda e: (image_index[e["image_id"]], cat_index[e["category_id"]]))
        chunks.append(_pool_chunk(entries, cat_index, num_thrs, num_cats))
        del entries
    pool = _PoolColumns(
        np.concatenate([c.scores for c in chunks]),
        np.concatenate([c.groups for c in chunks]),
        np.concatenate([c.matched for c in chunks], axis=1),
        np.concatenate([c.ignored for c in chunks], axis=1),
        np.sum([c.gt_counts for c in chunks], axis=0),
    )
    del chunks
    metrics = {}
    everything = np.ones(num_cats, dtype=bool)
    metrics["AP-pooled"] = float(_mean_valid(_pooled_precision(pool, everything, rec_thrs)))
    for freq in FREQUENCIES:
        members = truth.frequencies == freq
        metrics[f"AP-pooled-{freq}"] = float(
            _mean_valid(_pooled_precision(pool, members, rec_thrs))
        )
    return metrics


def _check_args(
    iou_types: Sequence[str], max_dets: int | None, protocol: str, dets_per_class: int
) -> None:
    for t in iou_types:
        if t not in IOU_TYPES:
            raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {t!r}")
    if not iou_types:
        raise ValueError("iou_types is empty; give 'bbox' and/or 'segm'")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if max_dets is not None and (isinstance(max_dets, bool) or not isinstance(max_dets, int)):
        raise ValueError(f"max_dets must be an int or None, got {max_dets!r}")
    if max_dets is not None and max_dets == 0:
        raise ValueError("max_dets must be >= 1, or None / -1 for no per-image cap")
    if isinstance(dets_per_class, bool) or not isinstance(dets_per_class, int) or dets_per_class < 1:
        raise ValueError(f"dets_per_class must be an int >= 1, got {dets_per_class!r}")


def _read_results(
    truth: GroundTruth,
    results: str | os.PathLike[str] | list[dict[str, Any]],
    iou_types: tuple[str, ...],
    max_dets: int | None,
    protocol: str,
) -> tuple[Any, DetectionColumns | None, Path | None, str]:
    """``(engine_dt, columns, path, source)``: the results, checked, as the engine's set
    (boxes of a file under the standard protocol, when the screen passes) or as columns.

    ``path`` is the results file (None for a list); ``source`` names the results in messages.
    """
    checks = {
        "gt_image_ids": truth.image_ids,
        "gt_image_sizes": truth.image_sizes,
        "gt_category_ids": truth.category_ids,
        "iou_types": iou_types,
        "gt_source": truth.source,
    }
    engine_dt = None
    columns: DetectionColumns | None = None
    path: Path | None = None
    if isinstance(results, (str, os.PathLike)):
        path = Path(results)
        source = str(path)
        if not path.is_file():
            raise ResultsError(
                f"{source}: results file not found; pass the JSON file written by prediction "
                "(a list of {image_id, category_id, score, bbox[, segmentation]})."
            )
        if iou_types == ("bbox",) and protocol == "standard":
            engine_dt = _fast_load_boxes(truth, path, max_dets)
        if engine_dt is None:
            columns = read_results_columns(path, **checks)
            if columns is None:
                results = load_results_json(path)
    else:
        source = "results"
    if engine_dt is None and columns is None:
        columns = validate_results(results, source=source, **checks)
    return engine_dt, columns, path, source


def _selected_to_engine(
    truth: GroundTruth,
    columns: DetectionColumns,
    iou_type: str,
    keep: np.ndarray,
    area: np.ndarray,
    source: str,
) -> Any:
    """The engine's set of the selected detections ``keep`` of ``columns``, areas ``area``."""
    chosen = columns.subset(keep)
    dt = _engine_call(
        lambda t=iou_type, c=chosen, a=area[keep]: _columns_to_engine(truth, c, t, a),
        source,
        ResultsError,
    )
    del chosen
    # Already selected: mark as capped so the engine evaluates the set as is.
    return dt.cap_detections_per_image(None)


def _evaluate_set(
    truth: GroundTruth,
    dt: Any,
    iou_type: str,
    protocol: str,
    max_dets: int | None,
    dets_per_class: int,
) -> dict[str, Any]:
    """The metrics of the engine's set ``dt`` under ``protocol``, with their ``"params"``."""
    per_class = protocol in PER_CLASS_PROTOCOLS
    num_detections = len(dt.get_ann_ids())
    cap = None if per_class else max_dets
    pair_limit = cap if cap is not None else max(num_detections, 1)
    params = {
        "iou_type": iou_type,
        "protocol": protocol,
        "max_dets": cap,
        "dets_per_class": dets_per_class if per_class else None,
        "num_images": int(truth.image_ids.shape[0]),
        "num_detections": num_detections,
    }
    if protocol == "pooled":
        return {**_run_pooled(truth, dt, iou_type, pair_limit), "params": params}
    metrics, per_category = _run_engine(truth, dt, iou_type, pair_limit)
    return {**metrics, "per_category": per_category, "params": params}


def evaluate_lvis_multi(
    gt: str | os.PathLike[str] | Mapping[str, Any] | GroundTruth,
    results: str | os.PathLike[str] | list[dict[str, Any]],
    iou_types: Sequence[IouType] = ("bbox",),
    max_dets: int | None = 300,
    protocol: Protocol = "standard",
    *,
    dets_per_class: int = 10_000,
) -> dict[str, dict[str, Any]]:
    """Evaluate detections on LVIS for several IoU types, reading the inputs once.

    Arguments as :func:`evaluate_lvis`, with ``iou_types`` a sequence.

    Returns:
        ``{iou_type: metrics}`` with the dict :func:`evaluate_lvis` returns for each.
    """
    iou_types = tuple(dict.fromkeys(iou_types))
    _check_args(iou_types, max_dets, protocol, dets_per_class)
    if max_dets is not None and max_dets < 0:
        max_dets = None
    truth = load_ground_truth(gt)
    per_class = protocol in PER_CLASS_PROTOCOLS

    engine_dt, columns, path, source = _read_results(truth, results, iou_types, max_dets,
                                                     protocol)
    del results
    if columns is not None and per_class:
        _warn_short_classes(truth, columns, dets_per_class)

    file_route = columns is not None and columns.segmentations is None and "segm" in iou_types
    # The mask type that stays in the file goes last, once the columns are no longer needed,
    # so that they are freed before the engine parses the file.
    order = sorted(iou_types, key=lambda t: file_route and t == "segm")
    out: dict[str, dict[str, Any]] = {}
    for iou_type in order:
        if columns is None:
            dt = engine_dt
        else:
            area = _areas(columns, iou_type, protocol)
            keep = _select(columns, protocol, max_dets, dets_per_class, area)
            if file_route and iou_type == "segm":
                # Masks stay in the file: the engine parses it and the selection is applied
                # to its set.
                assert path is not None
                box_area = columns.has_boxes and not per_class
                columns = None
                dt = _engine_call(
                    lambda k=keep, a=area, b=box_area: _file_to_engine(truth, path, k, a, b),
                    source,
                    ResultsError,
                )
                del keep, area
            else:
                dt = _selected_to_engine(truth, columns, iou_type, keep, area, source)
        out[iou_type] = _evaluate_set(truth, dt, iou_type, protocol, max_dets, dets_per_class)
        del dt
    return {t: out[t] for t in iou_types}


def evaluate_lvis(
    gt: str | os.PathLike[str] | Mapping[str, Any] | GroundTruth,
    results: str | os.PathLike[str] | list[dict[str, Any]],
    iou_type: IouType = "bbox",
    max_dets: int | None = 300,
    protocol: Protocol = "standard",
    *,
    dets_per_class: int = 10_000,
) -> dict[str, Any]:
    """Evaluate detections on LVIS (v0.5 or v1) and return AP, AR and per-category AP.

    Args:
        gt: LVIS annotations: path to the json, the parsed dict, or a :class:`GroundTruth`
            from :func:`load_ground_truth` (to evaluate several results on one set).
        results: path to a results json, or the list of result dicts
            (``image_id``, ``category_id``, ``score``, ``bbox`` [x, y, w, h]; for ``segm``
            a compressed RLE ``segmentation`` whose counts may be ``str`` or ``bytes``).
        iou_type: ``"bbox"`` or ``"segm"``.
        max_dets: detections kept per image across categories under the standard protocol
            (LVIS: 300); None or -1 keeps all. Not used by the fixed protocol.
        protocol: ``"standard"`` (LVIS), ``"fixed"`` (AP_fixed: top ``dets_per_class`` per
            category over the dataset, no per-image cap) or ``"pooled"`` (AP_pool: the same
            selection, one precision-recall curve per category group). See the module
            docstring.
        dets_per_class: detections kept per category under the fixed and pooled protocols.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf", "AR", "ARs",
        "ARm", "ARl", "ARr", "ARc", "ARf"}`` as floats in [0, 1] (-1 when undefined), plus
        ``"per_category"``: ``{category_id: AP}`` (-1 for categories without annotations) and
        ``"params"``: the protocol, the caps, and the numbers of images and of detections
        evaluated (after the caps). Under the pooled protocol the metrics are
        ``{"AP-pooled", "AP-pooled-r", "AP-pooled-c", "AP-pooled-f"}`` and ``"params"``.

    Raises:
        DataError: bad annotations. ResultsError: bad results (the message names the file,
        the detection's index and the key). ValueError: bad arguments.
    """
    return evaluate_lvis_multi(
        gt, results, (iou_type,), max_dets, protocol, dets_per_class=dets_per_class
    )[iou_type]


def format_metrics_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A compact table: one row per IoU type, AP columns in percent, ``-`` when undefined.

    Args:
        results: ``{iou_type: metrics}`` as :func:`evaluate_lvis_multi` returns.
    """
    first = next(iter(results.values()), {})
    keys = POOLED_KEYS if "AP-pooled" in first else TABLE_KEYS
    width = max(7, *(len(k) + 1 for k in keys))
    header = f"{'':<6}" + "".join(f"{k:>{width}}" for k in keys)
    lines = [header]
    for iou_type, metrics in results.items():
        cells = []
        for key in keys:
            value = float(metrics[key])
            cells.append(f"{'-':>{width}}" if value < 0 else f"{100 * value:>{width}.1f}")
        lines.append(f"{iou_type:<6}" + "".join(cells))
    return "\n".join(lines)
