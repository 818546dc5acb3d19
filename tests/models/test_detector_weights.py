"""model.detector_weights: a torchvision Faster/Mask R-CNN's weights start a loce model for K
classes; the class-specific layers start fresh; wrong files and names fail in one line."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from loce.config import load_config
from loce.config.model import ModelConfig, ParityConfig
from loce.errors import CheckpointError, ConfigError, LoceError
from loce.models import build_mask_rcnn
from loce.models.weights import CLASS_SPECIFIC_LAYERS, load_detector_weights

K = 5
CHANNELS, HIDDEN, MASK = 32, 64, 16  # FPN channels, box-head width, mask-head channels
# Layers with K + 1 (or 4 (K + 1)) outputs, and the outputs each must have.
FRESH_SHAPES = {
    "roi_heads.box_predictor.cls_score.weight": (K + 1, HIDDEN),
    "roi_heads.box_predictor.cls_score.bias": (K + 1,),
    "roi_heads.box_predictor.bbox_pred.weight": (4 * (K + 1), HIDDEN),
    "roi_heads.box_predictor.bbox_pred.bias": (4 * (K + 1),),
    "roi_heads.mask_predictor.mask_fcn_logits.weight": (K + 1, MASK, 1, 1),
    "roi_heads.mask_predictor.mask_fcn_logits.bias": (K + 1,),
}


def _randomise(state: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    """Every float tensor drawn anew (variances positive), so that nothing equals a fresh
    initialisation by chance (FrozenBatchNorm starts at 1, 0, 0, 1)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state.items():
        if v.is_floating_point():
            v = torch.rand(v.shape, generator=g) + 0.5 if k.endswith("running_var") \
                else torch.randn(v.shape, generator=g)
        out[k] = v
    return out


def torchvision_detector(mask: bool, norm: type[nn.Module] = FrozenBatchNorm2d) -> nn.Module:
    """A small torchvision Faster/Mask R-CNN (ResNet-18-FPN, 91 COCO outputs) from
    torchvision's own modules, as torchvision's builders assemble them."""
    body = torchvision.models.resnet18(norm_layer=norm)
    backbone = BackboneWithFPN(body, {f"layer{k}": str(k - 1) for k in range(1, 5)},
                               [64, 128, 256, 512], CHANNELS, extra_blocks=LastLevelMaxPool())
    box = dict(box_head=TwoMLPHead(CHANNELS * 7 * 7, HIDDEN),
               box_predictor=FastRCNNPredictor(HIDDEN, 91))
    if not mask:
        return FasterRCNN(backbone, num_classes=None, **box)
    return MaskRCNN(backbone, num_classes=None, **box, mask_head=MaskRCNNHeads(CHANNELS, [MASK], 1),
                    mask_predictor=MaskRCNNPredictor(MASK, MASK, 91))


