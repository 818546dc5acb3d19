"""Error analysis under LVIS's rules: TIDE's error types and their ΔAP, by frequency group.

Every detection that LVIS evaluation counts as a false positive, and every object it leaves
unfound, gets one of TIDE's error types (Bolya et al., ECCV 2020), at a foreground IoU
``pos_thr`` (0.5) and a background IoU ``bg_thr`` (0.1). For a false positive, in this order:

- **Loc**: its best IoU with an object of its own class is in ``[bg_thr, pos_thr]``;
- **Cls**: its best IoU with an object of another class is at least ``pos_thr``;
- **Dupe**: its best IoU with an object of its class that another detection already matched
  is at least ``pos_thr``;
- **Bkg**: its best IoU with any object is at most ``bg_thr``;
- **Both**: anything else (wrong class and badly placed).

An object no detection matched is **Miss** unless a Cls or Loc error points at it while it is
unmatched. Each type's **ΔAP** is the AP gained when an oracle fixes that type alone: a Cls
or Loc error becomes a true positive of its object's class (only the highest-scoring one per
object; the others pointing at the same object, and those pointing at a matched object, are
removed), Dupe, Bkg and Both errors are removed, and a missed object leaves the ground truth.
Two further oracles as in TIDE: **FP** removes every false positive, **FN** every unfound
object. ΔAP is clamped at 0, as TIDE does.

What differs from TIDE is the protocol the errors are counted on: it is LVIS's, exactly as
:mod:`loce.evaluation.lvis_eval` runs it (the same checks, each image's ``max_dets`` best
detections across categories, zero-area detections left out), and the true positives are the
engine's own matches at ``pos_thr``. So:

- a detection of a category neither annotated in its image nor in the image's
  ``neg_category_ids`` is not evaluated: no error of any kind (TIDE would call it Bkg or Cls);
- an unmatched detection of a category in ``not_exhaustive_category_ids`` is ignored: no
  error either;
- AP is lvis-api's AP at IoU ``pos_thr`` (101 recall points, a category without ground truth
  left out of the mean), so the baseline is ``loce eval``'s AP50 to the last digit. A
  category that the Miss or FN oracle leaves without objects counts 0 while it has
  detections and leaves the mean otherwise, as in TIDE.

The engine's ``COCOeval.tide_errors`` in LVIS mode gives the same numbers for all categories
when the results have no detection of zero area and at most ``max_dets`` per image (a test
checks it); this module adds lvis-api's per-image selection, the groups, the confusions and
the objects' fates.

Everything is reported for all categories and for the rare, common and frequent groups.
Counts: a Cls error counts in the group of the object's class, other false positives in the
group of the detection's class, Miss in the object's. The confusions list every Cls error as
a pair (object's class, detected class), by group and by class; and each object gets a fate:
``detected`` (matched), ``misnamed`` (a Cls error points at it), ``mislocalised`` (a Loc
error does, and no Cls), ``missed`` (the Miss count).

Shapes: ``D`` evaluated detections, ``K`` categories, ``G`` objects of one image, ``F``
false positives of one image.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import hotcoco
import numpy as np

from loce.errors import ResultsError
from loce.evaluation.lvis_eval import (
    FREQUENCIES,
    IOU_TYPES,
    GroundTruth,
    _areas,
    _mean_valid,
    _select,
    _selected_to_engine,
    area_all_eval,
    interpolated_precision,
    load_ground_truth,
)
from loce.evaluation.results import DetectionColumns, load_results_json, validate_results
from loce.evaluation.results_file import read_results_columns

ERROR_TYPES: tuple[str, ...] = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
"""TIDE's main error types, in its order."""
SPECIAL_TYPES: tuple[str, ...] = ("FP", "FN")
"""TIDE's special oracles: every false positive removed; every unfound object removed."""
GROUPS: tuple[str, ...] = ("all", *FREQUENCIES)
FATES: tuple[str, ...] = ("detected", "misnamed", "mislocalised", "missed")

# Detection error codes (index into _DET_TYPES); 0 = true positive.
_DET_TYPES = ("TP", "Cls", "Loc", "Both", "Dupe", "Bkg")
_TP, _CLS, _LOC, _BOTH, _DUPE, _BKG = range(6)


