"""The training loop: one function for one process or many (``torchrun``), CPU or CUDA.

``train(cfg)`` builds everything from the config (through :mod:`loce.build`), then runs epochs
of SGD with warmup and step decay (a ``torch.optim.lr_scheduler.LambdaLR``, see
:mod:`loce.engine.schedule`), optional gradient clipping and mixed precision on CUDA.
It writes into ``cfg.train.output_dir``:

- ``config.yaml``: the resolved config (with the scaled rate under ``solver.auto_scale_lr``);
- ``log.txt``: everything logged, with the environment and one summary line per epoch;
- ``metrics.jsonl``: one JSON line per logged iteration (losses, lr, speed), per epoch (mean
  losses, time, CPU seconds) and per evaluation;
- ``tensorboard/``: the same as TensorBoard scalars, when the package is installed;
- ``checkpoints/``: ``epoch_N.pth`` after every epoch, ``iter_N.pth`` every
  ``train.checkpoint_every_iters`` iterations, and ``last_checkpoint`` naming the newest;
- ``metrics.json``: the final evaluation (``{"bbox": {...}, "segm": {...}}``).

Exact resume: the data order of an epoch is a function of (seed, epoch), each image's random
augmentation a function of (seed, epoch, index), and the checkpoint holds every RNG state, so
``--resume`` after a kill reproduces the losses of an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import time
from collections.abc import Mapping
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from loce.config import Config, config_to_dict, save_config
from loce.engine import distributed as dist_utils
from loce.engine.checkpoint import (
    capture_rng_state,
    find_last_checkpoint,
    load_checkpoint_file,
    load_model_weights,
    restore_rng_state,
    save_checkpoint,
)
from loce.engine.schedule import apply_auto_scale_lr, build_lr_scheduler, load_scheduler_state
from loce.engine.tensorboard import ScalarWriter
from loce.errors import LoceError
from loce.logs import environment_lines, log_to_file, progress_bars

__all__ = ["NonFiniteLossError", "TrainResult", "train", "unwrap"]

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` returns: the final metrics (rank 0; ``{}`` elsewhere or when no
    evaluation ran), the trained (unwrapped) model and the run directory."""

    metrics: dict[str, Any]
    model: nn.Module
    output_dir: Path
    global_iter: int


class NonFiniteLossError(LoceError):
    """A loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


class MetricsLog:
    """Appends JSON lines to ``metrics.jsonl`` (main process only)."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled

    def write(self, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")


def _autocast(device: torch.device, amp: str):
    if device.type != "cuda" or amp == "none":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def _to_device(images: list[torch.Tensor], targets: list[dict[str, Any]], device: torch.device):
    images = [img.to(device, non_blocking=True) for img in images]
    targets = [
        {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
        for t in targets
    ]
    return images, targets


def _reduce_losses(loss_dict: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Mean of each loss over ranks, as Python floats (for logging only)."""
    names = sorted(loss_dict)
    values = torch.stack([loss_dict[n].detach().float() for n in names])
    if dist_utils.is_distributed():
        values = values.to(next(iter(loss_dict.values())).device)
        torch.distributed.all_reduce(values)
        values /= dist_utils.get_world_size()
    return {n: float(v) for n, v in zip(names, values.cpu())}


def _check_finite(total: torch.Tensor, loss_dict: Mapping[str, torch.Tensor], epoch: int,
                  it: int, global_iter: int) -> None:
    """Raise on every rank when any rank's loss is not finite (so no rank hangs)."""
    bad = torch.tensor([0.0 if torch.isfinite(total).item() else 1.0], device=total.device)
    if dist_utils.is_distributed():
        torch.distributed.all_reduce(bad)
    if bad.item() > 0:
        parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in sorted(loss_dict.items()))
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch + 1}, iteration {it + 1} (global {global_iter + 1}): "
            f"{parts}. The last good checkpoint is kept; lower solver.lr or set solver.grad_clip."
        )


def _progress(iterable, total: int, desc: str, enabled: bool, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, initial=initial,
                disable=not (enabled and progress_bars()), dynamic_ncols=True, leave=False,
                mininterval=1.0)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


