"""``loce train CONFIG [--set key=value ...] [--resume]``: train and evaluate a detector."""

from __future__ import annotations

import argparse

from loce.commands._args import add_overrides

HELP = "Train a detector from a config (one process, or many under torchrun) and evaluate it."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a YAML config file or the name of a bundled config")
    add_overrides(parser, "override a config value, e.g. --set solver.lr=0.01 (repeatable)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the run directory's last checkpoint")
    parser.add_argument("--output-dir", default=None,
                        help="run directory (same as --set train.output_dir=DIR)")
    parser.add_argument("--auto-scale-lr", action="store_true",
                        help="scale solver.lr linearly from solver.reference_batch to the actual "
                        "batch, world size x data.images_per_gpu (same as --set "
                        "solver.auto_scale_lr=true)")


def run(args: argparse.Namespace) -> int:
    from loce.config import load_config
    from loce.engine import distributed as dist_utils
    from loce.engine.train import train
    from loce.errors import LoceError
    from loce.evaluation.lvis_eval import format_metrics_table

    overrides = list(args.overrides)
    if args.output_dir is not None:
        overrides.append(f"train.output_dir={args.output_dir}")
    if args.auto_scale_lr:
        overrides.append("solver.auto_scale_lr=true")
    cfg = load_config(args.config, overrides)
    try:
        metrics = train(cfg, resume=args.resume).metrics
    except LoceError as err:
        # One rank of many: say what is wrong and leave at once, so that the other ranks'
        # collectives fail now (and they exit quietly) rather than at the timeout.
        if dist_utils.get_world_size() > 1:
            dist_utils.exit_now(f"loce train: error: [rank {dist_utils.get_rank()}] {err}", 2)
        raise
    except Exception as err:
        if dist_utils.get_world_size() > 1 and dist_utils.is_peer_failure(err):
            dist_utils.exit_now(None, 1)
        raise
    finally:
        dist_utils.cleanup_distributed()
    if dist_utils.get_rank() == 0 and metrics:
        print(format_metrics_table(metrics))
        print(f"run directory: {cfg.train.output_dir}")
    return 0
