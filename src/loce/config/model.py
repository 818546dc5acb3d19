"""Typed configuration of the detector (the ``model`` section of a config).

Defaults reproduce the original LOCE stage-1 model on LVIS (docs/method.md §8 and §9):
Mask R-CNN with a ResNet-50-FPN backbone initialised from ImageNet, first stage frozen,
BatchNorm statistics frozen, the normed (cosine x 20) mask predictor, the LVIS test settings
(score threshold 1e-4, class-wise NMS 0.5, 300 detections per image) and every
torchvision-vs-MMDetection difference switched to the original's behaviour (``parity``,
see docs/parity.md). :meth:`ParityConfig.torchvision` gives torchvision's own behaviour.

The number of classes is not part of the model config: it comes from the dataset and is
passed to :func:`loce.models.build_mask_rcnn`.

Long-tail methods beside LOCE (docs/methods.md) are options of the box branch:
``roi.cls_loss`` names the classification loss, its hyperparameters sit in the section of the
same name (``roi.eql``, ``roi.eqlv2``, ``roi.seesaw``, ``roi.federated``, ``roi.ecm``,
``roi.gumbel``; defaults are the published values), ``roi.classifier: normed`` gives the
cosine x tau classifier with a trained bias that Seesaw and ECM use, and
``test.norcal_gamma`` (or ``test.fracal_lambda``) turns on NorCal's (FRACAL's) post-hoc
calibration of a softmax model. For example::

    model:
      roi:
        cls_loss: seesaw
        classifier: normed
        seesaw: {p: 0.8, q: 2.0}

    loce predict --checkpoint ce.pth ... --set model.test.norcal_gamma=0.5
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Literal

from loce.config._checks import check, check_fraction, check_positive_values, check_sampling
from loce.errors import ConfigError

__all__ = [
    "BACKBONES",
    "CLS_LOSSES",
    "DETECTOR_WEIGHTS",
    "ECMConfig",
    "EQLv2Config",
    "FederatedConfig",
    "MaskConfig",
    "ModelConfig",
    "ParityConfig",
    "RoIConfig",
    "RPNConfig",
    "SeesawConfig",
    "TailThresholdConfig",
    "TestConfig",
    "detector_weight_name",
]

BackboneName = Literal["resnet18", "resnet34", "resnet50", "resnet101"]
BACKBONES: tuple[str, ...] = typing.get_args(BackboneName)

# The names of the classification losses, defined here so that the config does not import
# torch; loce.losses.LOSS_NAMES is CLS_LOSSES, and loce.losses.registry.LOSS_SPECS has one entry
# per name, in this order.
ClsLossName = Literal[
    "cross_entropy", "equilibrium", "eql", "eqlv2", "seesaw", "federated", "ecm", "gumbel"
]
CLS_LOSSES: tuple[str, ...] = typing.get_args(ClsLossName)
#: Losses whose inference scores are a softmax over K + 1 logits (NorCal applies to these).
SOFTMAX_LOSSES: tuple[str, ...] = ("cross_entropy", "equilibrium")


def _check_literals(obj: object, prefix: str) -> None:
    """Check every ``Literal`` field of the dataclass ``obj`` (OmegaConf does it on load; a
    config built in Python is checked here). Raises ConfigError listing the valid choices."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):  # type: ignore[arg-type]
        hint = hints[f.name]
        if typing.get_origin(hint) is Literal:
            choices = typing.get_args(hint)
            value = getattr(obj, f.name)
            if value not in choices:
                valid = ", ".join(repr(c) for c in choices)
                raise ConfigError(f"{prefix}.{f.name} must be one of {valid}, got {value!r}")


