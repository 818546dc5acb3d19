"""Bad inputs to `loce train` and `loce predict`: exit 2, a message naming the culprit, no
traceback, and no existing output replaced."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from engine_utils import SYNTH_CONFIG, tiny_overrides
from PIL import Image

from loce.cli import main as cli_main


def _fails(args, capsys, *expected):
    code = cli_main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    last = err.split("\r")[-1]  # after any progress bar
    assert "Traceback" not in err and last.startswith(f"loce {args[0]}: error: "), err
    for text in expected:
        assert text in err, (text, err)
    return err


def _train_args(dataset, out, *extra, **overrides):
    return ["train", SYNTH_CONFIG, *extra,
            *sum((["--set", o] for o in tiny_overrides(dataset, out, **overrides)), [])]


def _predict(checkpoint, images, out, *extra):
    return [str(a) for a in ["predict", "--checkpoint", checkpoint, "--images", images, "--out", out,
                             *extra]]


def test_run_directory_that_is_a_file(tiny_dataset, tmp_path, capsys):
    blocker = tmp_path / "run"
    blocker.write_text("not a folder")
    _fails(_train_args(tiny_dataset, blocker), capsys, str(blocker), "a file stands where")
    assert blocker.read_text() == "not a folder"


def test_resume_from_a_weights_only_file(tiny_dataset, tiny_checkpoint, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    state = torch.load(tiny_checkpoint, weights_only=False)
    torch.save({"model": state["model"]}, run / "checkpoints" / "weights.pth")
    (run / "checkpoints" / "last_checkpoint").write_text("weights.pth\n")
    _fails(_train_args(tiny_dataset, run, "--resume"), capsys, "weights.pth has no 'optimizer'",
           "train.init_from")


def test_resume_after_trainable_changed(tiny_dataset, tiny_checkpoint, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_checkpoint, run / "checkpoints" / "epoch_1.pth")
    (run / "checkpoints" / "last_checkpoint").write_text("epoch_1.pth\n")
    _fails(_train_args(tiny_dataset, run, "--resume", **{"train.trainable": "[rpn]"}), capsys,
           "train.trainable=None", "['rpn']", "same train.trainable")
    # the same check without a stored config: the optimizer's parameter count differs
    state = torch.load(tiny_checkpoint, weights_only=False)
    del state["config"]
    torch.save(state, run / "checkpoints" / "epoch_1.pth")
    _fails(_train_args(tiny_dataset, run, "--resume", **{"train.trainable": "[rpn]"}), capsys,
           "the optimizer state does not fit", "parameters in the checkpoint")
    # negative control: the unchanged config resumes (to the end: nothing left to train)
    assert cli_main(_train_args(tiny_dataset, run, "--resume",
                                **{"train.max_iters_per_epoch": 2})) == 0


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("config", ["not", "a", "mapping"], "expected a mapping of config sections, found a list"),
    ("category_ids", "1,2,3", "category_ids must be a non-empty list of distinct integer ids"),
    ("category_ids", [1, 1, 2], "category_ids must be a non-empty list"),
    ("category_names", [1, 2], "category_names must list"),
])
def test_checkpoint_tables_of_the_wrong_type(key, value, expected, tiny_dataset,
                                             tiny_checkpoint, tmp_path, capsys):
    state = torch.load(tiny_checkpoint, weights_only=False)
    state[key] = value
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    _fails(_predict(bad, tiny_dataset / "val", tmp_path / "r.json"), capsys, expected)


def _image_folder(tmp_path, *sizes):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(np.full((h, w, 3), 120, np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def test_a_bad_image_leaves_the_existing_results_untouched(tiny_checkpoint, tmp_path, capsys,
                                                           monkeypatch):
    folder = _image_folder(tmp_path, (64, 48), (64, 48))
    (folder / "01.png").write_bytes(b"not a png")
    out = tmp_path / "results.json"
    out.write_text('[{"kept": true}]')
    _fails(_predict(tiny_checkpoint, folder, out), capsys, "01.png", "image id 2")
    assert out.read_text() == '[{"kept": true}]' and not list(tmp_path.glob(".*.tmp"))
    # Pillow's decompression-bomb guard (a 14000 x 14000 image, scaled down to the test)
    from PIL import Image as PILImage

    (folder / "01.png").unlink()
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)
    _fails(_predict(tiny_checkpoint, folder, out), capsys, "00.png", "is 64x48 (0.0 megapixels)",
           "over the 0.0-megapixel limit that guards against decompression bombs")
    assert out.read_text() == '[{"kept": true}]'


def test_a_very_flat_image_is_predicted(tiny_checkpoint, tmp_path, capsys):
    """4000 x 2 pixels: the resize keeps at least one row (it used to make an empty tensor)."""
    folder = _image_folder(tmp_path, (4000, 2), (64, 48))
    out = tmp_path / "results.json"
    assert cli_main(_predict(tiny_checkpoint, folder, out, "--set", "data.test_max_size=160",
                             "--set", "data.test_scale=128")) == 0, capsys.readouterr().err
    assert isinstance(json.loads(out.read_text()), list)


def test_out_that_is_a_folder_or_below_a_file(tiny_dataset, tiny_checkpoint, tmp_path, capsys):
    images = tiny_dataset / "val"
    _fails(_predict(tiny_checkpoint, images, tmp_path), capsys, "a folder stands where the file")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _fails(_predict(tiny_checkpoint, images, blocker / "r.json"), capsys, "is a file, not a folder")
    _fails(_predict(tiny_checkpoint, images, tmp_path / "r.json", "--visualize", blocker / "v"),
           capsys, "cannot create the --visualize folder")
    assert blocker.read_text() == "x"
