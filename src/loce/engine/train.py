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
augmentation a function of (seed, epoch, index), and the checkpoint holds every RNG state of
every rank (LOCE's per-rank draws generator and the classification loss's among them, see
:mod:`loce.engine.method_state`), so ``--resume`` after a kill reproduces the losses of an
uninterrupted run. Every rank's
per-rank files (LOCE's feature memory) are durable before rank 0 moves ``last_checkpoint``,
and older ones are deleted only after it moved, so a kill at any moment leaves a pointer to a
complete checkpoint.

Non-finite values: a checkpoint is never written with non-finite weights or optimizer state
(:class:`NonFiniteWeightsError`); on a non-finite loss (:class:`NonFiniteLossError`) the
checkpoint saved at that very iteration, whose weights produced the loss, is skipped:
``last_checkpoint`` steps back to the newest checkpoint before it.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from loce.checks import input_checks
from loce.config import Config, config_to_dict, save_config
from loce.data.statistics import frequency_groups
from loce.engine import distributed as dist_utils
from loce.engine.checkpoint import (
    CLASS_STATISTICS,
    capture_rng_state,
    check_resumable,
    checkpoint_global_iter,
    find_last_checkpoint,
    load_checkpoint_file,
    load_model_weights,
    non_finite_entries,
    optimizer_tensors,
    restore_rng_state,
    save_checkpoint,
    set_last_checkpoint,
)
from loce.engine.device import autocast, enable_tf32, to_device
from loce.engine.freeze import check_reinit_trainable, configure_trainable
from loce.engine.method_state import (
    before_training,
    draws_state,
    load_rank_state,
    loss_draws_state,
    method_scalars,
    prune_rank_state,
    restore_draws_state,
    restore_loss_draws_state,
    save_rank_state,
    seed_rank_draws,
)
from loce.engine.schedule import apply_auto_scale_lr, build_lr_scheduler, load_scheduler_state
from loce.engine.tensorboard import ScalarWriter
from loce.errors import LoceError
from loce.faults import fault_point
from loce.fileio import atomic_write_json, ensure_directory, remove_stale_temp_files
from loce.logs import environment_lines, log_to_file, progress_bars
from loce.models.weights import load_initial_weights

__all__ = ["NonFiniteLossError", "NonFiniteWeightsError", "TrainResult", "train", "unwrap"]

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


class NonFiniteWeightsError(NonFiniteLossError):
    """The weights or the optimizer state became NaN or infinite; no checkpoint is written."""


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
        from loce.fileio import FileWriteError

        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
        except OSError as err:
            raise FileWriteError(f"{self.path}: cannot append to the training log "
                                 f"({err.strerror or err}); free some space or choose another "
                                 "train.output_dir") from None


def _reduce_losses(loss_dict: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Mean of each loss over ranks, as Python floats (for logging only)."""
    names = sorted(loss_dict)
    values = torch.stack([loss_dict[n].detach().float() for n in names])
    if dist_utils.is_distributed():
        values = values.to(next(iter(loss_dict.values())).device)
        torch.distributed.all_reduce(values)
        values /= dist_utils.get_world_size()
    return {n: float(v) for n, v in zip(names, values.cpu())}


def _any_rank(flag: bool | torch.Tensor, device: torch.device) -> bool:
    """Whether ``flag`` (a bool, or a one-element tensor read once) is true on any rank
    (every rank must call)."""
    if isinstance(flag, torch.Tensor):
        value = flag.detach().reshape(1).to(device, torch.float32)
    else:
        value = torch.tensor([1.0 if flag else 0.0], device=device)
    if dist_utils.is_distributed():
        torch.distributed.all_reduce(value)
    return bool(value.item() > 0)


def _last_good_checkpoint(ckpt_dir: Path, global_iter: int) -> tuple[Path | None, int]:
    """The newest checkpoint saved before ``global_iter`` iterations, and its iteration.

    A checkpoint saved *at* ``global_iter`` holds the very weights whose loss is not finite:
    resuming from it fails at the same iteration whatever the learning rate.
    """
    best: tuple[Path | None, int] = (None, -1)
    for path in ckpt_dir.glob("*.pth"):
        if ".memory." in path.name:
            continue
        g = checkpoint_global_iter(path)
        if g is not None and best[1] < g < global_iter:
            best = (path, g)
    return best


def _keep_last_good(ckpt_dir: Path, global_iter: int, main: bool) -> str:
    """Point ``last_checkpoint`` at the newest checkpoint before the divergence; describe it."""
    path, g = _last_good_checkpoint(ckpt_dir, global_iter) if ckpt_dir.is_dir() else (None, -1)
    dist_utils.barrier()
    if main:
        set_last_checkpoint(ckpt_dir, path.name if path is not None else None)
    dist_utils.barrier()
    if path is None:
        return (f"No checkpoint precedes it, so {ckpt_dir / 'last_checkpoint'} is removed and "
                "--resume starts over")
    return (f"The last good checkpoint, {path} (after {g} iterations), is what "
            "last_checkpoint names now; --resume continues from it")


def _check_finite(total: torch.Tensor, loss_dict: Mapping[str, torch.Tensor], epoch: int,
                  it: int, global_iter: int, ckpt_dir: Path, main: bool) -> None:
    """Raise on every rank when any rank's loss is not finite (so no rank hangs)."""
    # One host sync per step: the flag stays on the device until the ranks agree on it.
    if _any_rank(~torch.isfinite(total.detach()), total.device):
        parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in sorted(loss_dict.items()))
        kept = _keep_last_good(ckpt_dir, global_iter, main)
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch + 1}, iteration {it + 1} (global {global_iter + 1}): "
            f"{parts}. {kept}; lower solver.lr or set solver.grad_clip."
        )