def legacy_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The module names torchvision wrote before 0.13 (its COCO_V1 files): ``rpn.head.conv.*``
    and ``roi_heads.mask_head.mask_fcn{i}.*``."""
    out = {}
    for k, v in state.items():
        k = k.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        if k.startswith("roi_heads.mask_head."):
            index, _, rest = k.removeprefix("roi_heads.mask_head.").partition(".0.")
            k = f"roi_heads.mask_head.mask_fcn{int(index) + 1}.{rest}"
        out[k] = v
    return out


def loce_config(detector: str = "mask_rcnn", weights: str | None = None) -> ModelConfig:
    cfg = ModelConfig(detector=detector, backbone="resnet18", backbone_weights="none",
                      fpn_channels=CHANNELS, detector_weights=weights,
                      parity=ParityConfig.torchvision())
    cfg.roi.representation_size = HIDDEN
    cfg.mask.head_layers, cfg.mask.upsample_channels, cfg.mask.predictor = [MASK], MASK, "plain"
    return cfg


def _class_specific(key: str) -> bool:
    return any(key.startswith(p + ".") for p in CLASS_SPECIFIC_LAYERS)


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize(("norm", "legacy"), [(FrozenBatchNorm2d, False), (nn.BatchNorm2d, True)])
def test_every_tensor_but_the_class_specific_ones_is_loaded(tmp_path, norm, legacy):
    torch.manual_seed(0)
    state = _randomise(torchvision_detector(mask=True, norm=norm).state_dict())
    path = tmp_path / "coco.pth"
    torch.save(legacy_names(state) if legacy else state, path)
    if legacy:
        assert "rpn.head.conv.weight" in torch.load(path)
        assert "roi_heads.mask_head.mask_fcn1.weight" in torch.load(path)

    torch.manual_seed(7)
    fresh = build_mask_rcnn(loce_config(), K, load_backbone=False).state_dict()
    torch.manual_seed(7)
    model = build_mask_rcnn(loce_config(weights=str(path)), K)
    got = model.state_dict()

    shared = {k for k in state if not _class_specific(k) and not k.endswith("num_batches_tracked")}
    assert shared == {k for k in got if not _class_specific(k)}  # every other tensor has a source
    assert len(shared) > 100
    for k in shared:
        assert torch.equal(got[k], state[k]), k
    # The class-specific layers: K + 1 outputs, this model's own initialisation (same seed).
    assert {k for k in got if _class_specific(k)} == set(FRESH_SHAPES)
    for k, shape in FRESH_SHAPES.items():
        assert tuple(got[k].shape) == shape, k
        assert torch.equal(got[k], fresh[k]), k


def test_a_mask_rcnn_file_starts_a_faster_rcnn_and_not_the_reverse(tmp_path):
    torch.manual_seed(0)
    mask_state = _randomise(torchvision_detector(mask=True).state_dict())
    torch.save(mask_state, tmp_path / "mask.pth")
    model = build_mask_rcnn(loce_config("faster_rcnn", str(tmp_path / "mask.pth")), K)
    got = model.state_dict()
    assert not any("mask" in k for k in got)
    assert torch.equal(got["rpn.head.conv.0.0.weight"], mask_state["rpn.head.conv.0.0.weight"])
    assert got["roi_heads.box_predictor.cls_score.weight"].shape == (K + 1, HIDDEN)

    torch.save(torchvision_detector(mask=False).state_dict(), tmp_path / "faster.pth")
    with pytest.raises(CheckpointError) as err:
        build_mask_rcnn(loce_config("mask_rcnn", str(tmp_path / "faster.pth")), K)
    msg = _one_line(err)
    assert msg.startswith(f"{tmp_path / 'faster.pth'} has no mask branch")
    assert "MaskRCNN_ResNet50_FPN_Weights.COCO_V1, or model.detector=faster_rcnn" in msg


def test_wrong_files_fail_in_one_line_naming_them(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError) as err:
        build_mask_rcnn(loce_config(weights=str(text)), K)
    assert str(text) in _one_line(err)

    resnet = tmp_path / "resnet18.pth"
    resnet_state = torchvision.models.resnet18().state_dict()
    torch.save(resnet_state, resnet)
    with pytest.raises(CheckpointError) as err:
        build_mask_rcnn(loce_config(weights=str(resnet)), K)
    msg = _one_line(err)
    assert msg.startswith(f"{resnet} is not a torchvision Faster/Mask R-CNN's state dict")
    # every key is unexpected (none has the detector's "backbone.body." prefix) but the
    # BatchNorm counters, which are not read
    n = len([k for k in resnet_state if not k.endswith("num_batches_tracked")])
    assert f"; {n} unexpected (e.g. bn1.bias" in msg and "model.detector_weights" in msg

    wide = tmp_path / "wide.pth"
    torch.save(torchvision_detector(mask=True).state_dict(), wide)
    cfg = loce_config(weights=str(wide))
    cfg.roi.representation_size = 2 * HIDDEN
    with pytest.raises(CheckpointError) as err:
        build_mask_rcnn(cfg, K)
    msg = _one_line(err)
    assert msg.startswith(f"{wide}: roi_heads.box_head.fc6.weight has shape ({HIDDEN}, ")
    assert f"({2 * HIDDEN}, {CHANNELS * 49}) in the model" in msg

    with pytest.raises(ConfigError) as err:
        build_mask_rcnn(loce_config(weights=str(tmp_path / "missing.pth")), K)
    msg = _one_line(err)
    assert msg.startswith("model.detector_weights: no such file") and "missing.pth" in msg


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"detector_weights": "MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1"},
         "is torchvision's v2 architecture"),
        ({"detector_weights": "FasterRCNN_ResNet50_FPN_V2_Weights.DEFAULT"},
         "is torchvision's v2 architecture"),
        ({"detector_weights": "RetinaNet_ResNet50_FPN_Weights.COCO_V1"},
         "is not a torchvision Faster/Mask R-CNN ResNet-50-FPN weight name; use "
         "FasterRCNN_ResNet50_FPN_Weights.COCO_V1 or MaskRCNN_ResNet50_FPN_Weights.COCO_V1"),
        ({"detector_weights": "MaskRCNN_ResNet50_FPN_Weights.COCO_V1", "backbone": "resnet101"},
         "model.backbone is 'resnet101'; set model.backbone=resnet50"),
        ({"detector_weights": "FasterRCNN_ResNet50_FPN_Weights.COCO_V1"},
         "names a Faster R-CNN (FasterRCNN_ResNet50_FPN_Weights.COCO_V1), which has no mask branch"),
        ({"detector_weights": " "}, "must be a torchvision weight name, a file path or null"),
    ],
)
def test_weight_names_are_checked_with_the_config(changes, message):
    cfg = ModelConfig(**changes)
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    msg = _one_line(err)
    assert msg.startswith("model.detector_weights") and message in msg


def test_names_that_fit_and_files_named_like_weights():
    for spec in ("MaskRCNN_ResNet50_FPN_Weights.COCO_V1", "MaskRCNN_ResNet50_FPN_Weights.DEFAULT",
                 "my_Weights.pth"):
        ModelConfig(detector_weights=spec).validate()
    ModelConfig(detector="faster_rcnn",
                detector_weights="FasterRCNN_ResNet50_FPN_Weights.COCO_V1").validate()


def test_without_network_the_error_names_the_file_option(monkeypatch):
    def no_network(url, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    model = build_mask_rcnn(loce_config(), K, load_backbone=False)
    with pytest.raises(LoceError) as err:
        load_detector_weights(model, "MaskRCNN_ResNet50_FPN_Weights.DEFAULT")
    msg = _one_line(err)
    assert msg.startswith("model.detector_weights: cannot download MaskRCNN_ResNet50_FPN_Weights.COCO_V1")
    assert "model.detector_weights=/path/to/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth" in msg


def test_bundled_configs_build_torchvisions_coco_architecture(monkeypatch, caplog):
    """The coco_init configs load torchvision's R50-FPN COCO detectors by name (the download
    replaced by a random model of the same builder, with the file's pre-0.13 key names):
    every tensor but the class-specific ones, the Faster R-CNN leaving out the mask branch."""
    torch.manual_seed(0)
    state = legacy_names(torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=91).state_dict())
    urls = []

    def download(url, **kwargs):
        urls.append(url)
        return state

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", download)
    cfg = load_config("coco_init_mask_rcnn_r50_fpn_mstrain_1x_custom")
    assert cfg.model.parity == ParityConfig.torchvision()
    assert cfg.model.detector_weights == "MaskRCNN_ResNet50_FPN_Weights.COCO_V1"
    with caplog.at_level("INFO", logger="loce.models.weights"):
        got = build_mask_rcnn(cfg.model, K).state_dict()
    assert urls == ["https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"]
    assert "roi_heads.box_predictor.cls_score.weight [6, 1024]" in caplog.text
    assert torch.equal(got["rpn.head.conv.0.0.weight"], state["rpn.head.conv.weight"])
    assert torch.equal(got["roi_heads.mask_head.3.0.weight"], state["roi_heads.mask_head.mask_fcn4.weight"])
    assert got["roi_heads.mask_predictor.mask_fcn_logits.weight"].shape == (K + 1, 256, 1, 1)
    loaded = [k for k in got if not _class_specific(k)]
    assert len(loaded) == len([k for k in state if not _class_specific(k)
                               and not k.endswith("num_batches_tracked")])

    faster = load_config("coco_init_faster_rcnn_r50_fpn_mstrain_1x_custom")
    assert faster.model.detector == "faster_rcnn" and faster.model.parity == ParityConfig.torchvision()
    faster.model.detector_weights = "MaskRCNN_ResNet50_FPN_Weights.COCO_V1"
    boxes = build_mask_rcnn(faster.model, K).state_dict()
    assert torch.equal(boxes["roi_heads.box_head.fc7.weight"], state["roi_heads.box_head.fc7.weight"])
    assert boxes["roi_heads.box_predictor.bbox_pred.weight"].shape == (4 * (K + 1), 1024)
