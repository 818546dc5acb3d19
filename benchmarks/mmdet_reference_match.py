"""How closely each input/NMS path reproduces the recorded MMDetection run (K = 8, R50-FPN).

Runs loce on the fixture's JPEG (tests/fixtures/mmdet_reference) with the converted reference
weights through four paths and matches each against the recorded detections and proposals
(tie-aware, same label, IoU > 0.999, |Δscore| < 1e-4; and loosely, IoU > 0.9, |Δscore| < 0.01):

* parity: the bundled LVIS v1 config (OpenCV decode + uint8 cv2 resize, mmcv's NMS);
* float path: Pillow decode + float resize, the exact per-class NMS (loce before these two
  switches);
* mmdet input: mmdet's own resized image fed as a float image, exact NMS;
* torchvision: every parity switch at torchvision's behaviour (the negative control).

Writes benchmarks/results/mmdet_reference_match[_DEVICE].json (figures, wall and CPU seconds).

    python benchmarks/mmdet_reference_match.py [--device cuda]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import mmdet_reference as ref_data  # noqa: E402
from loce.config.model import ParityConfig  # noqa: E402
from loce.evaluation.matching import match_detections  # noqa: E402
from loce.fileio import atomic_write_json  # noqa: E402
from loce.models.mmdet_weights import mmdet_to_loce_state_dict  # noqa: E402

OLD = ["data.test_resize=torch", "model.parity.nms=exact"]
PATHS = {
    "parity": ([], None, False),
    "float_path": (OLD, None, False),
    "mmdet_input_as_float": (OLD, None, True),
    "torchvision": (["data.test_resize=torch"], ParityConfig.torchvision(), False),
}


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _loose_match(run, reference) -> int:
    """Detections matched with IoU > 0.9 and |Δscore| < 0.01 (same label): how close a path
    that fails the strict test comes."""
    dets = reference["detections"]
    m = match_detections(torch.tensor([d["bbox"] for d in dets]),
                         torch.tensor([d["score"] for d in dets]), run["det"]["boxes"],
                         run["det"]["scores"], torch.tensor([d["label"] + 1 for d in dets]),
                         run["det"]["labels"], iou_threshold=0.9, score_tolerance=0.01, top_k=300)
    return m.num_matched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    reference = ref_data.load_reference()
    state, _ = mmdet_to_loce_state_dict(ref_data.build_weights(ref_data.load_spec()))
    mmdet_input = torch.from_numpy(np.asarray(Image.open(ref_data.RESIZED_INPUT)).copy())
    mmdet_input = mmdet_input.permute(2, 0, 1).float() / 255
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(ref_data.IMAGE, Path(folder) / "image.jpg")
        for name, (overrides, parity, feed_mmdet) in PATHS.items():
            cfg = ref_data.reference_config(overrides, parity)
            wall, cpu = time.perf_counter(), _cpu_seconds()
            run = ref_data.run_reference_image(cfg, state, folder, args.device,
                                               image=mmdet_input if feed_mmdet else None)
            wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
            fig = ref_data.compare_with_reference(run, reference)
            det, props = fig["detections"], fig["proposals"]
            loose = _loose_match(run, reference)
            differing, total = fig["mask_pixels"]
            results[name] = {
                "detections_matched": det.num_matched, "detections_above_cut": det.num_reference,
                "all_detections_matched": det.all_matched,
                "mask_pixels_differing": differing, "mask_pixels_compared": total,
                "proposals_matched": props.num_matched, "proposals": props.num_reference,
                "detections_matched_loosely": loose,
                "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            }
            print(f"{name:22s} detections {det.num_matched}/{det.num_reference}  mask pixels "
                  f"differing {differing}/{total}  proposals {props.num_matched}/"
                  f"{props.num_reference}  (loosely {loose}/{det.num_reference})  "
                  f"build+forward {wall:.1f} s wall, {cpu:.1f} s CPU")
    out = Path(args.out or Path(__file__).parent / "results" /
               f"mmdet_reference_match{'' if args.device == 'cpu' else '_' + args.device}.json")
    atomic_write_json(out, {"device": args.device, "torch": torch.__version__,
                            "threads": torch.get_num_threads(), "paths": results})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
