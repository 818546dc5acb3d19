"""The classification losses by name: one :class:`LossSpec` per name in :data:`LOSS_SPECS`.

The table is what the rest of loce reads to build, size and score a loss named by
``model.roi.cls_loss``: :func:`loce.losses.factory.build_classification_loss`,
:func:`~loce.losses.factory.classification_num_logits`,
:func:`~loce.losses.factory.build_classification_loss_for` (the model builder's entry) and
:func:`loce.losses.scoring.scores_from_logits`. A new loss is its module, a name in
:data:`loce.config.model.ClsLossName` (with its config section in
:class:`loce.config.model.RoIConfig`, if it has hyperparameters) and an entry here, in the
order of the names.

Constructor arguments of a loss (besides ``num_classes``; every loss takes ``loss_weight``)
come from three places: the fields of its config section (same names as the arguments, same
defaults), one per-class statistic of the training set (``statistic``) and the seed of its
random draws (``takes_seed``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from loce.losses._common import LOSS_NAMES
from loce.losses.cross_entropy import CrossEntropyLoss
from loce.losses.ecm import ECMLoss
from loce.losses.eql import EQLLoss
from loce.losses.eqlv2 import EQLv2Loss
from loce.losses.equilibrium import EquilibriumLoss
from loce.losses.federated import FederatedLoss
from loce.losses.gumbel import GumbelLoss
from loce.losses.scoring import (
    gumbel_scores,
    objectness_sigmoid_scores,
    seesaw_scores,
    sigmoid_scores,
    softmax_scores,
)
from loce.losses.seesaw import SeesawLoss

__all__ = ["LOSS_SPECS", "LossSpec", "Statistic", "loss_spec"]

#: Per-class statistics of the training set a loss can be built from (each ``[K]``, label 1
#: first): ``image_count / num_images``, ``image_count``, ``instance_count``.
Statistic = Literal["image_frequency", "image_counts", "instance_counts"]


@dataclass(frozen=True)
class LossSpec:
    """How loce builds, sizes and scores one classification loss.

    Attributes:
        cls: the loss module. Its constructor takes ``num_classes`` first (unless
            ``takes_num_classes`` is false), then keyword arguments. Its ``num_logits(K)``
            classmethod, if any, gives the classifier width (``K + 1`` otherwise).
        scores: the inference rule, a function of :mod:`loce.losses.scoring` mapping
            ``logits [N, C']`` to ``[N, K + 1]`` scores.
        scores_take_test_with_obj: ``scores`` takes the ``test_with_obj`` switch.
        section: the attribute of :class:`loce.config.model.RoIConfig` holding the loss's
            hyperparameters, a dataclass whose fields are constructor arguments of the same
            names and defaults; ``None``: no section.
        statistic: the per-class training statistic the loss is built from, or ``None``.
        statistic_arg: the constructor argument taking it; ``None``: the statistic's name.
        takes_seed: the constructor takes ``seed``, the base seed of its random draws.
        takes_num_classes: the constructor takes ``num_classes``.
        model_loss: the name of the loss whose module the detector trains with instead, and
            whose classifier width it has; ``None``: this one.
    """

    cls: type[nn.Module]
    scores: Callable[..., Tensor]
    scores_take_test_with_obj: bool = False
    section: str | None = None
    statistic: Statistic | None = None
    statistic_arg: str | None = None
    takes_seed: bool = False
    takes_num_classes: bool = True
    model_loss: str | None = None


#: One entry per name of :data:`loce.config.model.CLS_LOSSES`, in the same order.
LOSS_SPECS: dict[str, LossSpec] = {
    "cross_entropy": LossSpec(CrossEntropyLoss, softmax_scores),
    # Called with the mean scores as a third argument and without a class count; in the
    # detector the LOCE heads compute it themselves around the cross-entropy module.
    "equilibrium": LossSpec(EquilibriumLoss, softmax_scores, takes_num_classes=False,
                            model_loss="cross_entropy"),
    "eql": LossSpec(EQLLoss, sigmoid_scores, section="eql", statistic="image_frequency"),
    "eqlv2": LossSpec(EQLv2Loss, objectness_sigmoid_scores, scores_take_test_with_obj=True,
                      section="eqlv2"),
    # K + 2 logits, from SeesawLoss.num_logits.
    "seesaw": LossSpec(SeesawLoss, seesaw_scores, section="seesaw"),
    "federated": LossSpec(FederatedLoss, sigmoid_scores, section="federated",
                          statistic="image_counts", takes_seed=True),
    "ecm": LossSpec(ECMLoss, objectness_sigmoid_scores, scores_take_test_with_obj=True,
                    section="ecm", statistic="instance_counts"),
    "gumbel": LossSpec(GumbelLoss, gumbel_scores, section="gumbel", statistic="image_frequency",
                       takes_seed=True),
}
assert tuple(LOSS_SPECS) == LOSS_NAMES


def loss_spec(name: str) -> LossSpec:
    """The entry of loss ``name``.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names).
    """
    spec = LOSS_SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown classification loss {name!r}; valid: {', '.join(LOSS_NAMES)}")
    return spec
