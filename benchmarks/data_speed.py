"""DataLoader throughput of the LVIS training pipeline: what crosses the worker boundary, and
how fast one worker makes it.

The images of ``tests/fixtures/lvis_v0.5_val_100.json`` (the first 100 LVIS v0.5 validation
images, with their real polygons) are generated as JPEGs of the listed sizes under a
temporary folder (smooth random colour fields plus grain, so that they compress like photos);
nothing is downloaded. Each case runs in its own process, iterating one DataLoader
(2 images per batch, the LVIS configs' training transforms: short side 640-800, long side at
most 1333, horizontal flip, polygons decoded to masks) for ``--epochs`` epochs, with
persistent workers:

- ``loce float32``: ``data.train_image_dtype=float32`` (images leave the workers as float32);
- ``loce uint8``: the default (uint8, normalised on the model's device);
- ``mmdet``: MMDetection 3.x's own LVIS training pipeline (``LoadImageFromFile``,
  ``LoadAnnotations(with_bbox, with_mask)``, ``RandomChoiceResize`` over (1333, 640..800),
  ``RandomFlip(0.5)``, ``PackDetInputs``) on the same files, when ``--mmdet-python`` names an
  interpreter where ``import mmdet`` works. mmcv's transforms are pure Python, but
  ``mmdet.structures.mask`` imports ``mmcv.ops.roi_align`` at import time; without the
  compiled ops (``mmcv-lite``) that module is replaced by one whose every function raises, so
  that a compiled op the pipeline did call would fail the run rather than pass unnoticed.

Reported per case and epoch: images per second, per worker, CPU seconds of the process and
its workers (user + system) beside the wall time, and the mean bytes per item that cross the
boundary (image; masks; the rest). Epoch 1 includes starting the workers; later epochs reuse
them. Cases alternate within each round, so that the load of a shared machine falls on all.

    python benchmarks/data_speed.py                         # loce float32 / uint8, ~2 min
    python benchmarks/data_speed.py --mmdet-python /tmp/mmvenv/bin/python   # ~3 min
    python benchmarks/data_speed.py --workers 1 2 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ANN = ROOT / "tests" / "fixtures" / "lvis_v0.5_val_100.json"
CONFIG = "mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v0.5"
BATCH = 2
MMDET_SCALES = [(1333, s) for s in (640, 672, 704, 736, 768, 800)]


# -------------------------------------------------------------------------- the files


def make_images(ann_file: Path, root: Path, seed: int = 0, limit: int | None = None) -> int:
    """A JPEG of each listed image's size and ``file_name`` under ``root`` (the first ``limit``
    images only, when given); returns the count."""
    import numpy as np
    from PIL import Image

    images = json.loads(ann_file.read_text())["images"][:limit]
    rng = np.random.default_rng(seed)
    for info in images:
        h, w = int(info["height"]), int(info["width"])
        coarse = rng.uniform(0, 255, (h // 32 + 2, w // 32 + 2, 3)).astype(np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.int16)
        grain = rng.normal(0, 12, (h, w, 3))
        pixels = np.clip(field + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / info["file_name"], quality=90)
    return len(images)


# -------------------------------------------------------------------------- measuring


def _tick() -> float:
    return float(os.sysconf("SC_CLK_TCK"))


def _live_children_cpu() -> float:
    """User + system CPU seconds of this process's running children (the workers)."""
    total = 0.0
    for task in Path("/proc/self/task").iterdir():
        try:
            pids = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / _tick()  # utime, stime
    return total


