"""Effective Class-Margin loss (ECM; Cho & Krähenbühl, ECCV 2022), docs/methods.md §6.

Shape shorthand:
    N: sampled RoIs on this rank.
    K: foreground classes.
    C: logits per row, ``C = K + 1``. Column 0 is the background logit, trained with target
       ``1[y = 0]`` and its own margin and weight (the original keeps it last).

Counts: ``n_c`` (c = 1..K) are training **instance** counts (the original's file is named
"image_count" but holds instance counts, docs/methods.md §6.5); the background count is
``n_0 = rho * sum_{c>=1} n_c`` with ``rho`` the background RoIs per foreground RoI. With
``T = sum_{c=0..K} n_c``, ``n+_c = n_c`` and ``n-_c = T - n_c`` (docs/methods.md §6.1)::

    delta_c = 1/4 * ln(n+_c / n-_c)            (= m+_c - m-_c, the effective margin)
    a_c     = n-_c / n+_c,   omega_c = a_c * ln((1 + a_c) / a_c)
    L       = (1/N) * sum_i sum_{c=0..K} omega_c * BCE(2 z_ic + delta_c, t_ic)

The original writes the probability as ``e^(z+m+) / (e^(z+m+) + e^(-z+m-))``, which is
``sigmoid(2z + delta)``; the BCE-with-logits form gives the same value without the explicit
exponentials that overflow in fp16 (docs/methods.md §6.5, §1.6). Inference uses ``sigmoid(z)``
without the margin (docs/methods.md §6.3).

State: none that changes. ``delta`` and ``omega`` are constant buffers computed at construction
(saved in the checkpoint, recomputable from the annotations); the same on every rank, so
nothing is synchronised. A class with zero training instances would get an infinite margin;
its count is raised to 1 (a deliberate deviation: the original assumes every class occurs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from loce.losses._common import (
    ClassificationLoss,
    check_inputs,
    check_shape,
    class_vector,
    empty_loss,
)
from loce.losses.scoring import objectness_sigmoid_scores

__all__ = ["ECMLoss", "ecm_constants", "ecm_loss"]


def ecm_constants(
    instance_counts: Tensor | Sequence[float], fg_bg_ratio: float = 6.3313
) -> tuple[Tensor, Tensor]:
    """Margins ``delta`` and weights ``omega`` of the ``K + 1`` columns (docs/methods.md §6.1).

    Args:
        instance_counts: ``[K]`` training instances per class, labels 1..K. Zeros are raised
            to 1.
        fg_bg_ratio: ``rho``, background RoIs per foreground RoI (6.3313, the published value
            measured on Mask R-CNN).

    Returns:
        ``(delta [K + 1], omega [K + 1])`` float64, background at index 0.
    """
    counts = class_vector(instance_counts, len(instance_counts), "instance_counts").clamp(min=1.0)
    if not fg_bg_ratio > 0:
        raise ValueError(f"fg_bg_ratio must be > 0, got {fg_bg_ratio!r}")
    n = torch.cat([counts.sum().reshape(1) * fg_bg_ratio, counts])
    n_neg = n.sum() - n
    delta = 0.25 * (n.log() - n_neg.log())
    a = n_neg / n
    # a * ln((1 + a) / a) = a * log1p(1 / a): accurate for the large a of rare classes (-> 1).
    omega = a * torch.log1p(1.0 / a)
    return delta, omega


def ecm_loss(logits: Tensor, labels: Tensor, delta: Tensor, omega: Tensor) -> Tensor:
    """ECM loss of one batch for given constants, divided by ``N`` (docs/methods.md §6.1).

    Args:
        logits: ``[N, K + 1]`` float (fp32/fp16/bf16), background logit at column 0.
        labels: ``[N]`` int64 in ``0..K`` (0 = background).
        delta: ``[K + 1]`` float margins, background at index 0 (see :func:`ecm_constants`).
        omega: ``[K + 1]`` float column weights, background at index 0.

    Returns:
        float32 scalar (see :mod:`loce.losses._common` for ``N = 0`` and the errors).
    """
    c = check_inputs(logits, labels)
    note = f" to match logits {list(logits.shape)} (background at index 0)"
    check_shape(delta, "delta", "[K + 1]", (c,), note)
    check_shape(omega, "omega", "[K + 1]", (c,), note)
    n = logits.shape[0]
    if n == 0:
        return empty_loss(logits)
    z = logits.float()
    d = delta.detach().to(device=z.device, dtype=torch.float32)
    w = omega.detach().to(device=z.device, dtype=torch.float32)
    # The one-hot of label 0 is the background column's target 1[y = 0].
    t = F.one_hot(labels.long(), c).to(torch.float32)
    bce = F.binary_cross_entropy_with_logits(2.0 * z + d[None, :], t, reduction="none")
    return (bce * w[None, :]).sum() / n


class ECMLoss(ClassificationLoss):
    """ECM loss with its margins and weights built from training instance counts.

    Use it with a normalised (cosine, scale 20) classifier, as the original does
    (docs/methods.md §6.1).

    Args:
        num_classes: ``K``; the classifier has ``K + 1`` outputs, background at column 0.
        instance_counts: ``[K]`` training instances per class (labels 1..K).
        fg_bg_ratio: ``rho`` (6.3313).
        test_with_obj: score classes with ``sigmoid(z_c) * (1 - sigmoid(z_0))`` (True, the
            method's rule) or ``sigmoid(z_c)``.
        loss_weight: factor applied to the loss (1.0).

    Attributes:
        delta: ``[K + 1]`` float32 margins, background at index 0.
        omega: ``[K + 1]`` float32 column weights, background at index 0.
    """

    repr_fields = ("fg_bg_ratio",)
    delta: Tensor
    omega: Tensor

    def __init__(
        self,
        num_classes: int,
        instance_counts: Tensor | Sequence[float],
        fg_bg_ratio: float = 6.3313,
        test_with_obj: bool = True,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(num_classes, loss_weight)
        class_vector(instance_counts, self.num_classes, "instance_counts")
        self.fg_bg_ratio = float(fg_bg_ratio)
        self.test_with_obj = bool(test_with_obj)
        delta, omega = ecm_constants(instance_counts, self.fg_bg_ratio)
        self.register_buffer("delta", delta.float())
        self.register_buffer("omega", omega.float())

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Loss of one batch (background logit at column 0)."""
        self._check(logits, labels)
        return self._weighted(ecm_loss(logits, labels, self.delta, self.omega))

    def scores(self, logits: Tensor) -> Tensor:
        """``[N, K + 1]`` float32 ``sigmoid(z_c) * (1 - sigmoid(z_0))`` (docs/methods.md §6.3)."""
        return objectness_sigmoid_scores(logits, test_with_obj=self.test_with_obj)
