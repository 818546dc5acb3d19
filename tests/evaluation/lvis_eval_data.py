"""Generated LVIS data and the reference lvis-api evaluation for the evaluation tests."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lvis_v0.5_val_100.json"


def _polygon(rng: np.random.Generator, x: float, y: float, w: float, h: float) -> list[float]:
    """A star-shaped polygon with 8 vertices inside the box."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, 8))
    radius = rng.uniform(0.6, 1.0, 8)
    px = x + w / 2 + np.cos(angles) * radius * w / 2
    py = y + h / 2 + np.sin(angles) * radius * h / 2
    return np.stack([px, py], axis=1).ravel().round(2).tolist()


def _rle(poly: list[float], h: int, w: int) -> dict[str, Any]:
    rle = mask_utils.frPyObjects([poly], h, w)[0]
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def make_lvis_gt(seed: int = 0, num_images: int = 120, num_cats: int = 50) -> dict[str, Any]:
    """LVIS-format ground truth with small/medium/large objects, polygons, r/c/f categories,
    non-contiguous category ids and federated negative / not-exhaustive lists."""
    rng = np.random.default_rng(seed)
    cat_ids = [3 * k + 2 for k in range(num_cats)]
    freqs = ["r"] * (num_cats * 3 // 10) + ["c"] * (num_cats * 4 // 10)
    freqs += ["f"] * (num_cats - len(freqs))
    categories = [
        {"id": c, "name": f"cat_{c}", "frequency": f, "image_count": 1, "instance_count": 1}
        for c, f in zip(cat_ids, freqs)
    ]
    weights = 1.0 / np.arange(1, num_cats + 1)
    weights /= weights.sum()
    images, annotations = [], []
    for i in range(num_images):
        img_id = 1000 + 7 * i
        height, width = int(rng.integers(200, 641)), int(rng.integers(200, 641))
        present: set[int] = set()
        for _ in range(int(rng.poisson(4))):
            cat = cat_ids[int(rng.choice(num_cats, p=weights))]
            scale = rng.choice([12.0, 60.0, 180.0])  # small, medium, large objects
            w = float(np.clip(scale * rng.uniform(0.6, 1.4), 4, width - 1))
            h = float(np.clip(scale * rng.uniform(0.6, 1.4), 4, height - 1))
            x, y = float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h))
            poly = _polygon(rng, x, y, w, h)
            area = float(mask_utils.area(_rle(poly, height, width)))
            annotations.append({
                "id": len(annotations) + 1, "image_id": img_id, "category_id": cat,
                "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                "area": area, "segmentation": [poly],
            })  # fmt: skip
            present.add(cat)
        absent = [c for c in cat_ids if c not in present]
        neg = [int(c) for c in rng.choice(absent, size=min(6, len(absent)), replace=False)]
        not_exhaustive = sorted(c for c in present if rng.random() < 0.25)
        images.append({
            "id": img_id, "height": height, "width": width, "coco_url": f"img/{img_id}.jpg",
            "neg_category_ids": neg, "not_exhaustive_category_ids": not_exhaustive,
        })  # fmt: skip
    return {"images": images, "annotations": annotations, "categories": categories}


