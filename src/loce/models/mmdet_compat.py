"""Components that make torchvision's Mask R-CNN compute what the original (MMDetection 2.8)
computes. Each one is selected by a field of :class:`loce.config.model.ParityConfig`; the
numbers in brackets refer to the rows of docs/parity.md §4.

Shape shorthand:
    N  images in the batch          G  ground-truth objects of one image
    R  RoIs (proposals or detections, all images concatenated)
    A  anchors per location         L  pyramid levels
    M  mask resolution (28)         H, W  image height and width in pixels

Everything here is a small subclass or a function over ``torch.nn.functional`` /
``torchvision.ops``, so the ``isinstance`` checks of torchvision's detection models keep
passing and state-dict names do not change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork

from loce.models.precision import FrozenBatchNorm2dKeepDtype, geometry_dtype

__all__ = [
    "FrozenStatsBatchNorm2d",
    "ParityRPN",
    "MMDetAnchorGenerator",
    "MMDetMultiScaleRoIAlign",
    "box_regression_loss_sum",
    "mmcv_normalize",
    "mmdet_init_",
    "paste_masks_grid_sample",
    "project_masks_aligned",
]

BoxLoss = Literal["l1", "smooth_l1"]


class FrozenStatsBatchNorm2d(FrozenBatchNorm2dKeepDtype):
    """BatchNorm with trainable affine weights and frozen statistics (docs/parity.md §8).

    The original trains BN ``weight``/``bias`` in ResNet stages 2-4 while the running mean and
    variance stay at their ImageNet values (``requires_grad=True, norm_eval=True``).
    torchvision's :class:`~torchvision.ops.FrozenBatchNorm2d` freezes the affine weights too.
    This class computes the same ``x * w / sqrt(var + eps) + (b - mean * w / sqrt(var + eps))``
    but holds ``weight`` and ``bias`` as parameters. The statistics are buffers that nothing
    updates, in train and eval mode alike. State-dict names equal FrozenBatchNorm2d's
    (``num_batches_tracked`` of a file is dropped), so checkpoints move between both modes.
    Under autocast the output keeps the input's dtype (:class:`FrozenBatchNorm2dKeepDtype`).

    Args:
        num_features: channels ``C`` of the ``[N, C, H, W]`` input.
        eps: added to the variance.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__(num_features, eps)
        weight, bias = self.weight, self.bias
        del self.weight, self.bias  # buffers in the parent; re-registered as parameters
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone())


class MMDetAnchorGenerator(AnchorGenerator):
    """Anchors at fixed strides with unrounded base anchors [5, 8].

    torchvision infers each level's stride as ``padded_size // grid_size``; on a side whose
    padded length is an odd multiple of 32 (every 800-px side) P6 gets stride 61 instead of
    64. It also rounds base anchors to integers (up to 0.49 px off for ratios 0.5 and 2).
    Here level ``l`` uses ``strides[l]`` and base anchors
    ``[-ws/2, -hs/2, ws/2, hs/2]`` with ``ws = stride / sqrt(r) * scale``,
    ``hs = stride * sqrt(r) * scale``, ordered ratio-major as in both libraries.

    Args:
        strides: one stride per feature map, in pixels.
        scales: anchor scales in units of the stride (8 gives 32..512 px on P2..P6).
        ratios: aspect ratios ``h / w``.
    """

    def __init__(
        self,
        strides: Sequence[int] = (4, 8, 16, 32, 64),
        scales: Sequence[float] = (8.0,),
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
    ):
        sizes = tuple(tuple(float(s) * float(c) for c in scales) for s in strides)
        super().__init__(sizes, (tuple(float(r) for r in ratios),) * len(strides))
        self.strides = tuple(int(s) for s in strides)
        self.scales = tuple(float(c) for c in scales)
        self.ratios = tuple(float(r) for r in ratios)
        self.cell_anchors = [self.base_anchors(s, self.scales, self.ratios) for s in self.strides]

    @staticmethod
    def base_anchors(stride: int, scales: Sequence[float], ratios: Sequence[float]) -> Tensor:
        """Zero-centred anchors of one level, ``[A, 4]`` float32 ``(x1, y1, x2, y2)``."""
        r = torch.tensor(ratios, dtype=torch.float32)
        s = torch.tensor(scales, dtype=torch.float32)
        h_ratios = r.sqrt()
        w_ratios = 1 / h_ratios
        ws = (stride * w_ratios[:, None] * s[None, :]).reshape(-1)
        hs = (stride * h_ratios[:, None] * s[None, :]).reshape(-1)
        return torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=-1)

    def forward(self, image_list: ImageList, feature_maps: list[Tensor]) -> list[Tensor]:
        """Anchors for every image.

        Args:
            image_list: the padded batch (only the number of images is used).
            feature_maps: L maps ``[N, C, H_l, W_l]``, finest first.

        Returns:
            N tensors ``[sum_l H_l * W_l * A, 4]``, level-major, then (y, x, anchor), in
            float32 for 16-bit feature maps (autocast): anchors are box geometry.
        """
        if len(feature_maps) != len(self.strides):
            raise ValueError(
                f"MMDetAnchorGenerator has {len(self.strides)} strides {self.strides} but got "
                f"{len(feature_maps)} feature maps"
            )
        grid_sizes = [list(f.shape[-2:]) for f in feature_maps]
        dtype, device = geometry_dtype(feature_maps[0].dtype), feature_maps[0].device
        strides = [
            [torch.tensor(s, dtype=torch.int64, device=device)] * 2 for s in self.strides
        ]
        self.set_cell_anchors(dtype, device)
        per_level = self.grid_anchors(grid_sizes, strides)
        anchors = torch.cat(per_level)
        return [anchors for _ in range(len(image_list.image_sizes))]