def cpu_seconds() -> float:
    """This process, its running children and its finished ones: user + system seconds."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + done.ru_utime + done.ru_stime + _live_children_cpu()


def _nbytes(value: Any) -> int:
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0


def measure(loader, epochs: int, set_epoch, split) -> list[dict[str, float]]:
    """Iterate ``loader`` ``epochs`` times; ``split(batch) -> [(image, masks, rest) bytes]``."""
    rows = []
    for epoch in range(epochs):
        set_epoch(epoch)
        items, sizes = 0, []
        c0, t0 = cpu_seconds(), time.perf_counter()
        for batch in loader:
            parts = split(batch)
            items += len(parts)
            sizes.extend(parts)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        rows.append({"epoch": epoch + 1, "images": items, "wall_s": wall, "cpu_s": cpu,
                     "images_per_s": items / wall,
                     "image_bytes": statistics.fmean(s[0] for s in sizes),
                     "mask_bytes": statistics.fmean(s[1] for s in sizes),
                     "other_bytes": statistics.fmean(s[2] for s in sizes)})  # fmt: skip
    return rows


# -------------------------------------------------------------------------- the cases


def run_loce(images: Path, dtype: str, workers: int, epochs: int) -> list[dict[str, float]]:
    from loce import build
    from loce.config import load_config

    cfg = load_config(CONFIG, [f"data.train_ann={ANN}", f"data.train_images={images}",
                               f"data.workers={workers}", f"data.train_image_dtype={dtype}",
                               f"data.images_per_gpu={BATCH}", "model.backbone_weights=none"])  # fmt: skip
    dataset = build.build_train_dataset(cfg)
    loader = build.train_loader(cfg, dataset, 0, 1)

    def split(batch):
        return [(_nbytes(image), _nbytes(target.get("masks")),
                 _nbytes({k: v for k, v in target.items() if k != "masks"}))
                for image, target in zip(*batch, strict=True)]  # fmt: skip

    return measure(loader, epochs, loader.batch_sampler.set_epoch, split)


def _without_compiled_ops() -> None:
    """``mmcv.ops`` and ``mmcv.ops.roi_align`` as modules whose every attribute raises when
    called (mmcv-lite ships no compiled ops; the training transforms call none)."""
    import types

    def refuse(*args, **kwargs):
        raise RuntimeError("a compiled mmcv op was called; install mmcv with its ops")

    class NoOps(types.ModuleType):
        def __getattr__(self, name: str):
            if name.startswith("__"):
                raise AttributeError(name)
            return refuse

    try:
        import mmcv.ops  # noqa: F401
    except (ImportError, ModuleNotFoundError):
        for name in ("mmcv.ops", "mmcv.ops.roi_align"):
            sys.modules[name] = NoOps(name)


def mmdet_infos(ann_file: Path, images: Path) -> list[dict[str, Any]]:
    """MMDetection's LVIS data infos (as its ``LVISV05Dataset.parse_data_info`` builds them)
    for the images with at least one usable annotation."""
    data = json.loads(ann_file.read_text())
    cat2label = {c["id"]: i for i, c in enumerate(sorted(data["categories"],
                                                         key=lambda c: c["id"]))}  # fmt: skip
    per_image: dict[int, list[dict[str, Any]]] = {}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        if a.get("area", 1) <= 0 or w < 1 or h < 1:
            continue
        per_image.setdefault(a["image_id"], []).append(
            {"bbox": [x, y, x + w, y + h], "bbox_label": cat2label[a["category_id"]],
             "ignore_flag": 0, "mask": a["segmentation"]})  # fmt: skip
    return [{"img_path": str(images / i["file_name"]), "img_id": i["id"], "height": i["height"],
             "width": i["width"], "instances": per_image[i["id"]]}
            for i in data["images"] if i["id"] in per_image]  # fmt: skip


def run_mmdet(images: Path, workers: int, epochs: int) -> list[dict[str, float]]:
    import copy

    import torch

    _without_compiled_ops()
    import mmdet.datasets.transforms  # noqa: F401  (registers mmdet's transforms)
    from mmcv.transforms import Compose
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")
    pipeline = Compose([
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
        dict(type="RandomChoiceResize", scales=MMDET_SCALES, keep_ratio=True),
        dict(type="RandomFlip", prob=0.5),
        dict(type="PackDetInputs"),
    ])  # fmt: skip
    infos = mmdet_infos(ANN, images)

    class Items(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(infos)

        def __getitem__(self, i: int):
            return pipeline(copy.deepcopy(infos[i]))

    loader = torch.utils.data.DataLoader(Items(), batch_size=BATCH, shuffle=True,
                                         num_workers=workers, persistent_workers=workers > 0,
                                         collate_fn=list,
                                         generator=torch.Generator().manual_seed(0))  # fmt: skip

    def split(batch):
        out = []
        for item in batch:
            gt = item["data_samples"].gt_instances
            masks = gt.masks.masks
            out.append((_nbytes(item["inputs"]), masks.nbytes,
                        _nbytes([gt.bboxes.tensor, gt.labels])))  # fmt: skip
        return out

    return measure(loader, epochs, lambda epoch: None, split)


# -------------------------------------------------------------------------- driver


def _case_main(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)  # one thread per process, as in DataLoader workers
    if args.case == "mmdet":
        rows = run_mmdet(args.images, args.workers, args.epochs)
        import mmcv
        import mmdet

        versions = f"MMDetection {mmdet.__version__}, mmcv {mmcv.__version__}"
    else:
        rows = run_loce(args.images, args.case, args.workers, args.epochs)
        import loce

        versions = f"loce {loce.__version__}"
    print(json.dumps({"rows": rows, "versions": f"{versions}, torch {torch.__version__}"}))
    return 0


def _run_case(python: str, case: str, images: Path, workers: int,
              epochs: int) -> dict[str, Any] | str:  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}  # fmt: skip
    proc = subprocess.run([python, __file__, "--case", case, "--images", str(images),
                           "--workers", str(workers), "--epochs", str(epochs)],
                          capture_output=True, text=True, env=env, timeout=900)  # fmt: skip
    if proc.returncode != 0:
        return proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
    return json.loads(proc.stdout.strip().splitlines()[-1])


LABELS = {"float32": "loce float32", "uint8": "loce uint8", "mmdet": "mmdet"}


def _table(results: dict[tuple[str, int], list[list[dict[str, float]]]]) -> list[str]:
    lines = ["| case | workers | epoch | images/s | per worker | wall s | CPU s | CPU s / image "
             "| image MB | masks MB | other kB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for (case, workers), rounds in results.items():
        for e in range(len(rounds[0])):
            rows = [r[e] for r in rounds]
            ips = statistics.median(r["images_per_s"] for r in rows)
            wall = statistics.median(r["wall_s"] for r in rows)
            cpu = statistics.median(r["cpu_s"] for r in rows)
            r = rows[0]
            lines.append(
                f"| {LABELS[case]} | {workers} | {r['epoch']} | {ips:.2f} | "
                f"{ips / max(workers, 1):.2f} | {wall:.1f} | {cpu:.1f} | {cpu / r['images']:.3f} | "
                f"{r['image_bytes'] / 1e6:.2f} | {r['mask_bytes'] / 1e6:.2f} | "
                f"{r['other_bytes'] / 1e3:.2f} |")  # fmt: skip
    return lines


def _ratios(results, workers_list: list[int], epochs: int) -> list[str]:
    lines = ["| workers | epoch | against | images/s ratio | CPU s ratio | image bytes ratio "
             "| item bytes ratio |", "|---:|---:|---|---:|---:|---:|---:|"]  # fmt: skip

    def med(case, w, e, key):
        return statistics.median(r[e][key] for r in results[(case, w)])

    def item(case, w, e):
        return sum(med(case, w, e, k) for k in ("image_bytes", "mask_bytes", "other_bytes"))

    for w in workers_list:
        for e in range(epochs):
            for other in ("float32", "mmdet"):
                if (other, w) not in results:
                    continue
                lines.append(
                    f"| {w} | {e + 1} | loce uint8 / {LABELS[other]} | "
                    f"{med('uint8', w, e, 'images_per_s') / med(other, w, e, 'images_per_s'):.2f} | "
                    f"{med('uint8', w, e, 'cpu_s') / med(other, w, e, 'cpu_s'):.2f} | "
                    f"{med('uint8', w, e, 'image_bytes') / med(other, w, e, 'image_bytes'):.2f} | "
                    f"{item('uint8', w, e) / item(other, w, e):.2f} |")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1],
                        help="DataLoader workers per case, one run each (default: 1)")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=2, help="epochs per case (default 2)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of all cases (medians)")
    parser.add_argument("--mmdet-python", default=None,
                        help="a Python interpreter where `import mmdet` works (MMDetection 3.x)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "data_speed")
    parser.add_argument("--case", choices=["float32", "uint8", "mmdet"], help=argparse.SUPPRESS)
    parser.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case is not None:
        args.workers = args.workers[0]
        return _case_main(args)
    start = time.perf_counter()
    notes: list[str] = []
    versions: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="loce_data_speed_") as tmp:
        images = Path(tmp)
        count = make_images(ANN, images)
        jpeg_mb = sum(p.stat().st_size for p in images.iterdir()) / 1e6
        cases = [(sys.executable, "float32"), (sys.executable, "uint8")]
        if args.mmdet_python:
            cases.append((args.mmdet_python, "mmdet"))
        results: dict[tuple[str, int], list[list[dict[str, float]]]] = {}
        for _ in range(args.rounds):
            for workers in args.workers:
                for python, case in cases:
                    got = _run_case(python, case, images, workers, args.epochs)
                    if isinstance(got, str):
                        notes.append(f"{LABELS[case]} with {workers} worker(s) failed: {got}")
                        continue
                    rows = got["rows"]
                    versions[case] = got["versions"]
                    results.setdefault((case, workers), []).append(rows)
                    last = rows[-1]
                    print(f"{LABELS[case]:<13} workers={workers} epoch {last['epoch']}: "
                          f"{last['images_per_s']:.2f} images/s, {last['cpu_s']:.1f} CPU s, "
                          f"{last['wall_s']:.1f} s", flush=True)  # fmt: skip
    if not args.mmdet_python:
        notes.append("mmdet: not run (no --mmdet-python)")
    notes += [f"{LABELS[case]}: {v}" for case, v in versions.items()]
    if "mmdet" in versions:
        notes.append("mmdet: mmcv without compiled ops; `mmcv.ops`, imported by "
                     "`mmdet.structures.mask`, replaced by a module whose functions raise "
                     "(none was called)")
    results = {k: v for k, v in results.items() if len(v) == args.rounds}
    header = [
        f"# DataLoader throughput ({count} LVIS v0.5 val images with their polygons, "
        f"generated JPEGs, {jpeg_mb:.1f} MB)", "",
        f"`python benchmarks/data_speed.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
        f" on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{args.rounds} round(s), {BATCH} images per batch, medians. "
        "CPU s: user + system of the process and its workers. Epoch 1 includes starting the "
        "workers; later epochs reuse them (persistent). Wall time follows the machine's "
        "other load (this one may be shared); CPU seconds per image are the steadier "
        "figure.", "",
    ]  # fmt: skip
    body = _table(results)
    if ("uint8", args.workers[0]) in results:
        have = [w for w in args.workers if ("uint8", w) in results]
        body += ["", *_ratios(results, have, args.epochs)]
    text = "\n".join(header + body + [""] + [f"- {n}" for n in notes]) + "\n"
    print()
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    payload = {"machine": {"processor": platform.processor(), "cpus": os.cpu_count(),
                           "python": platform.python_version()},
               "seconds": time.perf_counter() - start, "notes": notes,
               "results": [{"case": c, "workers": w, "rounds": r}
                           for (c, w), r in results.items()]}  # fmt: skip
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {args.out.with_suffix('.md')} ({payload['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
