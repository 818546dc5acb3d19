"""Gumbel Optimised Loss (GOL; Alexandridis et al., ECCV 2022), docs/methods.md §7.

Shape shorthand:
    N: sampled RoIs on this rank.
    K: foreground classes.
    C: logits per row, ``C = K + 1``. Column 0 is unused: no loss, no gradient, score 0 (the
       original has ``K`` columns).

The final GOL: binary cross-entropy under the Gumbel CDF activation ``phi(z) = exp(-exp(-z))``
with DropLoss's rule for which negatives count (docs/methods.md §7.1)::

    z^ = clamp(z, -4, 10);  p = phi(z^)
    T_c   = 1[f_c < lambda]                     image frequency, as in EQL
    rho   = mean over foreground RoIs of T_{y_i}   (no foreground RoI: nothing dropped)
    u_ic ~ U(0, 1)
    fg RoI: d_ic = 1 - T_c * (1 - t_ic)           EQL's exclusion of tail negatives
    bg RoI: d_ic = 1 - T_c * 1[u_ic > rho]        a tail negative is dropped w.p. 1 - rho
    L = (1/N) * sum_i sum_{c=1..K} d_ic * (-t ln p - (1 - t) ln(1 - p))

``-ln p = exp(-z^)`` and ``-ln(1 - p) = -ln(-expm1(-exp(-z^)))`` are computed directly, in
float32, so nothing overflows (docs/methods.md §7.5, §1.6). The clamp is the original's and is
kept on purpose: outside ``[-4, 10]`` the gradient is zero (a positive at ``z < -4`` costs a constant
``e^4``). Inference applies ``phi`` without the clamp.

The gradient differs from the original's, which computes the loss as
``F.binary_cross_entropy(phi(z^), t)``: its backward divides by ``max(phi (1 - phi), 1e-12)``,
so a positive with ``phi < 1e-12`` (``z^`` from -4 to about -3.32) gets a gradient shrunk by
``phi (1 - phi) / 1e-12``, e.g. -0.137 instead of ``-e^3.5 = -33.1`` at ``z = -3.5``. Here
the terms are differentiated exactly (``d(-ln phi)/dz = -e^-z``).

Only the DropLoss + Gumbel form is implemented; the activation-only variant (``GumbelCE``, a
background column trained as a class and a loss clamp of [0, 20]) is not.

State: none persistent. The tail set is a constant buffer ``tail`` from the image frequencies
(the original keeps it as a plain attribute, out of the checkpoint; here it is saved, which
changes nothing in training). ``rho`` and ``u`` are drawn per batch on each rank with no
synchronisation, as in the original; ``u`` comes from a ``torch.Generator`` on the logits'
device seeded with ``seed + rank`` (:attr:`GumbelLoss.draws`), whose state the training engine
saves with each rank's random state in the checkpoint, so a resumed run continues the stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loce.losses._common import (
    RankGenerator,
    TailSetLoss,
    check_shape,
    check_tail_inputs,
    empty_loss,
)
from loce.losses.scoring import gumbel_scores

__all__ = ["GumbelLoss", "gumbel_bce", "gumbel_loss"]

#: Logit clamp of the training loss (docs/methods.md §7.1).
CLAMP_MIN, CLAMP_MAX = -4.0, 10.0


def gumbel_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Elementwise Gumbel binary cross-entropy on clamped logits.

    Args:
        logits: ``[...]`` float logits ``z``.
        targets: ``[...]`` float targets in ``{0, 1}``, same shape.

    Returns:
        ``[...]`` float32 ``-t ln phi(z^) - (1 - t) ln(1 - phi(z^))``, ``z^ = clamp(z, -4, 10)``.
    """
    z = logits.float().clamp(CLAMP_MIN, CLAMP_MAX)
    e = torch.exp(-z)  # -ln phi(z), at most e^4
    neg = -torch.log(-torch.expm1(-e))  # -ln(1 - phi(z)), >= 4.5e-5 inside the clamp
    t = targets.to(torch.float32)
    return t * e + (1.0 - t) * neg


