"""A user's own COCO data: box-only Faster R-CNN, checks before training, groups from the
training split, and the README's commands from a COCO file to APr/APc/APf."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from engine_utils import tiny_overrides

from loce import build
from loce.config import load_config
from loce.engine.train import train
from loce.errors import ConfigError, DataError
from loce.models.mask_rcnn import LoceFasterRCNN, LoceMaskRCNN

FASTER = "faster_rcnn_r18_fpn_synthetic"


def _cfg(dataset, out, name=FASTER, **extra):
    return load_config(name, tiny_overrides(dataset, out, **extra))


def test_faster_rcnn_is_the_same_builder_without_the_mask_branch(tiny_coco_boxes, tmp_path):
    cfg = _cfg(tiny_coco_boxes, tmp_path)
    model = build.build_model(cfg, 12, load_backbone=False)
    assert type(model) is LoceFasterRCNN and not isinstance(model, LoceMaskRCNN)
    assert not model.roi_heads.has_mask()
    assert not any("mask" in k for k in model.state_dict())
    masked = build.build_model(_cfg(tiny_coco_boxes, tmp_path, "mask_rcnn_r18_fpn_normed_mask_synthetic"),
                               12, load_backbone=False)
    # every box-only key is the Mask R-CNN's, with the same shape
    mine, theirs = model.state_dict(), masked.state_dict()
    assert all(k in theirs and theirs[k].shape == v.shape for k, v in mine.items())
    model.eval()
    with torch.no_grad():
        (det,) = model([torch.rand(3, 96, 128)], original_image_sizes=[(48, 64)])
    assert set(det) == {"boxes", "labels", "scores"}


def test_mask_model_on_box_only_data_names_the_config(tiny_coco_boxes, tmp_path):
    cfg = _cfg(tiny_coco_boxes, tmp_path, "mask_rcnn_r18_fpn_normed_mask_synthetic")
    with pytest.raises(ConfigError, match=r"have no 'segmentation'.*faster_rcnn_r18_fpn_synthetic"):
        build.build_train_dataset(cfg)


def test_groups_come_from_the_training_split(tiny_coco_boxes, tmp_path):
    cfg = _cfg(tiny_coco_boxes, tmp_path, **{"data.frequency_thresholds": "[2,6]"})
    dataset = build.build_train_dataset(cfg)
    counts = [0] * 12
    for labels in dataset.image_labels:
        for label in labels:
            counts[label - 1] += 1
    expected = ["r" if n <= 2 else "c" if n <= 6 else "f" for n in counts]
    assert dataset.frequencies == expected and set(expected) == {"r", "c", "f"}
    gt = build.evaluation_ground_truth(cfg, dataset.categories)
    assert [c["frequency"] for c in sorted(gt["categories"], key=lambda c: c["id"])] == expected


def _write(path, data):
    path.write_text(json.dumps(data))
    return str(path)


def test_inputs_are_checked_before_the_first_iteration(tiny_coco_boxes, tmp_path):
    val = json.loads((tiny_coco_boxes / "annotations/val.json").read_text())
    fewer = {**val, "categories": val["categories"][1:],
             "annotations": [a for a in val["annotations"]
                             if a["category_id"] != val["categories"][0]["id"]]}
    cfg = _cfg(tiny_coco_boxes, tmp_path / "a", **{
        "train.eval_at_end": True, "data.val_ann": _write(tmp_path / "v1.json", fewer)})
    with pytest.raises(DataError, match=r"different categories \(only in train: \[5\]"):
        train(cfg)
    assert not (tmp_path / "a" / "checkpoints").exists()
    cfg = _cfg(tiny_coco_boxes, tmp_path / "b", **{
        "train.eval_at_end": True, "data.val_images": str(tmp_path)})
    with pytest.raises(DataError, match=r"sampled image files are not under data\.val_images"):
        train(cfg)
    assert not (tmp_path / "b" / "checkpoints").exists()


def _loce(*args: str, cwd) -> str:
    done = subprocess.run([sys.executable, "-m", "loce", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


TINY = ["data.train_scales=[112,128]", "data.max_size=160", "data.test_scale=128",
        "data.test_max_size=160", "model.rpn.post_nms_top_n_train=50",
        "model.rpn.post_nms_top_n_test=50", "model.roi.batch_size_per_image=32",
        "model.roi.representation_size=64", "model.mask.head_layers=[16]", "train.threads=1",
        "train.max_iters_per_epoch=2", "data.frequency_thresholds=[2,6]"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["boxes", "polygons"])
def test_readme_commands_from_a_coco_file_to_apr_apc_apf(kind, tmp_path):
    """The README's "Your own data" commands, on a tiny schedule."""
    boxes = kind == "boxes"
    stage1, stage2 = (("faster_rcnn_r18_fpn_synthetic", "loce_faster_rcnn_r18_fpn_synthetic")
                      if boxes else ("mask_rcnn_r18_fpn_normed_mask_synthetic",
                                     "loce_mask_rcnn_r18_fpn_normed_mask_synthetic"))
    _loce("synth", "--out", "own", "--preset", "tiny", "--format", "coco",
          *(["--boxes-only"] if boxes else []), "--quiet", cwd=tmp_path)
    data = [f"data.{k}=own/annotations/{s}.json" for k, s in (("train_ann", "train"),
                                                              ("val_ann", "val"))]
    data += ["data.train_images=own", "data.val_images=own"]
    sets = [a for o in data + TINY for a in ("--set", o)]
    out = _loce("train", stage1, *sets, "--set", "train.output_dir=runs/stage1",
                "--set", "solver.epochs=1", "--set", "solver.steps=[]", cwd=tmp_path)
    assert "training split: " in out
    _loce("train", stage2, *sets, "--set", "train.output_dir=runs/loce",
          "--set", "train.init_from=runs/stage1/checkpoints/epoch_1.pth", cwd=tmp_path)
    out = _loce("test", "runs/loce/checkpoints/epoch_1.pth", cwd=tmp_path)
    metrics = json.loads((tmp_path / "runs/loce/test_epoch_1/metrics.json").read_text())
    assert set(metrics) == ({"bbox"} if boxes else {"bbox", "segm"})
    for m in metrics.values():
        assert all(0 <= m[k] <= 1 for k in ("APr", "APc", "APf"))
    assert "APr" in out
    groups = json.loads((tmp_path / "runs/loce/categories.json").read_text())
    assert groups["group_source"] == "counts" and groups["thresholds"] == [2, 6]
