"""The command line's error reporting."""

from __future__ import annotations

import torch

from loce import build
from loce.cli import main
from loce.config import config_to_dict, load_config


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
