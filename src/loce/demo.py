"""The demo a new user runs first (``make demo`` / ``loce demo``).

On a laptop CPU, in one command:

1. generate the synthetic long-tailed dataset (``loce synth``) unless it is already there;
2. train the stage-1 Mask R-CNN (``mask_rcnn_r18_fpn_normed_mask_synthetic``);
3. at the same time, in three processes: evaluate stage 1, fine-tune it with LOCE
   (``loce_mask_rcnn_r18_fpn_normed_mask_synthetic``) and, as the control that separates LOCE
   from mere extra training, with the same fine-tune in plain cross-entropy and no memory
   (``finetune_ce_mask_rcnn_r18_fpn_normed_mask_synthetic``), each fine-tune evaluated at its
   end;
4. print box and mask AP, APr, APc and APf of the three, where the runs and predictions
   are, and plot per-class AP against the number of training images and LOCE's mean
   classification scores before and after the fine-tune.

Thread counts are fixed (``STAGE1_THREADS`` for stage 1, one per process after it) whatever
the number of cores or ``--jobs``, because the numbers depend on them; they also depend on
the CPU's instruction set and the library versions, which choose the floating-point kernels. On two
cores one thread per process costs much less CPU time than two threads sharing the work.

Every step resumes: running the demo again after an interruption continues where it stopped,
and a finished step is not repeated.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loce.commands._args import add_overrides

HELP = "Generate the synthetic long-tailed dataset, train and evaluate a detector on the CPU."

STAGE1 = "mask_rcnn_r18_fpn_normed_mask_synthetic"
CONTROL = "finetune_ce_mask_rcnn_r18_fpn_normed_mask_synthetic"
LOCE = "loce_mask_rcnn_r18_fpn_normed_mask_synthetic"
TABLE_KEYS = ("AP", "APr", "APc", "APf")
# CPU threads of the stage-1 process, and of each process after it.
STAGE1_THREADS = 2
STAGE2_THREADS = 1

logger = logging.getLogger(__name__)


def cpu_seconds(children: bool = False) -> float:
    """User + system CPU time of this process so far (all its threads), plus that of its
    finished child processes with ``children``."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = usage.ru_utime + usage.ru_stime
    if children:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        total += usage.ru_utime + usage.ru_stime
    return total


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="where the runs go (default runs/demo)")
    parser.add_argument("--data", default="data/synthetic",
                        help="synthetic dataset folder (generated if missing)")
    parser.add_argument("--preset", default="default", choices=["tiny", "default"],
                        help="synthetic dataset preset (default: default)")
    add_overrides(parser, "override a value of every run's config (repeatable)")
    parser.add_argument("--stage1-only", action="store_true",
                        help="stop after stage 1 (no fine-tunes)")
    parser.add_argument("--jobs", type=int, default=3, metavar="N",
                        help="processes for the stage-1 evaluation and the two fine-tunes "
                        "(default 3; 1: one after another in this process)")


def ensure_dataset(root: Path, preset: str) -> dict[str, Any]:
    from loce.data.synthetic.config import PRESETS
    from loce.data.synthetic.write import generate

    summary = root / "summary.json"
    if summary.is_file() and (root / "annotations" / "val.json").is_file():
        logger.info("[demo] using the synthetic dataset in %s", root)
        return json.loads(summary.read_text())
    logger.info("[demo] generating the synthetic dataset (%s) in %s ...", preset, root)
    t0 = time.perf_counter()
    info = generate(root, PRESETS[preset], overwrite=root.exists(), progress=True)
    logger.info("[demo] dataset ready in %.0f s", time.perf_counter() - t0)
    return info


def data_overrides(root: Path) -> list[str]:
    return [
        f"data.train_ann={root / 'annotations' / 'train.json'}",
        f"data.train_images={root}",
        f"data.val_ann={root / 'annotations' / 'val.json'}",
        f"data.val_images={root}",
    ]


def run_stage(name: str, config: str, out: Path, overrides: list[str]) -> dict[str, Any]:
    """Train (or resume, or reuse) one run; returns its final metrics (``{}`` when it does
    not evaluate)."""
    from loce.config import load_config
    from loce.engine.train import train

    run_dir = out / name
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        logger.info("[demo] %s: already done (%s)", name, run_dir)
        return json.loads(metrics_file.read_text())
    cfg = load_config(config, [*overrides, f"train.output_dir={run_dir}"])
    logger.info("[demo] %s: training %s into %s ...", name, config, run_dir)
    t0, c0 = time.perf_counter(), cpu_seconds()
    metrics = train(cfg, resume=True).metrics
    logger.info("[demo] %s: done in %.1f min (%.0f CPU seconds)", name,
                (time.perf_counter() - t0) / 60, cpu_seconds() - c0)
    return metrics