def _check_finite_state(model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                        epoch: int, it: int, global_iter: int, ckpt_dir: Path, main: bool) -> None:
    """Raise on every rank, before anything is written, when weights or optimizer state are not
    finite (a step with an infinite learning rate or gradient)."""
    bad = non_finite_entries(model.state_dict().items())
    bad += non_finite_entries(optimizer_tensors(optimizer))
    if _any_rank(bool(bad), device):
        where = f" ({len(bad)} tensors, e.g. {', '.join(bad[:3])})" if bad else " on another rank"
        kept = _keep_last_good(ckpt_dir, global_iter, main)
        raise NonFiniteWeightsError(
            f"the weights or optimizer state became non-finite by epoch {epoch + 1}, iteration "
            f"{it} (global {global_iter}){where}; no checkpoint is written. {kept}; lower "
            "solver.lr or set solver.grad_clip."
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
        return _Trainer(cfg, resume, stack).run()


class _Trainer:
    """One training run: the objects it builds and the position it has reached.

    Built in the order that fixes the random state (seed, dataset, model, optimizer), so that
    every rank starts from identical weights and a resumed run from the checkpoint's state.
    """

    def __init__(self, cfg: Config, resume: bool, stack: ExitStack) -> None:
        if cfg.train.threads is not None:
            torch.set_num_threads(cfg.train.threads)
        self.device = dist_utils.select_device(cfg.train.device)
        dist_utils.init_distributed(self.device)
        self.rank, self.world = dist_utils.get_rank(), dist_utils.get_world_size()
        self.main = self.rank == 0
        given_lr = cfg.solver.lr
        self.cfg = cfg = apply_auto_scale_lr(cfg, self.world)
        self.out = Path(cfg.train.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self._open_run_directory(stack, given_lr)
        self.log = MetricsLog(self.out / "metrics.jsonl", enabled=self.main)
        self.board = ScalarWriter(self.out / "tensorboard", enabled=self.main and cfg.train.tensorboard)
        stack.callback(self.board.close)
        self._build(resume_available(self.ckpt_dir, resume))
        self.start_epoch, self.start_iter, self.global_iter = 0, 0, 0
        if resume:
            self._resume()

    # ------------------------------------------------------------------ set-up

    def _open_run_directory(self, stack: ExitStack, given_lr: float) -> None:
        """Rank 0 creates the run directory, its log and config; everyone waits for it."""
        cfg, out = self.cfg, self.out
        if self.main:
            ensure_directory(out, what="run directory (train.output_dir)")
            # Temporary files of writers killed mid-write (SIGKILL) would only fill the disk.
            remove_stale_temp_files(out)
            remove_stale_temp_files(self.ckpt_dir)
            stack.enter_context(log_to_file(out / "log.txt"))
            save_config(cfg, out / "config.yaml")
            logger.info("run directory %s (resolved config: %s)", out, out / "config.yaml")
            for line in environment_lines(self.device, self.world):
                logger.info("%s", line)
            if cfg.solver.auto_scale_lr:
                logger.info("solver.auto_scale_lr: lr %.6g = %.6g x %d images per step (%d "
                            "process(es) x %d) / %d reference images", cfg.solver.lr,
                            cfg.solver.lr_scaled_from, self.world * cfg.data.images_per_gpu,
                            self.world, cfg.data.images_per_gpu, cfg.solver.reference_batch)
                if given_lr != cfg.solver.lr_scaled_from:
                    logger.debug("the config's lr %.6g was already scaled", given_lr)
        if cfg.solver.amp != "none" and self.device.type != "cuda":
            logger.warning("solver.amp=%s needs CUDA; training in fp32 on %s", cfg.solver.amp,
                           self.device)
        if enable_tf32(self.device, cfg.solver.amp, cfg.train.tf32):
            logger.info("train.tf32: fp32 matmuls and convolutions in TF32 on %s "
                        "(--set train.tf32=false for full fp32)", self.device)
        dist_utils.barrier()

    def _build(self, resuming: bool) -> None:
        """Dataset, model (initial weights, freezing), optimizer, schedule and scaler."""
        from loce import build

        cfg = self.cfg
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        self.train_set = train_set = build.build_train_dataset(cfg)
        self._check_inputs()
        # Counted once from the set trained on, fractal dimensions included, and written into
        # every checkpoint (by rank 0), so that NorCal and FRACAL at inference need no
        # training annotations (docs/methods.md §1.2).
        needed = build.needs_class_statistics(cfg)
        # Fractal dimensions only where they are stored (rank 0) or used (FRACAL).
        self.class_stats = (build.training_class_statistics(cfg, train_set,
                                                            fractal=True if self.main else None)
                            if needed or self.main else None)
        self.model = model = build.build_model(
            cfg, num_classes=train_set.num_classes,
            class_stats=self.class_stats if needed else None,
            load_backbone=not (resuming or cfg.train.init_from)).to(self.device)
        if cfg.train.init_from and not resuming:
            data = load_checkpoint_file(cfg.train.init_from)
            load_initial_weights(model, data, cfg.train.init_from, cfg.train.reinit)
        configure_trainable(model, cfg)
        check_reinit_trainable(model, cfg)
        # LOCE's jitter and memory draws: this rank's own stream, a function of (seed, rank).
        seed_rank_draws(model, cfg.train.seed, self.rank, self.device)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise LoceError("no trainable parameters: check the model's freezing settings")
        self.optimizer = torch.optim.SGD(self.params, lr=cfg.solver.lr,
                                         momentum=cfg.solver.momentum,
                                         weight_decay=cfg.solver.weight_decay)
        # Iterations of every epoch (a function of seed and epoch): the step milestones and ETA.
        self.epoch_lengths = [len(self._batches(e)) for e in range(cfg.solver.epochs)]
        self.schedule = build_lr_scheduler(self.optimizer, cfg.solver, self.epoch_lengths)
        use_scaler = self.device.type == "cuda" and cfg.solver.amp == "fp16"
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    def _check_inputs(self) -> None:
        """Everything the run will read, checked now (:mod:`loce.engine.preflight`); rank 0
        logs the training split's summary and writes its categories with their groups to
        ``categories.json``."""
        from loce.data.summary import format_split_summary
        from loce.engine.preflight import check_run_inputs

        summary = check_run_inputs(self.cfg, self.train_set)
        if self.main:
            for line in format_split_summary(summary).splitlines():
                logger.info("training split: %s", line)
            cats = [{**c, "image_count": n} for c, n in
                    zip(self.train_set.categories, summary["image_counts"], strict=True)]
            atomic_write_json(self.out / "categories.json",
                              {"group_source": summary["group_source"],
                               "thresholds": summary["thresholds"], "categories": cats},
                              what="category table", indent=1)

    def _batches(self, epoch: int) -> list[list[int]]:
        from loce import build

        return build.epoch_batches(self.cfg, self.train_set, epoch, self.rank, self.world)

    def _resume(self) -> None:
        """Continue from ``last_checkpoint``: weights, optimizer, schedule, RNG, per-rank state."""
        last = find_last_checkpoint(self.ckpt_dir)
        if last is None:
            if self.main:
                logger.info("no checkpoint in %s; starting from the beginning", self.ckpt_dir)
            return
        cfg = self.cfg
        state = load_checkpoint_file(last)
        check_resumable(state, str(last))
        load_model_weights(self.model, state, str(last))
        _load_optimizer(self.optimizer, state, cfg, str(last))
        for note in load_scheduler_state(self.schedule, state["scheduler"],
                                         int(state["global_iter"]), cfg.solver, str(last)):
            if self.main:
                logger.info("%s", note)
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch, self.start_iter = int(state["epoch"]), int(state["iter_in_epoch"])
        self.global_iter = int(state["global_iter"])
        rng = _restore_rng(state["rng"], self.rank, str(last))
        restore_draws_state(self.model, rng, str(last))
        restore_loss_draws_state(self.model, rng, str(last))
        load_rank_state(self.model, cfg, self.ckpt_dir, last.name, self.rank)
        # Per-rank files of other checkpoints are left by a kill between the pointer move and
        # their deletion; the pointer names `last`, so they are of no use.
        prune_rank_state(cfg, self.ckpt_dir, last.name, self.rank)
        if self.main:
            logger.info("resumed from %s at epoch %d, iteration %d", last, self.start_epoch + 1,
                        self.start_iter)

    def _wrap(self) -> nn.Module:
        if self.world == 1:
            return self.model
        return DistributedDataParallel(
            self.model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            # Running statistics of long-tail methods live in buffers that each rank updates
            # itself (synchronised by all-gather where the method says so); rank 0 must not
            # overwrite them at every forward.
            broadcast_buffers=False,
            # Frozen parameters are not registered with DDP, and every trainable one (RPN, box
            # predictor, mask branch, with LOCE too) is in every step's graph, even when a
            # batch has no positive RoI.
            find_unused_parameters=False,
        )

    # ------------------------------------------------------------------ the run

    def run(self) -> TrainResult:
        from loce import build

        cfg = self.cfg
        before_training(self.model, cfg, self.train_set, self.device,
                        resumed=self.global_iter > 0)
        ddp_model = self._wrap()
        groups = frequency_groups(self.train_set)
        metrics: dict[str, Any] = {}
        # One loader for every epoch: its workers persist; they stop when `run` returns.
        loader = build.train_loader(cfg, self.train_set, self.rank, self.world,
                                    pin_memory=self.device.type == "cuda")
        for epoch in range(self.start_epoch, cfg.solver.epochs):
            self._train_epoch(ddp_model, loader, epoch, groups)
            self.checkpoint(f"epoch_{epoch + 1}.pth", epoch + 1, 0)
            last_epoch = epoch + 1 == cfg.solver.epochs
            every = cfg.train.eval_every_epochs
            if (last_epoch and cfg.train.eval_at_end) or (every and (epoch + 1) % every == 0):
                metrics = self._evaluate(epoch)
        if self.main and metrics:
            atomic_write_json(self.out / "metrics.json", metrics, what="metrics file",
                              sort_keys=True)
        dist_utils.barrier()
        return TrainResult(metrics=metrics, model=self.model, output_dir=self.out,
                           global_iter=self.global_iter)

    def _train_epoch(self, ddp_model: nn.Module, loader, epoch: int, groups) -> None:
        cfg = self.cfg
        skip = self.start_iter if epoch == self.start_epoch else 0
        loader.batch_sampler.set_epoch(epoch, skip)
        num_batches = self.epoch_lengths[epoch]
        ddp_model.train()
        bar = _progress(loader, total=num_batches, desc=f"epoch {epoch + 1}/{cfg.solver.epochs}",
                        enabled=self.main, initial=skip)
        t_last = t_epoch = time.perf_counter()
        c_epoch = _cpu_seconds()
        sums: dict[str, torch.Tensor] = {}
        it = last_logged = skip - 1
        lr = self.optimizer.param_groups[0]["lr"]
        for it, (images, targets) in enumerate(bar, start=skip):
            lr = self.optimizer.param_groups[0]["lr"]
            loss_dict = self._step(ddp_model, images, targets, epoch, it)
            for k, v in loss_dict.items():
                sums[k] = sums[k] + v.detach().float() if k in sums else v.detach().float()
            if (it + 1) % cfg.train.log_every_iters == 0 or it + 1 == num_batches:
                now = time.perf_counter()
                self._log_iteration(loss_dict, epoch, it, num_batches, lr,
                                    (now - t_last) / (it - last_logged), bar, groups)
                t_last, last_logged = now, it
            every = cfg.train.checkpoint_every_iters
            if every and self.global_iter % every == 0 and it + 1 < num_batches:
                self.checkpoint(f"iter_{self.global_iter}.pth", epoch, it + 1)
        bar.close()
        seconds = time.perf_counter() - t_epoch
        done = it + 1 - skip
        eta = seconds / max(done, 1) * sum(self.epoch_lengths[epoch + 1:])
        images = done * cfg.data.images_per_gpu * self.world
        line, summary = _epoch_summary(epoch, cfg.solver.epochs, sums, done, lr, seconds,
                                       _cpu_seconds() - c_epoch, images, eta)
        if self.main:
            logger.info("%s", line)
            self.log.write(summary)

    def _step(self, ddp_model: nn.Module, images, targets, epoch: int,
              it: int) -> Mapping[str, torch.Tensor]:
        """One SGD step on a batch; returns its losses."""
        cfg, optimizer, scaler = self.cfg, self.optimizer, self.scaler
        images, targets = to_device(images, targets, self.device)
        # Value checks that read tensors on the host run every check_every_iters steps.
        with autocast(self.device, cfg.solver.amp), \
                input_checks(self.global_iter % cfg.train.check_every_iters == 0):
            loss_dict = ddp_model(images, targets)
        total = sum(loss_dict.values())
        _check_finite(total, loss_dict, epoch, it, self.global_iter, self.ckpt_dir, self.main)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(total).backward()
            if cfg.solver.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(self.params, cfg.solver.grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            total.backward()
            if cfg.solver.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.params, cfg.solver.grad_clip)
            optimizer.step()
        self.schedule.step()
        self.global_iter += 1
        return loss_dict

    def _log_iteration(self, loss_dict: Mapping[str, torch.Tensor], epoch: int, it: int,
                       num_batches: int, lr: float, seconds: float, bar, groups) -> None:
        """A record in metrics.jsonl (every rank reduces; rank 0 writes), the bar, TensorBoard."""
        losses = _reduce_losses(loss_dict)
        images_per_step = self.cfg.data.images_per_gpu * self.world
        record = {"type": "train", "epoch": epoch + 1, "iter": it + 1,
                  "global_iter": self.global_iter, "lr": lr,
                  "loss": sum(losses.values()), **losses,
                  "sec_per_iter": seconds,
                  "images_per_sec": images_per_step / seconds if seconds > 0 else 0.0}
        self.log.write(record)
        if not self.main:
            return
        bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}")
        logger.debug("epoch %d iter %d/%d: %s", epoch + 1, it + 1, num_batches,
                     " ".join(f"{k}={v:.4g}" for k, v in record.items()
                              if k.startswith("loss") or k in ("lr", "sec_per_iter")))
        self.board.add_scalars({**{f"train/{k}": v for k, v in losses.items()},
                                "train/loss": record["loss"], "train/lr": lr,
                                "train/images_per_sec": record["images_per_sec"],
                                **method_scalars(self.model, groups)}, self.global_iter)

    def _evaluate(self, epoch: int) -> dict[str, Any]:
        from loce.engine.evaluate import METRIC_KEYS, evaluate

        t_eval, c_eval = time.perf_counter(), _cpu_seconds()
        metrics = evaluate(self.model, self.cfg, self.out / f"eval_epoch_{epoch + 1}",
                           device=self.device, train_categories=self.train_set.categories)
        self.log.write({"type": "eval", "epoch": epoch + 1, **_flat(metrics)})
        if self.main:
            _log_evaluation(epoch, metrics, time.perf_counter() - t_eval, _cpu_seconds() - c_eval)
            self.board.add_scalars({f"eval/{k}": v for k, v in _flat(metrics).items()
                                    if k.split("/")[-1] in METRIC_KEYS}, self.global_iter)
        return metrics

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self, name: str, epoch: int, it_in_epoch: int) -> None:
        """Save checkpoint ``name`` at the current iteration (every rank calls).

        Per-rank state that is not synchronised (a feature memory) is written by every rank
        and is on the disk before rank 0 points last_checkpoint at the checkpoint; older
        per-rank files are deleted only after the pointer moved.
        """
        model, cfg = self.model, self.cfg
        dist_utils.average_batchnorm_statistics(model)
        _check_finite_state(model, self.optimizer, self.device, epoch, it_in_epoch,
                            self.global_iter, self.ckpt_dir, self.main)
        rng = dist_utils.all_gather_object({**capture_rng_state(), **draws_state(model),
                                            **loss_draws_state(model)})
        save_rank_state(model, cfg, self.ckpt_dir, name, self.rank)
        dist_utils.barrier()
        fault_point("checkpoint:after-rank-state")
        if self.main:
            self._write_checkpoint(name, epoch, it_in_epoch, rng)
        dist_utils.barrier()
        fault_point("checkpoint:after-pointer")
        prune_rank_state(cfg, self.ckpt_dir, name, self.rank)

    def _write_checkpoint(self, name: str, epoch: int, it_in_epoch: int, rng) -> None:
        train_set = self.train_set
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": epoch,
            "iter_in_epoch": it_in_epoch,
            "global_iter": self.global_iter,
            "rng": rng,
            "config": config_to_dict(self.cfg),
            "num_classes": train_set.num_classes,
            "category_ids": list(train_set.cat_ids),
            "category_names": [c["name"] for c in train_set.categories],
            CLASS_STATISTICS: self.class_stats.to_dict(),
        }
        save_checkpoint(state, self.ckpt_dir, name)


