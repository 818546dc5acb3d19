"""The bundled coco_init stage-1 config trains on a user's COCO file from a local copy of a
torchvision detector's weights, and its checkpoint is tested without that file."""

from __future__ import annotations

import json

import torch
import torchvision
from engine_utils import tiny_overrides

from loce.cli import main as cli_main
from loce.config import load_config
from loce.engine.train import train
from loce.models import build_mask_rcnn

CONFIG = "coco_init_faster_rcnn_r50_fpn_mstrain_1x_custom"


def test_stage_one_from_torchvision_weights_trains_and_tests(tiny_coco_boxes, tmp_path):
    # A random torchvision Faster R-CNN R50-FPN with 91 outputs stands in for the COCO file
    # (another seed than the run's; BatchNorm moved off its initial 1, 0, 0, 1).
    torch.manual_seed(1)
    state = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=91).state_dict()
    for key, value in state.items():
        if key.startswith("backbone.body.") and value.is_floating_point() and value.dim() == 1:
            value += 0.05 * torch.rand(value.shape)  # BatchNorm weights, biases and statistics
    weights = tmp_path / "fasterrcnn_resnet50_fpn_coco.pth"
    torch.save(state, weights)
    out = tmp_path / "run"
    cfg = load_config(CONFIG, tiny_overrides(tiny_coco_boxes, out, **{
        "model.detector_weights": str(weights),
        "model.roi.representation_size": 1024,  # the file's box head
        "train.max_iters_per_epoch": 2,
    }))
    assert cfg.model.parity.roi_align == "torchvision" and cfg.model.parity.backbone_norm == "frozen"
    train(cfg)

    log = (out / "log.txt").read_text()
    k = len(json.loads((tiny_coco_boxes / "annotations/train.json").read_text())["categories"])
    assert f"roi_heads.box_predictor.cls_score.weight [{k + 1}, 1024]" in log
    trained = torch.load(out / "checkpoints/epoch_1.pth", weights_only=False)["model"]
    # Frozen (the stem, layer1 and every FrozenBatchNorm) keeps the file's values; trained
    # layers moved from them; the classifier has this dataset's K + 1 outputs.
    for key in ("backbone.body.conv1.weight", "backbone.body.layer1.0.conv1.weight",
                "backbone.body.layer3.0.bn1.running_var", "backbone.body.layer4.2.bn3.weight"):
        assert torch.equal(trained[key], state[key]), key
    for key in ("backbone.fpn.layer_blocks.0.0.weight", "roi_heads.box_head.fc6.weight"):
        assert not torch.equal(trained[key], state[key]), key
    assert trained["roi_heads.box_predictor.bbox_pred.weight"].shape == (4 * (k + 1), 1024)

    # The checkpoint holds everything: testing it reads no weights file.
    weights.unlink()
    tested = tmp_path / "test"
    assert cli_main(["test", str(out / "checkpoints/epoch_1.pth"), "--out", str(tested)]) == 0
    metrics = json.loads((tested / "metrics.json").read_text())
    assert set(metrics) == {"bbox"} and {"APr", "APc", "APf"} <= set(metrics["bbox"])

    # A loce checkpoint starts a detector for another category set the same way.
    cfg.model.detector_weights = str(out / "checkpoints/epoch_1.pth")
    other = build_mask_rcnn(cfg.model, 3).state_dict()
    assert torch.equal(other["roi_heads.box_head.fc6.weight"], trained["roi_heads.box_head.fc6.weight"])
    assert other["roi_heads.box_predictor.cls_score.weight"].shape == (4, 1024)
