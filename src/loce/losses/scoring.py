"""Inference scores per classification loss: logits -> per-class probabilities.

Shape shorthand:
    N: detections (RoIs) to score.
    K: foreground classes.
    C': logits per row: ``K + 1``, or ``K + 2`` for Seesaw.

Every function returns ``[N, K + 1]`` float32 scores with column 0 the background score and
columns 1..K the class scores ``s_c`` (docs/methods.md §1.3, hook 3). The detector drops
column 0, as torchvision does after its hard-coded softmax, so only columns 1..K rank
detections. The rule of each method (docs/methods.md §1.4):

==================  ==========================================  ======================
method              class score ``s_c``, c >= 1                  column 0
==================  ==========================================  ======================
cross_entropy,      ``softmax(z)_c``                             ``softmax(z)_0``
equilibrium
eql, federated      ``sigmoid(z_c)``                             0 (column 0 unused)
eqlv2, ecm          ``sigmoid(z_c) * (1 - sigmoid(z_0))``        ``sigmoid(z_0)``
seesaw              ``softmax(u)_c * softmax(o)_fg``             ``softmax(o)_bg``
gumbel              ``exp(-exp(-z_c))``                          0 (column 0 unused)
==================  ==========================================  ======================

Seesaw's layout is ``[o_bg | u_1..u_K | o_fg]`` (see :mod:`loce.losses.seesaw`); a plain
softmax over its ``K + 2`` logits would be wrong (docs/methods.md §4.3). ECM scores with
``sigmoid(z)``, not with its training margins ``sigmoid(2z + delta)``: dropping the margin at test
time is the method (docs/methods.md §6.3).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from loce.losses._common import LossName

__all__ = [
    "fracal_logit_offsets",
    "fracal_scores",
    "gumbel_scores",
    "objectness_sigmoid_scores",
    "scores_from_logits",
    "seesaw_scores",
    "sigmoid_scores",
    "softmax_scores",
]


def _check(logits: Tensor, min_width: int = 2) -> Tensor:
    if logits.dim() != 2 or logits.shape[1] < min_width:
        raise ValueError(
            f"logits must have shape [N, C'] with C' >= {min_width}, got shape {list(logits.shape)}"
        )
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating point tensor, got dtype {logits.dtype}")
    # Scores in fp32 whatever the autocast dtype: fp16 rounds small probabilities to 0.
    return logits.float()


def softmax_scores(logits: Tensor) -> Tensor:
    """Softmax over all ``K + 1`` columns (cross-entropy, equilibrium loss).

    Args:
        logits: ``[N, K + 1]`` float, background at column 0.

    Returns:
        ``[N, K + 1]`` float32, rows summing to 1.
    """
    return torch.softmax(_check(logits), dim=1)


def sigmoid_scores(logits: Tensor) -> Tensor:
    """``sigmoid(z_c)`` per class; column 0 is unused and scores 0 (EQL, federated loss).

    Args:
        logits: ``[N, K + 1]`` float; column 0 is ignored.

    Returns:
        ``[N, K + 1]`` float32 with column 0 all zero.
    """
    z = _check(logits)
    return torch.cat([torch.zeros_like(z[:, :1]), torch.sigmoid(z[:, 1:])], dim=1)


def objectness_sigmoid_scores(logits: Tensor, test_with_obj: bool = True) -> Tensor:
    """``sigmoid(z_c) * (1 - sigmoid(z_0))``; column 0 holds ``sigmoid(z_0)`` (EQLv2, ECM).

    Column 0 is trained as "this RoI is background" (target ``1[y = 0]``), so the class score
    is the class probability times the probability of not being background.

    Args:
        logits: ``[N, K + 1]`` float, background logit at column 0.
        test_with_obj: multiply by ``1 - sigmoid(z_0)`` (EQLv2's default ``True``); ``False``
            scores classes with ``sigmoid(z_c)`` alone.

    Returns:
        ``[N, K + 1]`` float32.
    """
    z = _check(logits)
    cls = torch.sigmoid(z[:, 1:])
    if test_with_obj:
        # 1 - sigmoid(z_0) computed as sigmoid(-z_0): no cancellation when z_0 is large.
        cls = cls * torch.sigmoid(-z[:, :1])
    return torch.cat([torch.sigmoid(z[:, :1]), cls], dim=1)


def seesaw_scores(logits: Tensor) -> Tensor:
    """Seesaw's objectness product over the ``[o_bg | u_1..u_K | o_fg]`` layout
    (docs/methods.md §4.3).

    Args:
        logits: ``[N, K + 2]`` float: background objectness logit at column 0, class logits at
            columns 1..K, foreground objectness logit at the last column.

    Returns:
        ``[N, K + 1]`` float32: column 0 ``softmax(o)_bg``, columns 1..K
        ``softmax(u)_c * softmax(o)_fg``.
    """
    z = _check(logits, min_width=3)
    obj_bg, cls, obj_fg = z[:, 0], z[:, 1:-1], z[:, -1]
    # Two-way softmax of (o_fg, o_bg) = sigmoid of the difference.
    p_fg = torch.sigmoid(obj_fg - obj_bg)
    p_bg = torch.sigmoid(obj_bg - obj_fg)
    return torch.cat([p_bg[:, None], torch.softmax(cls, dim=1) * p_fg[:, None]], dim=1)


def gumbel_scores(logits: Tensor) -> Tensor:
    """Gumbel CDF ``exp(-exp(-z_c))`` per class, no clamp; column 0 unused, scores 0 (GOL).

    Args:
        logits: ``[N, K + 1]`` float; column 0 is ignored.

    Returns:
        ``[N, K + 1]`` float32 with column 0 all zero. Finite for any finite logit:
        ``exp(-z)`` overflows to ``inf`` for ``z << 0`` and ``exp(-inf) = 0``.
    """
    z = _check(logits)
    return torch.cat([torch.zeros_like(z[:, :1]), torch.exp(-torch.exp(-z[:, 1:]))], dim=1)


def fracal_logit_offsets(image_counts: Tensor, num_images: int) -> Tensor:
    """FRACAL's frequency term: ``w_c = -log10(N_c / N_img) - log10(K)`` per foreground class.

    The original adds ``-log10(p_c)``, ``p_c`` the fraction of training images containing
    class ``c``, minus the same term for a uniform class distribution (``log10 K``), so that
    a class as frequent as the uniform one is not shifted. A class without training images
    counts as one image (``log10 0`` would be infinite; the original assumes every class
    occurs).

    Args:
        image_counts: ``[K]`` training images containing each label 1..K.
        num_images: training images ``N_img``.

    Returns:
        ``[K]`` float64 offsets added to the foreground logits.
    """
    counts = torch.as_tensor(image_counts, dtype=torch.float64).flatten().clamp(min=1.0)
    k = counts.shape[0]
    return -torch.log10(counts / float(num_images)) - math.log10(k)


def fracal_scores(
    logits: Tensor, logit_offsets: Tensor, fractal_dims: Tensor, lam: float
) -> Tensor:
    """FRACAL's calibrated softmax (Alexandridis et al., CVPR 2025) of a softmax classifier.

    ``q = softmax([z_0, z_c + w_c])`` (frequency term, :func:`fracal_logit_offsets`), then
    each class probability divided by ``D_c ** lam`` (``D_c`` the class's fractal dimension
    of its box centres, background 1) and the row renormalised over all ``K + 1`` columns.
    Classes spread uniformly over the image (``D`` near 2) lose to classes seen in few
    places (``D`` near 1).

    Args:
        logits: ``[N, K + 1]`` float, background at column 0.
        logit_offsets: ``[K]`` float ``w_c`` of labels 1..K.
        fractal_dims: ``[K]`` float ``D_c >= 1`` of labels 1..K.
        lam: exponent of the fractal term (the original's 2.0 on LVIS).

    Returns:
        ``[N, K + 1]`` float32 probabilities, rows summing to 1.

    Raises:
        ValueError: shapes that do not match.
    """
    z = _check(logits)
    k = z.shape[1] - 1
    if logit_offsets.shape != (k,) or fractal_dims.shape != (k,):
        raise ValueError(
            f"fracal_scores needs logits [N, K + 1] and logit_offsets, fractal_dims [K], got "
            f"{list(z.shape)}, {list(logit_offsets.shape)} and {list(fractal_dims.shape)}"
        )
    shift = torch.cat([z.new_zeros(1), logit_offsets.to(device=z.device, dtype=z.dtype)])
    p = torch.softmax(z + shift, dim=1)
    divisor = torch.cat([z.new_ones(1), fractal_dims.to(device=z.device, dtype=z.dtype) ** lam])
    p = p / divisor
    return p / p.sum(dim=1, keepdim=True)


def scores_from_logits(method: LossName, logits: Tensor, test_with_obj: bool = True) -> Tensor:
    """Scores of ``method``'s classifier output, by the rule its entry of
    :data:`loce.losses.registry.LOSS_SPECS` names (this module's table).

    Args:
        method: the classification loss the model was trained with (see
            :data:`loce.losses.LOSS_NAMES`).
        logits: ``[N, C']`` float: ``C' = K + 2`` for ``"seesaw"``, ``K + 1`` otherwise.
        test_with_obj: for ``"eqlv2"`` and ``"ecm"`` only; see
            :func:`objectness_sigmoid_scores`.

    Returns:
        ``[N, K + 1]`` float32 scores, background at column 0.

    Raises:
        ValueError: unknown ``method`` (the message lists the valid names) or bad logits shape.
    """
    # The table imports the loss modules, which import this module.
    from loce.losses.registry import loss_spec

    spec = loss_spec(method)
    if spec.scores_take_test_with_obj:
        return spec.scores(logits, test_with_obj=test_with_obj)
    return spec.scores(logits)
