"""What a run keeps: log.txt (environment, config path, epoch summaries), TensorBoard scalars
that match metrics.jsonl, LOCE's group mean scores, and the one-line hint without tensorboard."""

from __future__ import annotations

import builtins
import json
import re
from pathlib import Path

import pytest
from engine_utils import SYNTH_CONFIG, tiny_overrides

from loce.config import load_config
from loce.engine.tensorboard import INSTALL_HINT
from loce.engine.train import train

LOCE_SYNTH = "loce_mask_rcnn_r18_fpn_normed_mask_synthetic"


def _records(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def stage1_run(tiny_dataset, tmp_path_factory) -> Path:
    """Two epochs of three iterations with a step after the first, evaluated at the end."""
    out = tmp_path_factory.mktemp("logged") / "run"
    train(load_config(SYNTH_CONFIG, tiny_overrides(tiny_dataset, out, **{
        "solver.epochs": 2, "solver.steps": "[1]", "train.eval_at_end": True})))
    return out


def test_log_txt_has_environment_config_and_epoch_summaries(stage1_run):
    text = (stage1_run / "log.txt").read_text()
    assert f"resolved config: {stage1_run / 'config.yaml'}" in text
    assert re.search(r"torch \S+, torchvision \S+", text)
    assert re.search(r"device cpu, 1 process\(es\), 1 CPU thread\(s\) per process, CPU kernels",
                     text)
    summaries = re.findall(r"INFO +loce\.engine\.train: epoch (\d)/2: 3 iterations, mean loss "
                           r"(\S+) .*lr (\S+), .*ETA", text)
    assert [s[0] for s in summaries] == ["1", "2"]
    # the summary's mean loss is the mean of the iterations' total losses (logged each one)
    train_records = _records(stage1_run, "train")
    for epoch, mean, _ in summaries:
        losses = [r["loss"] for r in train_records if r["epoch"] == int(epoch)]
        assert len(losses) == 3
        assert float(mean) == pytest.approx(sum(losses) / 3, abs=1e-4)
    epochs = _records(stage1_run, "epoch")
    assert [e["iters"] for e in epochs] == [3, 3] and all(e["cpu_seconds"] > 0 for e in epochs)
    # per-iteration lines go to the file only (DEBUG), the evaluation's AP to both
    assert "DEBUG   loce.engine.train: epoch 1 iter 1/3:" in text
    assert re.search(r"epoch 2 evaluation \(.*\): box AP \S+ APr \S+ APc \S+ APf \S+ \| mask AP",
                     text)


def test_tensorboard_scalars_match_metrics_jsonl(stage1_run):
    scalars = _scalars(stage1_run)
    records = _records(stage1_run, "train")
    assert [s for s, _ in scalars["train/loss"]] == [r["global_iter"] for r in records]
    for tag, key in (("train/loss", "loss"), ("train/lr", "lr"),
                     ("train/loss_classifier", "loss_classifier"),
                     ("train/images_per_sec", "images_per_sec")):
        assert [v for _, v in scalars[tag]] == pytest.approx([r[key] for r in records], rel=1e-6)
    # lr by hand: 0.01 after the 2 warm-up iterations, x 0.1 from epoch 2 (iteration 4) on
    lrs = [v for _, v in scalars["train/lr"]]
    assert lrs == pytest.approx([0.01 * 0.001, 0.01 * (0.001 + 0.999 / 2), 0.01, 0.001, 0.001,
                                 0.001], rel=1e-6)
    ev = _records(stage1_run, "eval")[0]
    for t in ("bbox", "segm"):
        for k in ("AP", "APr", "APc", "APf"):
            assert scalars[f"eval/{t}/{k}"] == [(6, pytest.approx(ev[f"{t}/{k}"], abs=1e-7))]


def test_loce_run_logs_group_mean_scores(tiny_dataset, tiny_checkpoint, tmp_path):
    out = tmp_path / "loce"
    train(load_config(LOCE_SYNTH, tiny_overrides(tiny_dataset, out, **{
        "train.init_from": str(tiny_checkpoint), "train.max_iters_per_epoch": 2})))
    scalars = _scalars(out)
    groups = {c["frequency"] for c in json.loads(
        (tiny_dataset / "annotations/train.json").read_text())["categories"]}
    assert {f"loce/mean_score_{g}" for g in groups} <= set(scalars)
    for g in groups:
        assert [s for s, _ in scalars[f"loce/mean_score_{g}"]] == [1, 2]
        assert all(0.0 < v < 1.0 for _, v in scalars[f"loce/mean_score_{g}"])
    # a plain Mask R-CNN logs no such scalar (negative control)
    assert not any(t.startswith("loce/") for t in _scalars(tiny_checkpoint.parent.parent))


def test_without_tensorboard_one_line_says_how_to_get_it(tiny_dataset, tmp_path, monkeypatch,
                                                         capsys):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith(("torch.utils.tensorboard", "tensorboard")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    from loce.cli import main as cli_main

    out = tmp_path / "run"
    args = ["train", SYNTH_CONFIG]
    for o in tiny_overrides(tiny_dataset, out, **{"train.max_iters_per_epoch": 1}):
        args += ["--set", o]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count(INSTALL_HINT) == 1
    assert "pip install 'loce[tensorboard]'" in INSTALL_HINT
    assert not (out / "tensorboard").exists()
    assert INSTALL_HINT in (out / "log.txt").read_text()


def test_auto_scale_lr_is_logged_and_stored(tiny_dataset, tmp_path):
    from loce.cli import main as cli_main

    out = tmp_path / "scaled"
    args = ["train", SYNTH_CONFIG, "--auto-scale-lr"]
    for o in tiny_overrides(tiny_dataset, out, **{"train.max_iters_per_epoch": 1,
                                                   "solver.reference_batch": 8}):
        args += ["--set", o]
    assert cli_main(args) == 0
    # lr 0.01 for 8 images; this run: 1 process x 2 images -> 0.0025
    stored = load_config(str(out / "config.yaml"))
    assert stored.solver.lr == pytest.approx(0.0025) and stored.solver.lr_scaled_from == 0.01
    assert "solver.auto_scale_lr: lr 0.0025 = 0.01 x 2 images per step" in \
        (out / "log.txt").read_text()
    first = _records(out, "train")[0]
    assert first["lr"] == pytest.approx(0.0025 * 0.001)  # warm-up starts from the scaled rate
