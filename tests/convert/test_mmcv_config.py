"""Reading MMDetection config text without executing it (loce.convert.mmcv_config)."""

from __future__ import annotations

import pytest

from loce.convert.mmcv_config import Unparsed, load_config_file, lookup, parse_config_text
from loce.errors import CheckpointError


def test_both_dict_forms_tuples_and_negative_numbers():
    text = (
        "model = dict(\n"
        "    type='MaskRCNN',\n"
        "    backbone={'type': 'ResNet', 'depth': 101, 'out_indices': (0, 1, 2, 3)},\n"
        "    test_cfg=dict(rpn=dict(min_bbox_size=-1, nms=dict(iou_threshold=0.7))))\n"
        "flag = True\n"
        "nothing = None\n"
    )
    values = parse_config_text(text).values
    assert values["model"]["backbone"] == {"type": "ResNet", "depth": 101,
                                           "out_indices": (0, 1, 2, 3)}
    assert lookup(values, "model.test_cfg.rpn.min_bbox_size") == -1
    assert lookup(values, "model.test_cfg.rpn.nms.iou_threshold") == 0.7
    assert values["flag"] is True and values["nothing"] is None
    assert lookup(values, "model.roi_head.type", "absent") == "absent"


def test_config_file_constructs_names_unpacking_and_concatenation():
    text = (
        "data_root = 'data/lvis_v1/'\n"
        "img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], to_rgb=True)\n"
        "pipeline = [dict(type='Normalize', **img_norm_cfg)]\n"
        "data = dict(test=dict(ann_file=data_root + 'annotations/val.json', pipeline=pipeline),\n"
        "            extra={**img_norm_cfg, 'to_rgb': False})\n"
    )
    values = parse_config_text(text).values
    assert values["pipeline"] == [{"type": "Normalize", "mean": [123.675, 116.28, 103.53],
                                   "to_rgb": True}]
    assert lookup(values, "data.test.ann_file") == "data/lvis_v1/annotations/val.json"
    assert lookup(values, "data.extra.to_rgb") is False


def test_code_is_never_executed_and_non_literals_are_kept_as_source(tmp_path):
    marker = tmp_path / "ran"
    text = (
        f"import os\nos.system('touch {marker}')\n"
        f"x = __import__('os').system('touch {marker}')\n"
        "y = dict(a=some_function(3), b=2)\n"
    )
    parsed = parse_config_text(text)
    assert not marker.exists()
    assert isinstance(parsed.values["x"], Unparsed)
    assert parsed.values["y"]["a"] == Unparsed("some_function(3)")
    assert parsed.values["y"]["b"] == 2


def test_a_broken_statement_is_skipped_and_the_rest_is_read():
    text = "a = dict(x=1)\nb = dict(y=\nc = [1, 2]\n"
    parsed = parse_config_text(text)
    assert parsed.values == {"a": {"x": 1}, "c": [1, 2]}
    assert len(parsed.skipped) == 1 and parsed.skipped[0].startswith("line 2:")
    # Negative control: a text that parses skips nothing.
    assert parse_config_text("a = 1\n").skipped == []


def test_base_files_merge_like_mmcv(tmp_path):
    (tmp_path / "base.py").write_text(
        "model = dict(type='MaskRCNN', roi_head=dict(bbox_head=dict(num_classes=80, "
        "loss_cls=dict(type='CrossEntropyLoss'))), neck=dict(type='FPN'))\n"
        "total_epochs = 24\n"
    )
    (tmp_path / "child.py").write_text(
        "_base_ = './base.py'\n"
        "model = dict(roi_head=dict(bbox_head=dict(num_classes=1203, loss_cls=dict("
        "_delete_=True, type='SeesawLoss', p=0.8))))\n"
        "total_epochs = 6\n"
    )
    values = load_config_file(tmp_path / "child.py").values
    assert "_base_" not in values
    assert lookup(values, "model.neck.type") == "FPN"
    assert lookup(values, "model.roi_head.bbox_head.num_classes") == 1203
    assert lookup(values, "model.roi_head.bbox_head.loss_cls") == {"type": "SeesawLoss", "p": 0.8}
    assert values["total_epochs"] == 6


def test_a_missing_base_file_is_named(tmp_path):
    (tmp_path / "r101.py").write_text("_base_ = './mask_rcnn_r50_fpn_mstrain_2x_lvis_v1.py'\n")
    with pytest.raises(CheckpointError, match="mask_rcnn_r50_fpn_mstrain_2x_lvis_v1.py"):
        load_config_file(tmp_path / "r101.py")


def test_concatenated_config_files_merge_in_order():
    """mmcv's Config.text: each file after a line with its path, bases first."""
    text = (
        "/mmdetection/configs/_base_/models/mask_rcnn_r50_fpn.py\n"
        "model = dict(type='MaskRCNN', roi_head=dict(bbox_head=dict(num_classes=80),\n"
        "                                           mask_head=dict(num_classes=80)))\n"
        "/mmdetection/configs/lvis/mask_rcnn_r50_fpn_sample1e-3_mstrain_2x_lvis_v0.5.py\n"
        "_base_ = ['../_base_/models/mask_rcnn_r50_fpn.py']\n"
        "model = dict(roi_head=dict(bbox_head=dict(num_classes=1230)))\n"
    )
    parsed = parse_config_text(text)
    assert lookup(parsed.values, "model.type") == "MaskRCNN"
    assert lookup(parsed.values, "model.roi_head.bbox_head.num_classes") == 1230
    assert lookup(parsed.values, "model.roi_head.mask_head.num_classes") == 80
    assert "_base_" not in parsed.values and parsed.skipped == []