def _epoch_summary(epoch: int, epochs: int, sums: Mapping[str, torch.Tensor], count: int,
                   lr: float, seconds: float, cpu: float, images: int,
                   eta: float) -> tuple[str, dict]:
    """The epoch's log line and record: mean losses over its iterations (all ranks), lr, time
    (wall and this process's CPU seconds) and the estimated time left for the later epochs."""
    means = _reduce_losses({k: v / max(count, 1) for k, v in sums.items()}) if sums else {}
    record = {"type": "epoch", "epoch": epoch + 1, "iters": count, "lr": lr,
              "loss": sum(means.values()), **means, "seconds": seconds, "cpu_seconds": cpu,
              "images_per_sec": images / seconds if seconds > 0 else 0.0}
    parts = " ".join(f"{k}={v:.4f}" for k, v in means.items())
    line = (f"epoch {epoch + 1}/{epochs}: {count} iterations, mean loss {record['loss']:.4f} "
            f"({parts}), lr {lr:.3g}, {_duration(seconds)} ({cpu:.0f} CPU s, "
            f"{record['images_per_sec']:.2f} images/s), ETA {_duration(eta)}")
    return line, record


def _log_evaluation(epoch: int, metrics: Mapping[str, Any], seconds: float, cpu: float) -> None:
    cells = []
    for iou_type, values in metrics.items():
        name = {"bbox": "box", "segm": "mask"}.get(iou_type, iou_type)
        cells.append(name + " " + " ".join(f"{k} {100 * float(values[k]):.1f}"
                                           for k in ("AP", "APr", "APc", "APf") if k in values))
    logger.info("epoch %d evaluation (%s, %.0f CPU s): %s", epoch + 1, _duration(seconds), cpu,
                " | ".join(cells))


def train(cfg: Config, *, resume: bool = False) -> TrainResult:
    """Train (and evaluate) a model as configured.

    Args:
        cfg: a validated config.
        resume: continue from ``output_dir/checkpoints/last_checkpoint`` when it exists.
    """
    with ExitStack() as stack:
        return _train(cfg, resume, stack)


