"""What an MMDetection config says about a Mask R-CNN, in loce's terms.

:func:`read_model_spec` takes a parsed MMDetection 2.x config (:mod:`loce.convert.mmcv_config`)
and returns an :class:`MMDetModelSpec`: the architecture facts the converter checks against
the weights (depth, number of classes, classifier width) and the loce config values the
config text fixes (``settings``, dotted loce keys), each decision with a line for the user
(``notes``). It accepts exactly the architecture loce's key map covers — Mask R-CNN with a
ResNet-50/101 (pytorch style), an FPN with a max-pooled P6, the RPN head and a
``Shared2FCBBoxHead`` (plain, LOCE's ``LoceShared2FCBBoxHead``, or with Seesaw's normalised
classifier) — and names what it found otherwise.

The test settings are read in both spellings mmdet 2.x used: ``nms_thr``/``max_num`` (2.8,
LOCE's configs) and ``nms=dict(iou_threshold=...)``/``max_per_img`` (later 2.x).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from loce.convert.mmcv_config import Unparsed, lookup
from loce.errors import CheckpointError

__all__ = ["MMDetModelSpec", "read_model_spec"]

Method = Literal["cross_entropy", "loce", "seesaw"]

# Box and mask head types loce has (docs/parity.md §3.4-3.5).
BBOX_HEADS = ("Shared2FCBBoxHead", "LoceShared2FCBBoxHead")
MASK_HEADS = ("FCNMaskHead", "FCNNormMaskHead")
ROI_HEADS = ("StandardRoIHead", "LoceRoIHead")


@dataclass
class MMDetModelSpec:
    """A Mask R-CNN as an MMDetection config describes it.

    Attributes:
        depth: ResNet depth (50 or 101).
        num_classes: K from ``bbox_head.num_classes`` (None if the config does not say).
        num_logits: rows the box classifier must have (K + 1; K + 2 for Seesaw).
        method: ``"cross_entropy"`` (a stage-1 or RFS model), ``"loce"`` (LOCE's fine-tune:
            ``LoceRoIHead``/``LoceShared2FCBBoxHead``/``EquilibriumLoss``) or ``"seesaw"``.
        mask_head: the mask head type named in the config.
        normed_mask: True for ``FCNNormMaskHead`` or a ``NormedConv2d`` mask predictor.
        dataset: ``"lvis_v1"``, ``"lvis_v0.5"`` or None (not named).
        sampler: ``"repeat_factor"`` for ``ClassBalancedDataset``, else ``"random"``.
        load_from: the config's ``load_from`` (LOCE's fine-tune names its stage-1 file).
        settings: loce config key (dotted) -> value fixed by the config text.
        notes: one line per decision, for the user.
        summary: one line naming the detector's parts.
    """

    depth: int
    num_classes: int | None
    method: Method
    mask_head: str
    normed_mask: bool
    dataset: str | None
    sampler: str
    load_from: str | None
    summary: str
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def num_logits(self) -> int | None:
        if self.num_classes is None:
            return None
        return self.num_classes + (2 if self.method == "seesaw" else 1)


def _type(node: Any) -> str | None:
    t = node.get("type") if isinstance(node, Mapping) else None
    return t if isinstance(t, str) else None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class _Reader:
    """Collects settings and notes; raises one-line errors naming what was found."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.settings: dict[str, Any] = {}
        self.notes: list[str] = []

    def fail(self, what: str, fix: str = "loce converts Mask R-CNN R50/R101-FPN checkpoints "
             "only (LOCE's, MMDetection's LVIS RFS and Seesaw models)") -> CheckpointError:
        return CheckpointError(f"{self.source}: {what}; {fix}")

    def set(self, key: str, value: Any) -> None:
        self.settings[key] = value


