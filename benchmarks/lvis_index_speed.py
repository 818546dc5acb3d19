"""Time and memory of loading, validating and indexing an LVIS-v1-sized annotation file.

Writes a synthetic LVIS v1 file (default: 100,000 images, 1,270,000 annotations with a box and
an 8-point polygon each, 1203 categories; about the size of LVIS v1 train less its longer
polygons), then, in a fresh process, measures:

* ``json.load`` of the file (Python's parser; the same for every JSON-based loader);
* validation + indexing (:class:`loce.data.lvis.LVISIndex` from the parsed dict);
* resident memory: before, peak, and after the parsed JSON is released (the index keeps
  compact numpy arrays only), plus the index's own array bytes;
* lazy per-item work: polygon look-up and pycocotools mask decoding for random images.

Usage::

    python benchmarks/lvis_index_speed.py                       # LVIS v1 train scale
    python benchmarks/lvis_index_speed.py --images 10000 --annotations 127000
    python benchmarks/lvis_index_speed.py --json-out result.json

Needs about 4 GB of free memory at the default size.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def _rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def write_synthetic(path: str, n_images: int, n_anns: int, n_cats: int, seed: int) -> None:
    """Stream a synthetic LVIS v1 annotation file to ``path``."""
    rng = np.random.default_rng(seed)
    widths = rng.integers(300, 641, n_images)
    heights = rng.integers(300, 641, n_images)
    ann_img = np.sort(rng.integers(0, n_images, n_anns))
    # long-tailed categories: Zipf-like draw
    p = 1.0 / np.arange(1, n_cats + 1)
    ann_cat = rng.choice(n_cats, n_anns, p=p / p.sum()) + 1
    w_i, h_i = widths[ann_img], heights[ann_img]
    bw = rng.uniform(0.05, 0.5, n_anns) * w_i
    bh = rng.uniform(0.05, 0.5, n_anns) * h_i
    x = rng.uniform(0, 1, n_anns) * (w_i - bw)
    y = rng.uniform(0, 1, n_anns) * (h_i - bh)
    # octagon inscribed in the box
    t = np.array([0.3, 0.7, 1.0, 1.0, 0.7, 0.3, 0.0, 0.0])
    u = np.array([0.0, 0.0, 0.3, 0.7, 1.0, 1.0, 0.7, 0.3])
    px = x[:, None] + t[None] * bw[:, None]
    py = y[:, None] + u[None] * bh[:, None]
    poly = np.empty((n_anns, 16))
    poly[:, 0::2], poly[:, 1::2] = px, py
    poly = np.round(poly, 2)
    freq = np.where(
        np.arange(n_cats) < n_cats // 3,
        "f",
        np.where(np.arange(n_cats) < 2 * n_cats // 3, "c", "r"),
    )
    with open(path, "w") as f:
        f.write('{"info": {}, "licenses": [], "categories": [')
        f.write(
            ",".join(
                json.dumps(
                    {
                        "id": c + 1,
                        "name": f"class_{c + 1}",
                        "frequency": str(freq[c]),
                        "synset": f"class_{c + 1}.n.01",
                        "image_count": 0,
                        "instance_count": 0,
                    }
                )
                for c in range(n_cats)
            )
        )
        f.write('], "images": [')
        f.write(
            ",".join(
                f'{{"id": {i + 1}, "width": {int(widths[i])}, "height": {int(heights[i])}, '
                f'"coco_url": "http://images.cocodataset.org/train2017/{i + 1:012d}.jpg", '
                f'"neg_category_ids": [], "not_exhaustive_category_ids": []}}'
                for i in range(n_images)
            )
        )
        f.write('], "annotations": [')
        seg_fmt = ",".join(["%.2f"] * 16)
        chunk = []
        for a in range(n_anns):
            seg = seg_fmt % tuple(poly[a])
            chunk.append(
                f'{{"id": {a + 1}, "image_id": {int(ann_img[a]) + 1}, "category_id": '
                f'{int(ann_cat[a])}, "bbox": [{x[a]:.2f}, {y[a]:.2f}, {bw[a]:.2f}, {bh[a]:.2f}], '
                f'"area": {bw[a] * bh[a] * 0.82:.2f}, "segmentation": [[{seg}]]}}'
            )
            if len(chunk) == 100_000:
                f.write(("," if a >= 100_000 else "") + ",".join(chunk))
                chunk = []
        if chunk:
            f.write(("," if n_anns > len(chunk) else "") + ",".join(chunk))
        f.write("]}")


def measure(path: str) -> dict[str, float]:
    """Load + index ``path`` in this (fresh) process and report time and memory."""
    from loce.data.lvis import LVISDataset, LVISIndex, load_lvis_json

    out: dict[str, float] = {"file_mb": os.path.getsize(path) / 2**20}
    out["rss_start_mb"] = _rss_mb()
    t0 = time.perf_counter()
    data = load_lvis_json(path)
    out["json_load_s"] = time.perf_counter() - t0
    out["rss_after_json_mb"] = _rss_mb()
    t0 = time.perf_counter()
    index = LVISIndex.from_json(data, source=path)
    out["validate_and_index_s"] = time.perf_counter() - t0
    del data
    gc.collect()
    out["rss_after_index_mb"] = _rss_mb()
    out["rss_peak_mb"] = _rss_mb("VmHWM")
    nbytes = sum(v.nbytes for v in vars(index).values() if isinstance(v, np.ndarray))
    out["index_array_mb"] = nbytes / 2**20
    out["num_images"] = index.num_images
    out["num_annotations"] = index.num_annotations

    t0 = time.perf_counter()
    ds = LVISDataset(index, os.path.dirname(path), train=True)
    out["dataset_init_s"] = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    items = rng.integers(0, len(ds), 200)
    t0 = time.perf_counter()
    n_masks = 0
    for i in items.tolist():
        n_masks += len(ds.get_target(i)["masks"])
    out["target_with_masks_ms_per_image"] = (time.perf_counter() - t0) / len(items) * 1000
    out["masks_per_image"] = n_masks / len(items)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--annotations", type=int, default=1_270_000)
    ap.add_argument("--categories", type=int, default=1203)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", help="also write the numbers to this JSON file")
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # internal: child process
    args = ap.parse_args(argv)

    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "lvis_synthetic.json")
        t0 = time.perf_counter()
        write_synthetic(path, args.images, args.annotations, args.categories, args.seed)
        gen_s = time.perf_counter() - t0
        child = subprocess.run(
            [sys.executable, __file__, "--measure", path],
            check=True,
            capture_output=True,
            text=True,
        )
        res = json.loads(child.stdout.strip().splitlines()[-1])
    res["generate_s"] = gen_s
    print(
        f"synthetic LVIS v1 file: {res['num_images']:,} images, "
        f"{res['num_annotations']:,} annotations, {res['file_mb']:.0f} MB "
        f"(written in {gen_s:.1f} s)"
    )
    print(f"json.load                 {res['json_load_s']:8.2f} s")
    print(f"validate + index          {res['validate_and_index_s']:8.2f} s")
    print(f"dataset init (clip boxes) {res['dataset_init_s']:8.2f} s")
    print(
        f"RSS start / after json.load / peak: {res['rss_start_mb']:.0f} / "
        f"{res['rss_after_json_mb']:.0f} / {res['rss_peak_mb']:.0f} MB"
    )
    print(
        f"RSS after index, parsed JSON released: {res['rss_after_index_mb']:.0f} MB "
        f"(index arrays {res['index_array_mb']:.0f} MB)"
    )
    print(
        f"target with masks (lazy decode): {res['target_with_masks_ms_per_image']:.2f} ms "
        f"per image ({res['masks_per_image']:.1f} masks per image)"
    )
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