@dataclass
class RPNConfig:
    """Region proposal network: anchors, anchor sampling and proposal selection."""

    # Anchor side = level stride x this scale, i.e. 32..512 px on P2..P6 (mmdet octave_base_scale).
    anchor_scale: float = 8.0
    # Anchor aspect ratios (height / width), in this order (the key map of
    # docs/parity.md §3.3 relies on it).
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    # IoU thresholds for positive / negative anchors (between: ignored).
    fg_iou_thresh: float = 0.7
    bg_iou_thresh: float = 0.3
    # Anchors sampled per image for the RPN loss, and the positive share of them.
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    # Proposals kept per FPN level before NMS, and per image after NMS. Training keeps 1000
    # after NMS as the original does (torchvision's default is 2000; docs/parity.md §8).
    pre_nms_top_n_train: int = 2000
    post_nms_top_n_train: int = 1000
    pre_nms_top_n_test: int = 1000
    post_nms_top_n_test: int = 1000
    nms_thresh: float = 0.7
    # Proposals with a lower objectness probability are dropped (0: keep all).
    score_thresh: float = 0.0

    def validate(self, prefix: str = "model.rpn") -> None:
        check(self.anchor_scale > 0, f"{prefix}.anchor_scale", f"must be positive, got {self.anchor_scale}")
        check(len(self.aspect_ratios) > 0, f"{prefix}.aspect_ratios", "must list at least one ratio")
        for i, r in enumerate(self.aspect_ratios):
            check(r > 0, f"{prefix}.aspect_ratios[{i}]", f"must be positive, got {r}")
        check_sampling(self, prefix)
        for name in ("pre_nms_top_n_train", "post_nms_top_n_train", "pre_nms_top_n_test",
                     "post_nms_top_n_test"):
            value = getattr(self, name)
            check(value >= 1, f"{prefix}.{name}", f"must be >= 1, got {value}")
        check_fraction(self.nms_thresh, f"{prefix}.nms_thresh")
        check(0.0 <= self.score_thresh < 1.0, f"{prefix}.score_thresh",
              f"must be in [0, 1), got {self.score_thresh}")


@dataclass
class TailThresholdConfig:
    """The tail set of EQL (docs/methods.md §2) and of the Gumbel Optimised Loss (DropLoss +
    Gumbel activation, docs/methods.md §7), the sections ``roi.eql`` and ``roi.gumbel``; both
    losses need the training image frequencies."""

    # lambda: classes with image frequency below it are "tail": their negatives from other
    # classes' foreground RoIs are ignored (GOL also drops them from background RoIs at random).
    # 0.00177 (the published default) selects exactly the rare and common classes of LVIS v0.5;
    # LVIS v1 uses 0.0011 (docs/methods.md §2.5).
    freq_threshold: float = 0.00177

    def validate(self, prefix: str) -> None:
        """``prefix``: the section's key, ``model.roi.eql`` or ``model.roi.gumbel``."""
        check(0.0 <= self.freq_threshold <= 1.0, f"{prefix}.freq_threshold",
              f"must be in [0, 1] (an image frequency), got {self.freq_threshold}")


@dataclass
class EQLv2Config:
    """EQLv2 (docs/methods.md §3): gradient-ratio weights from running statistics."""

    # Steepness of the mapping from gradient ratio to weight.
    gamma: float = 12.0
    # Gradient ratio mapped to weight 0.5.
    mu: float = 0.8
    # Up-weighting of positives: w+ = 1 + alpha * (1 - q).
    alpha: float = 4.0
    # Score classes with sigmoid(z_c) * (1 - sigmoid(z_0)) (True) or sigmoid(z_c).
    test_with_obj: bool = True

    def validate(self, prefix: str = "model.roi.eqlv2") -> None:
        check(self.gamma > 0, f"{prefix}.gamma", f"must be positive, got {self.gamma}")
        check(self.alpha >= 0, f"{prefix}.alpha", f"must be >= 0, got {self.alpha}")


@dataclass
class SeesawConfig:
    """Seesaw loss (docs/methods.md §4): K + 2 logits; use ``model.roi.classifier: normed``."""

    # Mitigation exponent.
    p: float = 0.8
    # Compensation exponent.
    q: float = 2.0
    # Clamp on the true class's probability in the compensation ratio.
    eps: float = 1e-2
    # Sum the sampled-RoI counts over ranks (a documented deviation); false keeps per-rank
    # counts as the original does.
    sync_counts: bool = False

    def validate(self, prefix: str = "model.roi.seesaw") -> None:
        check(self.p >= 0, f"{prefix}.p", f"must be >= 0, got {self.p}")
        check(self.q >= 0, f"{prefix}.q", f"must be >= 0, got {self.q}")
        check(0.0 < self.eps <= 1.0, f"{prefix}.eps", f"must be in (0, 1], got {self.eps}")


