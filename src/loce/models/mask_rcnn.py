"""Mask R-CNN with a ResNet-FPN backbone, built from a :class:`~loce.config.model.ModelConfig`.

Input and output frames
-----------------------
The model does **not** resize: the data pipeline resizes each image (with mmcv's rounding)
and scales its targets. The model's transform only normalises (ImageNet mean/std; uint8
images, from the original's decode-and-resize path, as mmcv does) and pads the batch
bottom/right to a multiple of 32. The RoI heads receive each image's scale factor, so that
the class-wise NMS can run in the original frame as the original's does
(``model.parity.nms``).

Predictions come back in the frame of the *original* image when ``forward`` gets
``original_image_sizes`` (one ``(height, width)`` per image, before the pipeline resized
it): boxes are divided by the scale factor ``(w_in / w_orig, h_in / h_orig)`` (float32, as
the original computes ``bboxes / scale_factor``) and masks are pasted straight into an
``h_orig x w_orig`` canvas. Without it they are in the frame of the image tensor given to
the model. Either way ``masks`` is ``[n, 1, H, W]``, boolean (``prob >= 0.5``) unless
``model.test.binarize_masks`` is false.

Example::

    model = build_mask_rcnn(cfg.model, num_classes=K)
    losses = model(images, targets)                     # training
    model.eval()
    dets = model(images, original_image_sizes=[(480, 640)])

Long-tail methods
-----------------
``cfg.roi.cls_loss`` picks the box classification loss (:mod:`loce.losses`); the builder sizes
the classifier for it (``K + 1`` logits, ``K + 2`` for Seesaw; box deltas and mask channels
stay ``K + 1``), initialises the classifier as the method's original code does (e.g. bias
``-ln 999`` for EQL/EQLv2, weights 0.001 and bias -2 for GOL; after the ``parity.init``
initialisation) and hands the loss to the RoI heads, which also score with its rule at
inference. ``cfg.roi.classifier`` picks a linear, cosine or normed (cosine x tau + bias)
classifier for any loss. EQL, federated, ECM and Gumbel are built from per-class training
statistics (:class:`ClassStatistics`), as is NorCal (``cfg.test.norcal_gamma``);
:func:`loce.build.build_model` computes them from the training annotations. See
:mod:`loce.models.roi_heads` for the running state of each loss across ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FasterRCNN, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNN, MaskRCNNHeads
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.rpn import AnchorGenerator
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from loce.checks import checks_enabled
from loce.config.method import LoceConfig
from loce.config.model import ModelConfig
from loce.data.statistics import ClassStatistics
from loce.errors import ConfigError
from loce.losses import build_classification_loss_for
from loce.losses.scoring import fracal_logit_offsets
from loce.models.mmdet_compat import (
    FrozenStatsBatchNorm2d,
    MMDetAnchorGenerator,
    MMDetMultiScaleRoIAlign,
    ParityRPN,
    mmcv_normalize,
    mmdet_init_,
    paste_masks_grid_sample,
)
from loce.models.precision import (
    Float32AnchorGenerator,
    Float32RPNHead,
    FrozenBatchNorm2dKeepDtype,
    amp_context,
)
from loce.models.predictors import BoxPredictor, MaskPredictor, NormedMaskPredictor
from loce.models.roi_heads import StepwiseRoIHeads
from loce.models.weights import load_backbone_weights, load_detector_weights

__all__ = [
    "ClassStatistics",
    "LoceFasterRCNN",
    "LoceMaskRCNN",
    "NormalizePadTransform",
    "build_mask_rcnn",
    "load_backbone_weights",  # from loce.models.weights
]

FPN_STRIDES = (4, 8, 16, 32, 64)
FEATMAP_NAMES = ["0", "1", "2", "3"]


class NormalizePadTransform(GeneralizedRCNNTransform):
    """Normalise and pad; no resizing (the data pipeline resizes).

    Float images in ``[0, 1]`` are normalised as torchvision does, ``(x - mean) / std``;
    uint8 images (the original's decode-and-resize path, :class:`loce.data.transforms.MMCVResize`)
    as mmcv does (:func:`loce.models.mmdet_compat.mmcv_normalize`), bit-equal to the original's
    network input.

    Args:
        image_mean: per-channel mean of ``[0, 1]`` RGB images.
        image_std: per-channel std.
        size_divisible: pad the batch to a multiple of this.
        mask_paste: "grid_sample" (the original's pixel-centre sampling) or "legacy"
            (torchvision's integer-box paste).
        mask_threshold: foreground if probability ``>=`` this.
        binarize_masks: return boolean masks instead of probabilities.
    """

    def __init__(
        self,
        image_mean: list[float],
        image_std: list[float],
        size_divisible: int = 32,
        mask_paste: Literal["grid_sample", "legacy"] = "grid_sample",
        mask_threshold: float = 0.5,
        binarize_masks: bool = True,
    ):
        # min_size / max_size are required by the parent but unused: resize() is a no-op.
        super().__init__(800, 1333, list(image_mean), list(image_std), size_divisible)
        if mask_paste not in ("grid_sample", "legacy"):
            raise ValueError(f"mask_paste must be one of 'grid_sample', 'legacy', got {mask_paste!r}")
        self.mask_paste = mask_paste
        self.mask_threshold = mask_threshold
        self.binarize_masks = binarize_masks

    def normalize(self, image: Tensor) -> Tensor:
        """``[3, H, W]`` float in ``[0, 1]`` or uint8 -> normalised float (see the class doc)."""
        if image.dtype == torch.uint8:
            return mmcv_normalize(image, self.image_mean, self.image_std)
        return super().normalize(image)

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None):
        """Identity: images arrive resized by the data pipeline."""
        return image, target

    @staticmethod
    def scale_factors(
        image_shapes: list[tuple[int, int]], original_image_sizes: list[tuple[int, int]],
    ) -> list[Tensor]:
        """Per image the factor from the original frame to the input frame, as the original
        stores it: ``[4]`` float32 ``(w_in / w_orig, h_in / h_orig, ...)`` (Python division,
        then float32), so that ``boxes / factor`` maps input-frame boxes to the original frame.
        """
        out = []
        for (h_in, w_in), (h0, w0) in zip(image_shapes, original_image_sizes):
            sw, sh = float(w_in) / float(w0), float(h_in) / float(h0)
            out.append(torch.tensor([sw, sh, sw, sh], dtype=torch.float32))
        return out

    def postprocess(
        self,
        result: list[dict[str, Tensor]],
        image_shapes: list[tuple[int, int]],
        original_image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Map detections from the model-input frame to the original frame.

        Args:
            result: per image ``boxes [n, 4]`` and ``masks [n, 1, M, M]`` probabilities (and
                labels, scores) in the input frame.
            image_shapes: per image ``(h_in, w_in)`` (unpadded input size).
            original_image_sizes: per image ``(h_orig, w_orig)``.

        Returns:
            ``result`` with boxes divided by the scale factor and masks pasted into
            ``[n, 1, h_orig, w_orig]`` (bool, or float probabilities).
        """
        if self.training:
            return result
        factors = self.scale_factors(image_shapes, original_image_sizes)
        for pred, shape, size, factor in zip(result, image_shapes, original_image_sizes, factors):
            boxes = pred["boxes"]
            h0, w0 = size
            if tuple(shape) != tuple(size):
                boxes = boxes / factor.to(boxes.device)
                pred["boxes"] = boxes
            if "masks" in pred:
                pred["masks"] = self.paste_masks(pred["masks"], boxes, (int(h0), int(w0)))
        return result

    def paste_masks(self, masks: Tensor, boxes: Tensor, size: tuple[int, int]) -> Tensor:
        """``[n, 1, M, M]`` probabilities + ``[n, 4]`` boxes -> ``[n, 1, H, W]``."""
        threshold = self.mask_threshold if self.binarize_masks else None
        if self.mask_paste == "grid_sample":
            return paste_masks_grid_sample(masks, boxes, size, threshold=threshold)
        pasted = paste_masks_in_image(masks, boxes, size)
        return pasted >= threshold if threshold is not None else pasted

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(Normalize(mean={self.image_mean}, std={self.image_std}), "
            f"Pad(size_divisible={self.size_divisible}), no resize, mask_paste={self.mask_paste!r})"
        )


class LoceFasterRCNN(FasterRCNN):
    """torchvision ``FasterRCNN`` assembled from given parts, with original-frame outputs.

    Built by :func:`build_mask_rcnn` with ``detector: faster_rcnn``; module names equal
    torchvision's (``backbone.body``, ``backbone.fpn``, ``rpn.head``,
    ``roi_heads.box_head``, ``roi_heads.box_predictor``), so the key map of docs/parity.md
    §3 applies. Its RoI heads have no mask branch (``roi_heads.has_mask()`` is False).
    """

    def __init__(self, backbone: nn.Module, rpn: nn.Module, roi_heads: nn.Module, transform: nn.Module):
        # Skip MaskRCNN/FasterRCNN.__init__ (they build default parts); keep the isinstance.
        GeneralizedRCNN.__init__(self, backbone, rpn, roi_heads, transform)
        #: Autocast dtype of inference ("none", "bf16", "fp16"; ``model.test.amp``). Training
        #: takes its precision from the training loop (``solver.amp``).
        self.inference_amp = "none"

    def forward(  # type: ignore[override]
        self,
        images: list[Tensor],
        targets: list[dict[str, Tensor]] | None = None,
        original_image_sizes: list[tuple[int, int]] | None = None,
    ):
        """Losses in training, detections in eval.

        Args:
            images: N tensors ``[3, H_i, W_i]`` (already resized), float in ``[0, 1]`` or
                uint8 (normalised as mmcv does, see :class:`NormalizePadTransform`).
            targets: training only; per image ``boxes [G, 4]`` float xyxy, ``labels [G]``
                int64 in 1..K, ``masks [G, H_i, W_i]`` uint8/bool.
            original_image_sizes: eval only, optional; per image ``(h, w)`` before resizing.
                Detections are returned in that frame (see the module docstring).

        Returns:
            Training: ``{"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
            "loss_rpn_box_reg"}``. Eval: per image ``{"boxes" [n, 4] float, "labels" [n]
            int64, "scores" [n] float, "masks" [n, 1, h, w] bool}``.
        """
        if self.training and targets is None:
            raise ValueError("targets are required in training mode")
        input_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        if original_image_sizes is None:
            original_image_sizes = input_sizes
        elif len(original_image_sizes) != len(images):
            raise ValueError(
                f"original_image_sizes has {len(original_image_sizes)} entries for {len(images)} images"
            )
        if targets is not None:
            _check_boxes(targets)
        if not self.training and self.inference_amp != "none" and images:
            with amp_context(images[0].device.type, self.inference_amp):
                return self._forward(images, targets, original_image_sizes)
        return self._forward(images, targets, original_image_sizes)

    def _forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None,
                 original_image_sizes: Sequence[tuple[int, int]]):
        image_list, targets = self.transform(images, targets)
        features = self.backbone(image_list.tensors)
        proposals, proposal_losses = self.rpn(image_list, features, targets)
        if self.training:
            _, detector_losses = self.roi_heads(features, proposals, image_list.image_sizes, targets)
            return {**detector_losses, **proposal_losses}
        # The RoI heads' post-processing may work in the original frame (parity.nms "mmcv").
        factors = self.transform.scale_factors(image_list.image_sizes, list(original_image_sizes))
        detections, _ = self.roi_heads(features, proposals, image_list.image_sizes,
                                       scale_factors=factors)
        return self.transform.postprocess(detections, image_list.image_sizes, list(original_image_sizes))


class LoceMaskRCNN(LoceFasterRCNN, MaskRCNN):
    """:class:`LoceFasterRCNN` plus the mask branch (``roi_heads.mask_head``,
    ``roi_heads.mask_predictor``), as torchvision's ``MaskRCNN`` is a ``FasterRCNN`` plus
    mask modules. Detections and targets gain ``masks``."""


def _check_boxes(targets: list[dict[str, Tensor]]) -> None:
    for i, t in enumerate(targets):
        boxes = t.get("boxes")
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
            shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
            raise ValueError(f"targets[{i}]['boxes'] must be a [G, 4] tensor, got {shape}")
        if not checks_enabled():
            continue
        bad = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1)
        if bad.any():
            j = int(torch.where(bad)[0][0])
            raise ValueError(
                f"targets[{i}]['boxes'][{j}] = {boxes[j].tolist()} has no area (x2 <= x1 or y2 <= y1)"
            )


def _box_predictor(cfg: ModelConfig, num_logits: int, num_classes: int) -> nn.Module:
    roi = cfg.roi
    if roi.classifier == "linear" and num_logits == num_classes + 1:
        # torchvision's own predictor: the stock model's layers and random draws.
        return FastRCNNPredictor(roi.representation_size, num_classes + 1)
    return BoxPredictor(roi.representation_size, num_logits, num_classes + 1, roi.classifier,
                        roi.cosine_scale)


# ---------------------------------------------------------------------- builder


def _build_backbone(cfg: ModelConfig) -> BackboneWithFPN:
    norm_layer: type[nn.Module] = {
        "frozen_stats": FrozenStatsBatchNorm2d,
        "frozen": FrozenBatchNorm2dKeepDtype,
        "batch": nn.BatchNorm2d,
    }[cfg.parity.backbone_norm]
    body = getattr(torchvision.models, cfg.backbone)(weights=None, norm_layer=norm_layer)
    # frozen_stages counts ResNet stages from the input as mmdet does: 0 freezes the stem
    # (conv1, bn1), 1 also layer1 (the original's setting), ..., -1 nothing.
    frozen = [] if cfg.frozen_stages < 0 else ["conv1.", "bn1."]
    frozen += [f"layer{i}." for i in range(1, cfg.frozen_stages + 1)]
    for name, param in body.named_parameters():
        if any(name.startswith(prefix) for prefix in frozen):
            param.requires_grad_(False)
    stage2 = body.inplanes // 8  # channels of layer1's output (64 for ResNet-18/34, 256 for 50/101)
    return BackboneWithFPN(
        body,
        return_layers={f"layer{k}": str(k - 1) for k in range(1, 5)},
        in_channels_list=[stage2 * 2 ** (k - 1) for k in range(1, 5)],
        out_channels=cfg.fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )


def _build_rpn(cfg: ModelConfig, out_channels: int) -> ParityRPN:
    r = cfg.rpn
    anchors: AnchorGenerator
    if cfg.parity.anchors == "mmdet":
        anchors = MMDetAnchorGenerator(FPN_STRIDES, (r.anchor_scale,), tuple(r.aspect_ratios))
    else:
        sizes = tuple((s * r.anchor_scale,) for s in FPN_STRIDES)
        anchors = Float32AnchorGenerator(sizes, (tuple(r.aspect_ratios),) * len(FPN_STRIDES))
    # Objectness and deltas leave the head in float32: proposals are decoded, ranked and
    # filtered in float32 under autocast (models/precision.py).
    head = Float32RPNHead(out_channels, anchors.num_anchors_per_location()[0])
    return ParityRPN(
        anchors,
        head,
        r.fg_iou_thresh,
        r.bg_iou_thresh,
        r.batch_size_per_image,
        r.positive_fraction,
        {"training": r.pre_nms_top_n_train, "testing": r.pre_nms_top_n_test},
        {"training": r.post_nms_top_n_train, "testing": r.post_nms_top_n_test},
        r.nms_thresh,
        score_thresh=r.score_thresh,
        box_loss=cfg.parity.box_loss,
        min_size=cfg.parity.rpn_min_size,
    )


def _pooler(cfg: ModelConfig, output_size: int) -> MultiScaleRoIAlign:
    if cfg.parity.roi_align == "mmdet":
        return MMDetMultiScaleRoIAlign(FEATMAP_NAMES, output_size, FPN_STRIDES[:4])
    return MultiScaleRoIAlign(FEATMAP_NAMES, output_size, sampling_ratio=2)


def _loce_arguments(loce: LoceConfig, num_classes: int, feature_shape: tuple[int, ...]) -> dict:
    """The :class:`~loce.models.loce_heads.LoceRoIHeads` arguments of ``loce.*``."""
    return dict(
        num_classes=num_classes,
        feature_shape=feature_shape,
        alpha=loce.alpha,
        bg_score=loce.bg_score,
        init_score=loce.init_score,
        use_equilibrium_loss=loce.equilibrium_loss,
        use_feature_memory=loce.feature_memory,
        memory_capacity=loce.memory_capacity,
        memory_dtype=loce.memory_dtype,
        memory_device=loce.memory_device,
        classes_per_step=loce.classes_per_step,
        features_per_class=loce.features_per_class,
    )


def _build_roi_heads(cfg: ModelConfig, num_classes: int, out_channels: int,
                     cls_loss: nn.Module, loce: LoceConfig | None = None) -> StepwiseRoIHeads:
    from loce.losses import classification_num_logits

    roi, mask, test = cfg.roi, cfg.mask, cfg.test
    box_pool = _pooler(cfg, 7)
    box_head = TwoMLPHead(out_channels * 7 * 7, roi.representation_size)
    num_logits = classification_num_logits(roi.cls_loss, num_classes)
    box_predictor = _box_predictor(cfg, num_logits, num_classes)
    # Faster R-CNN: the same heads without the mask branch (the RoI heads ask has_mask()).
    mask_head: nn.Module | None = None
    mask_predictor: MaskPredictor | None = None
    if cfg.detector == "mask_rcnn":
        mask_head = MaskRCNNHeads(out_channels, list(mask.head_layers), 1)
        if mask.predictor == "normed":
            mask_predictor = NormedMaskPredictor(mask.head_layers[-1], mask.upsample_channels,
                                                 num_classes + 1, mask.normed_scale)
        else:
            mask_predictor = MaskPredictor(mask.head_layers[-1], mask.upsample_channels,
                                           num_classes + 1)
    heads_class: type[StepwiseRoIHeads] = StepwiseRoIHeads
    loce_kwargs: dict = {}
    if loce is not None:
        from loce.models.loce_heads import LoceRoIHeads

        heads_class = LoceRoIHeads
        loce_kwargs = _loce_arguments(loce, num_classes, (out_channels, *box_pool.output_size))
    return heads_class(
        box_pool,
        box_head,
        box_predictor,
        roi.fg_iou_thresh,
        roi.bg_iou_thresh,
        roi.batch_size_per_image,
        roi.positive_fraction,
        tuple(roi.bbox_reg_weights),
        test.score_thresh,
        test.nms_thresh,
        test.detections_per_img,
        mask_roi_pool=_pooler(cfg, 14) if mask_head is not None else None,
        mask_head=mask_head,
        mask_predictor=mask_predictor,
        cls_loss=cls_loss,
        box_loss=cfg.parity.box_loss,
        smooth_l1_beta=roi.smooth_l1_beta,
        det_min_size=cfg.parity.det_min_size,
        mask_targets=cfg.parity.mask_targets,
        select_mask_channels=mask.select_channels,
        nms=cfg.parity.nms,
        **loce_kwargs,
    )


def build_mask_rcnn(
    cfg: ModelConfig,
    num_classes: int,
    *,
    load_backbone: bool = True,
    class_stats: ClassStatistics | None = None,
    seed: int = 0,
    loce: LoceConfig | None = None,
) -> LoceFasterRCNN:
    """Build Mask R-CNN (or, with ``cfg.detector: faster_rcnn``, Faster R-CNN) as configured.

    Args:
        cfg: the model config (validated here).
        num_classes: K, the number of *foreground* classes (dataset categories); the box
            classifier gets the classification loss's width (K + 1, K + 2 for Seesaw), the
            box regressor and the mask predictor K + 1 outputs, background at index 0.
        load_backbone: load the initial weights the config names, ``cfg.detector_weights``
            (a whole detector; its class-specific layers start fresh) or else
            ``cfg.backbone_weights``; pass False when a full checkpoint will be loaded next
            (inference, resuming), which needs no download.
        class_stats: per-class training statistics, required by ``roi.cls_loss`` EQL,
            federated, ECM and Gumbel and by ``test.norcal_gamma``; with
            ``fractal_dims`` by ``test.fracal_lambda``.
        seed: base seed of the random draws of the federated and Gumbel losses.
        loce: LOCE's settings (the ``loce`` config section) to build LOCE's RoI heads,
            :class:`~loce.models.loce_heads.LoceRoIHeads`, with the same modules,
            parameters and initial weights (the state dict gains
            ``roi_heads.score_tracker.scores``); None builds the plain heads.

    Returns:
        A :class:`LoceMaskRCNN` in training mode, or a :class:`LoceFasterRCNN` (no mask
        branch) for ``detector: faster_rcnn``.

    Raises:
        ConfigError: an impossible config value, num_classes < 1, or class statistics that
            are missing or do not fit.
        CheckpointError / LoceError: backbone weights that cannot be loaded.
    """
    cfg.validate()
    if int(num_classes) < 1:
        raise ConfigError(f"num_classes must be >= 1 (foreground classes), got {num_classes}")
    num_classes = int(num_classes)
    cls_loss = build_classification_loss_for(cfg, num_classes, class_stats, seed)
    norcal_counts: Sequence[int] | None = None
    if cfg.test.norcal_gamma is not None:
        if class_stats is None or class_stats.num_classes != num_classes:
            found = "none were given" if class_stats is None else (
                f"{class_stats.source} has {class_stats.num_classes} categories, the model "
                f"{num_classes}")
            raise ConfigError(
                "model.test.norcal_gamma needs the training image count of every class "
                f"({found}); build the model with loce.build.build_model, which reads them from "
                "data.train_ann (the training annotations of the model)"
            )
        norcal_counts = class_stats.image_counts
    fracal_lambda = cfg.test.fracal_lambda
    if fracal_lambda is not None and (class_stats is None or class_stats.fractal_dims is None
                                      or class_stats.num_classes != num_classes):  # fmt: skip
        raise ConfigError(
            "model.test.fracal_lambda needs the image count and the fractal dimension of every "
            "class; build the model with loce.build.build_model, which computes them from "
            "data.train_ann (the training annotations of the model)"
        )
    backbone = _build_backbone(cfg)
    rpn = _build_rpn(cfg, backbone.out_channels)
    roi_heads = _build_roi_heads(cfg, num_classes, backbone.out_channels, cls_loss, loce)
    transform = NormalizePadTransform(
        cfg.image_mean,
        cfg.image_std,
        cfg.size_divisible,
        mask_paste=cfg.parity.mask_paste,
        mask_threshold=cfg.test.mask_threshold,
        binarize_masks=cfg.test.binarize_masks,
    )
    detector = LoceMaskRCNN if roi_heads.has_mask() else LoceFasterRCNN
    model = detector(backbone, rpn, roi_heads, transform)
    model.inference_amp = cfg.test.amp
    if cfg.parity.init == "mmdet":
        mmdet_init_(model)
    # The method's own classifier initialisation (e.g. EQL's prior bias) comes last so that
    # it wins over parity.init; cross-entropy keeps the predictor's initialisation.
    init_classifier = getattr(cls_loss, "init_classifier_", None)
    if init_classifier is not None:
        cls_score = roi_heads.box_predictor.cls_score
        init_classifier(cls_score.weight, getattr(cls_score, "bias", None))
    if norcal_counts is not None:
        roi_heads.set_norcal(torch.as_tensor(norcal_counts), cfg.test.norcal_gamma)
    if fracal_lambda is not None:
        assert class_stats is not None and class_stats.fractal_dims is not None
        roi_heads.set_fracal(
            fracal_logit_offsets(torch.as_tensor(class_stats.image_counts), class_stats.num_images),
            torch.as_tensor(class_stats.fractal_dims), fracal_lambda,
        )  # fmt: skip
    if load_backbone and cfg.detector_weights is not None:
        load_detector_weights(model, cfg.detector_weights)
    elif load_backbone:
        load_backbone_weights(backbone.body, cfg.backbone_weights, cfg.backbone)
    return model