@dataclass
class _Detections:
    """The evaluated, not ignored detections, and what each one is.

    Attributes:
        cats: ``[D]`` int64, category index (into ``truth.category_ids``).
        scores: ``[D]`` float64.
        order: ``[D]`` int64, lvis-api's rank among equal scores (image-major).
        kind: ``[D]`` int64, 0 for a true positive, else the error code.
        fix_to: ``[D]`` int64, for a Cls or Loc error the category index it becomes a true
            positive of when fixed, -1 when the oracle removes it.
        group_cat: ``[D]`` int64, the category whose group the error counts in.
        target: ``[D]`` int64, category index of the object a Cls error points at, else -1.
    """

    cats: np.ndarray
    scores: np.ndarray
    order: np.ndarray
    kind: np.ndarray
    fix_to: np.ndarray
    group_cat: np.ndarray
    target: np.ndarray


def _read_columns(
    truth: GroundTruth, results: str | os.PathLike[str] | list[dict[str, Any]], iou_type: str
) -> DetectionColumns:
    """Validated detections, with masks in memory for ``"segm"`` (IoUs between classes)."""
    checks = {
        "gt_image_ids": truth.image_ids,
        "gt_image_sizes": truth.image_sizes,
        "gt_category_ids": truth.category_ids,
        "iou_types": (iou_type,),
        "gt_source": truth.source,
    }
    if isinstance(results, (str, os.PathLike)):
        source = str(results)
        if not os.path.isfile(results):
            raise ResultsError(
                f"{source}: results file not found; pass the JSON file written by prediction "
                "(a list of {image_id, category_id, score, bbox[, segmentation]})."
            )
        if iou_type == "bbox":
            columns = read_results_columns(results, **checks)
            if columns is not None:
                return columns
        results = load_results_json(results)
    else:
        source = "results"
    return validate_results(results, source=source, **checks)


def _ious(truth: GroundTruth, iou_type: str, det_geom: Any, gt_ids: np.ndarray) -> np.ndarray:
    """``[F, G]`` IoU of the detections with the image's objects (the engine's formula)."""
    if iou_type == "bbox":
        gt_geom = np.asarray([truth.coco.anns[int(g)]["bbox"] for g in gt_ids], np.float64)
    else:
        gt_geom = [truth.coco.ann_to_rle(truth.coco.anns[int(g)]) for g in gt_ids]
    iou = hotcoco.mask.iou(det_geom, gt_geom, [0] * len(gt_ids))
    return np.asarray(iou, dtype=np.float64).reshape(len(det_geom), len(gt_ids))


def _classify_image(
    iou: np.ndarray,
    same: np.ndarray,
    used: np.ndarray,
    pos_thr: float,
    bg_thr: float,
) -> tuple[np.ndarray, np.ndarray]:
    """TIDE's type of each false positive of one image and the object it points at.

    Args:
        iou: ``[F, G]`` IoU with every object of the image.
        same: ``[F, G]`` bool, the object is of the detection's class.
        used: ``[G]`` bool, the object is matched.

    Returns:
        ``(kind [F], target [F])``: the error code, and the object index for Cls and Loc
        (else -1).
    """
    f = iou.shape[0]
    kind = np.full(f, _BKG, dtype=np.int64)
    target = np.full(f, -1, dtype=np.int64)
    if iou.shape[1] == 0:
        return kind, target
    same_iou = np.where(same, iou, 0.0)
    other_iou = np.where(same, 0.0, iou)
    used_iou = np.where(used[None, :], same_iou, 0.0)
    best_same = same_iou.max(axis=1)
    loc = (best_same >= bg_thr) & (best_same <= pos_thr)
    cls = ~loc & (other_iou.max(axis=1) >= pos_thr)
    dupe = ~loc & ~cls & (used_iou.max(axis=1) >= pos_thr)
    rest = ~loc & ~cls & ~dupe
    kind[loc] = _LOC
    kind[cls] = _CLS
    kind[dupe] = _DUPE
    kind[rest & (iou.max(axis=1) > bg_thr)] = _BOTH
    target[loc] = same_iou[loc].argmax(axis=1)
    target[cls] = other_iou[cls].argmax(axis=1)
    return kind, target