@dataclass
class FederatedConfig:
    """Federated loss (docs/methods.md §5); needs the training image counts."""

    # M: classes kept per iteration, the batch's labels (background included) plus classes
    # drawn with probability ~ image_count ** freq_weight_power.
    num_sampled: int = 50
    # beta in the draw weights image_count ** beta.
    freq_weight_power: float = 0.5

    def validate(self, prefix: str = "model.roi.federated") -> None:
        check(self.num_sampled >= 1, f"{prefix}.num_sampled",
              f"must be >= 1, got {self.num_sampled}")
        check(self.freq_weight_power >= 0, f"{prefix}.freq_weight_power",
              f"must be >= 0, got {self.freq_weight_power}")


@dataclass
class ECMConfig:
    """Effective Class-Margin loss (docs/methods.md §6); needs the training instance counts. Use
    with ``model.roi.classifier: normed``."""

    # rho: background RoIs per foreground RoI (the published value, measured on Mask R-CNN).
    fg_bg_ratio: float = 6.3313
    # Score classes with sigmoid(z_c) * (1 - sigmoid(z_0)) (True, the method) or sigmoid(z_c).
    test_with_obj: bool = True

    def validate(self, prefix: str = "model.roi.ecm") -> None:
        check(self.fg_bg_ratio > 0, f"{prefix}.fg_bg_ratio",
              f"must be positive, got {self.fg_bg_ratio}")


@dataclass
class RoIConfig:
    """Box branch of the RoI heads: proposal sampling, box head and box predictor."""

    # IoU thresholds for positive / background proposals.
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.5
    # RoIs sampled per image for the box loss, and the positive share of them.
    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    # Box delta weights (wx, wy, ww, wh); the inverse of mmdet's target stds (0.1, 0.1, 0.2, 0.2).
    bbox_reg_weights: list[float] = field(default_factory=lambda: [10.0, 10.0, 5.0, 5.0])
    # Width of the two shared fully connected layers (fc6, fc7).
    representation_size: int = 1024
    # Box classifier: "linear" (the original, a plain linear layer with bias), "cosine"
    # (scale x cosine similarity, no bias) or "normed" (the normalised linear layer of Seesaw
    # and ECM: tau x cosine similarity plus a trained bias, docs/methods.md
    # §4.1.3). Any loss can use any.
    classifier: Literal["linear", "cosine", "normed"] = "linear"
    # Scale (tau) of the cosine and normed classifiers' logits.
    cosine_scale: float = 20.0
    # beta of the smooth L1 box loss, used when parity.box_loss is "smooth_l1".
    smooth_l1_beta: float = 1.0 / 9.0
    # Box classification loss: "cross_entropy" (softmax, the default), "equilibrium" (LOCE's;
    # only with loce.enabled, whose fine-tune computes it), "eql", "eqlv2", "seesaw",
    # "federated", "ecm" or "gumbel". The classifier width (K + 1, K + 2 for Seesaw), its
    # initialisation and the inference scores follow the loss (loce.losses.scoring). EQL,
    # federated, ECM and Gumbel take per-class statistics of data.train_ann.
    cls_loss: ClsLossName = "cross_entropy"
    # Factor applied to the classification loss.
    cls_loss_weight: float = 1.0
    # Hyperparameters of each loss (used when cls_loss names it).
    eql: TailThresholdConfig = field(default_factory=TailThresholdConfig)
    eqlv2: EQLv2Config = field(default_factory=EQLv2Config)
    seesaw: SeesawConfig = field(default_factory=SeesawConfig)
    federated: FederatedConfig = field(default_factory=FederatedConfig)
    ecm: ECMConfig = field(default_factory=ECMConfig)
    gumbel: TailThresholdConfig = field(default_factory=TailThresholdConfig)

    def validate(self, prefix: str = "model.roi") -> None:
        check_sampling(self, prefix)
        check_positive_values(self.bbox_reg_weights, f"{prefix}.bbox_reg_weights", 4,
                              "wx, wy, ww, wh")
        check(self.representation_size >= 1, f"{prefix}.representation_size",
              f"must be >= 1, got {self.representation_size}")
        check(self.cosine_scale > 0, f"{prefix}.cosine_scale", f"must be positive, got {self.cosine_scale}")
        check(self.smooth_l1_beta >= 0, f"{prefix}.smooth_l1_beta",
              f"must be >= 0, got {self.smooth_l1_beta}")
        check(self.cls_loss_weight > 0, f"{prefix}.cls_loss_weight",
              f"must be positive, got {self.cls_loss_weight}")