def make_detections(
    gt: dict[str, Any], seed: int = 1, crowded_images: int = 6, masks: bool = True
) -> list[dict[str, Any]]:
    """Jittered copies of the ground truth plus false positives with random scores.

    A few images get 350-600 detections, so the per-image cap of 300 matters; scores are
    rounded to 3 decimals, so ties occur; false positives fall in annotated, negative,
    not-exhaustive and unverified categories; a few boxes have zero width or height.
    """
    rng = np.random.default_rng(seed)
    images = {img["id"]: img for img in gt["images"]}
    cat_ids = [c["id"] for c in gt["categories"]]
    dets: list[dict[str, Any]] = []

    def add(img: dict[str, Any], cat: int, box: list[float], poly: list[float]) -> None:
        det = {"image_id": img["id"], "category_id": int(cat),
               "bbox": [float(round(v, 2)) for v in box], "score": round(float(rng.random()), 3)}  # fmt: skip
        if masks:
            det["segmentation"] = _rle(poly, img["height"], img["width"])
        dets.append(det)

    for ann in gt["annotations"]:
        img = images[ann["image_id"]]
        for _ in range(int(rng.integers(1, 4))):
            x, y, w, h = ann["bbox"]
            dx, dy = rng.normal(0, 0.08, 2) * [w, h]
            sw, sh = np.exp(rng.normal(0, 0.1, 2))
            cat = ann["category_id"] if rng.random() < 0.8 else int(rng.choice(cat_ids))
            poly = (np.asarray(ann["segmentation"][0]).reshape(-1, 2) + [dx, dy]).ravel()
            add(img, cat, [x + dx, y + dy, w * sw, h * sh], poly.tolist())
    crowded = set(rng.choice([img["id"] for img in gt["images"]], crowded_images, replace=False))
    for img in gt["images"]:
        n_fp = int(rng.integers(350, 600)) if img["id"] in crowded else int(rng.integers(0, 40))
        present = {a["category_id"] for a in gt["annotations"] if a["image_id"] == img["id"]}
        pool = sorted(present) + list(img["neg_category_ids"]) + cat_ids[:5]
        for _ in range(n_fp):
            w = float(rng.uniform(3, img["width"] / 2))
            h = float(rng.uniform(3, img["height"] / 2))
            x = float(rng.uniform(0, img["width"] - w))
            y = float(rng.uniform(0, img["height"] - h))
            add(img, int(rng.choice(pool)), [x, y, w, h], _polygon(rng, x, y, w, h))
    for det in dets[::97]:  # degenerate but legal boxes
        det["bbox"][2] = 0.0
    order = rng.permutation(len(dets))
    return [dets[i] for i in order]


def fixture_detections(gt: dict[str, Any], seed: int = 2) -> list[dict[str, Any]]:
    """Detections for the real LVIS fixture: jittered boxes of its annotations (some with a
    random category), masks from its polygons, plus random false positives."""
    rng = np.random.default_rng(seed)
    images = {img["id"]: img for img in gt["images"]}
    cat_ids = [c["id"] for c in gt["categories"]]
    dets = []
    for ann in gt["annotations"]:
        img = images[ann["image_id"]]
        h_img, w_img = img["height"], img["width"]
        for _ in range(int(rng.integers(1, 4))):
            x, y, w, h = ann["bbox"]
            dx, dy = rng.normal(0, 0.1, 2) * [w, h]
            cat = ann["category_id"] if rng.random() < 0.7 else int(rng.choice(cat_ids))
            polys = [
                (np.asarray(p).reshape(-1, 2) + [dx, dy]).ravel().tolist()
                for p in ann["segmentation"]
            ]
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, h_img, w_img))
            rle["counts"] = rle["counts"].decode("ascii")
            dets.append({"image_id": img["id"], "category_id": cat, "score": float(rng.random()),
                         "bbox": [x + dx, y + dy, w, h], "segmentation": rle})  # fmt: skip
    for img in gt["images"]:
        cats = list(img["neg_category_ids"]) + [int(c) for c in rng.choice(cat_ids, 20)]
        for cat in cats:
            w = float(rng.uniform(5, img["width"] / 2))
            h = float(rng.uniform(5, img["height"] / 2))
            x = float(rng.uniform(0, img["width"] - w))
            y = float(rng.uniform(0, img["height"] - h))
            dets.append({"image_id": img["id"], "category_id": int(cat),
                         "score": float(rng.random()), "bbox": [x, y, w, h],
                         "segmentation": _rle(_polygon(rng, x, y, w, h), img["height"], img["width"])})  # fmt: skip
    return dets


@contextlib.contextmanager
def lvis_api() -> Iterator[Any]:
    """lvis-api 0.5.3, with numpy's removed ``np.float`` alias and the root logger restored after."""
    had_float = hasattr(np, "float")
    np.float = float  # noqa: NPY001 -- lvis 0.5.3 uses the alias removed in numpy 1.24
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import lvis

        yield lvis
    finally:
        if not had_float:
            del np.float  # noqa: NPY001
        root.handlers[:] = handlers
        root.setLevel(level)