def gumbel_loss(
    logits: Tensor, labels: Tensor, tail: Tensor, uniform: Tensor | None = None
) -> Tensor:
    """GOL of one batch (docs/methods.md §7.1), divided by ``N``.

    Args:
        logits: ``[N, K + 1]`` float (fp32/fp16/bf16); column 0 is ignored.
        labels: ``[N]`` int64 in ``0..K`` (0 = background).
        tail: ``[K]`` float or bool, 1 for tail classes (labels 1..K).
        uniform: ``[N, K]`` float draws ``u ~ U(0, 1)`` for the background rows' drop test;
            ``None`` drops nothing (the same as ``rho = 1``).

    Returns:
        float32 scalar (see :mod:`loce.losses._common` for ``N = 0`` and the errors).
    """
    c = check_tail_inputs(logits, labels, tail)
    n, k = logits.shape[0], c - 1
    if uniform is not None:
        check_shape(uniform, "uniform", "[N, K]", (n, k), f" to match logits {list(logits.shape)}")
    if n == 0:
        return empty_loss(logits)
    z = logits[:, 1:]
    t = F.one_hot(labels.long(), c)[:, 1:].to(torch.float32)
    tail_row = tail.detach().to(device=z.device, dtype=torch.float32)[None, :]
    fg = labels > 0
    keep = 1.0 - tail_row * (1.0 - t)  # foreground rows: EQL exclusion
    if uniform is not None:
        tail_labels = tail_row[0][(labels[fg] - 1).long()]
        # rho = share of foreground RoIs whose class is tail; with no foreground RoI the
        # original's mean is NaN and "u > NaN" is false, so nothing is dropped.
        rho = tail_labels.mean() if tail_labels.numel() else torch.tensor(2.0, device=z.device)
        dropped = (uniform.to(device=z.device, dtype=torch.float32) > rho).to(torch.float32)
        bg_keep = 1.0 - tail_row * dropped
        keep = torch.where(fg[:, None], keep, bg_keep)
    return (keep * gumbel_bce(z, t)).sum() / n


class GumbelLoss(TailSetLoss):
    """GOL (DropLoss with the Gumbel activation) with the tail set from image frequencies.

    Args:
        num_classes: ``K``; the classifier has ``K + 1`` outputs, column 0 unused.
        image_frequency: ``[K]`` image frequency ``f_c`` of labels 1..K.
        freq_threshold: ``lambda``; 0.00177 is the published default (LVIS v0.5); LVIS v1
            uses **0.0011** (docs/methods.md §7.1).
        seed: base seed of the drop draws; rank ``r`` uses ``seed + r``.
        loss_weight: factor applied to the loss (1.0).

    Attributes:
        tail: ``[K]`` float32 buffer, 1.0 for tail classes.
        draws: the generators of the drop draws, one per device of the logits.
    """

    draws: RankGenerator

    def __init__(
        self,
        num_classes: int,
        image_frequency: Tensor | Sequence[float],
        freq_threshold: float = 0.00177,
        seed: int = 0,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(num_classes, image_frequency, freq_threshold, loss_weight)
        self.draws = RankGenerator(seed)

    @classmethod
    def init_classifier_(cls, weight: Tensor, bias: Tensor | None) -> None:
        """Weights constant 0.001, bias -2: ``phi`` starts near ``exp(-e^2) = 6.2e-4``."""
        with torch.no_grad():
            nn.init.constant_(weight, 0.001)
            if bias is not None:
                bias.fill_(-2.0)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Loss of one batch (column 0 of the logits unused), with fresh drop draws."""
        self._check(logits, labels)
        n, k = logits.shape[0], self.num_classes
        u = torch.rand((n, k), generator=self.draws.get(logits.device), device=logits.device)
        return self._weighted(gumbel_loss(logits, labels, self.tail, u))

    def scores(self, logits: Tensor) -> Tensor:
        """``[N, K + 1]`` float32 ``exp(-exp(-z_c))``, column 0 zero (docs/methods.md §7.3)."""
        return gumbel_scores(logits)