def _read_backbone(r: _Reader, backbone: Any) -> int:
    kind = _type(backbone)
    depth = backbone.get("depth") if isinstance(backbone, Mapping) else None
    if kind != "ResNet":
        extra = ""
        if isinstance(backbone, Mapping) and "groups" in backbone:
            extra = f" {backbone.get('groups')}x{backbone.get('base_width')}d"
        raise r.fail(f"the backbone is {kind or 'not named'}{f'-{depth}' if depth else ''}{extra}, "
                     "not a ResNet")
    if depth not in (50, 101):
        raise r.fail(f"the backbone is ResNet-{depth}, loce's key map covers ResNet-50 and -101")
    style = backbone.get("style", "pytorch")
    if style != "pytorch":
        raise r.fail(f"the backbone has style={style!r} (stride on the 1x1 convolution, BGR "
                     "input), loce's ResNet is style='pytorch'")
    if backbone.get("dcn") not in (None, False) or backbone.get("plugins"):
        raise r.fail("the backbone uses deformable convolutions or plugins")
    norm = _type(backbone.get("norm_cfg")) or "BN"
    if norm not in ("BN", "SyncBN"):
        raise r.fail(f"the backbone normalises with {norm}, loce's ResNet uses BatchNorm")
    frozen = backbone.get("frozen_stages")
    if isinstance(frozen, int) and not isinstance(frozen, bool):
        r.set("model.frozen_stages", frozen)
    return int(depth)


def _read_neck_and_rpn(r: _Reader, model: Mapping[str, Any]) -> None:
    neck = model.get("neck")
    if _type(neck) != "FPN":
        raise r.fail(f"the neck is {_type(neck) or 'missing'}, not an FPN")
    if neck.get("add_extra_convs") not in (None, False) or neck.get("num_outs", 5) != 5:
        raise r.fail("the FPN has extra convolutions or not 5 outputs (P6 must be a max-pool "
                     "of P5)")
    if neck.get("out_channels", 256) != 256:
        raise r.fail(f"the FPN has {neck.get('out_channels')} channels, the key map needs 256")
    rpn = model.get("rpn_head")
    if _type(rpn) != "RPNHead":
        raise r.fail(f"the proposal head is {_type(rpn) or 'missing'}, not an RPNHead "
                     "(a one-stage detector such as RetinaNet has no RoI heads)")
    if lookup(rpn, "loss_cls.use_sigmoid", True) is not True:
        raise r.fail("the RPN uses a softmax objectness (2 channels per anchor); loce's RPN is "
                     "sigmoid")
    anchors = rpn.get("anchor_generator", {})
    strides = anchors.get("strides")
    if strides is not None and list(strides) != [4, 8, 16, 32, 64]:
        raise r.fail(f"the anchor strides are {list(strides)}, loce's FPN uses 4..64")
    scales = anchors.get("scales")
    if isinstance(scales, (list, tuple)):
        if len(scales) != 1 or _num(scales[0]) is None:
            raise r.fail(f"the RPN has anchor scales {list(scales)}; loce uses one scale per level")
        r.set("model.rpn.anchor_scale", float(scales[0]))
    ratios = anchors.get("ratios")
    if isinstance(ratios, (list, tuple)) and all(_num(x) is not None for x in ratios):
        r.set("model.rpn.aspect_ratios", [float(x) for x in ratios])


