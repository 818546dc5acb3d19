"""The exported computation: one decoded image in, detections in its pixels out.

Shape shorthand: ``H, W`` the input image, ``h, w`` the resized network input, ``n``
detections, ``M`` the mask resolution (28).

:class:`ImageToDetections` wraps a loce detector (its backbone, RPN and RoI heads run as
they are; the RoI heads switch to their traced post-processing,
:meth:`loce.models.roi_heads.StepwiseRoIHeads._traced_detections_one_image`) and adds what
the data pipeline does before the model, written with tensor sizes so that a traced graph
keeps ``H`` and ``W`` dynamic:

1. ``[H, W, 3]`` uint8 -> ``[1, 3, H, W]`` float in ``[0, 1]``;
2. the test resize of ``data.test_resize: torch`` (:class:`loce.data.transforms.Resize`):
   :func:`loce.data.transforms.rescale_size`'s size computed in float64, bilinear
   interpolation without antialiasing;
3. the model's normalisation (``(x - mean) / std``) and padding to ``size_divisible``;
4. the model; boxes divided by the float32 scale factor, masks pasted into ``[n, H, W]``
   (:func:`paste_masks_separable`) and thresholded.

Run eagerly it computes what ``loce predict`` computes with ``data.test_resize: torch``, up
to the NMS of the traced path; the ONNX file is its trace.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

__all__ = ["ImageToDetections", "paste_masks_separable", "resized_size"]


def resized_size(height: Tensor, width: Tensor, short: int, max_size: int) -> tuple[Tensor, Tensor]:
    """:func:`loce.data.transforms.rescale_size` on traced sizes (0-dim int64 tensors).

    The scale and the rounding ``int(side * s + 0.5)`` run in float64, as Python computes
    them, so the graph picks the same size as the data pipeline.

    Returns:
        ``(new_h, new_w)`` 0-dim int64 tensors.
    """
    long_cap, short_cap = float(max(short, max_size)), float(min(short, max_size))
    h, w = height.to(torch.float64), width.to(torch.float64)
    s = torch.minimum(long_cap / torch.maximum(h, w), short_cap / torch.minimum(h, w))
    one = torch.ones_like(h)
    new_h = torch.maximum(torch.floor(h * s + 0.5), one).to(torch.int64)
    new_w = torch.maximum(torch.floor(w * s + 0.5), one).to(torch.int64)
    return new_h, new_w


def _axis_weights(lo: Tensor, hi: Tensor, size: Tensor, resolution: int) -> Tensor:
    """Bilinear weights ``[n, size, resolution]`` of the mask cells at the centres of pixels
    ``0..size-1`` along one axis, for masks spanning ``[lo, hi]`` (``[n]`` each).

    The sampling rule of ``grid_sample(align_corners=False, padding_mode="zeros")`` with the
    normalised coordinate ``2 * (p + 0.5 - lo) / (hi - lo) - 1``
    (:func:`loce.models.mmdet_compat.paste_masks_grid_sample`): cell coordinate
    ``((g + 1) * M - 1) / 2``, weight ``1 - |c - i|`` on the two neighbouring cells, cells
    outside the mask contributing zero.
    """
    centres = torch.arange(size, dtype=torch.float32, device=lo.device) + 0.5  # type: ignore[call-overload]
    g = (centres[None, :] - lo[:, None]) / (hi - lo)[:, None] * 2 - 1  # [n, size]
    g = torch.where(torch.isinf(g), torch.zeros_like(g), g)  # a zero-width box: the centre
    c = ((g + 1) * resolution - 1) / 2
    cells = torch.arange(resolution, dtype=torch.float32, device=lo.device)
    return torch.clamp(1 - (c[:, :, None] - cells).abs(), min=0)


def paste_masks_separable(masks: Tensor, boxes: Tensor, height: Tensor, width: Tensor) -> Tensor:
    """Paste ``M x M`` masks into an ``H x W`` image as two matrix products.

    Bilinear sampling at pixel centres over an axis-aligned box is separable:
    ``out[y, x] = sum_ij wy[y, i] * mask[i, j] * wx[x, j]``, the weights of
    :func:`_axis_weights`. The same values as
    :func:`loce.models.mmdet_compat.paste_masks_grid_sample` (up to float rounding) without
    its per-box loop or an ``[n, H, W, 2]`` sampling grid: traceable, and ``O(n H W)`` memory.

    Args:
        masks: ``[n, 1, M, M]`` float probabilities.
        boxes: ``[n, 4]`` float ``(x1, y1, x2, y2)`` in output pixels.
        height, width: the output size (ints or 0-dim tensors).

    Returns:
        ``[n, H, W]`` float32 probabilities.
    """
    resolution = masks.shape[-1]
    boxes = boxes.to(torch.float32)
    wy = _axis_weights(boxes[:, 1], boxes[:, 3], height, resolution)  # [n, H, M]
    wx = _axis_weights(boxes[:, 0], boxes[:, 2], width, resolution)  # [n, W, M]
    return torch.matmul(torch.matmul(wy, masks[:, 0].to(torch.float32)), wx.transpose(1, 2))


class ImageToDetections(nn.Module):
    """A loce detector behind the test pipeline: ``[H, W, 3]`` uint8 -> detections.

    Args:
        model: a loce Faster or Mask R-CNN in eval mode (CPU, float32).
        short, max_size: the test resize (``data.test_scale``, ``data.test_max_size``).
        with_masks: compute masks (ignored for a model without a mask branch).
        mask_threshold: foreground where the pasted probability is ``>=`` this.

    Returns (forward):
        ``(boxes [n, 4] float32, scores [n] float32, labels [n] int64[, masks [n, H, W]
        bool])`` in the input image's pixels, by decreasing score.
    """

    def __init__(self, model: nn.Module, short: int, max_size: int, *, with_masks: bool = True,
                 mask_threshold: float = 0.5) -> None:
        super().__init__()
        self.model = model
        self.short, self.max_size = int(short), int(max_size)
        heads = model.roi_heads  # type: ignore[attr-defined]
        self.with_masks = bool(with_masks) and heads.has_mask()
        self.mask_threshold = float(mask_threshold)

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        model = self.model
        shape = torch._shape_as_tensor(image)
        height, width = shape[0], shape[1]
        new_h, new_w = resized_size(height, width, self.short, self.max_size)
        x = image.permute(2, 0, 1)[None].to(torch.float32) / 255.0
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False,
                          antialias=False)
        transform = model.transform
        x = transform.normalize(x[0])[None]
        step = int(transform.size_divisible)
        pad_h = (step - new_h % step) % step
        pad_w = (step - new_w % step) % step
        x = F.pad(x, [0, pad_w, 0, pad_h])
        features = model.backbone(x)
        image_list = ImageList(x, [(new_h, new_w)])
        proposals, _ = model.rpn(image_list, features)
        # (w_in / w_orig, h_in / h_orig) in float64, then float32, as the model stores it.
        sw = new_w.to(torch.float64) / width.to(torch.float64)
        sh = new_h.to(torch.float64) / height.to(torch.float64)
        factor = torch.stack([sw, sh, sw, sh]).to(torch.float32)
        heads = model.roi_heads
        previous = heads.infer_masks
        heads.infer_masks = self.with_masks
        try:
            detections, _ = heads(features, proposals, [(new_h, new_w)], scale_factors=[factor])
        finally:
            heads.infer_masks = previous
        det = detections[0]
        boxes = det["boxes"] / factor
        outputs = (boxes, det["scores"], det["labels"])
        if self.with_masks:
            probs = paste_masks_separable(det["masks"], boxes, height, width)
            outputs += (probs >= self.mask_threshold,)
        return outputs
