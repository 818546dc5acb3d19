"""Build a box-classification loss by name: the one place that maps config names to classes.

Every loss built here is called as ``loss(logits [N, C'], labels [N]) -> float32 scalar`` with
labels in ``0..K`` (0 = background), except ``"equilibrium"``, whose module takes the mean
scores as a third argument (``loss(logits, labels, mean_scores [K + 1])``) because they live
in :class:`loce.method.MeanScoreTracker`, which the RoI head updates. The predictor width
``C'`` comes from :func:`classification_num_logits`; the inference scores from
:func:`loce.losses.scoring.scores_from_logits` (or the module's ``scores`` method).

Keyword arguments per name (besides ``num_classes``; every loss also takes ``loss_weight``):

==================  ===========================================================================
name                arguments (defaults are the published values)
==================  ===========================================================================
cross_entropy       none
equilibrium         ``reduction``
eql                 ``image_frequency`` [K] (required), ``freq_threshold``
eqlv2               ``gamma``, ``mu``, ``alpha``, ``test_with_obj``
seesaw              ``p``, ``q``, ``eps``, ``sync_counts``
federated           ``image_counts`` [K] (required), ``num_sampled``, ``freq_weight_power``,
                    ``seed``
ecm                 ``instance_counts`` [K] (required), ``fg_bg_ratio``, ``test_with_obj``
gumbel              ``image_frequency`` [K] (required), ``freq_threshold``, ``seed``
==================  ===========================================================================
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from loce.losses._common import LOSS_NAMES, LossName
from loce.losses.cross_entropy import CrossEntropyLoss
from loce.losses.ecm import ECMLoss
from loce.losses.eql import EQLLoss
from loce.losses.eqlv2 import EQLv2Loss
from loce.losses.equilibrium import EquilibriumLoss
from loce.losses.federated import FederatedLoss
from loce.losses.gumbel import GumbelLoss
from loce.losses.seesaw import SeesawLoss

__all__ = [
    "LOSS_NAMES",
    "LossName",
    "build_classification_loss",
    "classification_num_logits",
]

_CLASSES: dict[str, type[nn.Module]] = {
    "cross_entropy": CrossEntropyLoss,
    "equilibrium": EquilibriumLoss,
    "eql": EQLLoss,
    "eqlv2": EQLv2Loss,
    "seesaw": SeesawLoss,
    "federated": FederatedLoss,
    "ecm": ECMLoss,
    "gumbel": GumbelLoss,
}
assert tuple(_CLASSES) == LOSS_NAMES


def _check_name(name: str) -> None:
    if name not in _CLASSES:
        raise ValueError(f"unknown classification loss {name!r}; valid: {', '.join(LOSS_NAMES)}")


def classification_num_logits(name: LossName, num_classes: int) -> int:
    """Width ``C'`` of the box classifier for loss ``name`` and ``K = num_classes``.

    ``K + 2`` for ``"seesaw"`` (``[o_bg | u_1..u_K | o_fg]``), ``K + 1`` for every other loss.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names).
    """
    _check_name(name)
    cls = _CLASSES[name]
    num_logits = getattr(cls, "num_logits", None)
    return int(num_logits(num_classes)) if num_logits is not None else int(num_classes) + 1


def build_classification_loss(name: LossName, num_classes: int, **kwargs: Any) -> nn.Module:
    """The loss module called ``name`` for ``K = num_classes`` foreground classes.

    Args:
        name: one of :data:`LOSS_NAMES`.
        num_classes: ``K``.
        **kwargs: the loss's constructor arguments (see the module docstring).

    Returns:
        The ``nn.Module``; move it to the model's device with the model (it may hold buffers).

    Raises:
        ValueError: unknown ``name``, an argument the loss does not take, or a required one
            missing; the message lists the valid names or the loss's accepted arguments.
    """
    _check_name(name)
    cls = _CLASSES[name]
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p in params if p not in ("self", "num_classes")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"classification loss {name!r} does not take {', '.join(map(repr, unknown))}; "
            f"it accepts: {', '.join(accepted) or 'no arguments'}"
        )
    missing = [
        p for p in accepted if params[p].default is inspect.Parameter.empty and p not in kwargs
    ]
    if missing:
        raise ValueError(
            f"classification loss {name!r} needs {', '.join(map(repr, missing))} "
            f"(per-class statistics of the training set, labels 1..K)"
        )
    if name == "equilibrium":
        # EquilibriumLoss has no class count: the mean scores it is called with carry K.
        return cls(**kwargs)
    return cls(num_classes, **kwargs)