@dataclass
class MaskConfig:
    """Mask branch: head and predictor."""

    # "normed": logit = scale * cos(pixel feature, class weight) + bias (docs/method.md §9);
    # "plain": torchvision's 1x1 convolution.
    predictor: Literal["normed", "plain"] = "normed"
    # Scale of the normed predictor's cosine logits (20 in the original).
    normed_scale: float = 20.0
    # Output channels of the 3x3 convolutions before the predictor (4 x 256 in the original).
    head_layers: list[int] = field(default_factory=lambda: [256, 256, 256, 256])
    # Channels of the 2x upsampling (transposed) convolution feeding the predictor (256).
    upsample_channels: int = 256
    # Compute only the channel each RoI needs (its ground-truth class in training, its
    # predicted class at inference) instead of all K+1: the same numbers, a fraction of the
    # memory ([R, K+1, 28, 28] is about 1 GB for 256 RoIs at K = 1203).
    select_channels: bool = True

    def validate(self, prefix: str = "model.mask") -> None:
        check(self.normed_scale > 0, f"{prefix}.normed_scale", f"must be positive, got {self.normed_scale}")
        check(len(self.head_layers) >= 1, f"{prefix}.head_layers", "must list at least one layer")
        check(self.upsample_channels >= 1, f"{prefix}.upsample_channels",
              f"must be >= 1, got {self.upsample_channels}")
        for i, c in enumerate(self.head_layers):
            check(c >= 1, f"{prefix}.head_layers[{i}]", f"must be >= 1, got {c}")


@dataclass
class TestConfig:
    """Inference settings (the original's LVIS test settings)."""

    # Detections whose class probability is not above this are dropped (strict ">").
    score_thresh: float = 1e-4
    # IoU threshold of the class-wise NMS.
    nms_thresh: float = 0.5
    # Detections kept per image after NMS (LVIS evaluates up to 300).
    detections_per_img: int = 300
    # Mask pixels with probability >= this are foreground.
    mask_threshold: float = 0.5
    # Return boolean masks (thresholded) instead of probabilities; probabilities of 300
    # full-size masks take 4x the memory.
    binarize_masks: bool = True
    # NorCal post-hoc calibration (docs/methods.md §8) of a softmax model (model.roi.cls_loss
    # cross_entropy or equilibrium): class scores softmax([z_0, z_c - gamma * ln N_c]) with
    # N_c the training image count of class c (from data.train_ann), before thresholding and
    # NMS. null: off; 0 is the same as off. Not learned, so any trained softmax model takes
    # it: loce predict ... --set model.test.norcal_gamma=0.5
    norcal_gamma: float | None = None
    # Inference under autocast: "bf16" or "fp16" run the backbone, FPN and heads in that
    # dtype (faster and lighter on GPUs); anchors, proposals, box decoding and NMS stay in
    # float32. Off by default so that released models reproduce their numbers exactly.
    # `loce test --amp bf16`, `loce predict --amp bf16`, `Detector(..., amp="bf16")`.
    amp: Literal["none", "bf16", "fp16"] = "none"
    # FRACAL post-hoc calibration (docs/methods.md §10) of a softmax model: softmax of the
    # logits plus -log10(training image frequency) - log10(K), each class divided by
    # D_c ** fracal_lambda (D_c the fractal dimension of its training box centres) and the
    # row renormalised. The statistics come from data.train_ann. null: off; 2.0 is the
    # original's value on LVIS. Not learned: loce predict ... --set model.test.fracal_lambda=2
    fracal_lambda: float | None = None

    # Not a test case for pytest (the class name starts with "Test").
    __test__ = False

    def validate(self, prefix: str = "model.test") -> None:
        check(0.0 <= self.score_thresh < 1.0, f"{prefix}.score_thresh",
              f"must be in [0, 1), got {self.score_thresh}")
        check_fraction(self.nms_thresh, f"{prefix}.nms_thresh")
        check(self.detections_per_img >= 1, f"{prefix}.detections_per_img",
              f"must be >= 1, got {self.detections_per_img}")
        check(0.0 < self.mask_threshold < 1.0, f"{prefix}.mask_threshold",
              f"must be in (0, 1), got {self.mask_threshold}")
        gamma = self.norcal_gamma
        check(gamma is None or (gamma >= 0.0 and gamma == gamma and gamma != float("inf")),
              f"{prefix}.norcal_gamma", f"must be a finite number >= 0 or null, got {gamma}")
        lam = self.fracal_lambda
        check(lam is None or (lam >= 0.0 and lam == lam and lam != float("inf")),
              f"{prefix}.fracal_lambda", f"must be a finite number >= 0 or null, got {lam}")
        check(gamma is None or lam is None, f"{prefix}.fracal_lambda",
              f"NorCal ({prefix}.norcal_gamma={gamma}) and FRACAL are two calibrations of the "
              "same scores; set one of them to null")


