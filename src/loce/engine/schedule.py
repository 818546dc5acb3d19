"""Learning-rate schedule: linear warmup by iteration, step decay by epoch, as a standard
``torch.optim.lr_scheduler.LambdaLR`` stepped once per iteration.

The rate at global iteration ``it`` (0-based) in epoch ``epoch`` (0-based) is::

    lr(it, epoch) = base_lr * gamma ** (number of steps s with s <= epoch) * warmup(it)
    warmup(it)    = warmup_ratio + (1 - warmup_ratio) * it / warmup_iters   for it < warmup_iters
                  = 1                                                     otherwise

``steps`` are epoch numbers counted from 1 as in the original configs: ``steps=[16, 22]``
decays after the 16th and the 22nd epoch, i.e. from 0-based epoch 16 and 22 on. This is
mmdet's linear warmup (its ``warmup_ratio`` is the starting factor) and step policy. The
scheduler sees iterations only, so each step is turned into the global iteration at which its
epoch starts (:func:`step_milestones`); warmup and decay multiply, also where they overlap.

The learning rate in a config is for a reference batch (``solver.reference_batch``, 16 images
for the LVIS recipes). With ``solver.auto_scale_lr`` the rate is scaled linearly to the actual
batch, ``world size x data.images_per_gpu`` (:func:`apply_auto_scale_lr`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from loce.errors import CheckpointError

__all__ = [
    "WarmupStepFactor",
    "apply_auto_scale_lr",
    "build_lr_scheduler",
    "load_scheduler_state",
    "scaled_lr",
    "step_milestones",
]

# The keys of the schedule state written by loce before it used torch's LambdaLR.
_LEGACY_KEYS = frozenset({"base_lr", "steps", "gamma", "warmup_iters", "warmup_ratio"})


class WarmupStepFactor:
    """The factor ``lr(it) / base_lr``: linear warmup times ``gamma`` per milestone passed.

    A plain class (not a lambda) so that ``LambdaLR.state_dict`` saves its settings.

    Args:
        milestones: global iterations (0-based, increasing) from which the rate is multiplied
            by another ``gamma``.
        gamma: decay factor.
        warmup_iters: iterations of linear warmup (0 disables it).
        warmup_ratio: the warmup's starting factor.
    """

    def __init__(self, milestones: Sequence[int], gamma: float, warmup_iters: int,
                 warmup_ratio: float) -> None:
        self.milestones = [int(m) for m in milestones]
        self.gamma = float(gamma)
        self.warmup_iters = int(warmup_iters)
        self.warmup_ratio = float(warmup_ratio)

    def __call__(self, it: int) -> float:
        decay = self.gamma ** sum(1 for m in self.milestones if m <= it)
        if it < self.warmup_iters:
            k = self.warmup_ratio + (1.0 - self.warmup_ratio) * it / self.warmup_iters
        else:
            k = 1.0
        return decay * k


def step_milestones(steps: Sequence[int], epoch_lengths: Sequence[int]) -> list[int]:
    """Global iterations at which the epochs named in ``steps`` (1-based) end.

    Args:
        steps: epochs after which the rate decays, e.g. ``[16, 22]``.
        epoch_lengths: iterations of epoch 0, 1, ... (at least ``max(steps)`` of them).
    """
    out = []
    for s in steps:
        assert s <= len(epoch_lengths), (s, len(epoch_lengths))
        out.append(int(sum(epoch_lengths[:s])))
    return out


def build_lr_scheduler(optimizer: Optimizer, solver, epoch_lengths: Sequence[int]) -> LambdaLR:
    """The warmup + step schedule of ``solver`` (a :class:`~loce.config.SolverConfig`).

    The optimizer's rate must be ``solver.lr`` (the base rate); on return it is the rate of
    iteration 0. Call ``scheduler.step()`` after every optimizer step.

    Args:
        optimizer: the optimizer whose groups are scheduled.
        solver: the solver config (``steps``, ``gamma``, ``warmup_iters``, ``warmup_ratio``).
        epoch_lengths: iterations per epoch, at least up to the last step.
    """
    factor = WarmupStepFactor(step_milestones(solver.steps, epoch_lengths), solver.gamma,
                              solver.warmup_iters, solver.warmup_ratio)
    return LambdaLR(optimizer, factor)


def _apply_current_rate(scheduler: LambdaLR) -> None:
    rates = [base * fn(scheduler.last_epoch)
             for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(scheduler.optimizer.param_groups, rates):
        group["lr"] = lr
    scheduler._last_lr = rates  # what get_last_lr() returns


def load_scheduler_state(scheduler: LambdaLR, state: Mapping[str, Any], global_iter: int,
                         solver, source: str) -> list[str]:
    """Restore a checkpoint's schedule at iteration ``global_iter``; the config's solver wins.

    The schedule goes on from ``global_iter`` as the config's ``solver`` describes it now
    (``lr``, ``steps``, ``gamma``, warmup): a resumed run may lower ``solver.lr``. Reads the
    ``LambdaLR`` state of current checkpoints and the state of checkpoints written before
    (``base_lr``, ``steps``, ``gamma``, ``warmup_iters``, ``warmup_ratio``).

    Returns:
        One line per setting that differs from the checkpoint's, for the log.

    Raises:
        CheckpointError: a state of neither format, or an unreadable one.
    """
    fresh = [dict(vars(fn)) for fn in scheduler.lr_lambdas]
    try:
        if "lr_lambdas" in state:
            scheduler.load_state_dict(dict(state))
            saved_lr = [float(b) for b in scheduler.base_lrs]
            saved = [dict(vars(fn)) for fn in scheduler.lr_lambdas]
        elif _LEGACY_KEYS <= set(state):
            saved_lr = [float(state["base_lr"])] * len(scheduler.base_lrs)
            saved = [{"steps": [int(x) for x in state["steps"]], "gamma": float(state["gamma"]),
                      "warmup_iters": int(state["warmup_iters"]),
                      "warmup_ratio": float(state["warmup_ratio"])}] * len(fresh)
        else:
            raise CheckpointError(f"{source}: the 'scheduler' entry is not a learning-rate "
                                  "schedule written by loce; start a new run")
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{source}: unreadable schedule state ({err!r}); delete "
                              "last_checkpoint to start over") from None
    notes = []
    if any(not math.isclose(lr, float(solver.lr), rel_tol=1e-9) for lr in saved_lr):
        notes.append(f"solver.lr is {solver.lr} now, {saved_lr[0]} in {source}: continuing with "
                     f"{solver.lr}")
    for fn, now, then in zip(scheduler.lr_lambdas, fresh, saved):
        changed = sorted(k for k in now if k in then and then[k] != now[k])
        if changed:
            notes.append(f"schedule settings {', '.join(changed)} differ from {source}: "
                         "continuing with the config's")
        vars(fn).clear()
        vars(fn).update(now)
    scheduler.base_lrs = [float(solver.lr)] * len(scheduler.base_lrs)
    scheduler.last_epoch = int(global_iter)
    _apply_current_rate(scheduler)
    return notes


def scaled_lr(lr: float, reference_batch: int, world_size: int, images_per_gpu: int) -> float:
    """The linear scaling rule: ``lr * world_size * images_per_gpu / reference_batch``."""
    return float(lr) * world_size * images_per_gpu / reference_batch


def apply_auto_scale_lr(cfg, world_size: int):
    """With ``solver.auto_scale_lr``, a copy of ``cfg`` whose ``solver.lr`` fits the batch.

    The config's own rate is kept in ``solver.lr_scaled_from``, so scaling a config that was
    already scaled (a stored run config) starts from the same rate and gives the same value.
    Returns ``cfg`` unchanged when ``auto_scale_lr`` is off.
    """
    solver = cfg.solver
    if not solver.auto_scale_lr:
        return cfg
    base = solver.lr if solver.lr_scaled_from is None else solver.lr_scaled_from
    lr = scaled_lr(base, solver.reference_batch, world_size, cfg.data.images_per_gpu)
    return dataclasses.replace(
        cfg, solver=dataclasses.replace(solver, lr=lr, lr_scaled_from=float(base)))