def _train(cfg: Config, resume: bool, stack: ExitStack) -> TrainResult:
    from loce import build
    from loce.engine.evaluate import METRIC_KEYS, evaluate

    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    device = dist_utils.select_device(cfg.train.device)
    dist_utils.init_distributed(device)
    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    main = rank == 0
    given_lr = cfg.solver.lr
    cfg = apply_auto_scale_lr(cfg, world)

    out = Path(cfg.train.output_dir)
    ckpt_dir = out / "checkpoints"
    if main:
        out.mkdir(parents=True, exist_ok=True)
        stack.enter_context(log_to_file(out / "log.txt"))
        save_config(cfg, out / "config.yaml")
        logger.info("run directory %s (resolved config: %s)", out, out / "config.yaml")
        for line in environment_lines(device, world):
            logger.info("%s", line)
        if cfg.solver.auto_scale_lr:
            logger.info("solver.auto_scale_lr: lr %.6g = %.6g x %d images per step (%d process(es) "
                        "x %d) / %d reference images", cfg.solver.lr, cfg.solver.lr_scaled_from,
                        world * cfg.data.images_per_gpu, world, cfg.data.images_per_gpu,
                        cfg.solver.reference_batch)
            if given_lr != cfg.solver.lr_scaled_from:
                logger.debug("the config's lr %.6g was already scaled", given_lr)
    if cfg.solver.amp != "none" and device.type != "cuda":
        logger.warning("solver.amp=%s needs CUDA; training in fp32 on %s", cfg.solver.amp, device)
    dist_utils.barrier()
    log = MetricsLog(out / "metrics.jsonl", enabled=main)
    board = ScalarWriter(out / "tensorboard", enabled=main and cfg.train.tensorboard)
    stack.callback(board.close)

    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    train_set = build.build_train_dataset(cfg)
    resuming = resume_available(ckpt_dir, resume)
    model = build.build_model(cfg, num_classes=train_set.num_classes,
                              load_backbone=not (resuming or cfg.train.init_from)).to(device)
    if cfg.train.init_from and not resuming:
        data = load_checkpoint_file(cfg.train.init_from)
        build.load_initial_weights(model, data, cfg.train.init_from, cfg.train.reinit)
    build.configure_trainable(model, cfg)
    build.check_reinit_trainable(model, cfg)

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise LoceError("no trainable parameters: check the model's freezing settings")
    optimizer = torch.optim.SGD(params, lr=cfg.solver.lr, momentum=cfg.solver.momentum,
                                weight_decay=cfg.solver.weight_decay)
    # Iterations of every epoch (a function of seed and epoch): the step milestones and the ETA.
    epoch_lengths = [len(build.epoch_batches(cfg, train_set, e, rank, world))
                     for e in range(cfg.solver.epochs)]
    schedule = build_lr_scheduler(optimizer, cfg.solver, epoch_lengths)
    use_scaler = device.type == "cuda" and cfg.solver.amp == "fp16"
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    start_epoch, start_iter, global_iter = 0, 0, 0
    if resume:
        last = find_last_checkpoint(ckpt_dir)
        if last is None:
            if main:
                logger.info("no checkpoint in %s; starting from the beginning", ckpt_dir)
        else:
            state = load_checkpoint_file(last)
            load_model_weights(model, state, str(last))
            optimizer.load_state_dict(state["optimizer"])
            load_scheduler_state(schedule, state["scheduler"], int(state["global_iter"]),
                                 cfg.solver, str(last))
            if scaler is not None and state.get("scaler") is not None:
                scaler.load_state_dict(state["scaler"])
            start_epoch, start_iter = int(state["epoch"]), int(state["iter_in_epoch"])
            global_iter = int(state["global_iter"])
            restore_rng_state(state["rng"][rank] if isinstance(state["rng"], list) else state["rng"])
            build.load_rank_state(model, cfg, ckpt_dir, last.name, rank)
            build.after_resume(model, state)
            if main:
                logger.info("resumed from %s at epoch %d, iteration %d", last, start_epoch + 1,
                            start_iter)

    build.before_training(model, cfg, train_set, device, resumed=global_iter > 0)

    ddp_model: nn.Module = model
    if world > 1:
        ddp_model = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            # Running statistics of long-tail methods live in buffers that each rank updates
            # itself (synchronised by all-gather where the method says so); rank 0 must not
            # overwrite them at every forward.
            broadcast_buffers=False,
            find_unused_parameters=build.has_unused_parameters(cfg),
        )

    def checkpoint(name: str, epoch: int, it_in_epoch: int, g_iter: int) -> None:
        dist_utils.average_batchnorm_statistics(model)
        rng = dist_utils.all_gather_object(capture_rng_state())
        # Per-rank state that is not synchronised (e.g. a feature memory) is written by
        # every rank next to the checkpoint, before rank 0 points last_checkpoint at it.
        build.save_rank_state(model, cfg, ckpt_dir, name, rank)
        dist_utils.barrier()
        if not main:
            return
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": schedule.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "epoch": epoch,
            "iter_in_epoch": it_in_epoch,
            "global_iter": g_iter,
            "rng": rng,
            "config": config_to_dict(cfg),
            "num_classes": train_set.num_classes,
            "category_ids": list(train_set.cat_ids),
            "category_names": [c["name"] for c in train_set.categories],
        }
        save_checkpoint(state, ckpt_dir, name)

    metrics: dict[str, Any] = {}
    epochs = cfg.solver.epochs
    groups = build.frequency_groups(train_set)
    images_per_step = cfg.data.images_per_gpu * world
    for epoch in range(start_epoch, epochs):
        batches = build.epoch_batches(cfg, train_set, epoch, rank, world)
        skip = start_iter if epoch == start_epoch else 0
        loader = build.train_loader(cfg, train_set, batches[skip:], epoch)
        ddp_model.train()
        bar = _progress(loader, total=len(batches), desc=f"epoch {epoch + 1}/{epochs}",
                        enabled=main, initial=skip)
        t_last = t_epoch = time.perf_counter()
        c_epoch = _cpu_seconds()
        sums: dict[str, torch.Tensor] = {}
        it = last_logged = skip - 1
        lr = optimizer.param_groups[0]["lr"]
        for it, (images, targets) in enumerate(bar, start=skip):
            lr = optimizer.param_groups[0]["lr"]
            images, targets = _to_device(images, targets, device)
            with _autocast(device, cfg.solver.amp):
                loss_dict = ddp_model(images, targets)
            total = sum(loss_dict.values())
            _check_finite(total, loss_dict, epoch, it, global_iter)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(total).backward()
                if cfg.solver.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, cfg.solver.grad_clip)
                scaler.step(optimizer)
                scaler.update()
            else:
                total.backward()
                if cfg.solver.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, cfg.solver.grad_clip)
                optimizer.step()
            schedule.step()
            global_iter += 1
            for k, v in loss_dict.items():
                sums[k] = sums[k] + v.detach().float() if k in sums else v.detach().float()

            if (it + 1) % cfg.train.log_every_iters == 0 or it + 1 == len(batches):
                losses = _reduce_losses(loss_dict)
                now = time.perf_counter()
                seconds = (now - t_last) / (it - last_logged)
                last_logged = it
                record = {"type": "train", "epoch": epoch + 1, "iter": it + 1,
                          "global_iter": global_iter, "lr": lr,
                          "loss": sum(losses.values()), **losses,
                          "sec_per_iter": seconds,
                          "images_per_sec": images_per_step / seconds if seconds > 0 else 0.0}
                t_last = now
                log.write(record)
                if main:
                    bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}")
                    logger.debug("epoch %d iter %d/%d: %s", epoch + 1, it + 1, len(batches),
                                 " ".join(f"{k}={v:.4g}" for k, v in record.items()
                                          if k.startswith("loss") or k in ("lr", "sec_per_iter")))
                    board.add_scalars({**{f"train/{k}": v for k, v in losses.items()},
                                       "train/loss": record["loss"], "train/lr": lr,
                                       "train/images_per_sec": record["images_per_sec"],
                                       **build.method_scalars(model, groups)}, global_iter)
            every = cfg.train.checkpoint_every_iters
            if every and global_iter % every == 0 and it + 1 < len(batches):
                checkpoint(f"iter_{global_iter}.pth", epoch, it + 1, global_iter)
        bar.close()
        seconds = time.perf_counter() - t_epoch
        done = it + 1 - skip
        eta = seconds / max(done, 1) * sum(epoch_lengths[epoch + 1:])
        line, summary = _epoch_summary(epoch, epochs, sums, done, lr, seconds,
                                       _cpu_seconds() - c_epoch, done * images_per_step, eta)
        if main:
            logger.info("%s", line)
            log.write(summary)
        checkpoint(f"epoch_{epoch + 1}.pth", epoch + 1, 0, global_iter)
        last_epoch = epoch + 1 == epochs
        every_e = cfg.train.eval_every_epochs
        if (last_epoch and cfg.train.eval_at_end) or (every_e and (epoch + 1) % every_e == 0):
            t_eval, c_eval = time.perf_counter(), _cpu_seconds()
            metrics = evaluate(model, cfg, out / f"eval_epoch_{epoch + 1}", device=device)
            log.write({"type": "eval", "epoch": epoch + 1, **_flat(metrics)})
            if main:
                _log_evaluation(epoch, metrics, time.perf_counter() - t_eval,
                                _cpu_seconds() - c_eval)
                board.add_scalars({f"eval/{k}": v for k, v in _flat(metrics).items()
                                   if k.split("/")[-1] in METRIC_KEYS}, global_iter)
    if main and metrics:
        tmp = out / "metrics.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True))
        tmp.replace(out / "metrics.json")
    dist_utils.barrier()
    return TrainResult(metrics=metrics, model=model, output_dir=out, global_iter=global_iter)


def resume_available(ckpt_dir: Path, resume: bool) -> bool:
    """Whether ``--resume`` will load a checkpoint (then ``init_from`` is not needed)."""
    return resume and (ckpt_dir / "last_checkpoint").is_file()


def _flat(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for iou_type, values in metrics.items():
        for k, v in values.items():
            if isinstance(v, int | float) and not (isinstance(v, float) and math.isnan(v)):
                out[f"{iou_type}/{k}"] = v
    return out