def _entries_by_image(ev: Any, truth: GroundTruth) -> list[list[dict[str, Any]]]:
    """The engine's per-(image, category) results grouped by image, in image order."""
    image_index = {int(i): k for k, i in enumerate(truth.image_ids)}
    by_image: list[list[dict[str, Any]]] = [[] for _ in range(truth.image_ids.shape[0])]
    for e in ev.eval_imgs:
        if e is not None:
            by_image[image_index[e["image_id"]]].append(e)
    return by_image


def _analyse_set(
    truth: GroundTruth,
    dt: Any,
    chosen: DetectionColumns,
    iou_type: str,
    pos_thr: float,
    bg_thr: float,
    pair_limit: int,
) -> tuple[_Detections, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Match with the engine at ``pos_thr`` and type every error.

    Returns:
        ``(detections, num_gt [K], missed [K], fates)``: the evaluated detections,
        the objects per category, the Miss errors per category and ``{fate: [K] counts}``.
    """
    ev = area_all_eval(truth, dt, iou_type, pair_limit, [pos_thr])
    ev.evaluate()
    cat_index = {int(c): k for k, c in enumerate(truth.category_ids)}
    num_cats = truth.category_ids.shape[0]
    num_gt = np.zeros(num_cats, dtype=np.int64)
    missed = np.zeros(num_cats, dtype=np.int64)
    fates = {name: np.zeros(num_cats, dtype=np.int64) for name in FATES}
    columns: dict[str, list[np.ndarray]] = {
        k: [] for k in ("cats", "scores", "order", "kind", "fix_to", "group_cat", "target")
    }
    rank = 0
    # object id -> (score, -rank, rank, category index) of the error that fixes it
    best: dict[int, tuple[float, int, int, int]] = {}
    for entries in _entries_by_image(ev, truth):
        if not entries:
            continue
        gt_ids = np.asarray([g for e in entries for g in e["gtIds"]], dtype=np.int64)
        gt_cats = np.asarray([cat_index[e["category_id"]] for e in entries for _ in e["gtIds"]],
                             dtype=np.int64)  # fmt: skip
        used = np.asarray([m != 0 for e in entries for m in e["gtMatches"][0]], dtype=bool)
        np.add.at(num_gt, gt_cats, 1)
        det_ids, det_cats, det_scores, det_tp, det_rank = [], [], [], [], []
        for e in entries:
            k = cat_index[e["category_id"]]
            for j, det_id in enumerate(e["dtIds"]):
                if e["dtIgnore"][0][j]:
                    rank += 1
                    continue
                det_ids.append(det_id)
                det_cats.append(k)
                det_scores.append(e["dtScores"][j])
                det_tp.append(e["dtMatches"][0][j] != 0)
                det_rank.append(rank)
                rank += 1
        d_ids = np.asarray(det_ids, dtype=np.int64)
        d_cats = np.asarray(det_cats, dtype=np.int64)
        d_scores = np.asarray(det_scores, dtype=np.float64)
        d_rank = np.asarray(det_rank, dtype=np.int64)
        kind = np.where(np.asarray(det_tp, dtype=bool), _TP, _BKG).astype(np.int64)
        target = np.full(d_ids.shape[0], -1, dtype=np.int64)
        fp = np.flatnonzero(kind != _TP)
        if fp.size and gt_ids.size:
            rows = d_ids[fp] - 1  # engine id i + 1 is row i of ``chosen``
            if iou_type == "bbox":
                geom: Any = chosen.boxes[rows]
            else:
                geom = [chosen.segmentations[r] for r in rows]
            iou = _ious(truth, iou_type, geom, gt_ids)
            same = d_cats[fp, None] == gt_cats[None, :]
            kind[fp], target[fp] = _classify_image(iou, same, used, pos_thr, bg_thr)
        # Cls and Loc errors pointing at an unmatched object: the best score fixes it.
        pointing = target >= 0
        pointing[pointing] = ~used[target[pointing]]
        usable = np.zeros(gt_ids.shape[0], dtype=bool)
        usable[target[pointing]] = True
        for i in np.flatnonzero(pointing):
            obj = int(gt_ids[target[i]])
            # The highest score fixes the object; among equal scores the first ranked.
            key = (float(d_scores[i]), -int(d_rank[i]), int(d_rank[i]), int(gt_cats[target[i]]))
            if obj not in best or key[:2] > best[obj][:2]:
                best[obj] = key
        obj_cat = np.full(target.shape[0], -1, dtype=np.int64)
        obj_cat[target >= 0] = gt_cats[target[target >= 0]]
        lost = ~used & ~usable
        np.add.at(missed, gt_cats[lost], 1)
        np.add.at(fates["detected"], gt_cats[used], 1)
        np.add.at(fates["missed"], gt_cats[lost], 1)
        named = np.zeros(gt_ids.shape[0], dtype=bool)
        named[target[pointing & (kind == _CLS)]] = True
        np.add.at(fates["misnamed"], gt_cats[named], 1)
        np.add.at(fates["mislocalised"], gt_cats[usable & ~named], 1)
        columns["cats"].append(d_cats)
        columns["scores"].append(d_scores)
        columns["order"].append(d_rank)
        columns["kind"].append(kind)
        columns["target"].append(np.where(kind == _CLS, obj_cat, -1))
        columns["group_cat"].append(np.where(kind == _CLS, obj_cat, d_cats))
    fixed_ranks = {v[2]: v[3] for v in best.values()}  # rank of the fixer -> object category
    flat = {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in columns.items()}
    fix_to = np.full(flat["cats"].shape[0], -1, dtype=np.int64)
    for i, r in enumerate(flat["order"]):
        cat = fixed_ranks.get(int(r))
        if cat is not None:
            fix_to[i] = cat
    dets = _Detections(
        cats=flat["cats"].astype(np.int64),
        scores=flat["scores"].astype(np.float64),
        order=flat["order"].astype(np.int64),
        kind=flat["kind"].astype(np.int64),
        fix_to=fix_to,
        group_cat=flat["group_cat"].astype(np.int64),
        target=flat["target"].astype(np.int64),
    )
    return dets, num_gt, missed, fates


def category_precision(
    cats: np.ndarray, scores: np.ndarray, order: np.ndarray, tp: np.ndarray,
    num_gt: np.ndarray, rec_thrs: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """``[K, R]`` interpolated precision of each category at one IoU threshold, lvis-api's
    way; a row of -1 for a category without objects.

    Args:
        cats: ``[D]`` int64 category index of each detection (ignored ones left out).
        scores: ``[D]`` float64.
        order: ``[D]`` int64, the order among equal scores.
        tp: ``[D]`` bool, a true positive.
        num_gt: ``[K]`` int64 objects per category.
        rec_thrs: ``[R]`` recall thresholds.
    """
    num_cats = num_gt.shape[0]
    out = np.zeros((num_cats, rec_thrs.shape[0]))
    out[num_gt <= 0] = -1.0
    ranked = np.lexsort((order, -scores, cats))
    cats, tp = cats[ranked], tp[ranked]
    bounds = np.searchsorted(cats, np.arange(num_cats + 1))
    for k in np.flatnonzero((num_gt > 0) & (bounds[1:] > bounds[:-1])):
        matched = tp[None, bounds[k] : bounds[k + 1]]
        out[k] = interpolated_precision(matched, np.zeros_like(matched), int(num_gt[k]),
                                        rec_thrs)[0]  # fmt: skip
    return out


def _mean_entries(precision: np.ndarray) -> float:
    """Mean of the defined entries of ``[K, R]`` precision, summed in lvis-api's order
    (recall-major), so that the baseline is the evaluation's AP to the last bit; -1 if none."""
    values = precision.T[precision.T > -1]
    return float(values.mean()) if values.size else -1.0


def _group_means(precision: np.ndarray, frequencies: np.ndarray) -> dict[str, float]:
    out = {"all": _mean_entries(precision)}
    for freq in FREQUENCIES:
        out[freq] = _mean_entries(precision[frequencies == freq])
    return out


def _group_counts(counts: np.ndarray, frequencies: np.ndarray) -> dict[str, int]:
    out = {"all": int(counts.sum())}
    for freq in FREQUENCIES:
        out[freq] = int(counts[frequencies == freq].sum())
    return out


def _delta_aps(
    dets: _Detections, num_gt: np.ndarray, missed: np.ndarray, truth: GroundTruth,
    rec_thrs: np.ndarray,
) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, np.ndarray]]:  # fmt: skip
    """Baseline AP per group, each oracle's ΔAP per group, and the per-category fixed APs."""
    tp = dets.kind == _TP
    base_prec = category_precision(dets.cats, dets.scores, dets.order, tp, num_gt, rec_thrs)
    base = _group_means(base_prec, truth.frequencies)
    fixed: dict[str, np.ndarray] = {}
    for name in ERROR_TYPES[:-1]:
        code = _DET_TYPES.index(name)
        hit = dets.kind == code
        becomes = hit & (dets.fix_to >= 0)
        keep = ~hit | becomes
        cats = np.where(becomes, dets.fix_to, dets.cats)
        fixed[name] = category_precision(cats[keep], dets.scores[keep], dets.order[keep],
                                         (tp | becomes)[keep], num_gt, rec_thrs)  # fmt: skip
    fixed["FP"] = category_precision(dets.cats[tp], dets.scores[tp], dets.order[tp], tp[tp],
                                     num_gt, rec_thrs)  # fmt: skip
    # A category that an oracle leaves without objects counts 0 while it has detections, and
    # leaves the mean otherwise (TIDE's rule).
    has_dets = np.bincount(dets.cats, minlength=num_gt.shape[0]) > 0
    found = np.bincount(dets.cats[tp], minlength=num_gt.shape[0])
    for name, remaining in (("Miss", num_gt - missed), ("FN", found)):
        prec = category_precision(dets.cats, dets.scores, dets.order, tp, remaining, rec_thrs)
        prec[(num_gt > 0) & (remaining == 0) & has_dets] = 0.0
        fixed[name] = prec
    deltas = {}
    for name, ap in fixed.items():
        means = _group_means(ap, truth.frequencies)
        deltas[name] = {g: max(means[g] - base[g], 0.0) if base[g] >= 0 else -1.0
                        for g in GROUPS}  # fmt: skip
    per_category = {name: _mean_valid(prec, axis=1) for name, prec in fixed.items()}
    return base, deltas, {"base": _mean_valid(base_prec, axis=1), **per_category}


