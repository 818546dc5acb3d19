"""Model-agnostic box generator of Memory-augmented Feature Sampling (docs/method.md §4.1).

Shape shorthand:
    N: ground-truth boxes of one image.
    T: jitters per box, always 16 (every sign combination of the 4 coordinate shifts).

For a box ``(x1, y1, x2, y2)`` of width ``w`` and height ``h`` and for ``t`` in ``0..15``::

    (sx1, sy1, sx2, sy2) = the 4 bits of t, x1 most significant, y2 least, 0 -> -1, 1 -> +1
    box_t = (x1 + sx1 * u1 * w / 6, y1 + sy1 * u2 * h / 6,
             x2 + sx2 * u3 * w / 6, y2 + sy2 * u4 * h / 6)
    clipped to [0, W - 1] x [0, H - 1]

with ``u ~ U[0, 1)``. Every coordinate moves by less than a sixth of the box side, so the
worst-case IoU with the original box is about 0.44. All 16 boxes keep the ground-truth label
(docs/method.md §12.2): no IoU check.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["NUM_JITTERS", "jitter_boxes", "jitter_signs"]

NUM_JITTERS = 16


def jitter_signs(
    device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The 16 sign patterns, one row per jitter index ``t``.

    Args:
        device: where to build the table.
        dtype: its dtype.

    Returns:
        ``[16, 4]`` tensor of ``-1``/``+1``; row ``t`` holds the bits of ``t`` (x1 most
        significant, y2 least), 0 mapped to -1 and 1 to +1.
    """
    t = torch.arange(NUM_JITTERS, device=device)
    shifts = torch.tensor([3, 2, 1, 0], device=device)
    bits = (t[:, None] >> shifts[None, :]) & 1
    return (bits * 2 - 1).to(dtype)


def jitter_boxes(
    boxes: Tensor,
    image_size: Sequence[int],
    generator: torch.Generator | None = None,
    shared_noise: bool = True,
) -> Tensor:
    """Sixteen jittered copies of every box of one image (docs/method.md §4).

    Call once per image. With ``shared_noise=True`` (the default, faithful to the original
    code, docs/method.md §12.1) one ``[16, 4]`` matrix of uniforms is drawn per call and shared by
    every box of the image, each scaled by its own width and height: all boxes of the image get the
    same relative jitter pattern. ``shared_noise=False`` draws independent uniforms per box.

    Args:
        boxes: ``[N, 4]`` float ``(x1, y1, x2, y2)`` boxes in pixels of the resized, unpadded
            image.
        image_size: ``(height, width)`` of that image; coordinates are clipped to
            ``[0, width - 1]`` and ``[0, height - 1]``.
        generator: optional ``torch.Generator`` for the uniforms; the draw happens on the
            generator's device and is then moved to the boxes' device, so a CPU generator gives
            the same boxes on any device.
        shared_noise: share one uniform matrix across the image's boxes (see above).

    Returns:
        ``[16 * N, 4]`` tensor, same dtype and device as ``boxes``; rows ``16 * i .. 16 * i + 15``
        are the jitters ``t = 0..15`` of box ``i``.

    Raises:
        ValueError: ``boxes`` not ``[N, 4]`` floats, or ``image_size`` not two positive ints.
    """
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(
            f"boxes must have shape [N, 4] (x1, y1, x2, y2), got shape {list(boxes.shape)}"
        )
    if not boxes.is_floating_point():
        raise ValueError(f"boxes must be a floating point tensor, got dtype {boxes.dtype}")
    if len(image_size) != 2 or any(int(v) != v or v <= 0 for v in image_size):
        raise ValueError(
            "image_size must be (height, width) with two positive integers, "
            f"got {tuple(image_size)!r}"
        )
    height, width = (int(v) for v in image_size)
    n = boxes.shape[0]
    if n == 0:
        return boxes.new_zeros((0, 4))

    noise_device = generator.device if generator is not None else boxes.device
    shape = (NUM_JITTERS, 4) if shared_noise else (n, NUM_JITTERS, 4)
    # Drawn in float32 so that the same generator state gives the same noise for any box dtype.
    u = torch.rand(shape, generator=generator, device=noise_device, dtype=torch.float32)
    u = u.to(device=boxes.device)

    b = boxes.float()
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    side = torch.stack([w, h, w, h], dim=1) / 6.0  # [N, 4]
    signs = jitter_signs(boxes.device)  # [16, 4]
    shift = signs[None] * u.expand(n, NUM_JITTERS, 4) * side[:, None, :]  # [N, 16, 4]
    out = (b[:, None, :] + shift).reshape(n * NUM_JITTERS, 4)
    upper = out.new_tensor([width - 1, height - 1, width - 1, height - 1])
    out = torch.minimum(out.clamp(min=0.0), upper)
    return out.to(boxes.dtype)
