"""onnxruntime (CPU) against PyTorch (CPU) on an exported detector: images per second and
peak memory, in one run.

The model is the original's architecture with the mmdet reference weights of
``tests/mmdet_reference.py`` (R50-FPN Mask R-CNN, the LVIS v1 config, ``--classes`` K resized
from the recipe), the images LVIS-sized (640 x 480 and 480 x 640, textured). Each runtime runs
in its own process (peak resident memory is per process: the model, the session and the
activations) with the same thread count; the first image of each is a warm-up and not
timed. Writes ``benchmarks/results/export_speed.json``.

    python benchmarks/export_speed.py                 # K = 8, 4 images, 2 threads
    python benchmarks/export_speed.py --classes 1203 --images 6
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _model(classes: int):
    sys.path.insert(0, str(ROOT / "tests"))
    import mmdet_reference as ref_data
    from loce.models import build_mask_rcnn
    from loce.models.mmdet_weights import mmdet_to_loce_state_dict

    spec = ref_data.spec_for_classes(ref_data.load_spec(), classes)
    state, _ = mmdet_to_loce_state_dict(ref_data.build_weights(spec))
    cfg = ref_data.reference_config(["data.test_resize=torch"])
    model = build_mask_rcnn(cfg.model, classes, load_backbone=False)
    model.load_state_dict(state, strict=True)
    return model.eval(), cfg


def _images(count: int):
    import numpy as np

    rng = np.random.default_rng(0)
    shapes = [(480, 640, 3), (640, 480, 3)]
    return [rng.integers(0, 256, size=shapes[i % 2], dtype=np.uint8) for i in range(count + 1)]


def _worker(kind: str, onnx_file: str, classes: int, count: int, threads: int) -> None:
    """One runtime in this process: prints a JSON line of its figures."""
    import torch

    torch.set_num_threads(threads)
    from loce.inference import Detector

    if kind == "onnxruntime":
        det = Detector.from_onnx(onnx_file, threads=threads)
    else:
        model, cfg = _model(classes)
        det = Detector(model, cfg, list(range(1, classes + 1)), device="cpu")
    images = _images(count)
    det(images[0])  # warm-up
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    found = [len(det(image)) for image in images[1:]]
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    print(json.dumps({"runtime": kind, "images": count, "wall_s": round(wall, 2),
                      "cpu_s": round(cpu, 2), "images_per_s": round(count / wall, 3),
                      "peak_rss_mib": round(peak), "detections": found}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--images", type=int, default=4, help="timed images per runtime")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/export_speed.json"))
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--onnx", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.onnx, args.classes, args.images, args.threads)
        return
    import torch

    from loce.export.onnx import export_model

    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = Path(tmp) / "model.onnx"
        model, cfg = _model(args.classes)
        start = time.perf_counter()
        export_model(model, cfg, list(range(1, args.classes + 1)), None, onnx_file)
        export_s = time.perf_counter() - start
        del model
        rows = []
        for kind in ("pytorch", "onnxruntime"):
            out = subprocess.run(
                [sys.executable, __file__, "--worker", kind, "--onnx", str(onnx_file),
                 "--classes", str(args.classes), "--images", str(args.images),
                 "--threads", str(args.threads)],
                check=True, capture_output=True, text=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    result = {"model": f"R50-FPN Mask R-CNN, K = {args.classes}, mmdet reference weights",
              "images": "640x480 and 480x640, uniform noise", "threads": args.threads,
              "torch": torch.__version__, "export_s": round(export_s, 1), "runs": rows,
              "onnxruntime_over_pytorch": round(rows[1]["images_per_s"] / rows[0]["images_per_s"], 2)}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"export {export_s:.1f} s; K = {args.classes}, {args.threads} threads, "
          f"{args.images} images of 640x480 / 480x640")
    print(f"{'runtime':<12} {'images/s':>9} {'wall s':>7} {'CPU s':>7} {'peak MiB':>9}")
    for r in rows:
        print(f"{r['runtime']:<12} {r['images_per_s']:>9.3f} {r['wall_s']:>7.1f} "
              f"{r['cpu_s']:>7.1f} {r['peak_rss_mib']:>9}")
    print(f"onnxruntime / pytorch: {result['onnxruntime_over_pytorch']:.2f}x images/s")


if __name__ == "__main__":
    main()
