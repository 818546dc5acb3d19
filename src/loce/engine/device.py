"""Moving a batch to the model's device and the mixed-precision context, for every loop."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

__all__ = ["autocast", "enable_tf32", "to_device"]


def autocast(device: torch.device, amp: str) -> AbstractContextManager:
    """``solver.amp`` as a context: CUDA autocast in fp16 or bf16, nothing on other devices."""
    if device.type != "cuda" or amp == "none":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def to_device(images: list[torch.Tensor], targets: list[dict[str, Any]], device: torch.device):
    """``(images, targets)`` of a collated batch on ``device``; non-tensor values untouched."""
    images = [img.to(device, non_blocking=True) for img in images]
    targets = [
        {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
        for t in targets
    ]
    return images, targets


def enable_tf32(device: torch.device, amp: str, wanted: bool = True,
                capability: tuple[int, int] | None = None) -> bool:
    """TF32 for fp32 matmuls and convolutions on a CUDA device that has it (``train.tf32``).

    Only for fp32 training (``amp == "none"``): under autocast the products are 16-bit
    anyway. Uses ``torch.backends.*.fp32_precision`` where this torch has it (mixing it
    with the legacy ``allow_tf32`` flags is an error in torch >= 2.9), else ``allow_tf32``.

    Args:
        device: the training device.
        amp: ``solver.amp``.
        wanted: ``train.tf32``.
        capability: the GPU's compute capability (default: read from ``device``).

    Returns:
        Whether TF32 is now on (False on the CPU, under AMP, before Ampere (8.0) or when not
        wanted).
    """
    if not wanted or device.type != "cuda" or amp != "none":
        return False
    major, _ = capability if capability is not None else torch.cuda.get_device_capability(device)
    if major < 8:
        return False
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision"):
        matmul.fp32_precision = "tf32"
        cudnn.conv.fp32_precision = "tf32"
    else:  # torch < 2.9
        matmul.allow_tf32 = True
        cudnn.allow_tf32 = True
    return True
