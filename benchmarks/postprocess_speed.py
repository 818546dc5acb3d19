"""LVIS-scale box post-processing: StepwiseRoIHeads (fast path) vs torchvision's RoIHeads.

Same inputs to both, in one run: K classes x P proposals per image, score threshold 1e-4,
class-wise NMS 0.5, 300 detections. Two score regimes:

* ``flat``: logits with std 0.5, so nearly every (proposal, class) pair passes 1e-4 (an
  untrained or early model; the worst case);
* ``peaked``: logits with std 4, fewer pairs pass (closer to a trained model).

Prints one JSON object (and writes it with ``--out``): per regime the number of candidate
pairs, median seconds per image of each path, the speed ratio and whether the two paths
returned the same set of detections.

    python benchmarks/postprocess_speed.py [--classes 1203] [--proposals 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import boxes as box_ops

from loce.models.roi_heads import StepwiseRoIHeads


def make_heads(num_classes: int, score_thresh: float, nms: float, dets: int) -> StepwiseRoIHeads:
    # Box modules are not used by postprocess_detections; tiny placeholders.
    return StepwiseRoIHeads(
        MultiScaleRoIAlign(["0"], 7, 2), TwoMLPHead(4, 4), FastRCNNPredictor(4, num_classes + 1),
        0.5, 0.5, 512, 0.25, None, score_thresh, nms, dets,
        det_min_size=1e-2,  # torchvision's value, so both paths must agree exactly
    )


def make_inputs(num_classes: int, num_props: int, std: float, seed: int, size: int):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_props, num_classes + 1, generator=g) * std
    deltas = torch.randn(num_props, 4 * (num_classes + 1), generator=g) * 0.2
    xy = torch.rand(num_props, 2, generator=g) * size * 0.8
    wh = torch.rand(num_props, 2, generator=g) * size * 0.3 + 4
    return logits, deltas, [torch.cat([xy, xy + wh], 1)], [(size, size)]


def threshold_then_nms(heads: StepwiseRoIHeads, logits, deltas, props, shapes):
    """Ablation: threshold, decode only the kept pairs, one batched NMS over all of them
    (no top-k prefix). Shows how much of the gain comes from skipping the full decode."""
    scores = torch.softmax(logits, -1)[:, 1:]
    pairs = torch.where(scores > heads.score_thresh)
    labels = pairs[1] + 1
    boxes = heads.box_coder.decode_single(
        deltas.reshape(deltas.shape[0], -1, 4)[pairs[0], labels], props[0][pairs[0]]
    )
    boxes = box_ops.clip_boxes_to_image(boxes, shapes[0])
    kept_scores = scores[pairs]
    ok = box_ops.remove_small_boxes(boxes, 1e-2)
    boxes, kept_scores, labels = boxes[ok], kept_scores[ok], labels[ok]
    keep = box_ops.batched_nms(boxes, kept_scores, labels, heads.nms_thresh)[: heads.detections_per_img]
    return [boxes[keep]], [kept_scores[keep]], [labels[keep]]


def as_set(boxes, scores, labels) -> set:
    return {
        (int(label), round(float(score), 6), tuple(round(float(v), 2) for v in box))
        for box, score, label in zip(boxes, scores, labels)
    }


def timed(fn, inputs: tuple, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*inputs)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=1203)
    parser.add_argument("--proposals", type=int, default=1000)
    parser.add_argument("--size", type=int, default=800, help="image side in pixels")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stock-repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    heads = make_heads(args.classes, 1e-4, 0.5, 300).eval()
    report: dict = {"classes": args.classes, "proposals": args.proposals, "size": args.size,
                    "threads": args.threads, "regimes": {}}
    for name, std in (("flat", 0.5), ("peaked", 4.0)):
        inputs = make_inputs(args.classes, args.proposals, std, 0, args.size)
        with torch.no_grad():
            candidates = int((torch.softmax(inputs[0], -1)[:, 1:] > 1e-4).sum())
            fast_s, fast = timed(heads.postprocess_detections, inputs, args.repeat)
            stock_s, stock = timed(RoIHeads.postprocess_detections, (heads, *inputs), args.stock_repeat)
            ablation_s, ablation = timed(threshold_then_nms, (heads, *inputs), args.stock_repeat)
        same = as_set(*(t[0] for t in fast)) == as_set(*(t[0] for t in stock))
        report["regimes"][name] = {
            "candidates": candidates,
            "detections": int(fast[0][0].shape[0]),
            "stock_s": round(stock_s, 4),
            "threshold_then_nms_s": round(ablation_s, 4),
            "fast_s": round(fast_s, 4),
            "speedup": round(stock_s / fast_s, 1),
            "same_detections": same,
            "ablation_same_detections": as_set(*(t[0] for t in ablation))
            == as_set(*(t[0] for t in stock)),
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
