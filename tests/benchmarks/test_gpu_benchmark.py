"""benchmarks/gpu.py cannot rot: its CPU smoke mode runs every case; without CUDA it says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


def test_without_cuda_it_says_so_in_one_line_and_exits_0(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # hides any GPU from torch
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().count("\n") == 0 and "no CUDA device" in proc.stdout
    assert not out.exists()


@pytest.mark.slow  # about a minute on the shared 2-core CPU
def test_cpu_smoke_runs_every_case(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--smoke", "--out",
                           str(out)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["smoke"] is True
    assert {(r["impl"], r["precision"]) for r in result["stage1"]} == {
        ("loce", "fp32"), ("torchvision", "fp32")}
    assert [(r["fine_tune"], r["precision"]) for r in result["stage2"]] == [
        ("loce", "fp32"), ("loce", "bf16"), ("ce", "fp32")]
    for loce in result["stage2"][:2]:
        assert loce["feature_memory_full"] and loce["feature_memory_device"] == "cpu"
        # 48 classes x 16 features: 64 x 7 x 7 float32 features (the synthetic config's
        # memory_dtype) and 4 float32 targets each, and an int64 pointer and count per class
        assert round(loce["feature_memory_gb"] * 1e9) == 48 * 16 * (64 * 49 + 4) * 4 + 48 * 2 * 8
    # CPU autocast: the box geometry stays float32 under bf16
    bf16 = result["stage2"][1]["box_dtypes"]
    assert bf16 == {"anchors": ["torch.float32"], "proposals": ["torch.float32"]}
    assert [r["masks"] for r in result["inference"]] == [True, False]
    for row in result["inference"]:
        assert row["images"] == 2 and row["results_per_image"] > 0
        assert row["box_dtypes"]["detections"] == ["torch.float32"]
    scores = result["scores"]  # peaked: about 10 of 48 classes per proposal, not all
    assert 8 <= scores["pairs_per_roi"] <= 12 < scores["pairs_per_roi_random_weights"]
    assert result["ddp"]["backend"] == "gloo" and result["ddp"]["world_size"] == 2
    assert result["ddp"]["images_per_step"] == 4
    for row in result["stage1"] + result["stage2"] + [result["ddp"]]:
        assert row["images_per_s"] > 0 and row["loss_finite"]