def evaluate_stage(name: str, out: Path, overrides: list[str]) -> dict[str, Any]:
    """Evaluate (or reuse the evaluation of) a finished run's last checkpoint; writes
    ``RUN/eval_<checkpoint>/`` and ``RUN/metrics.json`` and returns the metrics."""
    import torch

    from loce.engine.checkpoint import load_trained_model
    from loce.engine.evaluate import evaluate
    from loce.fileio import atomic_write_json

    run_dir = out / name
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        logger.info("[demo] %s: already evaluated (%s)", name, metrics_file)
        return json.loads(metrics_file.read_text())
    checkpoint = final_checkpoint(run_dir)
    model, cfg, _ = load_trained_model(checkpoint, overrides)
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    logger.info("[demo] %s: evaluating %s ...", name, checkpoint)
    t0, c0 = time.perf_counter(), cpu_seconds()
    metrics = evaluate(model, cfg, run_dir / f"eval_{checkpoint.stem}", device=torch.device("cpu"))
    atomic_write_json(metrics_file, metrics, what="metrics file", default=str)
    logger.info("[demo] %s: evaluated in %.1f min (%.0f CPU seconds)", name,
                (time.perf_counter() - t0) / 60, cpu_seconds() - c0)
    return metrics


def _in_worker(label: str, job: Callable[..., dict[str, Any]], *args) -> dict[str, Any]:
    """Run ``job(*args)`` in a worker process: prefixed log lines, no progress bars."""
    from loce.logs import PROGRESS_ENV, setup_console

    os.environ[PROGRESS_ENV] = "0"
    setup_console(prefix=f"[{label}] ")
    return job(*args)


def run_parallel(jobs: dict[str, tuple[Callable[..., dict[str, Any]], tuple]],
                 processes: int) -> dict[str, dict[str, Any]]:
    """Run ``{label: (function, args)}`` in up to ``processes`` spawned processes (in this
    one, in order, when ``processes`` is 1); logs each result's AP as soon as it is measured.
    """
    results: dict[str, dict[str, Any]] = {}
    if processes <= 1:
        for label, (job, args) in jobs.items():
            results[label] = job(*args)
            _log_result(label, results[label])
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(processes, len(jobs)), mp_context=context) as pool:
        futures = {pool.submit(_in_worker, label, job, *args): label
                   for label, (job, args) in jobs.items()}
        for future in as_completed(futures):
            label = futures[future]
            results[label] = future.result()
            _log_result(label, results[label])
    return {label: results[label] for label in jobs}


def _log_result(label: str, metrics: dict[str, Any]) -> None:
    cells = [f"{'box' if t == 'bbox' else 'mask'} " +
             " ".join(f"{k} {100 * float(metrics[t][k]):.1f}" for k in TABLE_KEYS)
             for t in ("bbox", "segm") if t in metrics]
    logger.info("[demo] %s: %s", label, " | ".join(cells))


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
    from loce.engine.checkpoint import load_checkpoint_file
    from loce.evaluation.plots import plot_mean_scores

    init_file = out / "loce" / "mean_scores_init.json"
    if not init_file.is_file():
        return None
    before = json.loads(init_file.read_text())["scores"][1:]
    state = load_checkpoint_file(final_checkpoint(out / "loce"))
    key = next(k for k in state["model"] if k.endswith("score_tracker.scores"))
    after = state["model"][key].tolist()[1:]
    train = json.loads((data / "annotations" / "train.json").read_text())
    categories = sorted(train["categories"], key=lambda c: c["id"])
    return plot_mean_scores({"after the initialisation pass (stage-1 model)": before,
                             "after the LOCE fine-tune": after},
                            [c["image_count"] for c in categories], out / "mean_scores.png",
                            frequencies=[c.get("frequency", "") for c in categories])


def run(args: argparse.Namespace) -> int:
    from loce.evaluation.plots import plot_ap_vs_frequency

    t0, c0 = time.perf_counter(), cpu_seconds(children=True)
    out = Path(args.out)
    data = Path(args.data)
    ensure_dataset(data, args.preset)
    overrides = [*data_overrides(data), *args.overrides]
    # Stage 1 is evaluated in the next step, next to the fine-tunes that only need its weights.
    run_stage("stage1", STAGE1, out, [*data_overrides(data), f"train.threads={STAGE1_THREADS}",
                                      *args.overrides, "train.eval_at_end=false"])
    after = [f"train.threads={STAGE2_THREADS}", *overrides]
    jobs: dict[str, tuple[Callable[..., dict[str, Any]], tuple]] = {
        "stage 1": (evaluate_stage, ("stage1", out, after))}
    if not args.stage1_only:
        init = [f"train.init_from={final_checkpoint(out / 'stage1')}"]
        jobs["CE fine-tune"] = (run_stage, ("control", CONTROL, out, [*after, *init]))
        jobs["LOCE"] = (run_stage, ("loce", LOCE, out, [*after, *init]))
    rows = run_parallel(jobs, args.jobs)

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
    print(f"runs:        {runs}  (config.yaml, log.txt, metrics.jsonl, checkpoints/, metrics.json)")
    print("predictions: <run>/eval_epoch_*/predictions.json")
    print(f"plots:       {plot}" + (f", {scores_plot}" if scores_plot else ""))
    print(f"total time:  {(time.perf_counter() - t0) / 60:.1f} min "
          f"({cpu_seconds(children=True) - c0:.0f} CPU seconds)")
    return 0


def main(argv: list[str] | None = None) -> int:
    from loce.cli import main as cli_main

    return cli_main(["demo", *(argv or [])])


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