def _confusions(
    dets: _Detections, truth: GroundTruth, names: Mapping[int, str], top: int
) -> dict[str, Any]:
    """Cls errors as (object's class, detected class) pairs: by group and the top pairs."""
    cls = dets.kind == _CLS
    true_k, pred_k = dets.target[cls], dets.cats[cls]
    index = {f: i for i, f in enumerate(FREQUENCIES)}
    matrix = np.zeros((3, 3), dtype=np.int64)
    np.add.at(matrix, (np.asarray([index[f] for f in truth.frequencies[true_k]], np.int64),
                       np.asarray([index[f] for f in truth.frequencies[pred_k]], np.int64)), 1)  # fmt: skip
    num_cats = truth.category_ids.shape[0]
    pairs = np.bincount(true_k * num_cats + pred_k, minlength=0)
    ranked = np.lexsort((np.arange(pairs.shape[0]), -pairs))[:top]
    top_pairs = []
    for p in ranked:
        if pairs[p] == 0:
            break
        t, d = divmod(int(p), num_cats)
        tid, did = int(truth.category_ids[t]), int(truth.category_ids[d])
        top_pairs.append({
            "object": tid, "object_name": names.get(tid, str(tid)),
            "object_group": str(truth.frequencies[t]),
            "detected_as": did, "detected_as_name": names.get(did, str(did)),
            "detected_as_group": str(truth.frequencies[d]), "count": int(pairs[p]),
        })  # fmt: skip
    return {"groups": list(FREQUENCIES), "by_group": matrix.tolist(), "top_pairs": top_pairs}


