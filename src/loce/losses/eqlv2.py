"""Equalization Loss v2 (EQLv2; Tan et al., CVPR 2021), docs/methods.md §3.

Shape shorthand:
    N: sampled RoIs on this rank.
    K: foreground classes.
    C: logits per row, ``C = K + 1``. Column 0 is the objectness channel, trained with target
       ``1[y = 0]`` ("this RoI is background") and weight 1 (the original keeps it last).

Sigmoid binary cross-entropy whose per-class weights come from the running ratio of
accumulated positive to negative gradient magnitudes (docs/methods.md §3.1)::

    r_c  = P_c / (N_c + 1e-10)                      (initially 100: first weights are 1)
    q_c  = 1 / (1 + exp(-gamma * (r_c - mu)))
    w-_c = q_c,   w+_c = 1 + alpha * (1 - q_c),     w+_0 = w-_0 = 1
    w_ic = t_ic * w+_c + (1 - t_ic) * w-_c
    L    = (1/N) * sum_i sum_{c=0..K} w_ic * BCE(z_ic, t_ic)

The weights use the state from *before* this batch and are constants for autograd. After the
loss, for c = 1..K and with ``g_ic = |sigmoid(z_ic) - t_ic|`` (the BCE gradient magnitude)::

    dP_c = sum_i t_ic * w_ic * g_ic,   dN_c = sum_i (1 - t_ic) * w_ic * g_ic
    P += all_reduce_sum(dP);  N += all_reduce_sum(dN);  r = P / (N + 1e-10)

State and synchronisation: ``pos_grad``, ``neg_grad`` (``P``, ``N``) and ``pos_neg`` (``r``)
are float64 buffers of length K, so they are saved in checkpoints and restored on resume (the
original only made them buffers late, in its "support resuming" change; before, a resumed run
restarted the statistics from zero). The statistic is **global**: the original all-reduces
the increments on every iteration so every rank weighs its loss with the same ratios. Here the
all-reduce runs whenever ``torch.distributed`` is initialised with more than one process
(guarded, so one process needs no process group, docs/methods.md §3.5), which means every rank must
call the loss once per training iteration. Keep DDP's ``broadcast_buffers=False``: the ranks already
agree, and broadcasting would only hide a rank that skipped an update. Float64 keeps sums of
millions of iterations exact enough; the weights are computed in float32 from them.

The state is updated by :meth:`EQLv2Loss.forward` in training mode only (``module.train()``);
in eval mode the loss uses the current weights and changes nothing. :meth:`EQLv2Loss.accumulate`
is the update step on its own, for callers that compute the increments themselves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from loce.losses._common import (
    ClassificationLoss,
    all_reduce_sum,
    check_inputs,
    check_logits_labels,
    check_shape,
    empty_loss,
    init_sigmoid_prior_,
)
from loce.losses.scoring import objectness_sigmoid_scores

__all__ = ["EQLv2Loss", "eqlv2_gradient_increments", "eqlv2_loss", "eqlv2_weights"]

#: Prior probability of every sigmoid output at initialisation (docs/methods.md §3.1):
#: bias -ln(999).
PRIOR_PROB = 0.001
#: Initial ratio r: q(100) = 1 in float32, so the first iteration's weights are all 1.
INITIAL_RATIO = 100.0
_EPS = 1e-10


def eqlv2_weights(
    pos_neg: Tensor, gamma: float = 12.0, mu: float = 0.8, alpha: float = 4.0
) -> tuple[Tensor, Tensor]:
    """Positive and negative weights of the foreground classes from the gradient ratio.

    Args:
        pos_neg: ``[K]`` float ratio ``r_c`` of accumulated positive to negative gradient.
        gamma: steepness of the mapping (12).
        mu: ratio at which ``q = 0.5`` (0.8).
        alpha: positive up-weighting (4.0).

    Returns:
        ``(w_pos [K], w_neg [K])`` float32, detached: ``w_neg = q`` and
        ``w_pos = 1 + alpha * (1 - q)`` with ``q = sigmoid(gamma * (r - mu))``.
    """
    q = torch.sigmoid(gamma * (pos_neg.detach().to(torch.float32) - mu))
    return 1.0 + alpha * (1.0 - q), q


def _check_weights(w_pos: Tensor, w_neg: Tensor, k: int) -> None:
    for name, w in (("pos_weight", w_pos), ("neg_weight", w_neg)):
        check_shape(w, name, "[K]", (k,), " (foreground classes, label 1 first)")


def _entry_weights(labels: Tensor, c: int, w_pos: Tensor, w_neg: Tensor, device) -> tuple:
    """One-hot targets ``t [N, C]`` and entry weights ``w [N, C]`` (column 0 weight 1)."""
    t = F.one_hot(labels.long(), c).to(torch.float32)
    ones = torch.ones(1, device=device, dtype=torch.float32)
    wp = torch.cat([ones, w_pos.detach().to(device=device, dtype=torch.float32)])
    wn = torch.cat([ones, w_neg.detach().to(device=device, dtype=torch.float32)])
    # Column 0's target is 1[y = 0]: the one-hot of label 0 is exactly the objectness target.
    w = t * wp[None, :] + (1.0 - t) * wn[None, :]
    return t, w


def eqlv2_loss(logits: Tensor, labels: Tensor, pos_weight: Tensor, neg_weight: Tensor) -> Tensor:
    """EQLv2 loss of one batch for given class weights (docs/methods.md §3.1), divided by ``N``.

    Args:
        logits: ``[N, K + 1]`` float (fp32/fp16/bf16), objectness logit at column 0.
        labels: ``[N]`` int64 in ``0..K`` (0 = background).
        pos_weight: ``[K]`` float ``w+`` of labels 1..K (see :func:`eqlv2_weights`).
        neg_weight: ``[K]`` float ``w-`` of labels 1..K. Both treated as constants.

    Returns:
        float32 scalar (see :mod:`loce.losses._common` for ``N = 0`` and the errors).
    """
    c = check_inputs(logits, labels)
    _check_weights(pos_weight, neg_weight, c - 1)
    n = logits.shape[0]
    if n == 0:
        return empty_loss(logits)
    z = logits.float()
    t, w = _entry_weights(labels, c, pos_weight, neg_weight, z.device)
    bce = F.binary_cross_entropy_with_logits(z, t, reduction="none")
    return (w * bce).sum() / n


@torch.no_grad()
def eqlv2_gradient_increments(
    logits: Tensor, labels: Tensor, pos_weight: Tensor, neg_weight: Tensor
) -> tuple[Tensor, Tensor]:
    """This batch's weighted gradient magnitudes ``(dP [K], dN [K])``
    (docs/methods.md §3.1, update).

    Args:
        logits: ``[N, K + 1]`` float, objectness at column 0.
        labels: ``[N]`` int64 in ``0..K``.
        pos_weight: ``[K]`` float ``w+`` used for this batch's loss.
        neg_weight: ``[K]`` float ``w-`` used for this batch's loss.

    Returns:
        ``(dP, dN)``, each ``[K]`` float64 on the logits' device (zeros when ``N = 0``). The
        objectness column is not tracked.
    """
    c = check_logits_labels(logits, labels)
    _check_weights(pos_weight, neg_weight, c - 1)
    z = logits.detach().float()
    t, w = _entry_weights(labels, c, pos_weight, neg_weight, z.device)
    g = (torch.sigmoid(z) - t).abs() * w
    d_pos = (t * g).sum(dim=0)[1:].to(torch.float64)
    d_neg = ((1.0 - t) * g).sum(dim=0)[1:].to(torch.float64)
    return d_pos, d_neg


class EQLv2Loss(ClassificationLoss):
    """EQLv2 with its gradient statistics as buffers (see the module docstring for the sync).

    Args:
        num_classes: ``K``; the classifier has ``K + 1`` outputs, objectness at column 0.
        gamma: steepness of the mapping function (12).
        mu: gradient ratio mapped to weight 0.5 (0.8).
        alpha: positive up-weighting (4.0).
        test_with_obj: score classes with ``sigmoid(z_c) * (1 - sigmoid(z_0))`` (True, the
            default) or ``sigmoid(z_c)``.
        loss_weight: factor applied to the loss (1.0).

    Attributes:
        pos_grad: ``[K]`` float64 accumulated positive gradient ``P``.
        neg_grad: ``[K]`` float64 accumulated negative gradient ``N``.
        pos_neg: ``[K]`` float64 ratio ``r``, initially 100.
    """

    repr_fields = ("gamma", "mu", "alpha", "test_with_obj")
    pos_grad: Tensor
    neg_grad: Tensor
    pos_neg: Tensor

    def __init__(
        self,
        num_classes: int,
        gamma: float = 12.0,
        mu: float = 0.8,
        alpha: float = 4.0,
        test_with_obj: bool = True,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(num_classes, loss_weight)
        self.gamma = float(gamma)
        self.mu = float(mu)
        self.alpha = float(alpha)
        self.test_with_obj = bool(test_with_obj)
        k = self.num_classes
        self.register_buffer("pos_grad", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("neg_grad", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("pos_neg", torch.full((k,), INITIAL_RATIO, dtype=torch.float64))

    @classmethod
    def init_classifier_(cls, weight: Tensor, bias: Tensor | None) -> None:
        """Weights N(0, 0.01), bias ``-ln(999)`` (prior 0.001) on all ``K + 1`` outputs."""
        init_sigmoid_prior_(weight, bias, PRIOR_PROB)

    def weights(self) -> tuple[Tensor, Tensor]:
        """Current ``(w_pos [K], w_neg [K])`` float32 from the stored ratio."""
        return eqlv2_weights(self.pos_neg, self.gamma, self.mu, self.alpha)

    @torch.no_grad()
    def reset(self) -> None:
        """Back to the initial state: ``P = N = 0``, ``r = 100``."""
        self.pos_grad.zero_()
        self.neg_grad.zero_()
        self.pos_neg.fill_(INITIAL_RATIO)

    @torch.no_grad()
    def accumulate(self, d_pos: Tensor, d_neg: Tensor) -> None:
        """Add one iteration's increments, summed over ranks, and refresh the ratio.

        Under ``torch.distributed`` (initialised, world size > 1) this is a collective: every
        rank must call it once per iteration, also with an empty batch (zero increments).

        Args:
            d_pos: ``[K]`` float positive gradient increment of this rank.
            d_neg: ``[K]`` float negative gradient increment of this rank.
        """
        k = self.num_classes
        if d_pos.shape != (k,) or d_neg.shape != (k,):
            raise ValueError(
                f"increments must have shape [K] = [{k}], got {list(d_pos.shape)} and "
                f"{list(d_neg.shape)}"
            )
        # One collective for both vectors.
        both = torch.stack([d_pos, d_neg]).to(device=self.pos_grad.device, dtype=torch.float64)
        both = all_reduce_sum(both)
        self.pos_grad += both[0]
        self.neg_grad += both[1]
        self.pos_neg.copy_(self.pos_grad / (self.neg_grad + _EPS))

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Loss of one batch (objectness at column 0) with the weights from before it; in
        training mode, then fold its gradients into the state."""
        self._check(logits, labels)
        w_pos, w_neg = self.weights()
        loss = eqlv2_loss(logits, labels, w_pos, w_neg)
        if self.training:
            self.accumulate(*eqlv2_gradient_increments(logits, labels, w_pos, w_neg))
        return self._weighted(loss)

    def scores(self, logits: Tensor) -> Tensor:
        """``[N, K + 1]`` float32 scores by the objectness rule (docs/methods.md §3.3)."""
        return objectness_sigmoid_scores(logits, test_with_obj=self.test_with_obj)
