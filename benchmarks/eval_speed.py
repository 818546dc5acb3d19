"""Speed and memory of LVIS evaluation: loce against raw hotcoco and lvis-api, same files.

Generates LVIS-scale data (1,203 categories with LVIS v1's r/c/f split, ~12 annotations with
polygon masks per image, federated negative and not-exhaustive lists, 300 detections per
image), writes it as LVIS json files, and evaluates the same files with:

- ``loce``: :func:`loce.evaluation.evaluate_lvis` (validation, standard protocol);
- ``hotcoco``: the engine called directly, no validation (``COCO`` → ``load_res`` → cap at
  300 per image → ``COCOeval`` in LVIS mode) — the floor loce is measured against;
- ``lvis-api``: the reference ``lvis`` 0.5.3 (slow; on ``--ref-images`` images only);
- ``loce-fixed`` / ``loce-pooled``: the AP-fixed and AP-pooled protocols;
- ``json.load``: Python's parser on the results file alone.

Every evaluation runs in a child of its own measuring process, which reports the child's CPU
seconds (user + sys) and peak resident memory from ``getrusage(RUSAGE_CHILDREN)``: the whole
process, interpreter start and imports included. ``eval_cpu_s`` is the CPU time of the
evaluation call alone (files in, metrics out), measured inside the child; ``wall_s`` its wall
time, which on a shared machine swings by several times.

Usage::

    python benchmarks/eval_speed.py                       # full size (about 20 minutes)
    python benchmarks/eval_speed.py --images 2000 --ref-images 300 --segm-images 2000 \\
        --segm-ref-images 100                             # quick look

Writes ``benchmarks/results/eval_speed.json`` and ``benchmarks/results/eval_speed.md``.
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
POOLED_KEYS = ("AP-pooled", "AP-pooled-r", "AP-pooled-c", "AP-pooled-f")


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


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(kind: str, gt: str, results: str, iou_type: str) -> dict[str, Any]:
    """One evaluation; returns its CPU and wall seconds, metrics and detection count."""
    start, wall = _cpu(), time.perf_counter()
    out: dict[str, Any] = {}
    if kind == "json.load":
        with open(results, "rb") as f:
            out["detections"] = len(json.load(f))
    elif kind in ("loce", "loce-fixed", "loce-pooled"):
        import warnings

        from loce.evaluation import evaluate_lvis

        protocol = {"loce": "standard", "loce-fixed": "fixed", "loce-pooled": "pooled"}[kind]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # categories short of 10,000 detections
            res = evaluate_lvis(gt, results, iou_type, protocol=protocol)
        keys = POOLED_KEYS if protocol == "pooled" else SUMMARY_KEYS
        out["metrics"] = {k: res[k] for k in keys}
        out["detections"] = res["params"]["num_detections"]
    elif kind == "hotcoco":
        import hotcoco

        coco = hotcoco.COCO(gt)
        dt = coco.load_res(results).cap_detections_per_image(DETS_PER_IMAGE)
        ev = hotcoco.COCOeval(coco, dt, iou_type, lvis_style=True)
        ev.evaluate()
        ev.accumulate()
        ev.summary_lines()
        out["metrics"] = {k.split("@")[0]: float(v) for k, v in ev.get_results().items()}
        out["detections"] = len(dt.get_ann_ids())
    elif kind == "lvis-api":
        np.float = float  # noqa: NPY001 -- lvis 0.5.3 on numpy >= 1.24
        import logging

        import lvis

        logging.getLogger().setLevel(logging.WARNING)
        ev = lvis.LVISEval(gt, results, iou_type)
        ev.run()
        out["metrics"] = {k.split("@")[0]: float(v) for k, v in ev.get_results().items()}
    else:
        raise ValueError(f"unknown worker kind {kind!r}")
    out["eval_cpu_s"] = _cpu() - start
    out["wall_s"] = time.perf_counter() - wall
    return out


def measure(kind: str, gt: str, results: str, iou_type: str) -> dict[str, Any]:
    """Run one worker as this process's only child; add its whole-process CPU and peak RSS."""
    cmd = [sys.executable, __file__, "--worker", kind, "--gt", gt, "--results", results,
           "--iou-type", iou_type]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} {iou_type} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["process_cpu_s"] = usage.ru_utime + usage.ru_stime
    out["peak_rss_gb"] = usage.ru_maxrss * 1024 / 1e9  # Linux reports KiB
    return out


