"""Detection transforms on ``(image, target)`` pairs: resize, multi-scale resize, flip.

Shape shorthand: ``N`` instances, ``H``/``W`` current image height and width.

* ``image``: ``[3, H, W]`` float32 (any range; the dataset gives ``[0, 1]``); the test-time
  :class:`MMCVResize` returns uint8 (the original's decode-and-resize path).
* ``target`` (optional keys; a missing key is simply not transformed):
  ``boxes`` ``[N, 4]`` float32 xyxy in pixels, ``masks`` ``[N, H, W]`` uint8,
  ``orig_size`` ``[2]`` int64 ``(H0, W0)`` of the file's image, ``scale_factor`` ``[4]``
  float32 ``(sx, sy, sx, sy)`` from the original image to the current one.

Boxes and masks always move with the image. Sizes follow MMDetection/mmcv (the original LOCE
code base, see docs/parity.md §4 #7): for a target short side ``S`` and long-side cap
``L``, ``s = min(L / long, S / short)`` and each side becomes ``int(side * s + 0.5)`` (round
half up; torchvision's own transform floors instead). ``scale_factor`` is ``new / orig`` per
axis in float32, as mmdet stores it, so ``boxes / scale_factor`` maps boxes back.

Randomness: the random transforms draw from the ``torch.Generator`` given to them, or from
torch's global generator when none is given. Use the global generator inside a
``DataLoader``: the loader seeds each worker's global generator differently
(``base_seed + worker_id``, with ``base_seed`` drawn from the main process's seeded RNG), so
runs repeat for a fixed ``torch.manual_seed``. A generator object passed in is copied into
every worker with the same state, which would make all workers draw the same sequence; pass
one only for single-process use and tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Compose",
    "MMCVResize",
    "RandomHorizontalFlip",
    "RandomShortSideResize",
    "Resize",
    "ToUint8",
    "hflip",
    "rescale_size",
    "resize",
    "resize_target",
]

Target = dict[str, Any] | None


def rescale_size(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """Output ``(new_h, new_w)`` of a keep-ratio resize, with mmcv's rounding.

    ``s = min(max_size / long_side, short / short_side)``; each side becomes
    ``int(side * s + 0.5)``, and at least 1 pixel (mmcv would return 0 for a side shorter than
    ``0.5 / s``, e.g. a 4000 x 2 image, and the model cannot run on an empty image).

    Args:
        height, width: input size in pixels (positive).
        short: wanted short side.
        max_size: cap on the long side.

    Example:
        >>> rescale_size(375, 500, 800, 1333)   # s = min(1333/500, 800/375) = 2.1333...
        (800, 1067)
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    # mmcv.rescale_size with scale=(max_size, short): the larger entry caps the long side,
    # the smaller one the short side.
    long_cap, short_cap = max(short, max_size), min(short, max_size)
    s = min(long_cap / max(height, width), short_cap / min(height, width))
    return max(1, int(height * s + 0.5)), max(1, int(width * s + 0.5))


