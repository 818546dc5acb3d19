"""``loce test CHECKPOINT``: evaluate a trained model on its config's validation set.

Example::

    loce test runs/stage1/checkpoints/epoch_2.pth
    torchrun --nproc_per_node 8 -m loce test work_dirs/loce/epoch_6.pth --eval bbox segm

One step for what ``loce predict --gt ...`` and ``loce eval ...`` do in two: the validation set
(``data.val_ann`` / ``data.val_images``) and the model come from the config stored in the
checkpoint (or ``--config``), each process of a ``torchrun`` job runs every ``world``-th
image, rank 0 merges the shards, evaluates them with the LVIS protocol, prints the table and
writes ``metrics.json`` and ``predictions.json`` (the results file) into ``--out``.

A validation file without LVIS's ``frequency`` fields (COCO format) is evaluated with the
frequency groups the training run used, stored in the checkpoint, so the training
annotations need not be on the machine; ``--set data.train_ann=FILE`` takes that file's
groups instead, and a checkpoint of an earlier version reads ``data.train_ann``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from loce.commands._args import add_amp, add_device, add_overrides, amp_overrides

HELP = "Evaluate a checkpoint on its config's validation set (sharded over torchrun ranks)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a checkpoint written by `loce train` or `loce convert`")
    parser.add_argument("--config", default=None,
                        help="config name or YAML file (default: the one stored in the checkpoint)")
    parser.add_argument("--eval", nargs="+", choices=("bbox", "segm"), default=None,
                        metavar="TYPE", help="bbox and/or segm (default: the config's "
                        "eval.iou_types)")
    parser.add_argument("--protocol", choices=("standard", "fixed", "pooled"), default=None,
                        help="standard: LVIS, top eval.max_dets per image; fixed: AP_fixed "
                        "(default: the config's eval.protocol)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="where metrics.json, predictions.json and log.txt go (default: "
                        "RUN/test_<checkpoint name> for RUN/checkpoints/<name>.pth, else next "
                        "to the checkpoint)")
    add_device(parser)
    add_amp(parser)
    add_overrides(parser, "override a config value, e.g. --set data.val_ann=other.json")


def default_out_dir(checkpoint: str | Path) -> Path:
    """``RUN/test_NAME`` for ``RUN/checkpoints/NAME.pth``; ``DIR/test_NAME`` otherwise."""
    checkpoint = Path(checkpoint)
    parent = checkpoint.parent
    run_dir = parent.parent if parent.name == "checkpoints" else parent
    return run_dir / f"test_{checkpoint.stem}"


def run(args: argparse.Namespace) -> int:
    import logging
    from contextlib import nullcontext

    from loce import build
    from loce.engine import distributed as dist_utils
    from loce.engine.checkpoint import (
        check_category_table,
        evaluation_categories,
        load_trained_model,
    )
    from loce.engine.evaluate import evaluate
    from loce.evaluation.lvis_eval import format_metrics_table
    from loce.logs import environment_lines, log_to_file

    logger = logging.getLogger("loce.commands.test")
    overrides = [*amp_overrides(args), *args.overrides]
    if args.eval is not None:
        overrides.append(f"eval.iou_types=[{','.join(dict.fromkeys(args.eval))}]")
    if args.protocol is not None:
        overrides.append(f"eval.protocol={args.protocol}")
    model, cfg, state = load_trained_model(args.checkpoint, overrides, args.config)
    if cfg.train.threads is not None:
        import torch

        torch.set_num_threads(cfg.train.threads)
    device = dist_utils.select_device(args.device)
    dist_utils.init_distributed(device)
    try:
        main = dist_utils.get_rank() == 0
        out = Path(args.out) if args.out is not None else default_out_dir(args.checkpoint)
        with log_to_file(out / "log.txt") if main else nullcontext():
            if main:
                logger.info("testing %s on %s (%s); results in %s", args.checkpoint,
                            cfg.data.val_ann, ", ".join(cfg.eval.iou_types), out)
                for line in environment_lines(device, dist_utils.get_world_size()):
                    logger.info("%s", line)
            dataset = build.build_val_dataset(cfg)
            check_category_table(dataset, state["category_ids"], cfg.data.val_ann)
            # The groups for APr/APc/APf of a file without them, before any image is run.
            train_categories = None
            if dataset.frequencies is None:
                train_categories = evaluation_categories(state, cfg, str(args.checkpoint),
                                                         overrides)
                if main:
                    codes = [c["frequency"] for c in train_categories]
                    logger.info("%s has no frequency groups; the training split's: %d rare, "
                                "%d common, %d frequent", cfg.data.val_ann, codes.count("r"),
                                codes.count("c"), codes.count("f"))
            model.to(device)
            metrics = evaluate(model, cfg, out, device=device, dataset=dataset,
                               train_categories=train_categories)
            if main:
                logger.debug("metrics: %s", {t: {k: m.get(k) for k in ("AP", "APr", "APc", "APf")}
                                             for t, m in metrics.items()})
        if main:
            print(format_metrics_table(metrics))
            print(f"wrote {out / 'metrics.json'} and {out / 'predictions.json'}")
    finally:
        dist_utils.cleanup_distributed()
    return 0
