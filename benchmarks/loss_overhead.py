"""Cost of each classification loss per training step, relative to cross-entropy, in one run.

Builds the synthetic CPU preset's Mask R-CNN (ResNet-18-FPN) with ``K`` classes (default the
LVIS v1 count, 1203, where the losses cost most) once per loss, and times full training steps
(forward, backward, SGD step) on the same fixed random batches. Losses are measured in
alternating rounds so that machine load affects all alike; the table gives the median step
time and its ratio to cross-entropy. Class statistics follow a long tail (Zipf) over ``K``.

The peer losses train the whole model (end to end). LOCE is a fine-tune with the feature
extractor frozen (its memory needs fixed features), so it is compared with the same fine-tune
in cross-entropy (``finetune_ce_*``, the LOCE recipe's trainable layers): ``loce_eql_only``
is the Equilibrium Loss with its score tracking and no memory, ``loce`` adds Memory-augmented
Feature Sampling from a memory filled to capacity beforehand (as after the initialisation
pass).

    python benchmarks/loss_overhead.py                  # K = 1203, 2 rounds x 4 steps
    python benchmarks/loss_overhead.py --classes 48 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from loce import build
from loce.config import load_config
from loce.demo import CONTROL, LOCE
from loce.engine.freeze import configure_trainable
from loce.losses import LOSS_NAMES
from loce.models import ClassStatistics, build_mask_rcnn

PRESET = "mask_rcnn_r18_fpn_normed_mask_synthetic"


def _batches(k: int, n: int, size: int = 224, per_image: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        images, targets = [], []
        for _ in range(4):
            images.append(torch.rand(3, size, size, generator=g))
            xy = torch.rand(per_image, 2, generator=g) * size * 0.6
            wh = 20 + torch.rand(per_image, 2, generator=g) * size * 0.3
            boxes = torch.cat([xy, xy + wh], 1).clamp(max=size - 1)
            masks = torch.zeros(per_image, size, size, dtype=torch.uint8)
            for i, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
                masks[i, y1:y2, x1:x2] = 1
            targets.append({"boxes": boxes, "masks": masks,
                            "labels": torch.randint(1, k + 1, (per_image,), generator=g)})
        out.append((images, targets))
    return out


def _fill_memory(memory, k: int) -> None:
    """Fill every class queue to capacity with random features."""
    cap = memory.capacity
    labels = torch.arange(1, k + 1).repeat_interleave(cap)
    for chunk in labels.split(8192):
        memory.push(torch.randn(len(chunk), *memory.feature_shape), chunk,
                    torch.randn(len(chunk), 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, default=1203)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/loss_overhead.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    k = args.classes
    counts = [max(1, round(1000 / (i + 1))) for i in range(k)]  # Zipf-like long tail
    stats = ClassStatistics(image_counts=tuple(counts), instance_counts=tuple(2 * c for c in counts),
                            num_images=2000, source="zipf")
    # The Equilibrium Loss needs LOCE's head (mean scores): it is timed in the fine-tune rows.
    names = [n for n in LOSS_NAMES if n != "equilibrium"]
    models = {}
    for name in names:
        cfg = load_config(PRESET, [f"model.roi.cls_loss={name}"]).model
        torch.manual_seed(0)
        models[name] = build_mask_rcnn(cfg, k, class_stats=stats)
    finetunes = {"finetune_ce": (CONTROL, []), "loce_eql_only": (LOCE, ["loce.feature_memory=false"]),
                 "loce": (LOCE, [])}
    for name, (config, overrides) in finetunes.items():
        cfg = load_config(config, overrides)
        torch.manual_seed(0)
        model = build.build_model(cfg, k, load_backbone=False, class_stats=stats)
        configure_trainable(model, cfg)
        heads = model.roi_heads
        if getattr(heads, "use_feature_memory", False):
            _fill_memory(heads.memory_for("cpu"), k)
        models[name] = model
        names.append(name)
    batches = _batches(k, args.steps + 1)
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            model = models[name]
            model.train()
            opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)
            for i, (images, targets) in enumerate(batches):
                t0 = time.perf_counter()
                loss = sum(model(images, targets).values())
                opt.zero_grad()
                loss.backward()
                opt.step()
                if i > 0:
                    times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["cross_entropy"])
    base_ft = statistics.median(times["finetune_ce"])
    rows = {n: {"step_s": statistics.median(t),
                "ratio_vs_ce": statistics.median(t) / (base_ft if n in finetunes else base),
                "baseline": "finetune_ce" if n in finetunes else "cross_entropy"}
            for n, t in times.items()}
    print(f"K = {k}, ResNet-18-FPN synthetic preset, 4 images of 224 px per step, "
          f"CPU {args.threads} threads, median of {args.rounds} x {args.steps} steps")
    print(f"{'loss':<15}{'step s':>9}{'ratio vs CE':>13}  baseline")
    for n, r in rows.items():
        print(f"{n:<15}{r['step_s']:>9.3f}{r['ratio_vs_ce']:>13.3f}  {r['baseline']}")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"classes": k, "threads": args.threads, "rows": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
