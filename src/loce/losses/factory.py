"""Build a box-classification loss by name, as the table of :mod:`loce.losses.registry` says.

Every loss built here is called as ``loss(logits [N, C'], labels [N]) -> float32 scalar`` with
labels in ``0..K`` (0 = background), except ``"equilibrium"``, whose module takes the mean
scores as a third argument (``loss(logits, labels, mean_scores [K + 1])``) because they live
in :class:`loce.method.MeanScoreTracker`, which the RoI head updates. The predictor width
``C'`` comes from :func:`classification_num_logits`; the inference scores from
:func:`loce.losses.scoring.scores_from_logits` (or the module's ``scores`` method).

Which class each name builds, its keyword arguments (config section, training statistic,
seed), its classifier width and its scoring rule are in the table
:data:`loce.losses.registry.LOSS_SPECS`; the defaults of the arguments are the published values.
:func:`build_classification_loss_for` builds the loss a model config names.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import nn

from loce.errors import ConfigError
from loce.losses._common import LOSS_NAMES, LossName
from loce.losses.registry import LOSS_SPECS, Statistic, loss_spec

if TYPE_CHECKING:
    from loce.config.model import ModelConfig
    from loce.data.statistics import ClassStatistics

__all__ = [
    "LOSS_NAMES",
    "LossName",
    "build_classification_loss",
    "build_classification_loss_for",
    "classification_num_logits",
    "needs_class_statistics",
]


def classification_num_logits(name: LossName, num_classes: int) -> int:
    """Width ``C'`` of the box classifier for loss ``name`` and ``K = num_classes``.

    The loss class's ``num_logits`` (that of the ``model_loss`` of its entry in
    :data:`LOSS_SPECS`, if it names one): ``K + 2`` for ``"seesaw"``
    (``[o_bg | u_1..u_K | o_fg]``), ``K + 1`` for every other loss.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names).
    """
    spec = loss_spec(name)
    cls = loss_spec(spec.model_loss).cls if spec.model_loss is not None else spec.cls
    num_logits = getattr(cls, "num_logits", None)
    return int(num_logits(num_classes)) if num_logits is not None else int(num_classes) + 1


def build_classification_loss(name: LossName, num_classes: int, **kwargs: Any) -> nn.Module:
    """The loss module called ``name`` for ``K = num_classes`` foreground classes.

    Args:
        name: one of :data:`LOSS_NAMES`.
        num_classes: ``K``.
        **kwargs: the loss's constructor arguments (see :data:`LOSS_SPECS`).

    Returns:
        The ``nn.Module``; move it to the model's device with the model (it may hold buffers).

    Raises:
        ValueError: unknown ``name``, an argument the loss does not take, or a required one
            missing; the message lists the valid names or the loss's accepted arguments.
    """
    spec = loss_spec(name)
    cls = spec.cls
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
    if not spec.takes_num_classes:
        # EquilibriumLoss has no class count: the mean scores it is called with carry K.
        return cls(**kwargs)
    return cls(num_classes, **kwargs)


#: How a message names each statistic, and its ``[K]`` values from a ClassStatistics.
_STATISTICS: dict[Statistic, tuple[str, Callable[[ClassStatistics], list[float]]]] = {
    "image_frequency": ("image frequencies", lambda stats: stats.image_frequency()),
    "image_counts": ("image counts", lambda stats: list(stats.image_counts)),
    "instance_counts": ("instance counts", lambda stats: list(stats.instance_counts)),
}


def needs_class_statistics(name: str) -> bool:
    """Whether loss ``name`` is built from per-class statistics of the training set."""
    spec = LOSS_SPECS.get(name)
    return spec is not None and spec.statistic is not None


def build_classification_loss_for(
    cfg: ModelConfig,
    num_classes: int,
    class_stats: ClassStatistics | None = None,
    seed: int = 0,
) -> nn.Module:
    """The box classification loss ``cfg.roi.cls_loss`` with its configured hyperparameters.

    Args:
        cfg: the model config (``roi.cls_loss``, ``roi.cls_loss_weight`` and the loss's
            section, e.g. ``roi.seesaw``).
        num_classes: ``K``.
        class_stats: training statistics (a :class:`loce.data.statistics.ClassStatistics`); required
            by EQL, federated, ECM and Gumbel.
        seed: base seed of the random draws of federated and Gumbel (rank ``r`` uses
            ``seed + r``).

    Returns:
        A :class:`loce.losses.ClassificationLoss` (``"equilibrium"`` gives the cross-entropy
        module: the LOCE heads compute the equilibrium loss themselves and score with softmax).

    Raises:
        ConfigError: statistics missing or for another number of classes.
    """
    roi = cfg.roi
    name = roi.cls_loss
    spec = loss_spec(name)
    kwargs: dict[str, Any] = {"loss_weight": roi.cls_loss_weight}
    if spec.statistic is not None:
        what, values = _STATISTICS[spec.statistic]
        if class_stats is None:
            raise ConfigError(
                f"model.roi.cls_loss={name!r} is built from the {what} of "
                "the training classes, but no class statistics were given; build the model "
                "with loce.build.build_model, which reads them from data.train_ann"
            )
        if class_stats.num_classes != num_classes:
            raise ConfigError(
                f"{class_stats.source} has {class_stats.num_classes} categories but the model "
                f"is built for {num_classes}; model.roi.cls_loss={name!r} needs the statistics "
                "of the annotation file the model is trained on (data.train_ann)"
            )
        kwargs[spec.statistic_arg or spec.statistic] = values(class_stats)
    if spec.section is not None:
        kwargs.update(dataclasses.asdict(getattr(roi, spec.section)))
    if spec.takes_seed:
        kwargs["seed"] = seed
    return build_classification_loss(spec.model_loss or name, num_classes, **kwargs)