def _load_optimizer(optimizer: torch.optim.Optimizer, state: Mapping[str, Any], cfg: Config,
                    source: str) -> None:
    """Restore the optimizer, refusing a checkpoint whose trained parameters differ."""
    from loce.errors import CheckpointError

    saved_cfg = state.get("config")
    saved = (saved_cfg.get("train") or {}).get("trainable") if isinstance(saved_cfg, Mapping) \
        else None
    now = cfg.train.trainable
    if isinstance(saved_cfg, Mapping) and saved != (list(now) if now is not None else None):
        raise CheckpointError(
            f"{source} was trained with train.trainable={saved} but the config now says "
            f"{now}: the optimizer state belongs to other parameters. Resume with the same "
            "train.trainable, or start a new train.output_dir (with train.init_from) to change it"
        )
    params = [p for g in optimizer.param_groups for p in g["params"]]
    groups = state["optimizer"].get("param_groups")
    saved_state = state["optimizer"].get("state")
    try:
        count = sum(len(g["params"]) for g in groups)
        if count != len(params):
            raise ValueError(f"{count} parameters in the checkpoint, {len(params)} now")
        for i, p in enumerate(params):
            buf = (saved_state.get(i) or {}).get("momentum_buffer")
            if buf is not None and tuple(buf.shape) != tuple(p.shape):
                raise ValueError(f"parameter {i} has shape {tuple(buf.shape)} in the checkpoint, "
                                 f"{tuple(p.shape)} now")
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(
            f"{source}: the optimizer state does not fit the parameters this config trains "
            f"({err}); resume with the config the run was started with, or start a new "
            "train.output_dir"
        ) from None


def _restore_rng(saved: Any, rank: int, source: str) -> Mapping[str, Any]:
    """Restore this rank's global random state from a checkpoint's ``rng``; returns that
    rank's entry (which also holds the states of generators the engine owns)."""
    from loce.errors import CheckpointError

    if isinstance(saved, list):
        if rank >= len(saved):
            raise CheckpointError(
                f"{source} was written by {len(saved)} processes; resume it with the same "
                f"number (it holds no random state for rank {rank})")
        saved = saved[rank]
    try:
        restore_rng_state(saved)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{source}: unreadable random-generator state ({err!r}); delete "
                              "last_checkpoint to start over") from None
    return saved


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

