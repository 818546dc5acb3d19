"""Speed and memory of LVIS evaluation: ``loce.evaluation.evaluate_lvis`` against lvis-api.

Generates LVIS-scale data (1,203 categories with LVIS v1's r/c/f split, ~12 annotations with
polygon masks per image, federated negative and not-exhaustive lists, 300 detections per
image), writes it as LVIS json files, and evaluates the same files with both. Every
evaluation runs in its own subprocess, so its peak resident memory (Linux ``VmHWM``) is its
own; times cover the evaluation call (files in, metrics out), not the interpreter start.

Rows:

- ``loce`` and ``lvis-api`` on ``--ref-images`` images (the reference is slow and needs ~1.2 GB
  per 1,000 images), with the speed ratio and the largest metric difference;
- ``loce`` on ``--images`` images (LVIS v1 val has 19,809): the standard protocol, the fixed
  protocol, and ``json.load`` of the results file alone (what any Python-side parse costs);
- the same for masks on ``--segm-images`` / ``--segm-ref-images``.

Usage::

    python benchmarks/eval_speed.py                       # full size (several minutes)
    python benchmarks/eval_speed.py --images 2000 --ref-images 300 --segm-images 300 \\
        --segm-ref-images 100                             # quick look

Writes ``benchmarks/results/eval_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

NUM_CATEGORIES = 1203
LVIS_V1_GROUPS = {"r": 337, "c": 461, "f": 405}  # categories per frequency group in LVIS v1
DETS_PER_IMAGE = 300
ANNS_PER_IMAGE = 12.3  # LVIS v1 val: 244,707 annotations on 19,809 images
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf",
                "AR", "ARs", "ARm", "ARl")  # fmt: skip


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


def _star_polygons(rng: np.random.Generator, boxes: np.ndarray) -> np.ndarray:
    """``[N, 16]`` star-shaped 8-vertex polygons inside ``[N, 4]`` xywh boxes."""
    n = boxes.shape[0]
    angles = np.sort(rng.uniform(0, 2 * np.pi, (n, 8)), axis=1)
    radius = rng.uniform(0.6, 1.0, (n, 8))
    x, y, w, h = (boxes[:, i : i + 1] for i in range(4))
    px = x + w / 2 + np.cos(angles) * radius * w / 2
    py = y + h / 2 + np.sin(angles) * radius * h / 2
    return np.stack([px, py], axis=2).reshape(n, 16).round(2)


def _random_boxes(rng: np.random.Generator, heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Boxes from ~4 to ~half the image side, log-uniform, inside the image."""
    w = np.exp(rng.uniform(np.log(4), np.log(widths / 2)))
    h = np.exp(rng.uniform(np.log(4), np.log(heights / 2)))
    x = rng.uniform(0, 1, w.shape) * (widths - w)
    y = rng.uniform(0, 1, h.shape) * (heights - h)
    return np.stack([x, y, w, h], axis=1).round(2)


