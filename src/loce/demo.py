"""The demo a new user runs first (``make demo`` / ``loce demo``).

On a laptop CPU, in one command:

1. generate the synthetic long-tailed dataset (``loce synth``) unless it is already there;
2. train the stage-1 Mask R-CNN (``mask_rcnn_r18_fpn_normed_mask_synthetic``) and evaluate it;
3. fine-tune it with LOCE (``loce_mask_rcnn_r18_fpn_normed_mask_synthetic``) and, as the
   control that separates LOCE from mere extra training, with the same fine-tune in plain
   cross-entropy and no memory (``finetune_ce_mask_rcnn_r18_fpn_normed_mask_synthetic``);
4. print box and mask AP, APr, APc and APf of the three, where the runs and predictions
   are, and plot per-class AP against the number of training images and LOCE's mean
   classification scores before and after the fine-tune.

Every step resumes: running the demo again after an interruption continues where it stopped,
and a finished step is not repeated.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

HELP = "Generate the synthetic long-tailed dataset, train and evaluate a detector on the CPU."

STAGE1 = "mask_rcnn_r18_fpn_normed_mask_synthetic"
CONTROL = "finetune_ce_mask_rcnn_r18_fpn_normed_mask_synthetic"
LOCE = "loce_mask_rcnn_r18_fpn_normed_mask_synthetic"
TABLE_KEYS = ("AP", "APr", "APc", "APf")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="where the runs go (default runs/demo)")
    parser.add_argument("--data", default="data/synthetic",
                        help="synthetic dataset folder (generated if missing)")
    parser.add_argument("--preset", default="default", choices=["tiny", "default"],
                        help="synthetic dataset preset (default: default)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of every run's config (repeatable)")
    parser.add_argument("--stage1-only", action="store_true",
                        help="stop after stage 1 (no fine-tunes)")


def ensure_dataset(root: Path, preset: str) -> dict[str, Any]:
    from loce.data.synthetic import PRESETS, generate

    summary = root / "summary.json"
    if summary.is_file() and (root / "annotations" / "val.json").is_file():
        print(f"[demo] using the synthetic dataset in {root}")
        return json.loads(summary.read_text())
    print(f"[demo] generating the synthetic dataset ({preset}) in {root} ...")
    t0 = time.perf_counter()
    info = generate(root, PRESETS[preset], overwrite=root.exists(), progress=True)
    print(f"[demo] dataset ready in {time.perf_counter() - t0:.0f} s")
    return info


def data_overrides(root: Path) -> list[str]:
    return [
        f"data.train_ann={root / 'annotations' / 'train.json'}",
        f"data.train_images={root}",
        f"data.val_ann={root / 'annotations' / 'val.json'}",
        f"data.val_images={root}",
    ]


def run_stage(name: str, config: str, out: Path, overrides: list[str]) -> dict[str, Any]:
    """Train (or resume, or reuse) one run; returns its final metrics."""
    from loce.config import load_config
    from loce.engine.train import train

    run_dir = out / name
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        print(f"[demo] {name}: already done ({run_dir})")
        return json.loads(metrics_file.read_text())
    cfg = load_config(config, [*overrides, f"train.output_dir={run_dir}"])
    print(f"[demo] {name}: training {config} into {run_dir} ...")
    t0 = time.perf_counter()
    metrics = train(cfg, resume=True).metrics
    print(f"[demo] {name}: done in {(time.perf_counter() - t0) / 60:.1f} min")
    return metrics


def format_table(rows: dict[str, dict[str, Any]]) -> str:
    """Box and mask AP, APr, APc, APf (percent) per run."""
    head = f"{'run':<14}" + "".join(f"{'box ' + k:>9}" for k in TABLE_KEYS) + \
        "".join(f"{'mask ' + k:>10}" for k in TABLE_KEYS)
    lines = [head, "-" * len(head)]
    for name, m in rows.items():
        cells = [f"{100 * float(m['bbox'][k]):>9.1f}" for k in TABLE_KEYS]
        cells += [f"{100 * float(m['segm'][k]):>10.1f}" for k in TABLE_KEYS]
        lines.append(f"{name:<14}" + "".join(cells))
    return "\n".join(lines)


def final_checkpoint(run_dir: Path) -> Path:
    from loce.engine.checkpoint import find_last_checkpoint

    last = find_last_checkpoint(run_dir / "checkpoints")
    if last is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir / 'checkpoints'}")
    return last


def _plot_scores(out: Path, data: Path) -> Path | None:
    """LOCE's mean scores after the initialisation pass and at the end of the fine-tune."""
    import torch

    from loce.evaluation.plots import plot_mean_scores

    init_file = out / "loce" / "mean_scores_init.json"
    if not init_file.is_file():
        return None
    before = json.loads(init_file.read_text())["scores"][1:]
    state = torch.load(final_checkpoint(out / "loce"), map_location="cpu", weights_only=False)
    key = next(k for k in state["model"] if k.endswith("score_tracker.scores"))
    after = state["model"][key].tolist()[1:]
    train = json.loads((data / "annotations" / "train.json").read_text())
    counts = [c["image_count"] for c in sorted(train["categories"], key=lambda c: c["id"])]
    return plot_mean_scores({"after the initialisation pass (stage-1 model)": before,
                             "after the LOCE fine-tune": after}, counts,
                            out / "mean_scores.png")


def run(args: argparse.Namespace) -> int:
    from loce.evaluation.plots import plot_ap_vs_frequency

    t0 = time.perf_counter()
    out = Path(args.out)
    data = Path(args.data)
    ensure_dataset(data, args.preset)
    overrides = [*data_overrides(data), *args.overrides]
    rows = {"stage 1": run_stage("stage1", STAGE1, out, overrides)}
    if not args.stage1_only:
        init = [f"train.init_from={final_checkpoint(out / 'stage1')}"]
        rows["CE fine-tune"] = run_stage("control", CONTROL, out, [*overrides, *init])
        rows["LOCE"] = run_stage("loce", LOCE, out, [*overrides, *init])

    print()
    print(format_table(rows))
    val = json.loads((data / "annotations" / "val.json").read_text())
    plot = plot_ap_vs_frequency(
        {name: m["bbox"].get("per_category", {}) for name, m in rows.items()},
        val["categories"], out / "ap_vs_frequency.png",
        title="box AP per class vs training images (synthetic long tail)",
    )
    scores_plot = None if args.stage1_only else _plot_scores(out, data)
    print()
    runs = ", ".join(str(out / d) for d in ("stage1", "control", "loce")[: len(rows)])
    print(f"runs:        {runs}  (config.yaml, metrics.jsonl, checkpoints/, metrics.json)")
    print("predictions: <run>/eval_epoch_*/predictions.json")
    print(f"plots:       {plot}" + (f", {scores_plot}" if scores_plot else ""))
    print(f"total time:  {(time.perf_counter() - t0) / 60:.1f} min")
    return 0


def main(argv: list[str] | None = None) -> int:
    from loce.cli import main as cli_main

    return cli_main(["demo", *(argv or [])])


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