def _read_bbox_head(r: _Reader, roi: Mapping[str, Any]) -> tuple[Method, int | None]:
    roi_type = _type(roi)
    if roi_type not in ROI_HEADS:
        raise r.fail(f"the RoI head is {roi_type or 'missing'} (loce has "
                     f"{', '.join(ROI_HEADS)})")
    bbox = roi.get("bbox_head")
    if isinstance(bbox, (list, tuple)):
        raise r.fail(f"the RoI head has {len(bbox)} box heads (a cascade)")
    head = _type(bbox)
    if head not in BBOX_HEADS:
        raise r.fail(f"the box head is {head or 'missing'} (loce has {', '.join(BBOX_HEADS)})")
    if bbox.get("reg_class_agnostic", False):
        raise r.fail("the box head regresses class-agnostic boxes; loce's are class-specific")
    if bbox.get("roi_feat_size", 7) != 7:
        raise r.fail(f"the box head pools {bbox.get('roi_feat_size')}x{bbox.get('roi_feat_size')}"
                     " features, loce pools 7x7")
    fc = bbox.get("fc_out_channels")
    if isinstance(fc, int) and not isinstance(fc, bool):
        r.set("model.roi.representation_size", fc)
    stds = lookup(bbox, "bbox_coder.target_stds")
    if isinstance(stds, (list, tuple)) and len(stds) == 4 and all(_num(s) for s in stds):
        r.set("model.roi.bbox_reg_weights", [1.0 / float(s) for s in stds])
    num_classes = bbox.get("num_classes")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool):
        num_classes = None
    loss = _type(bbox.get("loss_cls")) or "CrossEntropyLoss"
    loce = roi_type == "LoceRoIHead" or head == "LoceShared2FCBBoxHead" or loss == "EquilibriumLoss"
    predictor = _type(bbox.get("cls_predictor_cfg")) or "Linear"
    if predictor not in ("Linear", "NormedLinear"):
        raise r.fail(f"the box classifier is {predictor} (loce has Linear and NormedLinear)")
    if predictor == "NormedLinear":
        scale = _num(bbox["cls_predictor_cfg"].get("tempearture",
                                                   bbox["cls_predictor_cfg"].get("temperature", 20)))
        r.set("model.roi.classifier", "normed")
        r.set("model.roi.cosine_scale", scale if scale is not None else 20.0)
    else:
        r.set("model.roi.classifier", "linear")
    if loce:
        if loss not in ("EquilibriumLoss", "CrossEntropyLoss"):
            raise r.fail(f"LOCE's box head is trained with {loss}, expected EquilibriumLoss")
        r.set("loce.enabled", True)
        return "loce", num_classes
    if loss == "SeesawLoss":
        cfg = bbox["loss_cls"]
        for key, name in (("p", "p"), ("q", "q"), ("eps", "eps")):
            value = _num(cfg.get(key))
            if value is not None:
                r.set(f"model.roi.seesaw.{name}", value)
        r.set("model.roi.cls_loss", "seesaw")
        return "seesaw", num_classes
    if loss != "CrossEntropyLoss" or lookup(bbox, "loss_cls.use_sigmoid", False):
        raise r.fail(f"the box classifier is trained with {loss}"
                     f"{' (sigmoid)' if lookup(bbox, 'loss_cls.use_sigmoid', False) else ''}; "
                     "loce converts softmax cross-entropy, LOCE's EquilibriumLoss and SeesawLoss "
                     "models")
    r.set("model.roi.cls_loss", "cross_entropy")
    return "cross_entropy", num_classes


def _read_mask_head(r: _Reader, roi: Mapping[str, Any], num_classes: int | None) -> tuple[str, bool]:
    mask = roi.get("mask_head")
    head = _type(mask)
    if head is None:
        raise r.fail("the RoI head has no mask head (a Faster R-CNN)")
    if head not in MASK_HEADS:
        raise r.fail(f"the mask head is {head} (loce has {', '.join(MASK_HEADS)})")
    if mask.get("class_agnostic", False):
        raise r.fail("the mask head is class-agnostic; loce's masks are class-specific")
    k = mask.get("num_classes")
    if isinstance(k, int) and num_classes is not None and k != num_classes:
        raise r.fail(f"the box head has num_classes={num_classes} but the mask head {k}",
                     "the config contradicts itself")
    convs, channels = mask.get("num_convs", 4), mask.get("conv_out_channels", 256)
    if isinstance(convs, int) and isinstance(channels, int):
        r.set("model.mask.head_layers", [channels] * convs)
    predictor = _type(mask.get("predictor_cfg")) or "Conv"
    if head == "FCNNormMaskHead":
        r.set("model.mask.predictor", "normed")
        return head, True
    if predictor == "NormedConv2d":
        scale = _num(mask["predictor_cfg"].get("tempearture",
                                               mask["predictor_cfg"].get("temperature", 20)))
        r.set("model.mask.predictor", "normed")
        r.set("model.mask.normed_scale", scale if scale is not None else 20.0)
        return f"{head} with a NormedConv2d predictor", True
    if predictor != "Conv":
        raise r.fail(f"the mask predictor is {predictor} (loce has Conv and NormedConv2d)")
    r.set("model.mask.predictor", "plain")
    return head, False


def _read_roi_layers(r: _Reader, roi: Mapping[str, Any]) -> None:
    for name, size in (("bbox_roi_extractor", 7), ("mask_roi_extractor", 14)):
        layer = lookup(roi, f"{name}.roi_layer")
        if not isinstance(layer, Mapping):
            continue
        if _type(layer) != "RoIAlign" or layer.get("output_size", size) != size:
            raise r.fail(f"{name} uses {_type(layer)} with output {layer.get('output_size')}, "
                         f"loce pools with RoIAlign {size}x{size}")
        if layer.get("sampling_ratio", 0) != 0 or layer.get("aligned", True) is not True:
            r.notes.append(f"note: {name} has sampling_ratio={layer.get('sampling_ratio', 0)}, "
                           f"aligned={layer.get('aligned', True)}; loce's parity pooler uses 0 / "
                           "True (model.parity.roi_align=torchvision is the unaligned one)")


