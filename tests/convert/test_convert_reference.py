"""``loce convert`` then ``loce predict --images`` against a real MMDetection run, from the JPEG.

tests/fixtures/mmdet_reference/ holds one run of MMDetection 2.28 (mmcv-full 1.7.2's compiled
kernels) with the original's stage-1 config at K = 8 on one JPEG, and a recipe for its exact
weights. Here the weights are rebuilt from the recipe and saved as MMDetection saves a
checkpoint (``meta.config`` text with the run's settings, ``meta.CLASSES``); the user's two
commands follow: ``loce convert`` with no flag, and ``loce predict --images`` on a folder holding
``image.jpg`` (no annotation file). The written LVIS results are compared with MMDetection's:
every detection above the 300th score matched one-to-one (same category, box IoU > 0.999,
|Δscore| < 1e-4, tie-aware at the cut) and at most 1e-6 of the mask pixels differing. The
negative control for the same matcher (torchvision's settings) is in
tests/models/test_mmdet_reference.py; this file runs one forward.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from mmdet_fakes import mmdet_config, write_mmdet_checkpoint
from pycocotools import mask as mask_utils

import mmdet_reference as ref_data
from loce.cli import main
from loce.evaluation.matching import match_detections

pytestmark = pytest.mark.slow


def test_convert_then_predict_reproduces_mmdetection_from_the_jpeg(tmp_path, capsys):
    reference = ref_data.load_reference()
    sd = ref_data.build_weights(ref_data.load_spec())
    assert ref_data.weights_sha256(sd) == reference["meta"]["weights_sha256"]
    # The run's config: the original's stage-1 config at K = 8 with its test settings
    # (min_bbox_size -1 keeps every proposal, as mmdet 2.8 does).
    text = mmdet_config(50, ref_data.NUM_CLASSES).replace("min_bbox_size=0", "min_bbox_size=-1")
    src = write_mmdet_checkpoint(tmp_path / "epoch_24.pth", sd, text,
                                 classes=[f"class_{i}" for i in range(ref_data.NUM_CLASSES)])
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(ref_data.IMAGE, images / "image.jpg")
    converted, results = tmp_path / "converted.pth", tmp_path / "results.json"

    assert main(["convert", str(src), str(converted)]) == 0
    printed = capsys.readouterr().out
    assert "MASK HEAD" in printed and "normed" in printed
    assert main(["predict", "--checkpoint", str(converted), "--images", str(images),
                 "--out", str(results)]) == 0, capsys.readouterr().err

    ours = json.loads(results.read_text())
    assert {r["image_id"] for r in ours} == {1} and len(ours) <= 300
    boxes = torch.tensor([r["bbox"] for r in ours], dtype=torch.float64)
    boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
    dets = reference["detections"]
    match = match_detections(
        torch.tensor([d["bbox"] for d in dets], dtype=torch.float64),
        torch.tensor([d["score"] for d in dets]),
        boxes, torch.tensor([r["score"] for r in ours]),
        torch.tensor([d["label"] + 1 for d in dets]),  # LVIS ids run 1..K in label order
        torch.tensor([r["category_id"] for r in ours]), top_k=300)
    print(f"loce convert + loce predict from image.jpg: {match.summary()}")
    assert match.num_matched == match.num_reference >= 290, match.summary()
    assert match.all_matched, match.summary()

    differing = total = 0
    for r, c in match.pairs.tolist():
        a = mask_utils.decode(dets[r]["segmentation"]).astype(bool)
        b = mask_utils.decode(ours[c]["segmentation"]).astype(bool)
        differing += int(np.count_nonzero(a != b))
        total += a.size
    print(f"mask pixels differing: {differing} of {total}")
    assert differing <= 1e-6 * total
