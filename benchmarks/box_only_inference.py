"""Inference time with and without the mask branch, at a given number of detections per image.

Box-only prediction (``predict_to_file(..., with_masks=False)``, used by box-only evaluation
such as ``eval.iou_types=[bbox]``) skips the mask head; this measures what that saves against
the full prediction in the same run, on the first images of the validation set of a trained
checkpoint's config.

    python benchmarks/box_only_inference.py --checkpoint runs/demo/control/checkpoints/epoch_1.pth
    python benchmarks/box_only_inference.py --checkpoint CKPT --detections 50 --images 50
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from loce import build
from loce.demo import data_overrides
from loce.engine.checkpoint import load_trained_model
from loce.engine.evaluate import predict_to_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", default="data/synthetic", help="synthetic dataset folder")
    parser.add_argument("--detections", type=int, default=300, help="detections per image")
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model, cfg, _ = load_trained_model(
        args.checkpoint, [*data_overrides(Path(args.data)),
                          f"model.test.detections_per_img={args.detections}"])
    dataset = build.build_val_dataset(cfg)
    n = min(args.images, len(dataset))
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.rounds):
        for with_masks in (True, False):
            t0 = time.perf_counter()
            predict_to_file(model, dataset, "/tmp/box_only_inference.json", device=torch.device("cpu"),
                            indices=range(n), with_masks=with_masks, workers=0, progress=False)
            times[with_masks].append(time.perf_counter() - t0)
    full, boxes = statistics.median(times[True]), statistics.median(times[False])
    print(f"{n} images, {args.detections} detections per image, CPU {torch.get_num_threads()} "
          f"threads, median of {args.rounds}")
    print(f"boxes and masks: {full:.2f} s ({1000 * full / n:.0f} ms per image)")
    print(f"boxes only:      {boxes:.2f} s ({1000 * boxes / n:.0f} ms per image)")
    print(f"boxes only is {full / boxes:.1f}x faster")


if __name__ == "__main__":
    main()