def _read_test_cfg(r: _Reader, config: Mapping[str, Any], model: Mapping[str, Any]) -> None:
    test = model.get("test_cfg") or config.get("test_cfg") or {}
    rpn, rcnn = test.get("rpn", {}) or {}, test.get("rcnn", {}) or {}
    if not isinstance(rpn, Mapping) or not isinstance(rcnn, Mapping):
        return

    def first(node: Mapping[str, Any], *keys: str) -> Any:
        for key in keys:
            value = lookup(node, key)
            if value is not None and not isinstance(value, Unparsed):
                return value
        return None

    pairs = [
        ("model.rpn.pre_nms_top_n_test", first(rpn, "nms_pre"), int),
        ("model.rpn.post_nms_top_n_test", first(rpn, "max_per_img", "max_num", "nms_post"), int),
        ("model.rpn.nms_thresh", first(rpn, "nms.iou_threshold", "nms_thr"), float),
        ("model.test.score_thresh", first(rcnn, "score_thr"), float),
        ("model.test.nms_thresh", first(rcnn, "nms.iou_threshold", "nms.iou_thr"), float),
        ("model.test.detections_per_img", first(rcnn, "max_per_img"), int),
        ("model.test.mask_threshold", first(rcnn, "mask_thr_binary"), float),
    ]
    for key, value, kind in pairs:
        if _num(value) is not None:
            r.set(key, kind(value))
    min_size = _num(first(rpn, "min_bbox_size"))
    if min_size is not None:
        # mmdet 2.8 filters proposals only when min_bbox_size > 0 (docs/parity.md §4 #9).
        r.set("model.parity.rpn_min_size", max(0.0, min_size))
    nms_type = first(rcnn, "nms.type")
    if nms_type not in (None, "nms"):
        r.notes.append(f"note: the config's final NMS is {nms_type!r}; loce runs hard NMS")


def _scale_pair(value: Any) -> tuple[int, int] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return int(value[0]), int(value[1])
    return None


def _pipeline(config: Mapping[str, Any], split: str) -> list[Any]:
    for candidate in (lookup(config, f"data.{split}.pipeline"),
                      lookup(config, f"data.{split}.dataset.pipeline"),
                      config.get(f"{split}_pipeline")):
        if isinstance(candidate, (list, tuple)):
            return list(candidate)
    return []


