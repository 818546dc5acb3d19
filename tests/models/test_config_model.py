"""The model section of the config: LVIS defaults, validation messages, OmegaConf round trip."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from loce.config.model import ModelConfig, ParityConfig
from loce.errors import ConfigError


def test_defaults_are_the_original_lvis_settings():
    cfg = ModelConfig()
    cfg.validate()
    assert (cfg.backbone, cfg.backbone_weights, cfg.frozen_stages) == ("resnet50", "imagenet", 1)
    assert (cfg.test.score_thresh, cfg.test.nms_thresh, cfg.test.detections_per_img) == (1e-4, 0.5, 300)
    assert cfg.test.mask_threshold == 0.5
    assert (cfg.rpn.pre_nms_top_n_test, cfg.rpn.post_nms_top_n_test) == (1000, 1000)
    assert (cfg.rpn.pre_nms_top_n_train, cfg.rpn.post_nms_top_n_train) == (2000, 1000)
    assert (cfg.rpn.batch_size_per_image, cfg.rpn.positive_fraction) == (256, 0.5)
    assert (cfg.roi.batch_size_per_image, cfg.roi.positive_fraction) == (512, 0.25)
    assert cfg.mask.predictor == "normed" and cfg.mask.normed_scale == 20.0
    assert cfg.parity == ParityConfig()
    assert cfg.parity.roi_align == "mmdet" and cfg.parity.box_loss == "l1"
    stock = ParityConfig.torchvision()
    assert (stock.rpn_min_size, stock.det_min_size, stock.mask_paste) == (1e-3, 1e-2, "legacy")


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("roi.positive_fraction", 1.5, "model.roi.positive_fraction must be in (0, 1], got 1.5"),
        ("rpn.bg_iou_thresh", 0.8, "model.rpn.bg_iou_thresh must be <= fg_iou_thresh (0.7), got 0.8"),
        ("test.detections_per_img", 0, "model.test.detections_per_img must be >= 1, got 0"),
        ("test.mask_threshold", 1.0, "model.test.mask_threshold must be in (0, 1), got 1.0"),
        ("roi.bbox_reg_weights", [1.0, 2.0], "model.roi.bbox_reg_weights must have 4 values"),
        ("mask.head_layers", [], "model.mask.head_layers must list at least one layer"),
        ("parity.det_min_size", -1.0, "model.parity.det_min_size must be >= 0, got -1.0"),
        ("frozen_stages", 5, "model.frozen_stages must be in -1..4, got 5"),
        ("image_std", [1.0, 0.0, 1.0], "model.image_std[1] must be positive, got 0.0"),
        ("parity.mask_paste", "nearest",
         "model.parity.mask_paste must be one of 'grid_sample', 'legacy', got 'nearest'"),
        ("backbone", "resnet152", "model.backbone must be one of 'resnet18', 'resnet34'"),
    ],
)
def test_validate_names_key_path(path, value, message):
    cfg = ModelConfig()
    node = cfg
    *parents, leaf = path.split(".")
    for part in parents:
        node = getattr(node, part)
    setattr(node, leaf, value)
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert message in str(err.value)


def test_weight_name_must_match_depth():
    cfg = ModelConfig(backbone="resnet101", backbone_weights="ResNet50_Weights.IMAGENET1K_V1")
    with pytest.raises(ConfigError, match="ResNet101_Weights.IMAGENET1K_V1 or 'imagenet'"):
        cfg.validate()
    ModelConfig(backbone="resnet101", backbone_weights="ResNet101_Weights.IMAGENET1K_V2").validate()


def test_prefix_is_used():
    cfg = ModelConfig()
    cfg.rpn.nms_thresh = 0.0
    with pytest.raises(ConfigError, match=r"^stage1\.rpn\.nms_thresh must be in \(0, 1\]"):
        cfg.validate(prefix="stage1")


def test_omegaconf_structured_round_trip():
    conf = OmegaConf.structured(ModelConfig)
    conf = OmegaConf.merge(conf, {"backbone": "resnet18", "parity": {"box_loss": "smooth_l1"},
                                  "rpn": {"aspect_ratios": [1.0]}})
    cfg = OmegaConf.to_object(conf)
    assert isinstance(cfg, ModelConfig)
    assert cfg.backbone == "resnet18" and cfg.parity.box_loss == "smooth_l1"
    assert cfg.rpn.aspect_ratios == [1.0]
    cfg.validate()
    with pytest.raises(Exception, match="expected one of"):
        OmegaConf.merge(OmegaConf.structured(ModelConfig), {"mask": {"predictor": "cosine"}})
