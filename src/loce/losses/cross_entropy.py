"""Softmax cross-entropy, the baseline box-classification loss (docs/methods.md §1.4).

Shape shorthand:
    N: sampled RoIs on this rank.
    K: foreground classes.
    C: logits per row, ``C = K + 1``; column 0 is background, 1..K are foreground.

``loss = (1/N) * sum_i -log softmax(z_i)[y_i]``: torchvision's ``fastrcnn_loss`` term, here
computed in float32 whatever the autocast dtype (docs/methods.md §1.6). Scores: softmax over all
columns. No state.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from loce.losses._common import (
    ClassificationLoss,
    check_inputs,
    empty_loss,
)
from loce.losses.scoring import softmax_scores

__all__ = ["CrossEntropyLoss", "cross_entropy_loss"]


def cross_entropy_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean softmax cross-entropy over the rows.

    Args:
        logits: ``[N, K + 1]`` float (fp32/fp16/bf16), background at column 0.
        labels: ``[N]`` int64 in ``0..K`` (0 = background).

    Returns:
        float32 scalar. With ``N = 0`` it is 0 and still connected to ``logits``, so a backward
        pass works (zero gradients).

    Raises:
        ValueError: shapes or dtypes that do not match, or a label outside ``0..K`` (the
            message gives the first offending row).
    """
    check_inputs(logits, labels)
    if logits.shape[0] == 0:
        return empty_loss(logits)
    return F.cross_entropy(logits.float(), labels.long(), reduction="mean")


class CrossEntropyLoss(ClassificationLoss):
    """Module form of :func:`cross_entropy_loss`; holds no state.

    Args:
        num_classes: ``K``; the classifier has ``K + 1`` outputs.
        loss_weight: factor applied to the loss (1.0).
    """

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Loss of one batch (background logit at column 0)."""
        self._check(logits, labels)
        return self._weighted(cross_entropy_loss(logits, labels))

    def scores(self, logits: Tensor) -> Tensor:
        """``[N, K + 1]`` float32 softmax scores (see :func:`loce.losses.scoring.softmax_scores`)."""
        return softmax_scores(logits)
