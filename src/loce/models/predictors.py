"""Mask and box predictors: plain and cosine-normalised.

Shape shorthand:
    R  RoIs                     K  foreground classes      C = K + 1 (background is class 0)
    D  feature channels (256)   M  mask resolution (28; the input grid is M/2 = 14)
    F  box feature size (1024)  C' classifier outputs: C, or K + 2 for Seesaw's objectness

Mask predictors compute either all C class channels (``labels=None``) or only the channel
each RoI needs (``labels`` given: its ground-truth class in training, its predicted class at
inference). Both give the same numbers; the selected path never materialises the
``[R, C, M, M]`` tensor, which at LVIS scale (K = 1203, 256 RoIs) is about 1 GB.

Parameter names follow torchvision's ``MaskRCNNPredictor`` / ``FastRCNNPredictor``
(``conv5_mask``, ``mask_fcn_logits``, ``cls_score``, ``bbox_pred``), so the key map of
docs/parity.md §3.4-3.5 applies unchanged.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BoxPredictor",
    "CosineBoxPredictor",
    "CosineLinear",
    "MaskPredictor",
    "NormedLinear",
    "NormedMaskPredictor",
]


class MaskPredictor(nn.Sequential):
    """Class-specific mask logits from a plain 1x1 convolution (torchvision's predictor).

    ``deconv 2x2 stride 2 -> ReLU -> 1x1 conv to C channels``. Channel 0 belongs to the
    background and is never selected.

    Args:
        in_channels: D of the mask head output ``[R, D, M/2, M/2]``.
        dim_reduced: channels after the deconvolution.
        num_classes: C = K + 1 output channels.
    """

    #: The RoI heads may call ``forward(x, labels)`` to get only the needed channel.
    supports_label_selection = True

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int):
        super().__init__(
            OrderedDict(
                [
                    ("conv5_mask", nn.ConvTranspose2d(in_channels, dim_reduced, 2, 2, 0)),
                    ("relu", nn.ReLU(inplace=True)),
                    ("mask_fcn_logits", nn.Conv2d(dim_reduced, num_classes, 1, 1, 0)),
                ]
            )
        )
        for name, param in self.named_parameters():
            if "weight" in name:
                nn.init.kaiming_normal_(param, mode="fan_out", nonlinearity="relu")

    @property
    def num_classes(self) -> int:
        return self.mask_fcn_logits.out_channels

    def features(self, x: Tensor) -> Tensor:
        """``[R, D, M/2, M/2]`` -> upsampled features ``[R, D', M, M]`` (after the ReLU)."""
        return self.relu(self.conv5_mask(x))

    def class_weights(self) -> tuple[Tensor, Tensor]:
        """The 1x1 kernels ``[C, D']`` and biases ``[C]`` used for the logits."""
        conv = self.mask_fcn_logits
        weight = conv.weight.flatten(1)
        bias = conv.bias if conv.bias is not None else weight.new_zeros(weight.shape[0])
        return weight, bias

    def scale_features(self, f: Tensor) -> Tensor:
        """Transform of the pixel features before the class kernels (identity here)."""
        return f

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Mask logits.

        Args:
            x: ``[R, D, M/2, M/2]`` float mask-head features.
            labels: optional ``[R]`` int64 class per RoI (1..K).

        Returns:
            ``[R, C, M, M]`` float logits without ``labels``; ``[R, 1, M, M]`` (the channel of
            each RoI's label) with them.
        """
        f = self.scale_features(self.features(x))
        weight, bias = self.class_weights()
        if labels is None:
            return F.conv2d(f, weight[:, :, None, None], bias)
        if labels.shape != (f.shape[0],):
            raise ValueError(f"labels must have shape [{f.shape[0]}], got {tuple(labels.shape)}")
        w_sel = weight[labels]  # [R, D']
        logits = torch.einsum("rdhw,rd->rhw", f, w_sel) + bias[labels][:, None, None]
        return logits[:, None]


class NormedMaskPredictor(MaskPredictor):
    """The normed mask predictor of LOCE (docs/method.md §9; docs/parity.md §3.5).

    ``logit[c, p] = scale * <f_p / |f_p|, w_c / |w_c|> + b_c`` where ``f_p`` is the D'-vector
    of upsampled features at pixel ``p`` and ``w_c`` the class-c 1x1 kernel. The raw weights
    are kept (normalised in ``forward``), so checkpoints round-trip exactly; the
    normalisation uses ``F.normalize`` defaults (p=2, eps=1e-12), so a zero kernel (the
    background row of an imported checkpoint) gives logit ``b_c``.

    Args:
        in_channels: D.
        dim_reduced: D'.
        num_classes: C = K + 1.
        scale: multiplier of the cosine similarity (20 in the original).
    """

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int, scale: float = 20.0):
        super().__init__(in_channels, dim_reduced, num_classes)
        self.scale = float(scale)

    def scale_features(self, f: Tensor) -> Tensor:
        return self.scale * F.normalize(f, dim=1)

    def class_weights(self) -> tuple[Tensor, Tensor]:
        weight, bias = super().class_weights()
        return F.normalize(weight, dim=1), bias

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class CosineLinear(nn.Module):
    """Cosine classifier: ``logits = scale * normalize(x) @ normalize(W).T`` (+ bias).

    Args:
        in_features: F.
        out_features: C.
        scale: logit scale.
        bias: add a learnt per-class bias.
    """

    def __init__(self, in_features: int, out_features: int, scale: float = 20.0, bias: bool = False):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        """``[R, F]`` -> ``[R, C]`` logits."""
        logits = self.scale * F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))
        if self.bias is not None:
            logits = logits + self.bias
        return logits

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"scale={self.scale}, bias={self.bias is not None}")


class CosineBoxPredictor(nn.Module):
    """Box predictor with a cosine classifier and the usual class-specific box deltas.

    Args:
        in_channels: F.
        num_classes: C = K + 1.
        scale: cosine logit scale.
    """

    def __init__(self, in_channels: int, num_classes: int, scale: float = 20.0):
        super().__init__()
        self.cls_score = CosineLinear(in_channels, num_classes, scale=scale)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``[R, F]`` (or ``[R, F, 1, 1]``) -> ``(logits [R, C], deltas [R, 4C])``."""
        x = x.flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)


class NormedLinear(nn.Module):
    """The normalised linear classifier of Seesaw and ECM (docs/methods.md §4.1.3).

    ``z = tau * (x / (|x| + eps)) @ (W / (|W_c| + eps)).T + b``: the cosine similarity of the
    feature and each class weight, times ``tau``, plus a trained bias. ``W ~ N(0, 0.01)`` and
    ``b = 0`` at initialisation. Unlike :class:`CosineLinear` the epsilon is *added* to the
    norms (the original's form), so a zero feature gives logits ``b``.

    Args:
        in_features: F.
        out_features: C'.
        scale: ``tau`` (20).
        eps: added to each norm (1e-6).
    """

    def __init__(self, in_features: int, out_features: int, scale: float = 20.0,
                 eps: float = 1e-6):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.scale = float(scale)
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        """``[R, F]`` float -> ``[R, C']`` logits."""
        x_n = x / (x.norm(dim=1, keepdim=True) + self.eps)
        w_n = self.weight / (self.weight.norm(dim=1, keepdim=True) + self.eps)
        return F.linear(self.scale * x_n, w_n, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"scale={self.scale}, eps={self.eps}")


class BoxPredictor(nn.Module):
    """Box classifier of any width and type, plus class-specific box deltas for ``C`` classes.

    The classifier width follows the classification loss (``C' = K + 2`` for Seesaw, whose
    extra column is the foreground objectness logit); the deltas always cover the ``C = K + 1``
    classes, background included as in torchvision. Parameter names are torchvision's
    (``cls_score``, ``bbox_pred``); with ``classifier="linear"`` and ``C' = C`` the layers,
    their initialisation and the random numbers drawn equal ``FastRCNNPredictor``'s.

    Args:
        in_channels: F.
        num_logits: C', the classifier outputs.
        num_classes: C = K + 1, the classes with box deltas.
        classifier: "linear" (``nn.Linear``), "cosine" (:class:`CosineLinear`, no bias) or
            "normed" (:class:`NormedLinear`).
        scale: logit scale of the cosine and normed classifiers.
    """

    def __init__(self, in_channels: int, num_logits: int, num_classes: int,
                 classifier: str = "linear", scale: float = 20.0):
        super().__init__()
        self.cls_score: nn.Module
        if classifier == "linear":
            self.cls_score = nn.Linear(in_channels, num_logits)
        elif classifier == "cosine":
            self.cls_score = CosineLinear(in_channels, num_logits, scale=scale)
        elif classifier == "normed":
            self.cls_score = NormedLinear(in_channels, num_logits, scale=scale)
        else:
            raise ValueError(
                f"classifier must be one of 'linear', 'cosine', 'normed', got {classifier!r}"
            )
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``[R, F]`` (or ``[R, F, 1, 1]``) -> ``(logits [R, C'], deltas [R, 4C])``."""
        x = x.flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)