def generate(num_images: int, out_dir: Path, seed: int, masks: bool) -> tuple[Path, Path]:
    """Write ``gt.json`` and ``results.json`` for ``num_images`` images; returns their paths."""
    import pycocotools.mask as mask_utils

    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    freqs = np.repeat(list(LVIS_V1_GROUPS), list(LVIS_V1_GROUPS.values()))
    categories = [
        {"id": k + 1, "name": f"category_{k + 1}", "frequency": str(freqs[k]),
         "image_count": 1, "instance_count": 1, "synonyms": [], "def": ""}
        for k in range(NUM_CATEGORIES)
    ]  # fmt: skip
    # Frequent categories (highest ids here) are the most common, as in LVIS.
    weights = 1.0 / np.arange(NUM_CATEGORIES, 0, -1) ** 0.8
    weights /= weights.sum()

    heights = rng.integers(240, 641, num_images)
    widths = rng.integers(320, 641, num_images)
    n_ann = rng.poisson(ANNS_PER_IMAGE, num_images)
    ann_img = np.repeat(np.arange(num_images), n_ann)
    ann_cat = rng.choice(NUM_CATEGORIES, ann_img.shape[0], p=weights) + 1
    ann_box = _random_boxes(rng, heights[ann_img], widths[ann_img])
    ann_poly = _star_polygons(rng, ann_box)
    ann_area = np.empty(ann_img.shape[0])
    ann_start = np.r_[0, np.cumsum(n_ann)]
    for i in range(num_images):  # exact polygon areas, one C call per image
        lo, hi = ann_start[i], ann_start[i + 1]
        if hi > lo:
            rles = mask_utils.frPyObjects(ann_poly[lo:hi].tolist(), int(heights[i]), int(widths[i]))
            # A tiny polygon may cover no pixel; LVIS has no empty annotation.
            ann_area[lo:hi] = np.maximum(mask_utils.area(rles), 1)

    images = []
    for i in range(num_images):
        present = set(ann_cat[ann_start[i] : ann_start[i + 1]].tolist())
        neg = [int(c) for c in rng.choice(NUM_CATEGORIES, 12, replace=False) + 1 if c not in present]
        not_exhaustive = sorted(c for c in present if rng.random() < 0.1)
        images.append({"id": i + 1, "height": int(heights[i]), "width": int(widths[i]),
                       "coco_url": f"http://images.example/{i + 1:012d}.jpg",
                       "neg_category_ids": neg, "not_exhaustive_category_ids": not_exhaustive})  # fmt: skip
    annotations = [
        {"id": j + 1, "image_id": int(ann_img[j]) + 1, "category_id": int(ann_cat[j]),
         "bbox": ann_box[j].tolist(), "area": float(ann_area[j]),
         "segmentation": [ann_poly[j].tolist()]}
        for j in range(ann_img.shape[0])
    ]  # fmt: skip
    gt_path = out_dir / "gt.json"
    gt_path.write_text(json.dumps({"images": images, "annotations": annotations,
                                   "categories": categories}))  # fmt: skip
    del images, annotations

    # Detections: half are jittered annotations of their image (sometimes with a wrong
    # category), the rest random boxes of random categories.
    n_det = num_images * DETS_PER_IMAGE
    det_img = np.repeat(np.arange(num_images), DETS_PER_IMAGE)
    from_gt = (rng.random(n_det) < 0.5) & (n_ann[det_img] > 0)
    src = ann_start[det_img] + (rng.random(n_det) * np.maximum(n_ann[det_img], 1)).astype(int)
    src = np.minimum(src, max(ann_img.shape[0] - 1, 0))
    det_box = _random_boxes(rng, heights[det_img], widths[det_img])
    det_cat = rng.choice(NUM_CATEGORIES, n_det, p=weights) + 1
    if ann_img.shape[0]:
        jitter = ann_box[src] * (1 + rng.normal(0, 0.1, (n_det, 4)))
        jitter[:, 2:] = np.maximum(jitter[:, 2:], 1.0)
        det_box = np.where(from_gt[:, None], jitter.round(2), det_box)
        keep_cat = from_gt & (rng.random(n_det) < 0.8)
        det_cat = np.where(keep_cat, ann_cat[src], det_cat)
    det_score = rng.random(n_det).round(5)

    res_path = out_dir / "results.json"
    with res_path.open("w") as f:
        f.write("[")
        for i in range(num_images):
            lo, hi = i * DETS_PER_IMAGE, (i + 1) * DETS_PER_IMAGE
            counts = None
            if masks:
                polys = _star_polygons(rng, det_box[lo:hi]).tolist()
                rles = mask_utils.frPyObjects(polys, int(heights[i]), int(widths[i]))
                counts = [r["counts"].decode("ascii") for r in rles]
            parts = []
            for j in range(lo, hi):
                x, y, w, h = det_box[j].tolist()
                text = (f'{{"image_id":{i + 1},"category_id":{int(det_cat[j])},'
                        f'"bbox":[{x},{y},{w},{h}],"score":{det_score[j]}')  # fmt: skip
                if counts is not None:
                    text += (f',"segmentation":{{"size":[{int(heights[i])},{int(widths[i])}],'
                             f'"counts":{json.dumps(counts[j - lo])}}}')  # fmt: skip
                parts.append(text + "}")
            f.write(("," if i else "") + ",".join(parts))
        f.write("]")
    return gt_path, res_path


# --------------------------------------------------------------------------------------
# Workers (each runs in its own process)
# --------------------------------------------------------------------------------------


