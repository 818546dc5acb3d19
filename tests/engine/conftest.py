"""Shared fixtures for engine tests: a tiny synthetic dataset and a tiny model config."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    from loce.data.synthetic import PRESETS, generate

    root = tmp_path_factory.mktemp("tiny_synth")
    generate(root, PRESETS["tiny"], workers=1)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_dataset, tmp_path_factory) -> Path:
    """A checkpoint of a 2-iteration run on the tiny dataset."""
    from engine_utils import SYNTH_CONFIG, tiny_overrides

    from loce.config import load_config
    from loce.engine.train import train

    out = tmp_path_factory.mktemp("tiny_run")
    train(load_config(SYNTH_CONFIG, tiny_overrides(tiny_dataset, out, **{
        "train.max_iters_per_epoch": 2})))
    return out / "checkpoints" / "epoch_1.pth"


@pytest.fixture(scope="session")
def tiny_coco_boxes(tmp_path_factory) -> Path:
    """The tiny dataset as a user's box-only COCO file (``loce synth --format coco
    --boxes-only``): non-contiguous ids, no frequency fields, an empty image, a crowd box."""
    from loce.data.synthetic import PRESETS, generate

    root = tmp_path_factory.mktemp("tiny_coco_boxes")
    generate(root, PRESETS["tiny"], workers=1, annotation_format="coco", boxes_only=True)
    return root


@pytest.fixture(scope="session")
def tiny_faster_checkpoint(tiny_coco_boxes, tmp_path_factory) -> Path:
    """A checkpoint of a 2-iteration box-only (Faster R-CNN) run on ``tiny_coco_boxes``."""
    from engine_utils import tiny_overrides

    from loce.config import load_config
    from loce.engine.train import train

    out = tmp_path_factory.mktemp("tiny_faster_run")
    train(load_config("faster_rcnn_r18_fpn_synthetic", tiny_overrides(tiny_coco_boxes, out, **{
        "train.max_iters_per_epoch": 2})))
    return out / "checkpoints" / "epoch_1.pth"