def _read_data(r: _Reader, config: Mapping[str, Any]) -> tuple[str | None, str]:
    # Test resize: MultiScaleFlipAug(img_scale=(1333, 800)) -> short 800, long cap 1333.
    for step in _pipeline(config, "test"):
        scale = step.get("img_scale") if isinstance(step, Mapping) else None
        pair = _scale_pair(scale)
        if pair is None and isinstance(scale, (list, tuple)) and scale and _scale_pair(scale[0]):
            pair = _scale_pair(scale[0])
            r.notes.append(f"note: the config tests at {len(scale)} scales; loce tests at one, "
                           f"{pair}")
        if pair is not None:
            r.set("data.test_scale", min(pair))
            r.set("data.test_max_size", max(pair))
            break
    for step in _pipeline(config, "train"):
        if _type(step) == "Resize" and isinstance(step.get("img_scale"), (list, tuple)):
            scales = [_scale_pair(s) for s in step["img_scale"]]
            if scales and all(scales) and step.get("multiscale_mode", "range") == "value":
                r.set("data.train_scales", sorted({min(s) for s in scales}))  # type: ignore[arg-type]
                r.set("data.max_size", max(max(s) for s in scales))  # type: ignore[arg-type]
        if _type(step) == "RandomFlip" and _num(step.get("flip_ratio")) is not None:
            r.set("data.flip_prob", float(step["flip_ratio"]))
    norm = config.get("img_norm_cfg")
    if isinstance(norm, Mapping):
        if norm.get("to_rgb", True) is not True:
            raise r.fail("the model takes BGR input (img_norm_cfg to_rgb=False); loce feeds RGB",
                         "only RGB models (style='pytorch') can be converted")
        mean, std = norm.get("mean"), norm.get("std")
        if isinstance(mean, (list, tuple)) and isinstance(std, (list, tuple)):
            r.set("model.image_mean", [float(m) / 255.0 for m in mean])
            r.set("model.image_std", [float(s) / 255.0 for s in std])
    # The dataset: repeat factor sampling (ClassBalancedDataset) and the LVIS version.
    train = lookup(config, "data.train")
    sampler = "random"
    if _type(train) == "ClassBalancedDataset":
        sampler = "repeat_factor"
        thr = _num(train.get("oversample_thr"))
        r.set("data.sampler", "repeat_factor")
        if thr is not None:
            r.set("data.repeat_threshold", thr)
        train = train.get("dataset")
    else:
        r.set("data.sampler", "random")
    kinds = " ".join(str(x) for x in (
        _type(train), lookup(config, "data.test.type"), config.get("dataset_type"),
        lookup(train, "ann_file") if isinstance(train, Mapping) else None,
    ) if isinstance(x, str))
    dataset = None
    if "LVISV1" in kinds or "lvis_v1" in kinds:
        dataset = "lvis_v1"
    elif "LVISV05" in kinds or "LVISDataset" in kinds or "lvis_v0.5" in kinds:
        dataset = "lvis_v0.5"
    for split, node in (("train", train), ("val", lookup(config, "data.test"))):
        if not isinstance(node, Mapping):
            continue
        ann, prefix = node.get("ann_file"), node.get("img_prefix")
        if isinstance(ann, str):
            r.set(f"data.{split}_ann", ann)
        if isinstance(prefix, str):
            r.set(f"data.{split}_images", prefix.rstrip("/") or prefix)
    return dataset, sampler


def read_model_spec(config: Mapping[str, Any], source: str) -> MMDetModelSpec:
    """Read a Mask R-CNN from a parsed MMDetection config.

    Args:
        config: top-level names of the config (:attr:`ParsedConfig.values`).
        source: where the config came from, for messages (``"IN.pth meta['config']"``).

    Raises:
        CheckpointError: not a Mask R-CNN R50/R101-FPN with heads loce has; the message
            names what the config describes.
    """
    r = _Reader(source)
    model = config.get("model")
    if not isinstance(model, Mapping):
        raise r.fail("the config has no readable 'model = dict(...)'",
                     "pass --config with the model's MMDetection config file")
    detector = _type(model)
    if detector != "MaskRCNN":
        parts = [p for p in (_type(model.get("roi_head")), _type(model.get("bbox_head"))) if p]
        found = f" ({', '.join(parts)})" if parts else ""
        raise r.fail(f"the detector is {detector or 'not named'}{found}, not a MaskRCNN")
    depth = _read_backbone(r, model.get("backbone"))
    _read_neck_and_rpn(r, model)
    roi = model.get("roi_head")
    if not isinstance(roi, Mapping):
        raise r.fail("the detector has no roi_head")
    method, num_classes = _read_bbox_head(r, roi)
    mask_head, normed = _read_mask_head(r, roi, num_classes)
    _read_roi_layers(r, roi)
    _read_test_cfg(r, config, model)
    dataset, sampler = _read_data(r, config)
    load_from = config.get("load_from")
    load_from = load_from if isinstance(load_from, str) else None
    r.set("model.backbone", f"resnet{depth}")
    summary = (f"MaskRCNN, ResNet-{depth} + FPN, {_type(roi)} / {_type(roi['bbox_head'])}"
               f" ({r.settings.get('model.roi.classifier', 'linear')} classifier, "
               f"{_type(roi['bbox_head'].get('loss_cls')) or 'CrossEntropyLoss'}), {mask_head}")
    for key in ("model.test.score_thresh", "model.roi.cosine_scale"):
        value = r.settings.get(key)
        if isinstance(value, float) and not math.isfinite(value):
            raise r.fail(f"{key} would be {value}", "the config holds an impossible value")
    return MMDetModelSpec(depth=depth, num_classes=num_classes, method=method,
                          mask_head=mask_head, normed_mask=normed, dataset=dataset,
                          sampler=sampler, load_from=load_from, summary=summary,
                          settings=r.settings, notes=r.notes)
