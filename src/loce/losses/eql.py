"""Equalization Loss (EQL; Tan et al., CVPR 2020), docs/methods.md §2.

Shape shorthand:
    N: sampled RoIs on this rank.
    K: foreground classes.
    C: logits per row, ``C = K + 1``. Column 0 is unused: it gets no loss and no gradient, and
       scores 0 at inference. (The original predictor has ``K`` columns; the extra column
       keeps one predictor shape for every method, docs/methods.md §1.1.)

Sigmoid binary cross-entropy over the foreground classes in which, for a foreground RoI, the
negative terms of *tail* classes are ignored (docs/methods.md §2.1)::

    E_i   = 1[y_i != 0]
    T_c   = 1[f_c < lambda]                    c = 1..K, f_c = image frequency
    w_ic  = 1 - E_i * T_c * (1 - t_ic)
    L     = (1/N) * sum_i sum_{c=1..K} w_ic * BCE(z_ic, t_ic)

Background RoIs still push every class down, positives always count. ``lambda = 0`` gives
plain sigmoid BCE.

State: none that changes. The tail set ``T`` is fixed at construction from the image
frequencies and kept in the buffer ``tail`` so it is saved with the checkpoint; it is the same
on every rank, so nothing is synchronised.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from loce.losses._common import (
    TailSetLoss,
    check_tail_inputs,
    class_vector,
    empty_loss,
    init_sigmoid_prior_,
)
from loce.losses.scoring import sigmoid_scores

__all__ = ["EQLLoss", "eql_loss", "tail_classes"]

#: Prior probability of the sigmoid classifier at initialisation (docs/methods.md §2.1):
#: bias -ln(999).
PRIOR_PROB = 0.001


def tail_classes(image_frequency: Tensor | Sequence[float], threshold: float) -> Tensor:
    """Tail indicator ``T_c = 1[f_c < threshold]`` of the foreground classes.

    Args:
        image_frequency: ``[K]`` float ``f_c = image_count_c / N_img`` for labels 1..K (an
            image frequency, not an instance frequency: docs/methods.md §2.5).
        threshold: ``lambda``.

    Returns:
        ``[K]`` float32, 1.0 for tail classes and 0.0 otherwise.
    """
    f = class_vector(image_frequency, len(image_frequency), "image_frequency")
    return (f < threshold).to(torch.float32)


def eql_loss(logits: Tensor, labels: Tensor, tail: Tensor) -> Tensor:
    """Equalization Loss of one batch (docs/methods.md §2.1), divided by the number of rows ``N``.

    Args:
        logits: ``[N, K + 1]`` float (fp32/fp16/bf16); column 0 is ignored.
        labels: ``[N]`` int64 in ``0..K`` (0 = background).
        tail: ``[K]`` float or bool, 1 for tail classes (labels 1..K), e.g. from
            :func:`tail_classes`. Treated as a constant.

    Returns:
        float32 scalar (see :mod:`loce.losses._common` for ``N = 0`` and the errors).
    """
    c = check_tail_inputs(logits, labels, tail)
    n = logits.shape[0]
    if n == 0:
        return empty_loss(logits)
    z = logits.float()[:, 1:]
    t = F.one_hot(labels.long(), c)[:, 1:].to(torch.float32)
    fg = (labels > 0).to(torch.float32)[:, None]
    tail_row = tail.detach().to(device=z.device, dtype=torch.float32)[None, :]
    weight = 1.0 - fg * tail_row * (1.0 - t)
    bce = F.binary_cross_entropy_with_logits(z, t, reduction="none")
    return (weight * bce).sum() / n


class EQLLoss(TailSetLoss):
    """Module form of :func:`eql_loss`, with the tail set built from image frequencies.

    Args:
        num_classes: ``K``; the classifier has ``K + 1`` outputs, column 0 unused.
        image_frequency: ``[K]`` image frequency ``f_c`` of labels 1..K in the training set.
        freq_threshold: ``lambda``. The default 0.00177 is the published value for LVIS v0.5
            (it selects exactly the rare and common classes there); LVIS v1 uses **0.0011**
            (docs/methods.md §2.1, §2.5: reusing 0.00177 on v1 silently widens the tail set).
        loss_weight: factor applied to the loss (1.0).

    Attributes:
        tail: ``[K]`` float32 buffer, 1.0 for tail classes.
    """

    @classmethod
    def init_classifier_(cls, weight: Tensor, bias: Tensor | None) -> None:
        """Weights N(0, 0.01), bias ``-ln((1 - p)/p)`` with prior ``p = 0.001``
        (docs/methods.md §2.1).

        Without the prior, the first losses are about ``K * ln 2`` per RoI (docs/methods.md §2.5).
        """
        init_sigmoid_prior_(weight, bias, PRIOR_PROB)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Loss of one batch (column 0 of the logits unused)."""
        self._check(logits, labels)
        return self._weighted(eql_loss(logits, labels, self.tail))

    def scores(self, logits: Tensor) -> Tensor:
        """``[N, K + 1]`` float32 ``sigmoid(z_c)``, column 0 zero (docs/methods.md §2.3)."""
        return sigmoid_scores(logits)
