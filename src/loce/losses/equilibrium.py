"""Equilibrium Loss: cross-entropy on logits shifted by the log mean classification score.

Shape shorthand:
    N: rows of the classification batch (sampled RoIs plus memory features).
    K: foreground classes.
    C: logits per row, ``C = K + 1``; index 0 is background, 1..K are foreground.

The original code puts background last (index ``K``); here it is index 0, like torchvision.
The formula does not depend on where background sits: every class, background included, is
shifted by the log of its own entry of the mean-score vector (docs/method.md §3).

For a row with logits ``z`` and label ``y``::

    p~_j = s_j exp(z_j) / sum_k s_k exp(z_k)
    loss = -log p~_y = cross_entropy(z + log s, y)

so the gradient with respect to ``z`` is ``p~ - onehot(y)``. When all ``s_j`` are equal the
shift cancels and the loss is exactly softmax cross-entropy.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from loce.checks import checks_enabled

__all__ = ["EquilibriumLoss", "equilibrium_loss"]

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")


def _check_inputs(
    logits: Tensor, labels: Tensor, mean_scores: Tensor, weight: Tensor | None
) -> None:
    """Raise ValueError naming the offending argument, its shape and what was expected."""
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape [N, C], got shape {list(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating point tensor, got dtype {logits.dtype}")
    n, c = logits.shape
    if c < 1:
        raise ValueError(
            f"logits must have at least one class column, got shape {list(logits.shape)}"
        )
    if labels.shape != (n,):
        raise ValueError(
            f"labels must have shape [N] = [{n}] to match logits {list(logits.shape)}, "
            f"got shape {list(labels.shape)}"
        )
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"labels must be an integer tensor (int64), got dtype {labels.dtype}")
    if mean_scores.shape != (c,):
        raise ValueError(
            f"mean_scores must have shape [C] = [{c}] to match logits {list(logits.shape)} "
            f"(background at index 0), got shape {list(mean_scores.shape)}"
        )
    if weight is not None and weight.shape != (n,):
        raise ValueError(
            f"weight must have shape [N] = [{n}] to match logits {list(logits.shape)}, "
            f"got shape {list(weight.shape)}"
        )
    # One host sync for all value checks: the bad-value paths below only run on failure.
    label_bad = ((labels < 0) | (labels >= c)).any()
    score_bad = (~(mean_scores > 0) | ~torch.isfinite(mean_scores)).any()
    if checks_enabled() and bool(label_bad | score_bad.to(label_bad.device)):
        if bool(label_bad):
            rows = torch.nonzero((labels < 0) | (labels >= c)).flatten()
            i = int(rows[0])
            raise ValueError(
                f"labels must lie in 0..{c - 1} (C = {c} logits, background 0), "
                f"found {int(labels[i])} at row {i} ({rows.numel()} rows out of range)"
            )
        bad = torch.nonzero(~(mean_scores > 0) | ~torch.isfinite(mean_scores)).flatten()
        j = int(bad[0])
        raise ValueError(
            f"mean_scores must be finite and > 0 (their log shifts the logits), "
            f"found {float(mean_scores[j])} at class index {j}"
        )


def equilibrium_loss(
    logits: Tensor,
    labels: Tensor,
    mean_scores: Tensor,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Equilibrium Loss (docs/method.md §3): cross-entropy on ``logits + log(mean_scores)``.

    Computed as ``log_softmax`` of the shifted logits followed by the negative log-likelihood,
    which is stable for large logits (the original normalises ``s * exp(z - max z)`` and then
    takes the log; the value is the same). Half-precision inputs are upcast: the loss is always
    computed and returned in float32.

    Args:
        logits: ``[N, C]`` float (fp32/fp16/bf16) raw classifier outputs, background at column 0.
        labels: ``[N]`` int64 class of each row in ``0..C-1`` (0 = background).
        mean_scores: ``[C]`` float running mean classification score per class, all ``> 0``
            (background entry at index 0, held at the tracker's ``bg_score``). Treated as a
            constant: no gradient flows into it.
        weight: optional ``[N]`` float per-row weight.
        reduction: ``"mean"`` divides the (weighted) sum by the number of rows ``N``, not by
            the sum of the weights: rows with weight 0 still count in the denominator. This is
            the MMDetection convention (``weight_reduce_loss`` without an average factor) and,
            with all weights 1, docs/method.md §3.2's "sum over rows divided by their count".
            ``"sum"`` returns the weighted sum, ``"none"`` the ``[N]`` weighted per-row losses.

    Returns:
        A float32 scalar (``"mean"``/``"sum"``) or ``[N]`` float32 tensor (``"none"``). With
        ``N = 0`` the scalar is 0 and still connected to ``logits`` in the autograd graph, so
        a backward pass through it works (and gives zero gradients).

    Raises:
        ValueError: shapes that do not match, labels outside ``0..C-1``, mean scores that are
            not finite and positive, or an unknown reduction. Messages name the argument, the
            shapes and the first offending index.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(_REDUCTIONS)}, got {reduction!r}")
    _check_inputs(logits, labels, mean_scores, weight)
    n = logits.shape[0]
    if n == 0:
        if reduction == "none":
            return logits.float().sum(dim=1) * 0.0
        return logits.float().sum() * 0.0
    # The scores are statistics of past forward passes, not parameters (docs/method.md §2): detach.
    log_s = mean_scores.detach().to(device=logits.device, dtype=torch.float32).log()
    log_p = F.log_softmax(logits.float() + log_s, dim=1)
    loss = -log_p.gather(1, labels.long().unsqueeze(1)).squeeze(1)
    if weight is not None:
        loss = loss * weight.to(device=loss.device, dtype=torch.float32)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / n


class EquilibriumLoss(nn.Module):
    """Module form of :func:`equilibrium_loss`; holds no state.

    The mean scores are passed to every call (they live in
    :class:`loce.method.MeanScoreTracker`), so the loss stays a pure function of its inputs.

    Args:
        reduction: ``"mean"`` (sum over rows divided by ``N``), ``"sum"`` or ``"none"``.
        loss_weight: factor applied to the result (docs/method.md §3 uses 1.0).
    """

    def __init__(self, reduction: Reduction = "mean", loss_weight: float = 1.0) -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {list(_REDUCTIONS)}, got {reduction!r}")
        self.reduction: Reduction = reduction
        self.loss_weight = float(loss_weight)

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        mean_scores: Tensor,
        weight: Tensor | None = None,
    ) -> Tensor:
        """See :func:`equilibrium_loss` for the shapes, dtypes and errors.

        Args:
            logits: ``[N, C]`` float, background at column 0.
            labels: ``[N]`` int64 in ``0..C-1``.
            mean_scores: ``[C]`` float, all ``> 0``.
            weight: optional ``[N]`` float.

        Returns:
            float32 scalar, or ``[N]`` float32 when ``reduction="none"``.
        """
        loss = equilibrium_loss(logits, labels, mean_scores, weight, self.reduction)
        return loss * self.loss_weight if self.loss_weight != 1.0 else loss

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, loss_weight={self.loss_weight}"