def run_worker(kind: str, gt: Path, results: Path, iou_type: str) -> dict[str, Any]:
    """:func:`measure` in a fresh process, so that RUSAGE_CHILDREN covers one evaluation."""
    cmd = [sys.executable, __file__, "--measure", kind, "--gt", str(gt), "--results",
           str(results), "--iou-type", iou_type]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} {iou_type} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def _max_difference(a: dict[str, float], b: dict[str, float]) -> float:
    return max(abs(a[k] - b[k]) for k in SUMMARY_KEYS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20_000, help="images, boxes")
    parser.add_argument("--ref-images", type=int, default=2_000,
                        help="images for the lvis-api comparison, boxes")  # fmt: skip
    parser.add_argument("--segm-images", type=int, default=20_000, help="images, masks")
    parser.add_argument("--segm-ref-images", type=int, default=300,
                        help="images for the lvis-api comparison, masks")  # fmt: skip
    parser.add_argument("--iou-types", nargs="+", default=["bbox", "segm"],
                        choices=["bbox", "segm"])  # fmt: skip
    parser.add_argument("--no-per-class", action="store_true",
                        help="skip the fixed and pooled protocols")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="where to write the data (default: a temp dir)")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the generated files in --workdir and reuse them next time")  # fmt: skip
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "eval_speed.json")  # fmt: skip
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--gt", help=argparse.SUPPRESS)
    parser.add_argument("--results", help=argparse.SUPPRESS)
    parser.add_argument("--iou-type", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.gt, args.results, args.iou_type)))
        return 0
    if args.measure:
        print(json.dumps(measure(args.measure, args.gt, args.results, args.iou_type)))
        return 0

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="loce_eval_speed_")
        args.workdir = Path(tmp.name)
    rows: list[dict[str, Any]] = []

    def record(iou_type: str, n_img: int, kind: str, files: tuple[Path, Path]) -> dict[str, Any]:
        result = run_worker(kind, *files, iou_type)
        row = {"iou_type": iou_type, "images": n_img, "impl": kind,
               "eval_cpu_s": round(result["eval_cpu_s"], 2),
               "process_cpu_s": round(result["process_cpu_s"], 2),
               "wall_s": round(result["wall_s"], 2),
               "peak_rss_gb": round(result["peak_rss_gb"], 2),
               "results_file_mb": round(files[1].stat().st_size / 1e6, 1),
               "detections_evaluated": result.get("detections")}  # fmt: skip
        if "metrics" in result:
            row["metrics"] = result["metrics"]
        rows.append(row)
        print(f"  {kind:<11} {iou_type:<5} {n_img:>6} images: {row['process_cpu_s']:>7.2f} "
              f"CPU-s ({row['eval_cpu_s']:.2f} in the call, {row['wall_s']:.2f} s wall), "
              f"peak {row['peak_rss_gb']:.2f} GB", flush=True)  # fmt: skip
        return row

    comparisons: list[dict[str, Any]] = []

    def compare(iou_type: str, n_img: int, ours: dict, base: dict) -> None:
        c = {"iou_type": iou_type, "images": n_img, "against": base["impl"],
             "cpu_ratio": ours["process_cpu_s"] / base["process_cpu_s"],
             "eval_cpu_ratio": ours["eval_cpu_s"] / base["eval_cpu_s"],
             "memory_ratio": ours["peak_rss_gb"] / base["peak_rss_gb"],
             "loce_peak_rss_gb": ours["peak_rss_gb"],
             "max_metric_difference": _max_difference(ours["metrics"], base["metrics"])}  # fmt: skip
        comparisons.append(c)
        print(f"  loce / {base['impl']}: {c['cpu_ratio']:.2f}x CPU ({c['eval_cpu_ratio']:.2f}x in "
              f"the call), {c['memory_ratio']:.2f}x memory, max metric difference "
              f"{c['max_metric_difference']:.1e}", flush=True)  # fmt: skip

    for iou_type in args.iou_types:
        masks = iou_type == "segm"
        sizes = [args.segm_ref_images if masks else args.ref_images,
                 args.segm_images if masks else args.images]  # fmt: skip
        for k, n_img in enumerate(dict.fromkeys(sizes)):
            folder = args.workdir / f"{iou_type}_{n_img}_seed{args.seed}"
            done = folder / "complete"
            if args.keep_data and done.exists():
                files = (folder / "gt.json", folder / "results.json")
                print(f"[{iou_type}] reusing {n_img} images in {folder}", flush=True)
            else:
                print(f"[{iou_type}] generating {n_img} images ...", flush=True)
                t = time.perf_counter()
                files = generate(n_img, folder, args.seed, masks)
                done.touch()
                print(f"  generated in {time.perf_counter() - t:.1f} s", flush=True)
            ours = record(iou_type, n_img, "loce", files)
            compare(iou_type, n_img, ours, record(iou_type, n_img, "hotcoco", files))
            if k == 0:
                compare(iou_type, n_img, ours, record(iou_type, n_img, "lvis-api", files))
            if k == len(dict.fromkeys(sizes)) - 1:
                if not args.no_per_class:
                    record(iou_type, n_img, "loce-fixed", files)
                    record(iou_type, n_img, "loce-pooled", files)
                record(iou_type, n_img, "json.load", files)
            if not args.keep_data:
                for path in (*files, done):
                    path.unlink()

    table = [
        "| IoU | impl | images | file MB | CPU-s (process) | CPU-s (call) | wall s | peak GB | AP |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        metrics = r.get("metrics", {})
        ap = metrics.get("AP", metrics.get("AP-pooled"))
        table.append(f"| {r['iou_type']} | {r['impl']} | {r['images']} | {r['results_file_mb']} | "
                     f"{r['process_cpu_s']:.1f} | {r['eval_cpu_s']:.1f} | {r['wall_s']:.1f} | "
                     f"{r['peak_rss_gb']:.2f} | {'' if ap is None else f'{ap:.4f}'} |")  # fmt: skip
    table += ["", "| IoU | images | loce against | CPU ratio (process) | CPU ratio (call) | "
              "memory ratio | loce peak GB | max metric difference |",
              "|---|---:|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for c in comparisons:
        table.append(f"| {c['iou_type']} | {c['images']} | {c['against']} | {c['cpu_ratio']:.2f} | "
                     f"{c['eval_cpu_ratio']:.2f} | {c['memory_ratio']:.2f} | "
                     f"{c['loce_peak_rss_gb']:.2f} | {c['max_metric_difference']:.1e} |")  # fmt: skip
    print("\n" + "\n".join(table))
    payload = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                 if k not in ("worker", "measure", "gt", "results", "iou_type")},
        "rows": rows,
        "comparisons": comparisons,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(table) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
