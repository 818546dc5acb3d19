"""Moving a batch to the model's device and the mixed-precision context, for every loop."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

__all__ = ["autocast", "to_device"]


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
