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


@pytest.mark.slow  # 10-20 s on the shared 2-core CPU
def test_cpu_smoke_runs_every_case(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--smoke", "--out",
                           str(out)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["smoke"] is True
    assert {(r["impl"], r["precision"]) for r in result["stage1"]} == {
        ("loce", "fp32"), ("torchvision", "fp32")}
    assert [r["fine_tune"] for r in result["stage2"]] == ["loce", "ce"]
    loce = result["stage2"][0]
    assert loce["feature_memory_gb"] > 0 and loce["feature_memory_device"] == "cpu"
    assert [r["masks"] for r in result["inference"]] == [True, False]
    assert result["ddp"]["backend"] == "gloo"
    for row in result["stage1"] + result["stage2"] + [result["ddp"]]:
        assert row["images_per_s"] > 0 and row["loss_finite"]
