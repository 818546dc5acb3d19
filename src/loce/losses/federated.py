"""Federated loss (Zhou, Koltun, Krähenbühl, "Probabilistic two-stage detection"),
docs/methods.md §5.

Shape shorthand:
    N: sampled RoIs on this rank.
    K: foreground classes.
    C: logits per row, ``C = K + 1``. Column 0 is unused: no loss, no gradient, score 0 (in
       detectron2 the background column exists but is never trained either).

Sigmoid binary cross-entropy restricted to a per-iteration subset ``F`` of the classes
(docs/methods.md §5.1)::

    U = unique labels of the batch (background 0 included: it takes one of the M slots)
    S = (M - |U|) classes drawn from {1..K} \\ U without replacement, P(c) ~ w_c,
        w_c = image_count_c ** beta    (S empty if |U| >= M)
    F = (U | S) \\ {0}
    L = (1/N) * sum_i sum_{c in F} BCE(z_ic, t_ic)

One subset per iteration per rank, shared by all RoIs of the rank. Frequent classes are the
likelier negatives. When fewer classes with ``w > 0`` remain than requested, all of them are
taken (the original's ``torch.multinomial`` fails there, docs/methods.md §5.5 "small-K crash").

State: none that changes. The weights ``w`` are a constant buffer (``class_weights``), saved
in the checkpoint and recomputable from the training annotations. The draw is local to each
rank and not synchronised, as in the original (harmless: every rank's subset is an unbiased
draw). The draws come from a CPU ``torch.Generator`` seeded with ``seed + rank``
(:attr:`FederatedLoss.draws`; the original uses the unseeded global RNG); the training engine
saves its state with each rank's random state in the checkpoint, so a resumed run continues
the stream and draws what the uninterrupted run would have drawn.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from loce.losses._common import (
    ClassificationLoss,
    RankGenerator,
    check_inputs,
    check_shape,
    class_vector,
    empty_loss,
    init_sigmoid_prior_,
)
from loce.losses.scoring import sigmoid_scores

__all__ = ["FederatedLoss", "federated_loss", "sample_federated_classes"]

#: Prior probability at initialisation of the CenterNet2 implementation (docs/methods.md §5.1,
#: §1.5): bias -ln(99) = -4.595. detectron2's port starts at bias 0.
PRIOR_PROB = 0.01


def sample_federated_classes(
    labels: Tensor,
    class_weights: Tensor,
    num_sampled: int = 50,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The class subset ``F`` of one iteration, as a mask over the ``K + 1`` columns.

    Args:
        labels: ``[N]`` int64 in ``0..K`` (0 = background) of this rank's batch.
        class_weights: ``[K]`` float ``w_c >= 0`` of labels 1..K (``image_count ** beta``).
        num_sampled: ``M``, the number of classes kept, background included (50).
        generator: CPU ``torch.Generator`` for the draw; ``None`` uses the global RNG.

    Returns:
        ``[K + 1]`` bool on the labels' device: True for the classes in ``F``. Index 0 (the
        unused background column) is always False.
    """
    k = class_weights.shape[0]
    present = torch.zeros(k + 1, dtype=torch.bool)
    present[labels.detach().long().cpu().unique()] = True
    need = num_sampled - int(present.sum())
    mask = present.clone()
    if need > 0:
        w = class_weights.detach().to(device="cpu", dtype=torch.float64).clone()
        w[present[1:]] = 0.0
        available = int((w > 0).sum())
        take = min(need, available)
        if take > 0:
            drawn = torch.multinomial(w, take, replacement=False, generator=generator)
            mask[drawn + 1] = True
    mask[0] = False
    return mask.to(labels.device)