def _peak_gb() -> float:
    """Peak resident memory of this process in GB.

    Linux's ``VmHWM`` is this program's own peak; ``ru_maxrss`` would also count the parent's
    memory at the fork that started the worker.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def worker(kind: str, gt: str, results: str, iou_type: str) -> dict[str, Any]:
    if kind == "json":
        start = time.perf_counter()
        with open(results, "rb") as f:
            n = len(json.load(f))
        return {"seconds": time.perf_counter() - start, "peak_gb": _peak_gb(), "detections": n}
    if kind in ("loce", "loce-fixed"):
        from loce.evaluation import evaluate_lvis

        start = time.perf_counter()
        protocol = "fixed" if kind == "loce-fixed" else "standard"
        out = evaluate_lvis(gt, results, iou_type, protocol=protocol)
        seconds = time.perf_counter() - start
        metrics = {k: out[k] for k in SUMMARY_KEYS}
        return {"seconds": seconds, "peak_gb": _peak_gb(), "metrics": metrics,
                "detections": out["params"]["num_detections"]}  # fmt: skip
    if kind == "loce-steps":
        # Where the time of the standard box route goes, step by step (internal API).
        import hotcoco

        from loce.evaluation import load_ground_truth
        from loce.evaluation.results import scan_results_file

        steps = {}
        start = time.perf_counter()
        truth = load_ground_truth(gt)
        steps["load ground truth"] = time.perf_counter() - start
        t = time.perf_counter()
        scan_results_file(results)
        steps["screen results file"] = time.perf_counter() - t
        t = time.perf_counter()
        dt = truth.coco.load_res(results)
        steps["engine parses results"] = time.perf_counter() - t
        t = time.perf_counter()
        dt = dt.cap_detections_per_image(DETS_PER_IMAGE)
        steps["cap per image"] = time.perf_counter() - t
        t = time.perf_counter()
        ev = hotcoco.COCOeval(truth.coco, dt, iou_type, lvis_style=True)
        ev.evaluate()
        steps["engine matches"] = time.perf_counter() - t
        t = time.perf_counter()
        ev.accumulate()
        ev.summary_lines()
        steps["engine accumulates"] = time.perf_counter() - t
        return {"seconds": time.perf_counter() - start, "peak_gb": _peak_gb(),
                "steps": {k: round(v, 2) for k, v in steps.items()}}  # fmt: skip
    if kind == "lvis-api":
        np.float = float  # noqa: NPY001 -- lvis 0.5.3 on numpy >= 1.24
        import logging

        import lvis

        logging.getLogger().setLevel(logging.WARNING)
        start = time.perf_counter()
        ev = lvis.LVISEval(gt, results, iou_type)
        ev.run()
        seconds = time.perf_counter() - start
        metrics = {k.split("@")[0]: float(v) for k, v in ev.get_results().items()}
        return {"seconds": seconds, "peak_gb": _peak_gb(), "metrics": metrics}
    raise ValueError(f"unknown worker kind {kind!r}")


def run_worker(kind: str, gt: Path, results: Path, iou_type: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", kind, "--gt", str(gt), "--results",
           str(results), "--iou-type", iou_type]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} {iou_type} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_seconds"] = time.perf_counter() - start
    return out


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20_000, help="images for loce alone")
    parser.add_argument("--ref-images", type=int, default=2_000, help="images for the comparison")
    parser.add_argument("--segm-images", type=int, default=2_000, help="images for loce, masks")
    parser.add_argument("--segm-ref-images", type=int, default=300,
                        help="images for the mask comparison")  # fmt: skip
    parser.add_argument("--iou-types", nargs="+", default=["bbox", "segm"],
                        choices=["bbox", "segm"])  # fmt: skip
    parser.add_argument("--no-fixed", action="store_true", help="skip the fixed protocol row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="where to write the data (default: a temp dir)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "eval_speed.json")  # fmt: skip
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--gt", help=argparse.SUPPRESS)
    parser.add_argument("--results", help=argparse.SUPPRESS)
    parser.add_argument("--iou-type", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.gt, args.results, args.iou_type)))
        return 0

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="loce_eval_speed_")
        args.workdir = Path(tmp.name)
    rows: list[dict[str, Any]] = []

    def record(iou_type: str, n_img: int, kind: str, result: dict[str, Any], files: tuple) -> None:
        row = {"iou_type": iou_type, "images": n_img, "detections": n_img * DETS_PER_IMAGE,
               "impl": kind, "seconds": round(result["seconds"], 2),
               "process_seconds": round(result["process_seconds"], 2),
               "peak_gb": round(result["peak_gb"], 2),
               "results_file_mb": round(files[1].stat().st_size / 1e6, 1)}  # fmt: skip
        if "metrics" in result:
            row["AP"] = result["metrics"]["AP"]
        rows.append(row)
        print(f"  {kind:<11} {iou_type:<5} {n_img:>6} images: {row['seconds']:>7.2f} s, "
              f"peak {row['peak_gb']:.2f} GB", flush=True)  # fmt: skip

    comparisons: dict[str, dict[str, Any]] = {}
    breakdowns: dict[str, dict[str, float]] = {}
    for iou_type in args.iou_types:
        masks = iou_type == "segm"
        n_ref = args.segm_ref_images if masks else args.ref_images
        n_big = args.segm_images if masks else args.images
        print(f"[{iou_type}] generating {n_ref} images ...", flush=True)
        t = time.perf_counter()
        small = generate(n_ref, args.workdir / f"{iou_type}_{n_ref}", args.seed, masks)
        print(f"  generated in {time.perf_counter() - t:.1f} s", flush=True)
        ours = run_worker("loce", *small, iou_type)
        record(iou_type, n_ref, "loce", ours, small)
        ref = run_worker("lvis-api", *small, iou_type)
        record(iou_type, n_ref, "lvis-api", ref, small)
        diff = max(abs(ours["metrics"][k] - ref["metrics"][k]) for k in SUMMARY_KEYS)
        comparisons[iou_type] = {"images": n_ref, "speedup": ref["seconds"] / ours["seconds"],
                                 "memory_ratio": ref["peak_gb"] / ours["peak_gb"],
                                 "max_metric_difference": diff}  # fmt: skip
        print(f"  lvis-api / loce: {comparisons[iou_type]['speedup']:.1f}x time, "
              f"max metric difference {diff:.1e}", flush=True)  # fmt: skip
        if n_big != n_ref:
            print(f"[{iou_type}] generating {n_big} images ...", flush=True)
            t = time.perf_counter()
            big = generate(n_big, args.workdir / f"{iou_type}_{n_big}", args.seed, masks)
            print(f"  generated in {time.perf_counter() - t:.1f} s", flush=True)
            record(iou_type, n_big, "loce", run_worker("loce", *big, iou_type), big)
            if iou_type == "bbox":
                steps = run_worker("loce-steps", *big, iou_type)
                breakdowns[f"{iou_type}@{n_big}"] = steps["steps"]
                print("  steps: " + ", ".join(f"{k} {v:.2f} s" for k, v in steps["steps"].items()),
                      flush=True)  # fmt: skip
        else:
            big = small
        if not args.no_fixed:
            record(iou_type, n_big, "loce-fixed", run_worker("loce-fixed", *big, iou_type), big)
        record(iou_type, n_big, "json.load", run_worker("json", *big, iou_type), big)
        for path in {*small, *big}:
            path.unlink()

    header = (f"{'iou':<5} {'impl':<11} {'images':>7} {'dets':>9} {'file MB':>8} "
              f"{'eval s':>8} {'peak GB':>8} {'AP':>8}")  # fmt: skip
    print("\n" + header)
    for r in rows:
        ap = f"{r['AP']:.4f}" if "AP" in r else ""
        print(f"{r['iou_type']:<5} {r['impl']:<11} {r['images']:>7} {r['detections']:>9} "
              f"{r['results_file_mb']:>8} {r['seconds']:>8.2f} {r['peak_gb']:>8.2f} {ap:>8}")  # fmt: skip
    for iou_type, c in comparisons.items():
        print(f"{iou_type}: lvis-api takes {c['speedup']:.1f}x the time and "
              f"{c['memory_ratio']:.1f}x the memory of loce on {c['images']} images; "
              f"largest metric difference {c['max_metric_difference']:.1e}")  # fmt: skip
    for name, steps in breakdowns.items():
        print(f"loce {name} by step: " + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items()))
    payload = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                 if k not in ("worker", "gt", "results", "iou_type")},
        "rows": rows,
        "comparisons": comparisons,
        "steps": breakdowns,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
