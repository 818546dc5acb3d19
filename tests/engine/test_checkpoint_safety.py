"""Checkpoints you can trust: every way loce reads a ``.pth`` refuses a file whose unpickling
would run code, in one line naming the file and the object, before any of it runs; checkpoints
of the current and the previous format load; a checkpoint that cannot be written is one line."""

from __future__ import annotations

import os
import random
import resource
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch
from engine_utils import SYNTH_CONFIG, tiny_overrides, train_command

from loce.cli import main as cli_main
from loce.engine.checkpoint import capture_rng_state, load_checkpoint_file, restore_rng_state
from loce.errors import CheckpointError

LOCE_SYNTH = "loce_mask_rcnn_r18_fpn_normed_mask_synthetic"


class _RunsCode:
    """Unpickling it runs a shell command that creates ``marker`` (what an attacker's file does)."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.fixture
def crafted(tmp_path):
    """``(path, marker)``: a checkpoint whose ``model`` entry creates ``marker`` when unpickled."""
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": _RunsCode(marker), "config": {}}, path)
    return path, marker


def _refusal(path, what="checkpoint") -> str:
    return f"{path}: refused: the {what} holds the Python object 'posix.system'"


def _fails_in_one_line(args, capsys, path, marker, what="checkpoint"):
    code = cli_main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"loce {args[0]}: error: {_refusal(path, what)}"), err
    assert "nothing of it was run" in err
    assert not marker.exists()


def test_the_crafted_file_does_run_code_when_loaded_unsafely(crafted):
    """The control for every test below: plain unpickling creates the marker."""
    path, marker = crafted
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_predict_refuses_it(crafted, tmp_path, capsys):
    path, marker = crafted
    _fails_in_one_line(["predict", "--checkpoint", path, "--images", tmp_path, "--out",
                        tmp_path / "r.json"], capsys, path, marker)
    assert not (tmp_path / "r.json").exists()


def test_test_refuses_it(crafted, tmp_path, capsys):
    path, marker = crafted
    _fails_in_one_line(["test", path, "--out", tmp_path / "tested"], capsys, path, marker)


def test_detector_refuses_it(crafted):
    from loce.inference import Detector

    path, marker = crafted
    with pytest.raises(CheckpointError) as e:
        Detector.from_checkpoint(path)
    assert str(e.value).startswith(_refusal(path)) and not marker.exists()


def _train_args(dataset, out, *extra, **overrides):
    return ["train", SYNTH_CONFIG, *extra,
            *sum((["--set", o] for o in tiny_overrides(dataset, out, **overrides)), [])]


def test_init_from_refuses_it(crafted, tiny_dataset, tmp_path, capsys):
    path, marker = crafted
    _fails_in_one_line(_train_args(tiny_dataset, tmp_path / "run",
                                   **{"train.init_from": path}), capsys, path, marker)


def test_resume_refuses_it(crafted, tiny_dataset, tmp_path, capsys):
    path, marker = crafted
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    os.replace(path, ckpts / "epoch_1.pth")
    (ckpts / "last_checkpoint").write_text("epoch_1.pth\n")
    _fails_in_one_line(_train_args(tiny_dataset, tmp_path / "run", "--resume"), capsys,
                       ckpts / "epoch_1.pth", marker)


def test_the_memory_file_is_refused(tiny_dataset, tmp_path):
    from loce import build
    from loce.config import load_config
    from loce.engine.method_state import load_rank_state

    cfg = load_config(LOCE_SYNTH, tiny_overrides(tiny_dataset, tmp_path))
    model = build.build_model(cfg, 12, load_backbone=False)
    marker = tmp_path / "code_ran"
    memory = tmp_path / "epoch_1.pth.memory.rank0.pth"
    torch.save({"feature_memory": _RunsCode(marker), "rank": 0, "checkpoint": "epoch_1.pth"},
               memory)
    with pytest.raises(CheckpointError) as e:
        load_rank_state(model, cfg, tmp_path, "epoch_1.pth", 0)
    assert str(e.value).startswith(_refusal(memory, "feature memory")) and not marker.exists()
    assert not model.roi_heads.memory_restored


@pytest.mark.parametrize("direction", ["loce", "mmdet"])
def test_convert_refuses_it(direction, crafted, tmp_path, capsys):
    path, marker = crafted
    out = tmp_path / "out.pth"
    _fails_in_one_line(["convert", path, out, "--to", direction], capsys, path, marker)
    assert not out.exists()


def test_backbone_weights_refuse_it(crafted):
    import torchvision

    from loce.models.weights import load_backbone_weights

    path, marker = crafted
    with pytest.raises(CheckpointError) as e:
        load_backbone_weights(torchvision.models.resnet18(), str(path), "resnet18")
    assert str(e.value).startswith(_refusal(path, "model.backbone_weights file"))
    assert not marker.exists()


def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "notes.pth"
    bad.write_text("not a checkpoint\n")
    code = cli_main(["predict", "--checkpoint", str(bad), "--images", str(tmp_path), "--out",
                     str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"cannot read the checkpoint {bad}: not a PyTorch checkpoint, or a damaged one (" in err
    assert "weights_only" not in err  # never the advice to load it unsafely


# ------------------------------------------------------------------ the formats that load


def test_a_checkpoint_of_the_current_format_is_tensors_and_plain_values(tiny_checkpoint):
    state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    numpy_state = state["rng"][0]["numpy"]
    assert numpy_state["bit_generator"] == "MT19937"
    assert len(numpy_state["state"]["key"]) == 624
    assert all(type(v) is int for v in numpy_state["state"]["key"])
    assert load_checkpoint_file(tiny_checkpoint)["global_iter"] == 2


def test_the_rng_state_round_trips_through_a_safe_load(tmp_path):
    from loce.fileio import load_torch, save_torch_atomic

    random.seed(1)
    np.random.seed(2)  # noqa: NPY002 - the global generators are what a checkpoint saves
    torch.manual_seed(3)
    save_torch_atomic({"rng": capture_rng_state()}, tmp_path / "rng.pth")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    random.seed(9)
    np.random.seed(9)  # noqa: NPY002
    torch.manual_seed(9)
    restore_rng_state(load_torch(tmp_path / "rng.pth")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected  # noqa: NPY002


def _previous_format(tiny_checkpoint, path):
    """The tiny checkpoint as earlier versions wrote it: ``np.random.get_state()``'s tuple (an
    array inside) as the NumPy generator state. Returns that state."""
    state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    legacy = np.random.RandomState(5).get_state()
    for entry in state["rng"]:
        entry["numpy"] = legacy
    torch.save(state, path)
    return legacy


def test_a_checkpoint_of_the_previous_format_loads(tiny_checkpoint, tmp_path):
    from loce.inference import Detector

    path = tmp_path / "old.pth"
    legacy = _previous_format(tiny_checkpoint, path)
    with pytest.raises(Exception, match="numpy"):  # the strict loader alone refuses it
        torch.load(path, weights_only=True)
    state = load_checkpoint_file(path)
    restore_rng_state(state["rng"][0])
    now = np.random.get_state()  # noqa: NPY002
    assert now[0] == "MT19937" and (now[1] == legacy[1]).all() and now[2] == legacy[2]
    detector = Detector.from_checkpoint(path)
    assert detector.category_ids == state["category_ids"]


def test_resume_from_a_checkpoint_of_the_previous_format(tiny_dataset, tiny_checkpoint,
                                                          tmp_path, capsys):
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    _previous_format(tiny_checkpoint, ckpts / "epoch_1.pth")
    (ckpts / "last_checkpoint").write_text("epoch_1.pth\n")
    args = _train_args(tiny_dataset, tmp_path / "run", "--resume",
                       **{"train.max_iters_per_epoch": 2})
    assert cli_main(args) == 0, capsys.readouterr().err
    assert "resumed from" in (tmp_path / "run" / "log.txt").read_text()


def test_the_previous_format_needs_torch_2_5(tiny_checkpoint, tmp_path, monkeypatch):
    path = tmp_path / "old.pth"
    _previous_format(tiny_checkpoint, path)
    monkeypatch.delattr(torch.serialization, "safe_globals")
    with pytest.raises(CheckpointError, match=r"old\.pth: this checkpoint is of an earlier loce "
                                              r"format .* read it with torch>=2\.5"):
        load_checkpoint_file(path)


# ------------------------------------------------------------------ writes that fail


def test_a_file_size_limit_while_train_saves_is_one_line(tiny_dataset, tiny_checkpoint,
                                                         tmp_path):
    """`loce train` resumes and trains a second epoch under ``ulimit -f`` 8 MiB: the checkpoint
    (93 MB) cannot be written; the run ends with one line, the pointer still names the last
    good checkpoint and no temporary file is left."""
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "epoch_1.pth").write_bytes(tiny_checkpoint.read_bytes())
    (ckpts / "last_checkpoint").write_text("epoch_1.pth\n")
    limit = 8 * 2**20

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    cmd = train_command(SYNTH_CONFIG, tiny_overrides(tiny_dataset, tmp_path / "run", **{
        "train.max_iters_per_epoch": 2, "solver.epochs": 2}), "--resume")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env,
                          preexec_fn=limited)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # after the progress bar
    assert last == (f"loce train: error: {ckpts / 'epoch_2.pth'}: cannot write the checkpoint "
                    "(File too large); the file-size limit (ulimit -f) of 8.0 MiB is too small "
                    "for it: raise it."), proc.stderr
    assert "Traceback" not in proc.stderr
    assert (ckpts / "last_checkpoint").read_text() == "epoch_1.pth\n"
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch_1.pth", "last_checkpoint"]


def test_a_full_disk_while_the_memory_file_is_saved(tiny_dataset, tmp_path, monkeypatch):
    """A real ENOSPC from the kernel: the temporary file's descriptor writes to /dev/full."""
    import tempfile

    from loce import build
    from loce.config import load_config
    from loce.engine.method_state import save_rank_state
    from loce.fileio import FileWriteError

    cfg = load_config(LOCE_SYNTH, tiny_overrides(tiny_dataset, tmp_path))
    model = build.build_model(cfg, 12, load_backbone=False)
    model.roi_heads.memory_for("cpu")
    real_mkstemp = tempfile.mkstemp

    def onto_dev_full(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, fd)
        os.close(full)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", onto_dev_full)
    with pytest.raises(FileWriteError) as e:
        save_rank_state(model, cfg, tmp_path / "ckpts", "epoch_1.pth", 0)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'ckpts' / 'epoch_1.pth.memory.rank0.pth'}: cannot "
                          "write the feature memory (No space left on device); it needs ")
    assert "MiB free: free some space or write elsewhere." in msg and len(msg.splitlines()) == 1
    assert list((tmp_path / "ckpts").iterdir()) == []
