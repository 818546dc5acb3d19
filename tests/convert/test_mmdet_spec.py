"""What an MMDetection config says about the model (loce.convert.mmdet_spec), for LOCE's,
MMDetection's RFS and Seesaw Mask R-CNN configs at R50/R101 and K = 1203/1230."""

from __future__ import annotations

import json

import pytest
from mmdet_fakes import mmdet_config

from loce.config import load_config
from loce.convert import loce_config_name
from loce.convert.mmcv_config import parse_config_text
from loce.convert.mmdet_spec import read_model_spec
from loce.errors import CheckpointError


def _spec(text: str):
    return read_model_spec(parse_config_text(text).values, "IN.pth meta['config']")


@pytest.mark.parametrize(("variant", "method", "normed", "extra", "sampler", "name"), [
    ("stage1", "cross_entropy", True, 1, "random", "mask_rcnn_{d}_fpn_normed_mask_mstrain_2x_lvis_v1"),
    ("loce", "loce", True, 1, "random", "loce_mask_rcnn_{d}_fpn_normed_mask_mstrain_2x_lvis_v1"),
    ("rfs", "cross_entropy", False, 1, "repeat_factor", "rfs_mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1"),
    ("seesaw", "seesaw", False, 2, "repeat_factor", "seesaw_mask_rcnn_r50_fpn_normed_mask_rfs_mstrain_2x_lvis_v1"),
    ("seesaw_normed", "seesaw", True, 2, "repeat_factor", "seesaw_mask_rcnn_r50_fpn_normed_mask_rfs_mstrain_2x_lvis_v1"),
])
@pytest.mark.parametrize("depth", [50, 101])
def test_decisions_for_each_supported_config(variant, method, normed, extra, sampler, name, depth):
    spec = _spec(mmdet_config(depth, 1203, variant=variant))
    assert (spec.depth, spec.num_classes, spec.method) == (depth, 1203, method)
    assert spec.normed_mask is normed
    assert spec.num_logits == 1203 + extra
    assert spec.sampler == sampler and spec.dataset == "lvis_v1"
    assert loce_config_name(spec) == name.format(d=f"r{depth}")
    s = spec.settings
    assert s["model.backbone"] == f"resnet{depth}"
    assert s["model.mask.predictor"] == ("normed" if normed else "plain")
    assert s["model.roi.classifier"] == ("normed" if method == "seesaw" else "linear")
    # The test settings, in either spelling of MMDetection 2.x.
    assert s["model.test.score_thresh"] == 0.0001 and s["model.test.detections_per_img"] == 300
    assert s["model.rpn.nms_thresh"] == 0.7 and s["model.rpn.post_nms_top_n_test"] == 1000
    assert s["model.test.nms_thresh"] == 0.5 and s["model.test.mask_threshold"] == 0.5
    assert (s["data.test_scale"], s["data.test_max_size"]) == (800, 1333)
    assert s["model.roi.bbox_reg_weights"] == [10.0, 10.0, 5.0, 5.0]
    if variant == "loce":
        assert s["loce.enabled"] is True
        assert spec.load_from.endswith("epoch_24.pth")
    # The resulting loce config validates.
    cfg = load_config(loce_config_name(spec), [f"{k}={json.dumps(v)}" for k, v in s.items()])
    assert cfg.model.backbone == f"resnet{depth}"
    assert cfg.loce.enabled is (variant == "loce")


def test_lvis_v05_picks_the_v05_configs():
    spec = _spec(mmdet_config(50, 1230, dataset="v0.5"))
    assert spec.dataset == "lvis_v0.5" and spec.num_classes == 1230
    assert loce_config_name(spec) == "mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v0.5"
    assert spec.settings["data.val_images"] == "data/lvis_v0.5/val2017"
    loce = _spec(mmdet_config(101, 1230, variant="loce", dataset="v0.5"))
    # No bundled R101 v0.5 fine-tune: the R50 one, with the depth from the config.
    assert loce_config_name(loce) == "loce_mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v0.5"
    assert loce.settings["model.backbone"] == "resnet101"


def test_test_settings_are_read_not_copied():
    spec = _spec(mmdet_config(50, 1203, variant="rfs", score_thr=0.05, max_per_img=100))
    assert spec.settings["model.test.score_thresh"] == 0.05
    assert spec.settings["model.test.detections_per_img"] == 100


def test_seesaw_normed_mask_predictor_is_normed():
    spec = _spec(mmdet_config(50, 1203, variant="seesaw_normed"))
    assert spec.mask_head == "FCNMaskHead with a NormedConv2d predictor"
    assert spec.settings["model.mask.normed_scale"] == 20.0
    assert spec.settings["model.roi.cosine_scale"] == 20.0
    assert spec.settings["model.roi.seesaw.p"] == 0.8 and spec.settings["model.roi.seesaw.q"] == 2.0


@pytest.mark.parametrize(("kwargs", "found"), [
    ({"detector": "CascadeRCNN"}, "the detector is CascadeRCNN"),
    ({"detector": "RetinaNet"}, "the detector is RetinaNet"),
    ({"backbone": "ResNeXt", "depth": 101}, "the backbone is ResNeXt-101 32x4d"),
    ({"depth": 152}, "ResNet-152"),
    ({"mask_head": "HTCMaskHead"}, "the mask head is HTCMaskHead"),
])
def test_unsupported_detectors_are_named(kwargs, found):
    with pytest.raises(CheckpointError, match=found) as err:
        _spec(mmdet_config(**kwargs))
    assert "IN.pth meta['config']" in str(err.value)
    assert "\n" not in str(err.value)


def test_other_unsupported_parts():
    base = mmdet_config(50, 1203)
    cases = {
        "style='pytorch'": ("style='caffe'", "style='caffe'"),
        "reg_class_agnostic=False": ("reg_class_agnostic=True", "class-agnostic"),
        "type='CrossEntropyLoss', use_sigmoid=False": ("type='EQLV2Loss', use_sigmoid=True",
                                                       "EQLV2Loss"),
        "num_outs=5": ("num_outs=5, add_extra_convs='on_input'", "extra convolutions"),
        "type='RPNHead'": ("type='GARPNHead'", "GARPNHead"),
    }
    for old, (new, message) in cases.items():
        assert old in base
        with pytest.raises(CheckpointError, match=message):
            _spec(base.replace(old, new, 1))
    assert _spec(base).method == "cross_entropy"  # negative control: the original passes


def test_no_model_in_the_text():
    with pytest.raises(CheckpointError, match="no readable 'model"):
        _spec("optimizer = dict(type='SGD')\n")
