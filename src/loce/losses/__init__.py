"""Classification losses for the box head, one module per loss.

Every loss takes logits ``[N, C']`` with background at column 0 and labels ``[N]`` int64 in
0..K (0 = background); :func:`build_classification_loss` picks one by name, from the table
:data:`LOSS_SPECS` (:mod:`loce.losses.registry`), and :func:`build_classification_loss_for`
builds the one a model config names.
"""

from loce.losses._common import ClassificationLoss, RankGenerator
from loce.losses.cross_entropy import CrossEntropyLoss, cross_entropy_loss
from loce.losses.ecm import ECMLoss, ecm_constants, ecm_loss
from loce.losses.eql import EQLLoss, eql_loss, tail_classes
from loce.losses.eqlv2 import EQLv2Loss, eqlv2_gradient_increments, eqlv2_loss, eqlv2_weights
from loce.losses.equilibrium import EquilibriumLoss, equilibrium_loss
from loce.losses.factory import (
    LOSS_NAMES,
    LossName,
    build_classification_loss,
    build_classification_loss_for,
    classification_num_logits,
    needs_class_statistics,
)
from loce.losses.federated import FederatedLoss, federated_loss, sample_federated_classes
from loce.losses.gumbel import GumbelLoss, gumbel_bce, gumbel_loss
from loce.losses.registry import LOSS_SPECS, LossSpec, loss_spec
from loce.losses.scoring import (
    gumbel_scores,
    objectness_sigmoid_scores,
    scores_from_logits,
    seesaw_scores,
    sigmoid_scores,
    softmax_scores,
)
from loce.losses.seesaw import SeesawLoss, seesaw_loss, seesaw_loss_terms

__all__ = [
    "LOSS_NAMES",
    "LOSS_SPECS",
    "ClassificationLoss",
    "CrossEntropyLoss",
    "ECMLoss",
    "EQLLoss",
    "EQLv2Loss",
    "EquilibriumLoss",
    "FederatedLoss",
    "GumbelLoss",
    "LossName",
    "LossSpec",
    "RankGenerator",
    "SeesawLoss",
    "build_classification_loss",
    "build_classification_loss_for",
    "classification_num_logits",
    "cross_entropy_loss",
    "ecm_constants",
    "ecm_loss",
    "eql_loss",
    "eqlv2_gradient_increments",
    "eqlv2_loss",
    "eqlv2_weights",
    "equilibrium_loss",
    "federated_loss",
    "gumbel_bce",
    "gumbel_loss",
    "gumbel_scores",
    "loss_spec",
    "needs_class_statistics",
    "objectness_sigmoid_scores",
    "sample_federated_classes",
    "scores_from_logits",
    "seesaw_loss",
    "seesaw_loss_terms",
    "seesaw_scores",
    "sigmoid_scores",
    "softmax_scores",
    "tail_classes",
]
