"""The command line: no option prefixes, user errors in one line with exit status 2."""

from __future__ import annotations

import pytest
import torch

from loce import build
from loce.cli import build_parser, main
from loce.config import config_to_dict, load_config


def test_option_prefixes_are_not_accepted(capsys):
    """`--res` used to be taken as `--resume`: argparse's prefix matching is off everywhere."""
    for argv in (["train", "cfg", "--res"], ["eval", "--g", "gt.json", "--results", "r.json"],
                 ["predict", "--check", "w.pth", "--images", "d", "--out", "o.json"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert any(m in err for m in ("unrecognized arguments", "arguments are required",
                                      "one of the arguments --checkpoint --onnx is required")), err
    parser = build_parser()
    assert parser.allow_abbrev is False
    sub = next(a for a in parser._actions if a.dest == "command")
    assert all(p.allow_abbrev is False for p in sub.choices.values())
    # negative control: the full spelling parses
    assert parser.parse_args(["train", "cfg", "--resume"]).resume is True


def test_a_missing_path_opened_by_a_library_is_a_user_error(tmp_path, capsys):
    code = main(["configs", str(tmp_path / "missing.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "missing.yaml" in err


def test_an_error_in_a_loader_worker_is_one_line(tmp_path, capsys):
    cfg = load_config("mask_rcnn_r18_fpn_normed_mask_synthetic")
    model = build.build_model(cfg, num_classes=2, load_backbone=False)
    ckpt = tmp_path / "model.pth"
    torch.save({"model": model.state_dict(), "config": config_to_dict(cfg), "num_classes": 2,
                "category_ids": [1, 2], "category_names": ["a", "b"]}, ckpt)
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "broken.jpg").write_text("not an image")
    for workers in (0, 1):  # in this process, and in a DataLoader worker process
        code = main(["predict", "--checkpoint", str(ckpt), "--images", str(folder),
                     "--out", str(tmp_path / "r.json"), "--set", f"data.workers={workers}"])
        err = capsys.readouterr().err
        line = err.strip().splitlines()[-1]
        assert code == 2
        assert line.endswith("image id 1: " + str(folder / "broken.jpg") + ": cannot read the "
                             "image (cannot identify image file '" + str(folder / "broken.jpg")
                             + "'); give a JPEG, PNG, BMP or WebP file"), err
        assert "Traceback" not in err