def federated_loss(logits: Tensor, labels: Tensor, class_mask: Tensor) -> Tensor:
    """Sigmoid BCE over the classes in ``class_mask``, divided by ``N`` (docs/methods.md §5.1).

    Args:
        logits: ``[N, K + 1]`` float (fp32/fp16/bf16); column 0 is ignored.
        labels: ``[N]`` int64 in ``0..K`` (0 = background).
        class_mask: ``[K + 1]`` bool, True for the classes of ``F`` (e.g. from
            :func:`sample_federated_classes`); index 0 is ignored.

    Returns:
        float32 scalar (see :mod:`loce.losses._common` for ``N = 0`` and the errors).
    """
    c = check_inputs(logits, labels)
    check_shape(class_mask, "class_mask", "[K + 1]", (c,), f" to match logits {list(logits.shape)}")
    n = logits.shape[0]
    if n == 0:
        return empty_loss(logits)
    # Only the |F| selected columns (about M of the K) enter the loss: gathering them is
    # exactly the masked sum over all K columns (the others contribute 0 and get gradient 0)
    # at a fraction of the cost for large K.
    mask = class_mask.detach().to(device=logits.device, dtype=torch.bool).clone()
    mask[0] = False
    cols = mask.nonzero().squeeze(1)  # [|F|]
    z = logits[:, cols].float()  # [N, |F|]
    t = (labels.long()[:, None] == cols[None, :]).to(torch.float32)
    return F.binary_cross_entropy_with_logits(z, t, reduction="sum") / n


class FederatedLoss(ClassificationLoss):
    """Federated loss with the sampling weights built from training image counts.

    Args:
        num_classes: ``K``; the classifier has ``K + 1`` outputs, column 0 unused.
        image_counts: ``[K]`` number of training images containing each class (labels 1..K).
        num_sampled: ``M``, classes kept per iteration, background slot included (50).
        freq_weight_power: ``beta`` in ``w_c = image_count_c ** beta`` (0.5).
        seed: base seed of the class draws; rank ``r`` uses ``seed + r``.
        loss_weight: factor applied to the loss (1.0).

    Attributes:
        class_weights: ``[K]`` float32 buffer ``image_count ** beta``.
        draws: the generators of the class draws (the CPU one is used).
    """

    repr_fields = ("num_sampled", "freq_weight_power")
    class_weights: Tensor
    draws: RankGenerator

    def __init__(
        self,
        num_classes: int,
        image_counts: Tensor | Sequence[float],
        num_sampled: int = 50,
        freq_weight_power: float = 0.5,
        seed: int = 0,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(num_classes, loss_weight)
        if int(num_sampled) != num_sampled or num_sampled < 1:
            raise ValueError(f"num_sampled must be a positive integer, got {num_sampled!r}")
        self.num_sampled = int(num_sampled)
        self.freq_weight_power = float(freq_weight_power)
        counts = class_vector(image_counts, self.num_classes, "image_counts")
        # 0 ** beta = 0 for beta > 0: a class without training images is never a sampled
        # negative (it can still be in F as a positive).
        self.register_buffer("class_weights", counts.pow(self.freq_weight_power).float())
        self.draws = RankGenerator(seed)

    @classmethod
    def init_classifier_(cls, weight: Tensor, bias: Tensor | None) -> None:
        """Weights N(0, 0.01), bias ``-ln(99)`` (CenterNet2's prior 0.01, docs/methods.md §5.1)."""
        init_sigmoid_prior_(weight, bias, PRIOR_PROB)

    def sample_classes(self, labels: Tensor) -> Tensor:
        """This iteration's ``[K + 1]`` bool class mask (see :func:`sample_federated_classes`)."""
        return sample_federated_classes(
            labels, self.class_weights, self.num_sampled, self.draws.get(torch.device("cpu"))
        )

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Loss of one batch (column 0 of the logits unused), over a freshly drawn class subset."""
        self._check(logits, labels)
        if logits.shape[0] == 0:
            return empty_loss(logits)
        return self._weighted(federated_loss(logits, labels, self.sample_classes(labels)))

    def scores(self, logits: Tensor) -> Tensor:
        """``[N, K + 1]`` float32 ``sigmoid(z_c)``, column 0 zero (docs/methods.md §5.3)."""
        return sigmoid_scores(logits)
