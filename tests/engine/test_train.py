"""Training engine: end-to-end runs, exact resume after SIGKILL, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from engine_utils import SYNTH_CONFIG, logged_losses, tiny_overrides

from loce.cli import main as cli_main
from loce.config import load_config
from loce.engine.train import NonFiniteLossError, train


def test_train_cli_end_to_end_with_eval(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", SYNTH_CONFIG, *sum((["--set", o] for o in tiny_overrides(
        tiny_dataset, out, **{"train.eval_at_end": True, "train.max_iters_per_epoch": 2})), [])]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert "APr" in printed and "bbox" in printed and "segm" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"bbox", "segm"}
    for key in ("AP", "APr", "APc", "APf"):
        assert key in metrics["bbox"]
    assert (out / "config.yaml").is_file()
    assert (out / "checkpoints" / "epoch_1.pth").is_file()
    assert (out / "checkpoints" / "last_checkpoint").read_text().strip() == "epoch_1.pth"
    preds = json.loads((out / "eval_epoch_1" / "predictions.json").read_text())
    assert isinstance(preds, list)
    state = torch.load(out / "checkpoints" / "epoch_1.pth", weights_only=False)
    assert {"model", "optimizer", "scheduler", "rng", "config", "epoch", "global_iter"} <= set(state)
    assert state["global_iter"] == 2 and state["epoch"] == 1


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tiny_dataset, tmp_path):
    """Kill a run with SIGKILL after a mid-epoch checkpoint; --resume gives the same losses."""
    extra = {"solver.epochs": 2, "solver.steps": "[2]", "train.max_iters_per_epoch": 3,
             "train.checkpoint_every_iters": 2}
    ref_dir = tmp_path / "reference"
    cfg = load_config(SYNTH_CONFIG, tiny_overrides(tiny_dataset, ref_dir, **extra))
    train(cfg)
    reference = logged_losses(ref_dir / "metrics.jsonl")
    assert sorted(reference) == [1, 2, 3, 4, 5, 6]

    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "loce", "train", SYNTH_CONFIG]
    for o in tiny_overrides(tiny_dataset, run_dir, **extra):
        cmd += ["--set", o]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pointer = run_dir / "checkpoints" / "last_checkpoint"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if pointer.is_file() and pointer.read_text().strip() == "iter_4.pth":
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # iteration 4 is epoch 2, iteration 1: the resume continues mid-epoch.
    assert cli_main(["train", SYNTH_CONFIG, "--resume",
                     *sum((["--set", o] for o in tiny_overrides(tiny_dataset, run_dir, **extra)), [])]) == 0
    resumed = logged_losses(run_dir / "metrics.jsonl")
    for it in (5, 6):
        assert resumed[it].keys() == reference[it].keys()
        for name, value in reference[it].items():
            assert resumed[it][name] == pytest.approx(value, rel=1e-5, abs=1e-6), (it, name)


def test_non_finite_loss_stops_with_iteration_and_loss_names(tiny_dataset, tmp_path, monkeypatch):
    from loce.models.roi_heads import StepwiseRoIHeads

    original = StepwiseRoIHeads.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        result, losses = original(self, *args, **kwargs)
        calls["n"] += 1
        if self.training and calls["n"] == 3:
            losses["loss_classifier"] = losses["loss_classifier"] * float("nan")
        return result, losses

    monkeypatch.setattr(StepwiseRoIHeads, "forward", poisoned)
    out = tmp_path / "nan"
    cfg = load_config(SYNTH_CONFIG, tiny_overrides(tiny_dataset, out, **{
        "train.checkpoint_every_iters": 1, "train.max_iters_per_epoch": 4}))
    with pytest.raises(NonFiniteLossError, match=r"iteration 3 .*loss_classifier=nan.*"
                       r"iter_1\.pth \(after 1 iterations\)"):
        train(cfg)
    # iter_2.pth holds the weights whose loss is NaN (resuming from it fails at once, at any
    # learning rate): the pointer steps back to the checkpoint before it
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("*.pth")) == ["iter_1.pth", "iter_2.pth"]
    assert (ckpts / "last_checkpoint").read_text().strip() == "iter_1.pth"


def test_non_finite_weights_are_never_checkpointed(tiny_dataset, tmp_path, monkeypatch):
    from loce.engine.train import NonFiniteWeightsError

    original = torch.optim.SGD.step
    calls = {"n": 0}

    def exploding(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:  # as an infinite learning rate would
            self.param_groups[0]["params"][0].data.fill_(float("inf"))
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", exploding)
    out = tmp_path / "inf"
    cfg = load_config(SYNTH_CONFIG, tiny_overrides(tiny_dataset, out, **{
        "train.checkpoint_every_iters": 1}))
    with pytest.raises(NonFiniteWeightsError, match=r"non-finite by epoch 1, iteration 2 .*"
                       r"no checkpoint is written.*iter_1\.pth"):
        train(cfg)
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("*.pth")) == ["iter_1.pth"]
    assert (ckpts / "last_checkpoint").read_text().strip() == "iter_1.pth"
    # a checkpoint with non-finite weights (say, from another tool) is refused on load
    state = torch.load(ckpts / "iter_1.pth", weights_only=False)
    key = next(iter(state["model"]))
    state["model"][key] = state["model"][key].float().fill_(float("nan"))
    torch.save(state, tmp_path / "nan.pth")
    code = cli_main(["predict", "--checkpoint", str(tmp_path / "nan.pth"), "--images",
                     str(tiny_dataset / "val"), "--out", str(tmp_path / "res.json")])
    assert code == 2 and not (tmp_path / "res.json").exists()


def test_checkpoint_for_other_classes_names_layer_and_shapes(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = load_config(SYNTH_CONFIG, tiny_overrides(tiny_dataset, out, **{
        "train.max_iters_per_epoch": 1}))
    train(cfg)
    from loce.build import build_model
    from loce.engine.checkpoint import load_checkpoint_file, load_model_weights
    from loce.errors import CheckpointError

    model = build_model(cfg, num_classes=5)
    state = load_checkpoint_file(out / "checkpoints" / "epoch_1.pth")
    with pytest.raises(CheckpointError, match=r"roi_heads\.box_predictor\.cls_score\.weight.*\(13, 64\).*\(6, 64\)"):
        load_model_weights(model, state, "epoch_1.pth")
    # through the CLI: one line, exit 2, no traceback
    code = cli_main(["train", SYNTH_CONFIG, *sum((["--set", o] for o in tiny_overrides(
        tiny_dataset, tmp_path / "other", **{"train.init_from": str(tmp_path / "missing.pth")})), [])])
    err = capsys.readouterr().err
    assert code == 2 and "missing.pth does not exist" in err and "Traceback" not in err