def analyze_errors(
    gt: str | os.PathLike[str] | Mapping[str, Any] | GroundTruth,
    results: str | os.PathLike[str] | list[dict[str, Any]],
    iou_type: str = "bbox",
    *,
    max_dets: int | None = 300,
    pos_thr: float = 0.5,
    bg_thr: float = 0.1,
    top_confusions: int = 10,
) -> dict[str, Any]:
    """TIDE's error types and ΔAPs under LVIS's protocol, by frequency group.

    Args:
        gt: LVIS annotations (path, dict or :class:`GroundTruth`).
        results: results file or list, as for :func:`~loce.evaluation.evaluate_lvis`.
        iou_type: ``"bbox"`` or ``"segm"``.
        max_dets: detections kept per image across categories (LVIS: 300); None keeps all.
        pos_thr: foreground IoU: a match, and the AP's IoU threshold.
        bg_thr: background IoU.
        top_confusions: how many (object class, detected class) pairs to list.

    Returns:
        ``{"params", "ap", "delta_ap", "counts", "objects", "confusions", "per_category"}``:
        ``ap`` is ``{group: AP at pos_thr}`` (``"all"`` is ``loce eval``'s AP50);
        ``delta_ap`` ``{type: {group: ΔAP}}`` for :data:`ERROR_TYPES` and
        :data:`SPECIAL_TYPES`; ``counts`` ``{type: {group: n}}``; ``objects`` ``{group:
        {fate: n}}`` for :data:`FATES`; ``confusions`` the group matrix (rows: the object's
        group, columns: the detected class's) and the top pairs; ``per_category``
        ``{category id: {"AP": .., type: AP with that type fixed}}``. Fractions in [0, 1],
        -1 when a group has no objects.

    Raises:
        DataError, ResultsError: bad annotations or results. ValueError: bad arguments.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if not 0 <= bg_thr <= pos_thr <= 1:
        raise ValueError(f"need 0 <= bg_thr <= pos_thr <= 1, got {bg_thr}, {pos_thr}")
    if max_dets is not None and max_dets < 0:
        max_dets = None
    truth = load_ground_truth(gt)
    columns = _read_columns(truth, results, iou_type)
    source = str(results) if isinstance(results, (str, os.PathLike)) else "results"
    area = _areas(columns, iou_type, "standard")
    keep = _select(columns, "standard", max_dets, 1, area)
    chosen = columns.subset(keep)
    dt = _selected_to_engine(truth, columns, iou_type, keep, area, source)
    del columns
    pair_limit = max_dets if max_dets is not None else max(int(keep.sum()), 1)
    dets, num_gt, missed, fates = _analyse_set(truth, dt, chosen, iou_type, pos_thr, bg_thr,
                                               pair_limit)  # fmt: skip
    rec_thrs = np.linspace(0.0, 1.0, 101)
    base, deltas, per_cat_ap = _delta_aps(dets, num_gt, missed, truth, rec_thrs)
    counts = {}
    for code, name in enumerate(_DET_TYPES):
        if code == _TP:
            continue
        per_cat = np.bincount(dets.group_cat[dets.kind == code], minlength=num_gt.shape[0])
        counts[name] = _group_counts(per_cat, truth.frequencies)
    counts["Miss"] = _group_counts(missed, truth.frequencies)
    objects = {g: {} for g in GROUPS}
    for fate, per_cat in fates.items():
        for g, n in _group_counts(per_cat, truth.frequencies).items():
            objects[g][fate] = n
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in truth.coco.cats.values()}
    per_category = {}
    for k, cat in enumerate(truth.category_ids):
        entry = {"AP": float(per_cat_ap["base"][k])}
        entry.update({t: float(per_cat_ap[t][k]) for t in (*ERROR_TYPES, *SPECIAL_TYPES)})
        per_category[int(cat)] = entry
    return {
        "params": {
            "iou_type": iou_type, "pos_thr": pos_thr, "bg_thr": bg_thr, "max_dets": max_dets,
            "num_images": int(truth.image_ids.shape[0]), "num_detections": int(keep.sum()),
            "num_evaluated": int(dets.cats.shape[0]),
        },  # fmt: skip
        "ap": base,
        "delta_ap": {t: deltas[t] for t in (*ERROR_TYPES, *SPECIAL_TYPES)},
        "counts": {t: counts[t] for t in ERROR_TYPES},
        "objects": objects,
        "confusions": _confusions(dets, truth, names, top_confusions),
        "per_category": per_category,
    }


def format_analysis(runs: Mapping[str, Mapping[str, Any]], iou_type: str) -> str:
    """The console report of one IoU type, runs side by side: AP and ΔAP in points by group,
    the objects' fates in percent by group, and the confusions between groups.

    Args:
        runs: ``{run name: analysis}`` as :func:`analyze_errors` returns.
        iou_type: the analyses' IoU type, for the title.
    """
    first = next(iter(runs.values()))
    thr = first["params"]["pos_thr"]
    width = max(8, *(len(n) + 2 for n in runs))
    types = (*ERROR_TYPES, *SPECIAL_TYPES)
    head = f"{'run':<{width}}{'group':<7}{'AP' + str(round(100 * thr)):>7}"
    head += "".join(f"{t:>7}" for t in types)
    lines = [f"{iou_type}: AP at IoU {thr:g} and the AP each error type costs (ΔAP, points)",
             head, "-" * len(head)]  # fmt: skip

    def cell(v: float) -> str:
        return f"{'-':>7}" if v < 0 else f"{100 * v:>7.1f}"

    for name, a in runs.items():
        for i, g in enumerate(GROUPS):
            label = name if i == 0 else ""
            row = f"{label:<{width}}{g:<7}{cell(a['ap'][g])}"
            lines.append(row + "".join(cell(a["delta_ap"][t][g]) for t in types))
    lines.append("")
    head = f"{'run':<{width}}{'group':<7}{'objects':>8}" + "".join(f"{f:>14}" for f in FATES)
    lines += ["objects by what became of them (percent of the group's objects)", head,
              "-" * len(head)]  # fmt: skip
    for name, a in runs.items():
        for i, g in enumerate(GROUPS):
            fates = a["objects"][g]
            total = sum(fates.values())
            row = f"{(name if i == 0 else ''):<{width}}{g:<7}{total:>8}"
            for f in FATES:
                row += f"{'-':>14}" if total == 0 else f"{100 * fates[f] / total:>14.1f}"
            lines.append(row)
    lines.append("")
    lines.append("classification errors: object's group (rows) named as a class of group "
                 "(columns)")
    head = f"{'run':<{width}}{'object':<8}" + "".join(f"{'as ' + f:>7}" for f in FREQUENCIES)
    lines += [head, "-" * len(head)]
    for name, a in runs.items():
        for i, (g, row_counts) in enumerate(zip(FREQUENCIES, a["confusions"]["by_group"])):
            row = f"{(name if i == 0 else ''):<{width}}{g:<8}"
            lines.append(row + "".join(f"{n:>7d}" for n in row_counts))
    for name, a in runs.items():
        pairs = a["confusions"]["top_pairs"]
        if pairs:
            lines.append("")
            lines.append(f"{name}: most frequent confusions (object -> detected as: count)")
            for p in pairs:
                lines.append(f"  {p['object_name']} ({p['object_group']}) -> "
                             f"{p['detected_as_name']} ({p['detected_as_group']}): {p['count']}")
    return "\n".join(lines)


def analyze_runs(
    gt: str | os.PathLike[str] | Mapping[str, Any] | GroundTruth,
    results: Mapping[str, str | os.PathLike[str] | list[dict[str, Any]]],
    iou_types: Sequence[str] = ("bbox",),
    **kwargs: Any,
) -> dict[str, dict[str, dict[str, Any]]]:
    """:func:`analyze_errors` of several runs on one ground truth, loaded once.

    Returns:
        ``{iou_type: {run name: analysis}}``.
    """
    truth = load_ground_truth(gt)
    return {t: {name: analyze_errors(truth, res, t, **kwargs) for name, res in results.items()}
            for t in iou_types}  # fmt: skip
