"""Class statistics in the checkpoint: `loce train` stores them, so NorCal and FRACAL at
prediction time need no training annotations; older checkpoints read ``data.train_ann``;
with neither, one line names the checkpoint and the fix."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from engine_utils import SYNTH_CONFIG, json_class_statistics, tiny_overrides

from loce.cli import main as cli_main
from loce.config import load_config
from loce.engine.checkpoint import load_checkpoint_file, load_trained_model
from loce.engine.train import train
from loce.errors import CheckpointError, ConfigError
from loce.inference import Detector

FRACAL = "model.test.fracal_lambda=2.0"
NORCAL = "model.test.norcal_gamma=1.0"


@pytest.fixture(scope="module")
def moved_run(tiny_dataset, tmp_path_factory) -> tuple[Path, Path]:
    """``(checkpoint, its training file)`` of a 2-iteration run whose training annotation file
    was deleted after training (as on a machine the checkpoint was copied to)."""
    root = tmp_path_factory.mktemp("moved_run")
    train_ann = root / "annotations" / "train.json"
    train_ann.parent.mkdir()
    shutil.copy(tiny_dataset / "annotations/train.json", train_ann)
    train(load_config(SYNTH_CONFIG, tiny_overrides(tiny_dataset, root / "run", **{
        "data.train_ann": str(train_ann), "train.max_iters_per_epoch": 2})))
    train_ann.unlink()
    return root / "run" / "checkpoints" / "epoch_1.pth", train_ann


def _predict(checkpoint: Path, dataset: Path, out: Path, *sets: str) -> list[dict]:
    args = ["predict", "--checkpoint", str(checkpoint), "--gt",
            str(dataset / "annotations/val.json"), "--image-root", str(dataset), "--out",
            str(out), "--no-masks", "--set", "model.test.score_thresh=0.0"]
    for s in sets:
        args += ["--set", s]
    assert cli_main(args) == 0
    return json.loads(out.read_text())


def _plain_values(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_values(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_values(v) for v in value)
    return value is None or isinstance(value, str | int | float)


def _old_checkpoint(source: Path, dst: Path, train_ann: Path | None = None, **extra) -> Path:
    """``source`` as an earlier version wrote it (no class statistics), optionally with
    another ``data.train_ann`` in its config and other entries."""
    state = load_checkpoint_file(source)
    del state["class_statistics"]
    if train_ann is not None:
        state["config"]["data"]["train_ann"] = str(train_ann)
    state.update(extra)
    torch.save(state, dst)
    return dst


def _calibration_buffers(model) -> dict[str, torch.Tensor]:
    heads = model.roi_heads
    return {name: getattr(heads, name).clone() for name in
            ("norcal_log_counts", "fracal_logit_offsets", "fracal_dims")
            if getattr(heads, name, None) is not None}


# ---------------------------------------------------------------------------- stored


def test_checkpoints_carry_the_class_statistics(moved_run, tiny_dataset):
    checkpoint, train_ann = moved_run
    stored = load_checkpoint_file(checkpoint)["class_statistics"]
    expected = json_class_statistics(tiny_dataset / "annotations/train.json")
    for key in ("image_counts", "instance_counts", "num_images"):
        assert stored[key] == expected[key], key
    assert stored["fractal_dims"] == pytest.approx(expected["fractal_dims"], rel=1e-12)
    assert 1.0 < max(stored["fractal_dims"]) <= 2.0
    assert stored["source"] == str(train_ann)
    # Plain values, which a weights_only load reads (no object of loce in the file).
    assert _plain_values(stored)
    assert torch.load(checkpoint, weights_only=True)["class_statistics"] == stored


def test_norcal_and_fracal_predict_without_the_training_annotations(moved_run, tiny_dataset,
                                                                    tmp_path):
    checkpoint, train_ann = moved_run
    assert not train_ann.exists()
    plain = _predict(checkpoint, tiny_dataset, tmp_path / "plain.json")
    for name, setting in (("fracal", FRACAL), ("norcal", NORCAL)):
        stored = _predict(checkpoint, tiny_dataset, tmp_path / f"{name}.json", setting)
        # The same checkpoint with the statistics recomputed from the (same) training file.
        recomputed = _predict(checkpoint, tiny_dataset, tmp_path / f"{name}_file.json", setting,
                              f"data.train_ann={tiny_dataset / 'annotations/train.json'}")
        assert stored == recomputed, name
        assert stored != plain, name  # the calibration changed the scores


def test_detector_and_test_command_take_the_stored_statistics(moved_run, tiny_dataset,
                                                              tmp_path):
    checkpoint, _ = moved_run
    expected = json_class_statistics(tiny_dataset / "annotations/train.json")
    detector = Detector.from_checkpoint(checkpoint, device="cpu", overrides=[FRACAL])
    dims = detector.model.roi_heads.fracal_dims
    torch.testing.assert_close(dims, torch.tensor(expected["fractal_dims"], dtype=dims.dtype))
    # w_c = -log10(f_c) - log10(K), f_c = image_count_c / num_images (methods §10.1).
    k = len(expected["image_counts"])
    offsets = [-math.log10(n / expected["num_images"]) - math.log10(k)
               for n in expected["image_counts"]]
    torch.testing.assert_close(detector.model.roi_heads.fracal_logit_offsets,
                               torch.tensor(offsets, dtype=torch.float32))
    detector = Detector.from_checkpoint(checkpoint, device="cpu", overrides=[NORCAL])
    torch.testing.assert_close(detector.model.roi_heads.norcal_log_counts,
                               torch.tensor(expected["image_counts"], dtype=torch.float32).log())
    out = tmp_path / "test"
    assert cli_main(["test", str(checkpoint), "--out", str(out), "--eval", "bbox",
                     "--set", FRACAL]) == 0
    assert "AP" in json.loads((out / "metrics.json").read_text())["bbox"]


# ---------------------------------------------------------------------------- older checkpoints


def test_an_older_checkpoint_reads_data_train_ann(tiny_checkpoint, tmp_path):
    old = _old_checkpoint(tiny_checkpoint, tmp_path / "old.pth")
    for setting in (FRACAL, NORCAL):
        from_file, _, _ = load_trained_model(old, [setting])
        from_checkpoint, _, _ = load_trained_model(tiny_checkpoint, [setting])
        a, b = _calibration_buffers(from_file), _calibration_buffers(from_checkpoint)
        assert a and a.keys() == b.keys(), setting
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_without_statistics_or_annotations_one_line_names_the_fix(tiny_checkpoint, tiny_dataset,
                                                                  tmp_path, capsys):
    gone = tmp_path / "elsewhere" / "train.json"
    old = _old_checkpoint(tiny_checkpoint, tmp_path / "old.pth", gone)
    # Without a calibration it loads as before.
    load_trained_model(old)
    code = cli_main(["predict", "--checkpoint", str(old), "--images", str(tiny_dataset / "val"),
                     "--out", str(tmp_path / "r.json"), "--set", FRACAL])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"{old} stores none (written by an earlier version of loce)" in err
    assert "model.test.fracal_lambda=2.0" in err and "elsewhere" in err
    assert "--set data.train_ann=" in err
    converted = _old_checkpoint(tiny_checkpoint, tmp_path / "converted.pth", gone,
                                converted_from={"format": "mmdet", "file": "mmdet.pth"})
    with pytest.raises(ConfigError, match=r"converted\.pth stores none \(converted by `loce "
                                          r"convert`.*--set data\.train_ann="):
        Detector.from_checkpoint(converted, device="cpu", overrides=[NORCAL])
    # The fix the message names works.
    fixed = f"data.train_ann={tiny_dataset / 'annotations/train.json'}"
    model, _, _ = load_trained_model(converted, [NORCAL, fixed])
    assert model.roi_heads.norcal_log_counts.shape == (12,)


def test_malformed_stored_statistics_are_refused(tiny_checkpoint, tiny_dataset, tmp_path):
    state = load_checkpoint_file(tiny_checkpoint)
    state["class_statistics"]["image_counts"][3] = "many"
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"bad\.pth: class_statistics: 'image_counts' "
                                              r"must be a list of ints"):
        load_trained_model(tmp_path / "bad.pth", [NORCAL])
    state = load_checkpoint_file(tiny_checkpoint)
    for key in ("image_counts", "instance_counts", "fractal_dims", "frequencies"):
        state["class_statistics"][key] = state["class_statistics"][key][:-1]
    torch.save(state, tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match=r"counts 11 classes but category_ids lists 12"):
        load_trained_model(tmp_path / "short.pth", [NORCAL])
    # An explicit data.train_ann replaces them (and needs no stored entry).
    fixed = f"data.train_ann={tiny_dataset / 'annotations/train.json'}"
    model, _, _ = load_trained_model(tmp_path / "short.pth", [NORCAL, fixed])
    assert model.roi_heads.norcal_log_counts.shape == (12,)


def test_stored_counts_without_fractal_dimensions_serve_norcal_but_not_fracal(tiny_checkpoint,
                                                                             tmp_path):
    state = load_checkpoint_file(tiny_checkpoint)
    counts = state["class_statistics"]["image_counts"]
    state["class_statistics"]["fractal_dims"] = None
    state["config"]["data"]["train_ann"] = str(tmp_path / "gone.json")
    torch.save(state, tmp_path / "counts.pth")
    model, _, _ = load_trained_model(tmp_path / "counts.pth", [NORCAL])
    torch.testing.assert_close(model.roi_heads.norcal_log_counts,
                               torch.tensor(counts, dtype=torch.float32).log())
    with pytest.raises(ConfigError, match=r"counts\.pth stores them without fractal dimensions, "
                                          r"and data\.train_ann=.*gone\.json does not exist"):
        load_trained_model(tmp_path / "counts.pth", [FRACAL])