def resize(
    image: torch.Tensor, target: Target, size: tuple[int, int]
) -> tuple[torch.Tensor, Target]:
    """Resize image, boxes and masks to ``size = (new_h, new_w)``.

    The image uses bilinear interpolation without antialiasing (``align_corners=False``, as
    cv2's ``INTER_LINEAR`` in mmcv and torchvision's detection transform); masks use nearest.
    Boxes are scaled by ``(new_w / W, new_h / H)`` in float32.

    Args:
        image: ``[3, H, W]`` float.
        target: dict (see module docstring) or None.
        size: ``(new_h, new_w)``.

    Returns:
        ``(image [3, new_h, new_w], target)``; the target is a new dict.
    """
    h, w = image.shape[-2:]
    nh, nw = int(size[0]), int(size[1])
    if (nh, nw) != (h, w):
        image = F.interpolate(
            image[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=False
        )[0]
    return image, resize_target(target, (int(h), int(w)), (nh, nw))


def resize_target(target: Target, old_size: tuple[int, int], size: tuple[int, int]) -> Target:
    """The target of an image resized from ``old_size`` to ``size`` (both ``(h, w)``): boxes
    scaled by ``(new_w / W, new_h / H)`` in float32, masks resized with nearest, and
    ``scale_factor`` updated (see the module docstring). Returns a new dict (None for None).
    """
    if target is None:
        return None
    (h, w), (nh, nw) = old_size, size
    target = dict(target)
    sx, sy = nw / w, nh / h
    if "boxes" in target:
        factor = torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
        target["boxes"] = target["boxes"] * factor.to(target["boxes"].device)
    if "masks" in target and (nh, nw) != (h, w):
        masks = target["masks"]
        if masks.shape[0] == 0:
            target["masks"] = masks.new_zeros((0, nh, nw))
        else:
            target["masks"] = F.interpolate(masks[None], size=(nh, nw), mode="nearest")[0]
    if "orig_size" in target:
        h0, w0 = (int(v) for v in target["orig_size"])
        fx, fy = nw / w0, nh / h0
    else:  # no original size recorded: compose with the previous factor
        prev = target.get("scale_factor", torch.ones(4)).double()
        fx, fy = float(prev[0]) * sx, float(prev[1]) * sy
    target["scale_factor"] = torch.tensor([fx, fy, fx, fy], dtype=torch.float32)
    return target


def hflip(image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
    """Flip image, boxes and masks left-right.

    Boxes: ``x1' = W - x2``, ``x2' = W - x1``. This is MMDetection 2.x's ``bbox_flip`` (the
    version LOCE builds on): boxes are continuous coordinates with the image spanning
    ``[0, W]``. (MMDetection 1.x used ``W - 1``, from the old "+1" pixel convention.)

    Args:
        image: ``[3, H, W]``.
        target: dict (see module docstring) or None.
    """
    image = image.flip(-1)
    if target is None:
        return image, None
    target = dict(target)
    w = image.shape[-1]
    if "boxes" in target:
        b = target["boxes"]
        target["boxes"] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1)
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    return image, target


class Compose:
    """Apply transforms in order.

    Args:
        transforms: callables ``(image, target) -> (image, target)``.
    """

    def __init__(
        self, transforms: Sequence[Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]]
    ):
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: Target = None) -> tuple[torch.Tensor, Target]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


def _check_size(short: int, max_size: int) -> None:
    if int(short) != short or short <= 0:
        raise ValueError(f"short side must be a positive integer, got {short!r}")
    if int(max_size) != max_size or max_size < short:
        raise ValueError(
            f"max_size must be an integer >= the short side ({short}), got {max_size!r}"
        )


class Resize:
    """Test-time resize: short side to ``short``, long side capped at ``max_size``.

    Args:
        short: wanted short side (LOCE tests at 800).
        max_size: long-side cap (1333).
    """

    def __init__(self, short: int = 800, max_size: int = 1333) -> None:
        _check_size(short, max_size)
        self.short, self.max_size = int(short), int(max_size)

    def __call__(self, image: torch.Tensor, target: Target = None) -> tuple[torch.Tensor, Target]:
        h, w = image.shape[-2:]
        return resize(image, target, rescale_size(h, w, self.short, self.max_size))

    def __repr__(self) -> str:
        return f"Resize(short={self.short}, max_size={self.max_size})"


