"""Seesaw loss (Wang et al., CVPR 2021), docs/methods.md §4.

Shape shorthand:
    N: sampled RoIs on this rank.
    K: foreground classes.
    C': logits per row, ``C' = K + 2``, laid out ``[o_bg | u_1..u_K | o_fg]``: column 0 is the
        background objectness logit (so column 0 stays "background", as everywhere in this
        package), columns 1..K the class logits ``u`` (column ``c`` is label ``c``), and the
        last column the foreground objectness logit. MMDetection's order is
        ``[u_1..u_K, o_fg, o_bg]``; converting a checkpoint moves its last row to the front.

Two terms, both divided by ``N`` (all sampled RoIs, docs/methods.md §1.1)::

    L_obj = (1/N) * sum_i CE((o_fg, o_bg)_i, 1[y_i = 0])
    L_cls = (1/N) * sum_{i: y_i = k >= 1} CE(u_i + log S_k, k)
    L     = loss_weight * (L_cls + L_obj)

For a positive of class ``k`` and every other class ``j`` (the true class is never shifted)::

    M_kj = (N_j / N_k)^p  if N_j < N_k  else 1        mitigation,  N_j = max(count_j, 1)
    C_kj = (s_j / max(s_k, eps))^q  if > 1  else 1    compensation, s = softmax(u) detached
    S_kj = M_kj * C_kj

``log S`` is formed from log-counts and ``log_softmax``, so large logits give no overflow.

State: ``cum_samples``, a float64 buffer of length ``K + 1`` with the number of sampled RoIs
seen per label since iteration 0 (background at index 0, counted but unused). It is updated
*before* the loss on each training-mode call, so a class seen for the first time has count 1.
The statistic is **per rank** in the original: it never synchronises, and MMDetection's
``broadcast_buffers=False`` lets each rank keep its own counts (their ratios agree closely but
not exactly); the checkpoint holds rank 0's copy. That is the default here
(``sync_counts=False``); wrap the model in DDP with ``broadcast_buffers=False`` or rank 0's
counts overwrite the others at every forward. ``sync_counts=True`` all-reduces the per-batch
counts instead, a documented deviation that makes every rank use the global counts.
Float64 because the background count reaches ~1e8 in a 2x LVIS run.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from loce.losses._common import (
    ClassificationLoss,
    all_reduce_sum,
    check_label_range,
    check_logits_labels,
    check_shape,
    empty_loss,
)
from loce.losses.scoring import seesaw_scores

__all__ = ["SeesawLoss", "seesaw_loss", "seesaw_loss_terms"]


def seesaw_loss_terms(
    logits: Tensor,
    labels: Tensor,
    counts: Tensor,
    p: float = 0.8,
    q: float = 2.0,
    eps: float = 1e-2,
) -> tuple[Tensor, Tensor]:
    """The class and objectness terms ``(L_cls, L_obj)`` of one batch (docs/methods.md §4.1).

    Args:
        logits: ``[N, K + 2]`` float (fp32/fp16/bf16) in the ``[o_bg | u_1..u_K | o_fg]``
            layout.
        labels: ``[N]`` int64 in ``0..K`` (0 = background).
        counts: ``[K + 1]`` float cumulative sampled-RoI count per label, already including
            this batch (background at index 0, unused). Treated as a constant.
        p: mitigation exponent (0.8).
        q: compensation exponent (2.0).
        eps: lower clamp on the true class's probability in the compensation ratio (1e-2).

    Returns:
        ``(L_cls, L_obj)``, float32 scalars, each divided by ``N``. ``L_cls`` is 0 for a batch
        without positives; both are 0 (and connected to ``logits``) when ``N = 0``.

    Raises:
        ValueError: shapes or dtypes that do not match, or a label outside ``0..K``.
    """
    c = check_logits_labels(logits, labels)
    if c < 3:
        raise ValueError(
            f"seesaw logits need [o_bg | u_1..u_K | o_fg], at least 3 columns, got shape "
            f"{list(logits.shape)}"
        )
    k = c - 2
    check_label_range(labels, k)
    note = " (sampled RoIs per label, background at index 0)"
    check_shape(counts, "counts", "[K + 1]", (k + 1,), note)
    n = logits.shape[0]
    if n == 0:
        zero = empty_loss(logits)
        return zero, zero
    z = logits.float()
    labels = labels.long()

    # Objectness: two-way softmax over (o_fg, o_bg), target 1 for background RoIs.
    obj = torch.stack([z[:, -1], z[:, 0]], dim=1)
    loss_obj = F.cross_entropy(obj, (labels == 0).long(), reduction="sum") / n

    pos = labels > 0
    u = z[pos, 1:-1]  # [P, K] class logits of the positives
    target = labels[pos] - 1  # 0-based class index into u
    if u.shape[0] == 0:
        return z[:, 1:-1].sum() * 0.0, loss_obj
    onehot = F.one_hot(target, k).to(torch.float32)
    log_shift = torch.zeros_like(u)
    if p > 0:
        log_n = counts.detach().to(device=z.device, dtype=torch.float32).clamp(min=1.0)[1:].log()
        # log M_kj = p * min(log N_j - log N_k, 0): only rarer classes j are mitigated.
        log_shift = log_shift + p * (log_n[None, :] - log_n[target][:, None]).clamp(max=0.0)
    if q > 0:
        log_s = F.log_softmax(u.detach(), dim=1)
        log_sk = log_s.gather(1, target[:, None]).clamp(min=math.log(eps))
        # log C_kj = q * max(log s_j - log max(s_k, eps), 0): only over-scored classes j.
        log_shift = log_shift + q * (log_s - log_sk).clamp(min=0.0)
    adjusted = u + log_shift * (1.0 - onehot)
    loss_cls = F.cross_entropy(adjusted, target, reduction="sum") / n
    return loss_cls, loss_obj


def seesaw_loss(
    logits: Tensor,
    labels: Tensor,
    counts: Tensor,
    p: float = 0.8,
    q: float = 2.0,
    eps: float = 1e-2,
) -> Tensor:
    """``L_cls + L_obj`` of :func:`seesaw_loss_terms` (same arguments), a float32 scalar."""
    loss_cls, loss_obj = seesaw_loss_terms(logits, labels, counts, p, q, eps)
    return loss_cls + loss_obj


class SeesawLoss(ClassificationLoss):
    """Seesaw loss with its per-label sampled-RoI counts as a buffer.

    Use it with a normalised (cosine, scale 20) classifier, as the original does
    (docs/methods.md §4.1.3).

    Args:
        num_classes: ``K``; the classifier has ``K + 2`` outputs (see the module docstring).
        p: mitigation exponent (0.8).
        q: compensation exponent (2.0).
        eps: clamp on the true class's probability (1e-2).
        sync_counts: all-reduce each batch's counts over ranks (False: per-rank counts, as the
            original; see the module docstring).
        loss_weight: factor applied to ``L_cls + L_obj`` (1.0).

    Attributes:
        cum_samples: ``[K + 1]`` float64 sampled RoIs per label so far, background at index 0.
    """

    extra_logits = 2
    repr_fields = ("p", "q", "eps", "sync_counts")
    cum_samples: Tensor

    def __init__(
        self,
        num_classes: int,
        p: float = 0.8,
        q: float = 2.0,
        eps: float = 1e-2,
        sync_counts: bool = False,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(num_classes, loss_weight)
        if p < 0 or q < 0:
            raise ValueError(f"p and q must be >= 0, got p={p!r}, q={q!r}")
        if not 0 < eps <= 1:
            raise ValueError(f"eps must lie in (0, 1], got {eps!r}")
        self.p = float(p)
        self.q = float(q)
        self.eps = float(eps)
        self.sync_counts = bool(sync_counts)
        self.register_buffer("cum_samples", torch.zeros(self.num_classes + 1, dtype=torch.float64))

    @torch.no_grad()
    def reset(self) -> None:
        """Forget the counts."""
        self.cum_samples.zero_()

    @torch.no_grad()
    def accumulate(self, labels: Tensor) -> None:
        """Add one batch's labels to the counts (summed over ranks when ``sync_counts``).

        With ``sync_counts`` under ``torch.distributed`` this is a collective: every rank must
        call it once per iteration.

        Args:
            labels: ``[N]`` int64 in ``0..K``.
        """
        k = self.num_classes
        batch = torch.bincount(labels.detach().long().flatten(), minlength=k + 1)
        batch = batch.to(device=self.cum_samples.device, dtype=torch.float64)
        if self.sync_counts:
            batch = all_reduce_sum(batch)
        self.cum_samples += batch

    def loss_terms(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``(L_cls, L_obj)`` times ``loss_weight``, updating the counts in training mode.

        The two terms are what MMDetection logs as ``loss_cls_classes`` and
        ``loss_cls_objectness``; :meth:`forward` returns their sum.

        Args:
            logits: ``[N, K + 2]`` float in the ``[o_bg | u_1..u_K | o_fg]`` layout.
            labels: ``[N]`` int64 in ``0..K``.
        """
        self._check(logits, labels)
        if self.training:
            self.accumulate(labels)
        loss_cls, loss_obj = seesaw_loss_terms(
            logits, labels, self.cum_samples, self.p, self.q, self.eps
        )
        return self._weighted(loss_cls), self._weighted(loss_obj)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """``loss_weight * (L_cls + L_obj)`` of one batch; in training mode the counts are
        updated first."""
        loss_cls, loss_obj = self.loss_terms(logits, labels)
        return loss_cls + loss_obj

    def scores(self, logits: Tensor) -> Tensor:
        """``[N, K + 1]`` float32 objectness-product scores (docs/methods.md §4.3)."""
        return seesaw_scores(logits)