class MMDetMultiScaleRoIAlign(MultiScaleRoIAlign):
    """Multi-level RoIAlign as the original computes it [4, 22].

    * ``roi_align(aligned=True, sampling_ratio=0)``: pixel-model alignment (the half-pixel
      shift) and an adaptive number of samples per bin; torchvision's pooler hard-codes
      ``aligned=False`` and Mask R-CNN uses ``sampling_ratio=2``.
    * level of a box: ``floor(log2(sqrt(w * h) / finest_scale + 1e-6))`` clamped to the
      available levels;
    * spatial scale ``1 / stride`` from fixed strides, not inferred from the image size.

    Args:
        featmap_names: names of the feature maps to pool from, finest first.
        output_size: output ``(h, w)`` or one int.
        featmap_strides: stride of each named map.
        sampling_ratio: samples per bin side; 0 = adaptive (``ceil(roi_size / output_size)``).
        aligned: the half-pixel offset.
        finest_scale: box side mapped to the boundary between the first two levels / 2.
    """

    def __init__(
        self,
        featmap_names: list[str],
        output_size: int | tuple[int, int],
        featmap_strides: Sequence[int] = (4, 8, 16, 32),
        sampling_ratio: int = 0,
        aligned: bool = True,
        finest_scale: float = 56.0,
    ):
        super().__init__(featmap_names, output_size, sampling_ratio)
        if len(featmap_strides) != len(featmap_names):
            raise ValueError(
                f"{len(featmap_names)} feature maps {featmap_names} but "
                f"{len(featmap_strides)} strides {tuple(featmap_strides)}"
            )
        self.featmap_strides = tuple(int(s) for s in featmap_strides)
        self.aligned = aligned
        self.finest_scale = float(finest_scale)

    def roi_levels(self, boxes: Tensor) -> Tensor:
        """Pyramid level of each box.

        Args:
            boxes: ``[R, 4]`` float ``(x1, y1, x2, y2)`` in image pixels.

        Returns:
            ``[R]`` int64 in ``0..len(featmap_names) - 1``.
        """
        scale = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        levels = torch.floor(torch.log2(scale / self.finest_scale + 1e-6))
        return levels.clamp(min=0, max=len(self.featmap_strides) - 1).to(torch.int64)

    def forward(
        self,
        x: dict[str, Tensor],
        boxes: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> Tensor:
        """Pool one feature grid per box.

        Args:
            x: feature maps by name, each ``[N, C, H_l, W_l]``.
            boxes: N tensors ``[R_i, 4]`` float, image pixels of the (resized) input image.
            image_shapes: unused (the strides are fixed); kept for the parent's signature.

        Returns:
            ``[R, C, h, w]`` with ``R = sum_i R_i``, in the order of ``boxes``.
        """
        missing = [name for name in self.featmap_names if name not in x]
        if missing:
            raise KeyError(f"feature maps {missing} not found; available: {list(x)}")
        feats = [x[name] for name in self.featmap_names]
        concat = torch.cat(boxes, dim=0)
        # Written with tensor sizes (``b[:, :1]``, ``rois[:, :1]``), not Python counts, so
        # that a traced graph (ONNX export, loce.export) keeps the RoI count dynamic.
        batch_idx = torch.cat([torch.zeros_like(b[:, :1]) + i for i, b in enumerate(boxes)], dim=0)
        rois = torch.cat([batch_idx, concat], dim=1)
        levels = self.roi_levels(concat)
        num_channels = feats[0].shape[1]
        result = torch.zeros_like(rois[:, :1, None, None]).to(feats[0].dtype).expand(
            -1, num_channels, *self.output_size).contiguous()
        tracing = torch.jit.is_tracing()
        for level, (feat, stride) in enumerate(zip(feats, self.featmap_strides)):
            idx = torch.where(levels == level)[0]
            if not tracing and idx.numel() == 0:
                continue
            pooled = roi_align(
                feat,
                rois[idx],  # not cast: under autocast roi_align runs in float32
                output_size=self.output_size,
                spatial_scale=1.0 / stride,
                sampling_ratio=self.sampling_ratio,
                aligned=self.aligned,
            )
            if tracing:  # a scatter keeps the RoI count dynamic in the graph
                rows = idx[:, None, None, None].expand_as(pooled)
                result = result.scatter(0, rows, pooled.to(result.dtype))
            else:
                result[idx] = pooled.to(result.dtype)
        return result

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(featmap_names={self.featmap_names}, "
            f"output_size={self.output_size}, strides={self.featmap_strides}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned})"
        )


def mmcv_normalize(image: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Normalise a uint8 image exactly as mmcv's ``imnormalize`` does [12-14].

    mmcv subtracts the mean in float32 and multiplies by ``1 / std`` computed and applied in
    float64 (OpenCV's scalar arithmetic), rounding the product to float32; on 0..255 pixels
    with mmdet's constants (123.675, 116.28, 103.53) / (58.395, 57.12, 57.375). Those are
    ``mean`` and ``std`` given in ``[0, 1]`` units times 255, rounded to 6 decimals (which
    restores the decimal constants exactly).

    Args:
        image: ``[3, H, W]`` uint8 RGB.
        mean: per-channel mean of ``[0, 1]`` images (0.485, 0.456, 0.406).
        std: per-channel std of ``[0, 1]`` images (0.229, 0.224, 0.225).

    Returns:
        ``[3, H, W]`` float32, bit-equal to mmcv's network input.
    """
    device = image.device
    mean255 = torch.tensor([round(float(m) * 255, 6) for m in mean], dtype=torch.float32, device=device)
    inv_std = torch.tensor([1.0 / round(float(s) * 255, 6) for s in std], dtype=torch.float64, device=device)
    centred = image.to(torch.float32) - mean255[:, None, None]
    return (centred.to(torch.float64) * inv_std[:, None, None]).to(torch.float32)


def box_regression_loss_sum(pred: Tensor, target: Tensor, kind: BoxLoss, beta: float = 1.0 / 9.0) -> Tensor:
    """Summed box regression loss over positive rows.

    Args:
        pred: ``[P, 4]`` float predicted deltas.
        target: ``[P, 4]`` float target deltas.
        kind: "l1" (the original, docs/parity.md §8) or "smooth_l1" (torchvision).
        beta: smooth L1 transition point (torchvision uses 1/9).

    Returns:
        Scalar: the sum over all P x 4 elements (callers divide by the sample count).
    """
    if kind == "l1":
        return F.l1_loss(pred, target, reduction="sum")
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, beta=beta, reduction="sum")
    raise ValueError(f"box loss must be one of 'l1', 'smooth_l1', got {kind!r}")


class ParityRPN(RegionProposalNetwork):
    """torchvision's RPN with a choice of box regression loss.

    The only change is in :meth:`compute_loss`: the box term uses
    :func:`box_regression_loss_sum` of kind ``box_loss``. Normalisation (by the number of
    sampled anchors) and the objectness loss (sigmoid BCE) are the same in both libraries.
    Takes the parent's arguments plus:

    Args:
        box_loss: "l1" or "smooth_l1".
        smooth_l1_beta: beta of the smooth L1 loss.
        min_size: proposals with a side below this (px) are dropped before NMS
            (torchvision 1e-3, the original 0).
    """

    def __init__(self, *args, box_loss: BoxLoss = "smooth_l1", smooth_l1_beta: float = 1.0 / 9.0,
                 min_size: float = 1e-3, **kwargs):
        super().__init__(*args, **kwargs)
        if box_loss not in ("l1", "smooth_l1"):
            raise ValueError(f"box_loss must be one of 'l1', 'smooth_l1', got {box_loss!r}")
        self.box_loss = box_loss
        self.smooth_l1_beta = smooth_l1_beta
        self.min_size = min_size

    def compute_loss(
        self, objectness: Tensor, pred_bbox_deltas: Tensor, labels: list[Tensor],
        regression_targets: list[Tensor],
    ) -> tuple[Tensor, Tensor]:
        """RPN losses.

        Args:
            objectness: ``[sum anchors, 1]`` logits over all images.
            pred_bbox_deltas: ``[sum anchors, 4]``.
            labels: per image ``[anchors]`` float (1 positive, 0 negative, -1 ignored).
            regression_targets: per image ``[anchors, 4]``.

        Returns:
            ``(objectness_loss, box_loss)`` scalars.
        """
        pos_masks, neg_masks = self.fg_bg_sampler(labels)
        pos = torch.where(torch.cat(pos_masks, dim=0))[0]
        neg = torch.where(torch.cat(neg_masks, dim=0))[0]
        sampled = torch.cat([pos, neg], dim=0)
        labels_cat = torch.cat(labels, dim=0)
        targets_cat = torch.cat(regression_targets, dim=0)
        box_loss = box_regression_loss_sum(
            pred_bbox_deltas[pos], targets_cat[pos], self.box_loss, self.smooth_l1_beta
        ) / sampled.numel()
        objectness_loss = F.binary_cross_entropy_with_logits(
            objectness.flatten()[sampled], labels_cat[sampled]
        )
        return objectness_loss, box_loss


def project_masks_aligned(gt_masks: Tensor, boxes: Tensor, matched_idxs: Tensor, size: int) -> Tensor:
    """Mask targets as the original builds them (docs/parity.md §8).

    Crops each matched ground-truth mask to its RoI with ``roi_align(aligned=True,
    sampling_ratio=0)`` and binarises with ``>= 0.5``. torchvision's
    ``project_masks_on_boxes`` uses ``aligned=False`` and keeps the soft values.

    Args:
        gt_masks: ``[G, H, W]`` uint8/bool/float binary masks of one image.
        boxes: ``[P, 4]`` float RoIs (positive proposals) in image pixels.
        matched_idxs: ``[P]`` int64 index of each RoI's ground truth in ``gt_masks``.
        size: output side M.

    Returns:
        ``[P, M, M]`` float, values 0 or 1, in the geometry dtype of ``boxes`` (float32 for
        16-bit boxes, whose indices above 256 would round to a neighbour's).
    """
    boxes = boxes.to(geometry_dtype(boxes.dtype))
    rois = torch.cat([matched_idxs[:, None].to(boxes), boxes], dim=1)
    crops = roi_align(gt_masks[:, None].to(rois), rois, (size, size), spatial_scale=1.0,
                      sampling_ratio=0, aligned=True)[:, 0]
    return (crops >= 0.5).to(crops.dtype)


def _paste_region(masks: Tensor, boxes: Tensor, y0: int, y1: int, x0: int, x1: int) -> Tensor:
    """Sample ``masks [n, 1, M, M]`` at the centres of pixels ``[y0, y1) x [x0, x1)``.

    A mask covers its float box exactly: pixel centre ``(x + 0.5, y + 0.5)`` maps to the
    normalised mask coordinate ``2 * (x + 0.5 - bx1) / (bx2 - bx1) - 1``; outside [-1, 1]
    ``grid_sample`` blends with zero padding. Returns ``[n, y1 - y0, x1 - x0]`` float32.
    """
    n = masks.shape[0]
    device = masks.device
    bx1, by1, bx2, by2 = boxes.to(torch.float32).split(1, dim=1)  # each [n, 1]
    ys = torch.arange(y0, y1, device=device, dtype=torch.float32) + 0.5
    xs = torch.arange(x0, x1, device=device, dtype=torch.float32) + 0.5
    gy = (ys[None, :] - by1) / (by2 - by1) * 2 - 1  # [n, h]
    gx = (xs[None, :] - bx1) / (bx2 - bx1) * 2 - 1  # [n, w]
    # A zero-width box divides by zero: sample the mask centre column/row instead.
    gy = gy.masked_fill(torch.isinf(gy), 0.0)
    gx = gx.masked_fill(torch.isinf(gx), 0.0)
    h, w = gy.shape[1], gx.shape[1]
    grid = torch.stack([gx[:, None, :].expand(n, h, w), gy[:, :, None].expand(n, h, w)], dim=3)
    return F.grid_sample(masks.to(torch.float32), grid, align_corners=False)[:, 0]


def paste_masks_grid_sample(
    masks: Tensor,
    boxes: Tensor,
    image_size: tuple[int, int],
    threshold: float | None = None,
    chunk_bytes: int = 1 << 30,
    per_box: bool | None = None,
) -> Tensor:
    """Paste RoI masks into the image by sampling them at pixel centres [6].

    On the CPU each mask is sampled only over its box plus one pixel (outside, the result
    is below 0.5 of the edge value and 0 after thresholding; probabilities there are left at
    0); on other devices masks are pasted over the whole image in chunks of about
    ``chunk_bytes``. Thresholded, both give the same masks.

    Args:
        masks: ``[R, 1, M, M]`` float probabilities.
        boxes: ``[R, 4]`` float ``(x1, y1, x2, y2)`` in the output frame (pixels).
        image_size: output ``(H, W)``.
        threshold: if given, return ``bool`` masks ``prob >= threshold``.
        chunk_bytes: float32 bytes per chunk when pasting over the whole image.
        per_box: sample only around each box (default: on the CPU).

    Returns:
        ``[R, 1, H, W]`` bool (with ``threshold``) or float32 probabilities.
    """
    img_h, img_w = int(image_size[0]), int(image_size[1])
    num = masks.shape[0]
    dtype = torch.bool if threshold is not None else torch.float32
    out = torch.zeros((num, 1, img_h, img_w), dtype=dtype, device=masks.device)
    if num == 0 or img_h == 0 or img_w == 0:
        return out

    def finish(probs: Tensor) -> Tensor:
        return probs >= threshold if threshold is not None else probs

    if per_box is None:
        per_box = masks.device.type == "cpu"
    if per_box:
        for i in range(num):
            bx1, by1, bx2, by2 = boxes[i].tolist()
            x0 = max(int(math.floor(bx1)) - 1, 0)
            y0 = max(int(math.floor(by1)) - 1, 0)
            x1 = min(int(math.ceil(bx2)) + 1, img_w)
            y1 = min(int(math.ceil(by2)) + 1, img_h)
            if x1 <= x0 or y1 <= y0:
                continue
            region = _paste_region(masks[i : i + 1], boxes[i : i + 1], y0, y1, x0, x1)
            out[i, 0, y0:y1, x0:x1] = finish(region[0])
        return out
    per_chunk = max(1, int(chunk_bytes // (4 * img_h * img_w)))
    for start in range(0, num, per_chunk):
        sl = slice(start, min(start + per_chunk, num))
        region = _paste_region(masks[sl], boxes[sl], 0, img_h, 0, img_w)
        out[sl, 0] = finish(region)
    return out


def _xavier_uniform_(module: nn.Module) -> None:
    nn.init.xavier_uniform_(module.weight)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)


def mmdet_init_(model: nn.Module) -> None:
    """Initialise the detector's new layers as the original does.

    FPN convolutions and the box head's ``fc6``/``fc7``: xavier-uniform, bias 0; box
    classifier: normal std 0.01, bias 0; box deltas: normal std 0.001, bias 0; mask
    predictor: kaiming-normal (fan_out, relu), bias 0. The RPN head and the mask head's 3x3
    convolutions already match torchvision's initialisation; the ResNet is left alone.

    Args:
        model: a model built by :func:`loce.models.build_mask_rcnn`.
    """
    for module in model.modules():
        if isinstance(module, FeaturePyramidNetwork):
            for conv in module.modules():
                if isinstance(conv, nn.Conv2d):
                    _xavier_uniform_(conv)
    roi_heads = model.roi_heads  # type: ignore[attr-defined]
    for name in ("fc6", "fc7"):
        layer = getattr(roi_heads.box_head, name, None)
        if isinstance(layer, nn.Linear):
            _xavier_uniform_(layer)
    predictor = roi_heads.box_predictor
    for name, std in (("cls_score", 0.01), ("bbox_pred", 0.001)):
        layer = getattr(predictor, name, None)
        if layer is not None and getattr(layer, "weight", None) is not None:
            nn.init.normal_(layer.weight, std=std)
            if getattr(layer, "bias", None) is not None:
                nn.init.zeros_(layer.bias)
    mask_predictor = roi_heads.mask_predictor
    if mask_predictor is not None:
        for layer in mask_predictor.modules():
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