@dataclass
class ParityConfig:
    """Where torchvision's Mask R-CNN computes differently from the original (MMDetection
    2.8), which behaviour to use. Defaults follow the original; :meth:`torchvision` returns
    torchvision's behaviour. Sections refer to docs/parity.md.

    Not here because it is not the model's job: the resize rounding (§4 #7), done by the data
    transforms with mmcv's ``int(x * s + 0.5)`` rule, and the test-time decode and resize
    kernel (§4 #12, #13), ``data.test_resize``.
    """

    # RoI feature pooling (§4 #4): "mmdet" = RoIAlign aligned=True with adaptive sampling
    # (sampling_ratio 0), mmdet's level rule floor(log2(sqrt(area)/56 + 1e-6)) and fixed
    # strides 4..32; "torchvision" = MultiScaleRoIAlign (aligned=False, sampling_ratio 2).
    roi_align: Literal["mmdet", "torchvision"] = "mmdet"
    # Anchors (§4 #5, #8): "mmdet" = fixed strides 4..64 and unrounded base anchors;
    # "torchvision" infers the stride from the padded size (61 instead of 64 on P6 for
    # 800-px sides) and rounds base anchors to integers.
    anchors: Literal["mmdet", "torchvision"] = "mmdet"
    # Mask pasting into the image (§4 #6): "grid_sample" samples the 28x28 mask at pixel
    # centres over the float box; "legacy" is torchvision's integer-box paste (masks ~13 %
    # larger).
    mask_paste: Literal["grid_sample", "legacy"] = "grid_sample"
    # Box regression loss of the RPN and the R-CNN (§8): "l1" (original) or torchvision's
    # "smooth_l1" (beta 1/9; the R-CNN's beta is model.roi.smooth_l1_beta).
    box_loss: Literal["l1", "smooth_l1"] = "l1"
    # Backbone BatchNorm (§8): "frozen_stats" = trainable affine weights with frozen
    # statistics (mmdet requires_grad=True, norm_eval=True); "frozen" = torchvision's
    # FrozenBatchNorm2d (affine weights frozen too). Frozen stages are frozen either way.
    # "batch" = ordinary BatchNorm2d whose statistics are learned from the batches, for
    # training from random initialisation (the synthetic presets); not the original's.
    backbone_norm: Literal["frozen_stats", "frozen", "batch"] = "frozen_stats"
    # Mask targets (§8): "aligned_binary" = RoIAlign(aligned=True, sampling_ratio=0) of the
    # binary mask, then >= 0.5; "legacy" = torchvision's unaligned, soft targets.
    mask_targets: Literal["aligned_binary", "legacy"] = "aligned_binary"
    # Proposals smaller than this (px) are dropped before the RPN's NMS (§4 #9); mmdet: none
    # (0), torchvision: 1e-3.
    rpn_min_size: float = 0.0
    # Detections smaller than this (px) are dropped before the final NMS (§4 #10); mmdet:
    # none (0), torchvision: 1e-2.
    det_min_size: float = 0.0
    # Initialisation of the layers not loaded from a backbone file: "mmdet" = the original's
    # (FPN xavier-uniform, box head fc6/fc7 xavier-uniform, classifier normal std 0.01, box
    # deltas normal std 0.001, all biases 0); "torchvision" = torchvision's defaults.
    init: Literal["mmdet", "torchvision"] = "mmdet"
    # Class-wise NMS of the detections (§4 #24): "mmcv" = the original's batched_nms, run on
    # the boxes rescaled to the original image (divided by the float32 scale factor) and
    # shifted by (label - 1) x (max coordinate + 1) in float32 (one NMS below 10,000
    # candidates, one per class above: the same boxes); "exact" = NMS of each class on its
    # own boxes in the input frame (torchvision's result). They differ where float32
    # rounding of the shifted boxes flips a pair near the IoU threshold, mostly with many
    # classes (LVIS).
    nms: Literal["mmcv", "exact"] = "mmcv"

    @classmethod
    def torchvision(cls) -> ParityConfig:
        """torchvision 0.29's own behaviour for every switch."""
        return cls(
            roi_align="torchvision",
            anchors="torchvision",
            mask_paste="legacy",
            box_loss="smooth_l1",
            backbone_norm="frozen",
            mask_targets="legacy",
            rpn_min_size=1e-3,
            det_min_size=1e-2,
            init="torchvision",
            nms="exact",
        )

    def validate(self, prefix: str = "model.parity") -> None:
        check(self.rpn_min_size >= 0, f"{prefix}.rpn_min_size", f"must be >= 0, got {self.rpn_min_size}")
        check(self.det_min_size >= 0, f"{prefix}.det_min_size", f"must be >= 0, got {self.det_min_size}")


