"""Fixtures for the evaluation tests (data generators live in lvis_eval_data.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from lvis_eval_data import make_detections, make_lvis_gt


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Generated ground truth (written to a file) and detections with masks."""
    tmp = tmp_path_factory.mktemp("lvis_synth")
    gt = make_lvis_gt()
    gt_path = tmp / "gt.json"
    gt_path.write_text(json.dumps(gt))
    dets = make_detections(gt)
    res_path = tmp / "results.json"
    res_path.write_text(json.dumps(dets))
    return {"gt": gt, "gt_path": gt_path, "dets": dets, "res_path": res_path, "tmp": tmp}
