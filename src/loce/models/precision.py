"""Mixed precision that keeps box geometry in float32.

Under ``torch.autocast`` convolutions and linear layers run in bfloat16 or float16, and
torchvision's detection code builds anchors, decodes boxes, matches ground truth and encodes
regression targets in the dtype of whatever tensor arrives first. bfloat16 has 8 significant
bits: at 1333 px a coordinate is only representable to 4-8 px, and an index above 256 (a
ground-truth object of an LVIS image with hundreds of them) rounds to its neighbour. The
parts here keep every coordinate, delta and index in float32 (float64 stays float64) while
the feature maps stay in the autocast dtype:

* :func:`geometry_dtype` / :func:`to_geometry`: the dtype box math runs in;
* :func:`float32_like`: a zero-storage float32 stand-in for a feature map, so that an anchor
  generator that reads a map's shape and dtype builds float32 anchors;
* :class:`Float32RPNHead`: the RPN head whose objectness logits and box deltas come out in
  float32, so that proposals are decoded and filtered in float32;
* :class:`FrozenBatchNorm2dKeepDtype`: frozen batch norm that returns its input's dtype
  (torchvision's promotes a bfloat16 input to float32, so a ResNet would never stay in half
  precision between its convolutions);
* :func:`amp_context`: the autocast context of an ``amp`` setting ("none", "bf16", "fp16").

Shape shorthand: ``N`` images, ``C`` channels, ``A`` anchors per location, ``H_l, W_l`` the
size of pyramid level ``l``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Literal

import torch
from torch import Tensor
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import FrozenBatchNorm2d

__all__ = [
    "AMP_DTYPES",
    "Amp",
    "Float32AnchorGenerator",
    "Float32RPNHead",
    "FrozenBatchNorm2dKeepDtype",
    "amp_context",
    "float32_like",
    "geometry_dtype",
    "to_geometry",
]

Amp = Literal["none", "bf16", "fp16"]
AMP_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


def geometry_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype box geometry computes in: float32 for 16-bit floats, else ``dtype`` itself."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def to_geometry(t: Tensor) -> Tensor:
    """``t`` in :func:`geometry_dtype` of its dtype (no copy when it already is)."""
    return t.to(geometry_dtype(t.dtype))


def float32_like(feature_map: Tensor) -> Tensor:
    """A tensor of ``feature_map``'s shape and device in its geometry dtype, without storage.

    A 16-bit map becomes a one-element float32 tensor expanded to the map's shape (stride 0):
    anchor generators read only the shape, device and dtype of the maps they are given.
    """
    dtype = geometry_dtype(feature_map.dtype)
    if dtype == feature_map.dtype:
        return feature_map
    return torch.zeros(1, dtype=dtype, device=feature_map.device).expand(feature_map.shape)


class Float32AnchorGenerator(AnchorGenerator):
    """torchvision's ``AnchorGenerator`` (stride inferred from the padded size, rounded base
    anchors) whose anchors are in the geometry dtype of the feature maps, not in their
    autocast dtype. Same arguments and outputs as the parent."""

    def forward(self, image_list: ImageList, feature_maps: list[Tensor]) -> list[Tensor]:
        return super().forward(image_list, [float32_like(f) for f in feature_maps])


class Float32RPNHead(RPNHead):
    """torchvision's ``RPNHead`` whose outputs are in the geometry dtype.

    The convolutions run in the autocast dtype; the ``[N, A, H_l, W_l]`` objectness logits
    and ``[N, 4A, H_l, W_l]`` box deltas are cast to float32 (a few MB per image), so that the
    proposals, their top-k selection, NMS and the RPN losses are computed in float32. Same
    modules and state-dict names as ``RPNHead``.
    """

    def forward(self, x: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        logits, deltas = super().forward(x)
        return [to_geometry(t) for t in logits], [to_geometry(t) for t in deltas]


class FrozenBatchNorm2dKeepDtype(FrozenBatchNorm2d):
    """torchvision's ``FrozenBatchNorm2d`` that returns the dtype of its input.

    The scale ``w / sqrt(var + eps)`` and shift ``b - mean * scale`` are computed in the
    buffers' float32 and cast to the input's dtype before they are applied, so a bfloat16
    activation stays bfloat16 (for a float32 input nothing changes, bit for bit).
    """

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.reshape(1, -1, 1, 1)
        b = self.bias.reshape(1, -1, 1, 1)
        rv = self.running_var.reshape(1, -1, 1, 1)
        rm = self.running_mean.reshape(1, -1, 1, 1)
        scale = w * (rv + self.eps).rsqrt()
        shift = b - rm * scale
        if x.dtype != scale.dtype and x.is_floating_point():
            scale, shift = scale.to(x.dtype), shift.to(x.dtype)
        return x * scale + shift


def amp_context(device_type: str, amp: str) -> AbstractContextManager:
    """``torch.autocast`` for ``amp`` ("bf16" or "fp16") on ``device_type``; "none": nothing.

    Raises:
        ValueError: an unknown ``amp``.
    """
    if amp == "none":
        return nullcontext()
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of 'none', 'bf16', 'fp16', got {amp!r}")
    return torch.autocast(device_type=device_type, dtype=AMP_DTYPES[amp])