def reference_lvis(
    gt_path: Path, results: list[dict[str, Any]], iou_type: str, tmp_path: Path, max_dets: int = 300
) -> dict[str, Any]:
    """Evaluate with lvis-api 0.5.3; returns its summary plus per-category AP and ARr/c/f
    computed from its own precision and recall arrays."""
    with lvis_api() as lvis:
        res_path = tmp_path / f"ref_results_{iou_type}_{max_dets}.json"
        res_path.write_text(json.dumps(results))
        lvis_gt = lvis.LVIS(str(gt_path))
        lvis_dt = lvis.LVISResults(lvis_gt, str(res_path), max_dets=max_dets)
        ev = lvis.LVISEval(lvis_gt, lvis_dt, iou_type)
        ev.run()
    out = {key.split("@")[0]: float(value) for key, value in ev.results.items()}
    precision = ev.eval["precision"][:, :, :, 0]  # [T, R, K] at area "all"
    recall = ev.eval["recall"][:, :, 0]  # [T, K]
    out["per_category"] = {}
    for k, cat_id in enumerate(ev.params.cat_ids):
        p = precision[:, :, k]
        out["per_category"][int(cat_id)] = float(np.mean(p[p > -1])) if (p > -1).any() else -1.0
    for group, name in zip(ev.freq_groups, ("ARr", "ARc", "ARf")):
        r = recall[:, group]
        out[name] = float(np.mean(r[r > -1])) if (r > -1).any() else -1.0
    return out


def reference_top_k_per_class(dets: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """Keep each class's k best by score, ties in list order, written independently."""
    ranked = sorted(range(len(dets)), key=lambda i: (dets[i]["category_id"], -dets[i]["score"], i))
    seen: dict[int, int] = {}
    keep = set()
    for i in ranked:
        cat = dets[i]["category_id"]
        seen[cat] = seen.get(cat, 0) + 1
        if seen[cat] <= k:
            keep.add(i)
    return [d for i, d in enumerate(dets) if i in keep]


def reference_pooled(
    gt_path: Path, results: list[dict[str, Any]], iou_type: str, tmp_path: Path
) -> dict[str, float]:
    """AP-pooled from lvis-api's own per-image matching (no per-image cap, area "all"),
    pooled here with plain Python: one ranked list per group of categories."""
    with lvis_api() as lvis:
        res_path = tmp_path / f"ref_pooled_{iou_type}.json"
        res_path.write_text(json.dumps(results))
        lvis_gt = lvis.LVIS(str(gt_path))
        ev = lvis.LVISEval(lvis_gt, lvis.LVISResults(lvis_gt, str(res_path), max_dets=-1),
                           iou_type)  # fmt: skip
        ev.params.max_dets = -1
        ev.params.area_rng = [ev.params.area_rng[0]]
        ev.params.area_rng_lbl = ["all"]
        ev.evaluate()
    freq = {c["id"]: c["frequency"] for c in lvis_gt.dataset["categories"]}
    num_imgs = len(ev.params.img_ids)
    rec_thrs = list(ev.params.rec_thrs)
    out = {}
    for name, group in (("AP-pooled", None), ("AP-pooled-r", "r"), ("AP-pooled-c", "c"),
                        ("AP-pooled-f", "f")):  # fmt: skip
        cats = [k for k, c in enumerate(ev.params.cat_ids) if group in (None, freq[c])]
        entries = [ev.eval_imgs[k * num_imgs + i] for i in range(num_imgs) for k in cats]
        entries = [e for e in entries if e is not None]
        num_gt = sum(int(g == 0) for e in entries for g in e["gt_ignore"])
        if num_gt == 0:
            out[name] = -1.0
            continue
        values = []
        for t in range(len(ev.params.iou_thrs)):
            ranked = [(-s, n, bool(e["dt_matches"][t][j]), bool(e["dt_ignore"][t][j]))
                      for n, (e, j) in enumerate((e, j) for e in entries
                                                 for j in range(len(e["dt_scores"])))
                      for s in [e["dt_scores"][j]]]  # fmt: skip
            ranked.sort(key=lambda r: (r[0], r[1]))
            tp = fp = 0
            recall, precision = [], []
            for _, _, hit, ignored in ranked:
                tp += hit and not ignored
                fp += (not hit) and not ignored
                recall.append(tp / num_gt)
                precision.append(tp / (tp + fp + np.spacing(1)))
            for i in range(len(precision) - 2, -1, -1):
                precision[i] = max(precision[i], precision[i + 1])
            for thr in rec_thrs:
                first = next((i for i, r in enumerate(recall) if r >= thr), None)
                values.append(0.0 if first is None else precision[first])
        out[name] = float(np.mean(values))
    return out