_WEIGHT_NAME = re.compile(r"^ResNet(\d+)_Weights\.\w+$")
# A torchvision weight name ("<Builder>_Weights.<VERSION>"); a file such as my_Weights.pth is not.
TORCHVISION_WEIGHT_NAME = re.compile(r"^\w+_Weights\.[A-Z][A-Z0-9_]*$")
#: torchvision's COCO detectors whose architecture loce builds, and the detector each holds.
#: (The v2 models have BatchNorm in the FPN, RPN and heads and a convolutional box head.)
DETECTOR_WEIGHTS: dict[str, str] = {
    "FasterRCNN_ResNet50_FPN_Weights.COCO_V1": "faster_rcnn",
    "MaskRCNN_ResNet50_FPN_Weights.COCO_V1": "mask_rcnn",
}


def detector_weight_name(spec: str) -> str | None:
    """The torchvision weight name meant by ``model.detector_weights`` (``DEFAULT`` resolved
    to ``COCO_V1``), or None for a file path. The name is not checked here (see
    :meth:`ModelConfig.validate`)."""
    if not TORCHVISION_WEIGHT_NAME.match(spec):
        return None
    return spec.removesuffix(".DEFAULT") + ".COCO_V1" if spec.endswith(".DEFAULT") else spec


@dataclass
class ModelConfig:
    """Mask R-CNN or Faster R-CNN with a ResNet-FPN backbone (LOCE stage 1)."""

    # "mask_rcnn": boxes and masks; "faster_rcnn": the same detector without the mask branch
    # (box-only data; the `mask` section is then unused and evaluation is bbox only).
    detector: Literal["mask_rcnn", "faster_rcnn"] = "mask_rcnn"
    # Backbone network.
    backbone: BackboneName = "resnet50"
    # Backbone initialisation: "imagenet" (torchvision's ImageNet weights for the chosen
    # depth, ResNet{depth}_Weights.IMAGENET1K_V1 as in the original), a torchvision weight
    # name such as "ResNet50_Weights.IMAGENET1K_V2", a local file holding a torchvision ResNet
    # state dict (the way to go without network access), or "none" (random initialisation).
    backbone_weights: str = "imagenet"
    # Start from a whole detector instead: one of torchvision's COCO models by weight name,
    # "FasterRCNN_ResNet50_FPN_Weights.COCO_V1" or "MaskRCNN_ResNet50_FPN_Weights.COCO_V1"
    # (downloaded on first use), or a local file holding a torchvision Faster/Mask R-CNN
    # state dict of this model's architecture (such as the downloaded .pth). Every tensor is
    # loaded except the class-specific layers (box classifier and regressor, the mask
    # predictor's last convolution), which start fresh for this dataset's K classes;
    # backbone_weights is not read. A Mask R-CNN's weights may start a Faster R-CNN (the mask
    # branch is left out). The weights fit torchvision's parity settings (configs
    # coco_init_*). Not read when train.init_from or --resume loads a whole checkpoint.
    # Null: start from backbone_weights.
    detector_weights: str | None = None
    # ResNet stages frozen from the input side: 1 = stem and layer1 (the original's
    # frozen_stages=1), 0 = stem only, -1 = nothing, up to 4 = the whole ResNet.
    frozen_stages: int = 1
    # Input normalisation on [0, 1] RGB images (ImageNet mean and std).
    image_mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    image_std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    # FPN output channels (256 in the original; the checkpoint key map assumes 256). Smaller
    # values make CPU-sized models for the synthetic data.
    fpn_channels: int = 256
    # Batched images are zero-padded bottom/right to a multiple of this.
    size_divisible: int = 32
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi: RoIConfig = field(default_factory=RoIConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    test: TestConfig = field(default_factory=TestConfig)
    parity: ParityConfig = field(default_factory=ParityConfig)

    def validate(self, prefix: str = "model") -> None:
        """Check for impossible values.

        Raises:
            ConfigError: naming the key path, e.g.
                ``model.roi.positive_fraction must be in (0, 1], got 1.5``.
        """
        _validate_tree(self, prefix)
        check(-1 <= self.frozen_stages <= 4, f"{prefix}.frozen_stages",
              f"must be in -1..4, got {self.frozen_stages}")
        check(len(self.image_mean) == 3, f"{prefix}.image_mean",
              f"must have 3 values (RGB), got {len(self.image_mean)}")
        check_positive_values(self.image_std, f"{prefix}.image_std", 3, "RGB")
        check(self.fpn_channels >= 1, f"{prefix}.fpn_channels",
              f"must be >= 1, got {self.fpn_channels}")
        check(self.size_divisible >= 1, f"{prefix}.size_divisible",
              f"must be >= 1, got {self.size_divisible}")
        weights = self.backbone_weights
        check(bool(weights.strip()), f"{prefix}.backbone_weights",
              "must be 'none', 'imagenet', a torchvision weight name or a file path, got ''")
        fracal = self.test.fracal_lambda
        check(fracal is None or self.roi.cls_loss in SOFTMAX_LOSSES, f"{prefix}.test.fracal_lambda",
              f"calibrates softmax classifiers ({prefix}.roi.cls_loss "
              f"{' or '.join(SOFTMAX_LOSSES)}), but {prefix}.roi.cls_loss is "
              f"{self.roi.cls_loss!r}, whose scores are not a softmax; set it to null")
        norcal = self.test.norcal_gamma
        check(norcal is None or self.roi.cls_loss in SOFTMAX_LOSSES, f"{prefix}.test.norcal_gamma",
              f"calibrates softmax classifiers ({prefix}.roi.cls_loss "
              f"{' or '.join(SOFTMAX_LOSSES)}), but {prefix}.roi.cls_loss is "
              f"{self.roi.cls_loss!r}, whose scores are not a softmax; set it to null")
        match = _WEIGHT_NAME.match(weights)
        if match is not None:
            depth = self.backbone.removeprefix("resnet")
            check(match.group(1) == depth, f"{prefix}.backbone_weights",
                  f"names ResNet-{match.group(1)} weights but {prefix}.backbone is "
                  f"{self.backbone!r}; use ResNet{depth}_Weights.IMAGENET1K_V1 or 'imagenet'")
        if self.detector_weights is not None:
            self._validate_detector_weights(f"{prefix}.detector_weights")

    def _validate_detector_weights(self, key: str) -> None:
        spec = str(self.detector_weights)
        check(bool(spec.strip()), key,
              "must be a torchvision weight name, a file path or null, got ''")
        name = detector_weight_name(spec)
        if name is None:
            return
        valid = " or ".join(DETECTOR_WEIGHTS)
        if name not in DETECTOR_WEIGHTS:
            why = ("is torchvision's v2 architecture (BatchNorm in the FPN, RPN and heads, a "
                   "convolutional box head), which loce does not build" if "_V2_" in name
                   else "is not a torchvision Faster/Mask R-CNN ResNet-50-FPN weight name")
            raise ConfigError(f"{key}: {spec!r} {why}; use {valid}, or a local file")
        check(self.backbone == "resnet50", key,
              f"names a ResNet-50-FPN detector ({name}) but model.backbone is "
              f"{self.backbone!r}; set model.backbone=resnet50")
        check(DETECTOR_WEIGHTS[name] == "mask_rcnn" or self.detector == "faster_rcnn", key,
              f"names a Faster R-CNN ({name}), which has no mask branch for model.detector "
              "'mask_rcnn'; use MaskRCNN_ResNet50_FPN_Weights.COCO_V1, or "
              "model.detector=faster_rcnn")


def _validate_tree(obj: object, prefix: str) -> None:
    """Literal checks on ``obj`` and its nested dataclasses, then their ``validate``."""
    _check_literals(obj, prefix)
    for f in fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if is_dataclass(value) and not isinstance(value, type):
            _validate_tree(value, f"{prefix}.{f.name}")
            value.validate(prefix=f"{prefix}.{f.name}")
