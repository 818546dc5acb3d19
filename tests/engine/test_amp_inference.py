"""Inference under autocast from the CLI and the Python API, and TF32 for fp32 training."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from loce.cli import main as cli_main
from loce.engine.device import enable_tf32
from loce.inference import Detector


def _two_images(tiny_dataset, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for p in sorted((tiny_dataset / "val").glob("*.jpg"))[:2]:
        shutil.copy(p, folder / p.name)
    return folder


def test_predict_amp_flag(tiny_dataset, tiny_checkpoint, tmp_path, capsys):
    folder = _two_images(tiny_dataset, tmp_path)
    runs = {}
    for amp in ("none", "bf16"):
        out = tmp_path / f"{amp}.json"
        code = cli_main(["predict", "--checkpoint", str(tiny_checkpoint), "--images", str(folder),
                         "--out", str(out), "--amp", amp, "--set", "model.test.score_thresh=0.0"])
        assert code == 0, capsys.readouterr().err
        runs[amp] = json.loads(out.read_text())
    assert runs["bf16"] and len(runs["bf16"]) == len(runs["none"])
    # bf16 moves scores (and so the ranking) a little, never the result format
    assert {r["image_id"] for r in runs["bf16"]} == {r["image_id"] for r in runs["none"]}
    assert all(isinstance(r["segmentation"]["counts"], str) for r in runs["bf16"][:20])
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["predict", "--checkpoint", str(tiny_checkpoint), "--images", str(folder),
                  "--out", str(tmp_path / "x.json"), "--amp", "fp8"])
    assert exit_info.value.code == 2
    assert "--amp" in capsys.readouterr().err


def test_detector_amp(tiny_dataset, tiny_checkpoint):
    image = sorted((tiny_dataset / "val").glob("*.jpg"))[0]
    plain = Detector.from_checkpoint(tiny_checkpoint, device="cpu", score_threshold=0.0)
    assert plain.model.inference_amp == "none"
    det = Detector.from_checkpoint(tiny_checkpoint, device="cpu", amp="bf16", score_threshold=0.0)
    assert det.model.inference_amp == "bf16" and det.cfg.model.test.amp == "bf16"
    result = det(str(image))
    assert len(result) > 0
    assert result.boxes.dtype == torch.float32 and result.scores.dtype == torch.float32


def test_tf32_only_for_fp32_training_on_ampere_gpus():
    cuda = torch.device("cuda", 0)
    assert not enable_tf32(torch.device("cpu"), "none")
    assert not enable_tf32(cuda, "bf16", capability=(9, 0))
    assert not enable_tf32(cuda, "none", wanted=False, capability=(9, 0))
    assert not enable_tf32(cuda, "none", capability=(7, 5))
    matmul = torch.backends.cuda.matmul
    if not hasattr(matmul, "fp32_precision"):
        pytest.skip("this torch has only the legacy allow_tf32 flags")
    before = (matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    try:
        assert enable_tf32(cuda, "none", capability=(8, 0))
        assert matmul.fp32_precision == "tf32"
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    finally:
        matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = before
