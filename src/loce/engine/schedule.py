"""Learning-rate schedule: linear warmup by iteration, step decay by epoch.

The rate at global iteration ``it`` (0-based) in epoch ``epoch`` (0-based) is::

    lr(it, epoch) = base_lr * gamma ** (number of steps s with s <= epoch) * warmup(it)
    warmup(it)    = warmup_ratio + (1 - warmup_ratio) * it / warmup_iters   for it < warmup_iters
                  = 1                                                     otherwise

``steps`` are epoch numbers counted from 1 as in the original configs: ``steps=[16, 22]``
decays after the 16th and the 22nd epoch, i.e. from 0-based epoch 16 and 22 on. This is
mmdet's linear warmup (its ``warmup_ratio`` is the starting factor) and step policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch.optim import Optimizer

__all__ = ["WarmupStepSchedule"]


class WarmupStepSchedule:
    """Sets the learning rate of every parameter group before each iteration.

    Args:
        optimizer: the optimizer whose groups are updated.
        base_lr: the rate after warmup and before the first step.
        steps: epochs (1-based, increasing) after which the rate is multiplied by ``gamma``.
        gamma: decay factor.
        warmup_iters: iterations of linear warmup (0 disables it).
        warmup_ratio: the warmup's starting factor.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        base_lr: float,
        steps: Sequence[int],
        gamma: float = 0.1,
        warmup_iters: int = 500,
        warmup_ratio: float = 0.001,
    ) -> None:
        self.optimizer = optimizer
        self.base_lr = float(base_lr)
        self.steps = [int(s) for s in steps]
        self.gamma = float(gamma)
        self.warmup_iters = int(warmup_iters)
        self.warmup_ratio = float(warmup_ratio)
        self.last_lr = self.lr_at(0, 0)

    def lr_at(self, global_iter: int, epoch: int) -> float:
        decay = self.gamma ** sum(1 for s in self.steps if s <= epoch)
        if global_iter < self.warmup_iters:
            k = self.warmup_ratio + (1.0 - self.warmup_ratio) * global_iter / self.warmup_iters
        else:
            k = 1.0
        return self.base_lr * decay * k

    def step(self, global_iter: int, epoch: int) -> float:
        """Set and return the rate for the iteration about to run."""
        lr = self.lr_at(global_iter, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.last_lr = lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {
            "base_lr": self.base_lr,
            "steps": list(self.steps),
            "gamma": self.gamma,
            "warmup_iters": self.warmup_iters,
            "warmup_ratio": self.warmup_ratio,
            "last_lr": self.last_lr,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lr = float(state["base_lr"])
        self.steps = [int(s) for s in state["steps"]]
        self.gamma = float(state["gamma"])
        self.warmup_iters = int(state["warmup_iters"])
        self.warmup_ratio = float(state["warmup_ratio"])
        self.last_lr = float(state.get("last_lr", self.lr_at(0, 0)))