class MMCVResize:
    """Test-time resize as the original's data pipeline computes it, bit for bit.

    The image is held as uint8 and resized with OpenCV, ``cv2.resize(..., INTER_LINEAR)`` on
    the uint8 pixels (fixed-point weights, uint8 output), to :func:`rescale_size`'s size, as
    ``mmcv.imrescale`` does. The result stays uint8: the model normalises uint8 images as
    mmcv does (:class:`loce.models.mask_rcnn.NormalizePadTransform`), so the network gets exactly the
    original's input when the image was decoded with OpenCV (``decoder="opencv"`` of the
    datasets). Boxes, masks and ``scale_factor`` follow as in :func:`resize`.

    Args:
        short: wanted short side (LOCE tests at 800).
        max_size: long-side cap (1333).

    Input: ``[3, H, W]`` uint8, or float in ``[0, 1]`` (quantised to uint8 first by
    ``round(x * 255)``, which restores a decoded uint8 image exactly). Output: ``[3, h, w]``
    uint8.
    """

    def __init__(self, short: int = 800, max_size: int = 1333) -> None:
        _check_size(short, max_size)
        self.short, self.max_size = int(short), int(max_size)

    def __call__(self, image: torch.Tensor, target: Target = None) -> tuple[torch.Tensor, Target]:
        import cv2

        h, w = (int(v) for v in image.shape[-2:])
        size = rescale_size(h, w, self.short, self.max_size)
        if image.dtype != torch.uint8:
            image = image.detach().mul(255).round_().clamp_(0, 255).to(torch.uint8)
        if size != (h, w):
            pixels = np.ascontiguousarray(image.cpu().permute(1, 2, 0).numpy())
            pixels = cv2.resize(pixels, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
            image = torch.from_numpy(pixels.reshape(size[0], size[1], -1)).permute(2, 0, 1)
        return image.contiguous(), resize_target(target, (h, w), size)

    def __repr__(self) -> str:
        return f"MMCVResize(short={self.short}, max_size={self.max_size}, uint8 cv2 INTER_LINEAR)"


class RandomShortSideResize:
    """Multi-scale training resize: one short side drawn uniformly from ``scales`` per call.

    This is MMDetection's ``multiscale_mode='value'`` (LOCE trains with short sides
    640, 672, ..., 800 and long side <= 1333, docs/method.md §8), with mmcv's rounding.

    Args:
        scales: candidate short sides.
        max_size: long-side cap.
        generator: source of randomness; None uses torch's global generator (see the module
            docstring for data-loader workers).
    """

    def __init__(
        self,
        scales: Sequence[int] = (640, 672, 704, 736, 768, 800),
        max_size: int = 1333,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        if len(scales) == 0:
            raise ValueError("scales must list at least one short side")
        for s in scales:
            _check_size(s, max_size)
        self.scales = [int(s) for s in scales]
        self.max_size = int(max_size)
        self.generator = generator

    def __call__(self, image: torch.Tensor, target: Target = None) -> tuple[torch.Tensor, Target]:
        k = int(torch.randint(len(self.scales), (1,), generator=self.generator))
        h, w = image.shape[-2:]
        return resize(image, target, rescale_size(h, w, self.scales[k], self.max_size))

    def __repr__(self) -> str:
        return f"RandomShortSideResize(scales={self.scales}, max_size={self.max_size})"


class RandomHorizontalFlip:
    """Flip with probability ``p`` (see :func:`hflip` for the box arithmetic).

    Args:
        p: flip probability in ``[0, 1]``.
        generator: source of randomness; None uses torch's global generator.
    """

    def __init__(self, p: float = 0.5, *, generator: torch.Generator | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.p = float(p)
        self.generator = generator

    def __call__(self, image: torch.Tensor, target: Target = None) -> tuple[torch.Tensor, Target]:
        if float(torch.rand((), generator=self.generator)) < self.p:
            return hflip(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class ToUint8:
    """Quantise a float image in ``[0, 1]`` to uint8, ``round(x * 255)``, for the trip out of
    a DataLoader worker (a quarter of float32's bytes; the model normalises uint8 images on
    its device, :class:`loce.models.mask_rcnn.NormalizePadTransform`).

    What changes against sending the float image: each pixel moves by at most half a grey
    level (0.5 / 255) before normalisation, i.e. at most ``0.5 / (255 * std)`` (0.0087 for
    std 0.225) in the network input. A uint8 image passes through.
    """

    def __call__(self, image: torch.Tensor, target: Target = None) -> tuple[torch.Tensor, Target]:
        if image.dtype != torch.uint8:
            image = image.detach().mul(255).round_().clamp_(0, 255).to(torch.uint8)
        return image, target

    def __repr__(self) -> str:
        return "ToUint8()"
