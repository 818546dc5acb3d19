"""Which parameters train: ``train.trainable`` and the checks of ``train.reinit``.

The model builder already froze the first ResNet stages (``model.frozen_stages``); this
freezes everything outside ``train.trainable`` and keeps frozen BatchNorm layers frozen.
"""

from __future__ import annotations

import warnings

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from loce.config import Config
from loce.errors import ConfigError
from loce.models.weights import matches_prefix, unknown_prefix_error

__all__ = ["check_reinit_trainable", "configure_trainable"]


def check_reinit_trainable(model: nn.Module, cfg: Config) -> None:
    """A layer in ``train.reinit`` must be trained: frozen, it would stay random.

    Raises:
        ConfigError: a ``train.reinit`` prefix whose parameters ``train.trainable`` freezes.
    """
    for i, prefix in enumerate(p.strip().strip(".") for p in cfg.train.reinit):
        params = [q for n, q in model.named_parameters() if matches_prefix(n, prefix)]
        if params and not any(q.requires_grad for q in params):
            raise ConfigError(
                f"train.reinit[{i}] = {cfg.train.reinit[i]!r} is re-initialised but frozen, so it "
                "would stay random; add it (or a module above it) to train.trainable"
            )


def _keep_running_stats(module: nn.Module, args) -> None:
    # A BatchNorm layer whose parameters are all frozen is part of the frozen network: it
    # normalises with its running statistics and never updates them, whatever model.train()
    # says (the original's norm_eval, docs/method.md §7/§9), so that stored memory features and
    # the frozen layers' outputs do not drift with the batches.
    module.training = False


def configure_trainable(model: nn.Module, cfg: Config) -> None:
    """Freeze everything outside ``train.trainable`` (the model builder already froze the
    first ResNet stages).

    A parameter stays trainable when its name equals a prefix or starts with the prefix plus
    "." and the builder left it trainable. BatchNorm layers left without trainable parameters
    then always use their running statistics (see :func:`_keep_running_stats`).

    Raises:
        ConfigError: a prefix that matches no parameter, listing the valid prefixes.
    """
    prefixes = cfg.train.trainable
    if prefixes is None:
        return
    prefixes = [p.strip().strip(".") for p in prefixes]
    names = [n for n, _ in model.named_parameters()]
    for i, prefix in enumerate(prefixes):
        if not any(matches_prefix(n, prefix) for n in names):
            raise unknown_prefix_error(model, prefix, f"train.trainable[{i}] = "
                                  f"{cfg.train.trainable[i]!r} matches no parameter of the model.")
    for name, param in model.named_parameters():
        if not any(matches_prefix(name, p) for p in prefixes):
            param.requires_grad_(False)
    for module in model.modules():
        if isinstance(module, _BatchNorm) and not any(
            p.requires_grad for p in module.parameters()
        ) and not getattr(module, "_loce_running_stats", False):
            module.register_forward_pre_hook(_keep_running_stats)
            module._loce_running_stats = True
    if cfg.loce.enabled and cfg.loce.feature_memory and any(
        p.requires_grad for p in model.backbone.parameters()
    ):
        warnings.warn(
            "train.trainable leaves backbone parameters trainable while LOCE's feature memory "
            "stores features of the backbone/FPN: stored features go stale as it trains "
            "(docs/method.md §4 freezes the backbone and FPN)",
            stacklevel=2,
        )
