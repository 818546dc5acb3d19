"""Frequency groups in the checkpoint: `loce train` stores the groups it gave the classes, so
`loce test` evaluates a COCO-format validation file (no ``frequency`` fields) by APr/APc/APf
without the training annotations; older checkpoints read ``data.train_ann``; with neither, one
line names the checkpoint and the fix."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from engine_utils import json_class_statistics, tiny_overrides

from loce import build
from loce.cli import main as cli_main
from loce.config import load_config
from loce.engine.checkpoint import load_checkpoint_file
from loce.engine.train import train
from loce.evaluation.lvis_eval import evaluate_lvis_multi

FASTER = "faster_rcnn_r18_fpn_synthetic"
THRESHOLDS = (2, 6)


@pytest.fixture(scope="module")
def moved_coco_run(tiny_coco_boxes, tmp_path_factory) -> tuple[Path, Path]:
    """``(checkpoint, its training file)`` of a 2-iteration Faster R-CNN run on the COCO-format
    tiny dataset whose training annotation file was deleted after training."""
    root = tmp_path_factory.mktemp("moved_coco_run")
    train_ann = root / "annotations" / "train.json"
    train_ann.parent.mkdir()
    shutil.copy(tiny_coco_boxes / "annotations/train.json", train_ann)
    train(load_config(FASTER, tiny_overrides(tiny_coco_boxes, root / "run", **{
        "data.train_ann": str(train_ann), "train.max_iters_per_epoch": 2,
        "data.frequency_thresholds": f"[{THRESHOLDS[0]},{THRESHOLDS[1]}]"})))
    train_ann.unlink()
    return root / "run" / "checkpoints" / "epoch_1.pth", train_ann


def _hand_groups(train_json: Path) -> dict[int, str]:
    """Category id -> group of the training file, by LVIS's rule with :data:`THRESHOLDS`
    applied to the training images of each class counted here from the json."""
    counts = json_class_statistics(train_json)["image_counts"]
    ids = sorted(c["id"] for c in json.loads(train_json.read_text())["categories"])
    rare, common = THRESHOLDS
    return {c: "r" if n <= rare else "c" if n <= common else "f"
            for c, n in zip(ids, counts, strict=True)}


def _test(checkpoint: Path, out: Path, *sets: str) -> dict:
    args = ["test", str(checkpoint), "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    assert cli_main(args) == 0
    return json.loads((out / "metrics.json").read_text())


def _one_line_error(args: list[str], capsys) -> str:
    code = cli_main(args)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def _rewrite(checkpoint: Path, dst: Path, change) -> Path:
    state = load_checkpoint_file(checkpoint)
    change(state)
    torch.save(state, dst)
    return dst


def test_checkpoint_stores_the_groups_of_the_run(moved_coco_run, tiny_coco_boxes):
    checkpoint, _ = moved_coco_run
    groups = _hand_groups(tiny_coco_boxes / "annotations/train.json")
    assert set(groups.values()) == {"r", "c", "f"}
    state = torch.load(checkpoint, weights_only=True)
    stored = state["class_statistics"]["frequencies"]
    assert stored == [groups[c] for c in state["category_ids"]]
    # What the run wrote next to it says the same.
    table = json.loads((checkpoint.parent.parent / "categories.json").read_text())
    assert [c["frequency"] for c in table["categories"]] == stored


def test_coco_val_is_evaluated_with_the_stored_groups(moved_coco_run, tiny_coco_boxes, tmp_path):
    checkpoint, train_ann = moved_coco_run
    assert not train_ann.exists()
    stored = _test(checkpoint, tmp_path / "stored")
    # The same checkpoint with the groups computed again from the (same) training file.
    from_file = _test(checkpoint, tmp_path / "file",
                      f"data.train_ann={tiny_coco_boxes / 'annotations/train.json'}")
    assert stored == from_file
    # And by hand: the val file given the groups and COCO's exhaustive negatives, evaluated
    # as an LVIS file.
    val = json.loads((tiny_coco_boxes / "annotations/val.json").read_text())
    groups = _hand_groups(tiny_coco_boxes / "annotations/train.json")
    ids = sorted(groups)
    present: dict[int, set] = {}
    for a in val["annotations"]:
        present.setdefault(a["image_id"], set()).add(a["category_id"])
    val["categories"] = [{**c, "frequency": groups[c["id"]]} for c in val["categories"]]
    val["images"] = [{**im, "neg_category_ids": [c for c in ids if c not in
                                                 present.get(im["id"], set())],
                      "not_exhaustive_category_ids": []} for im in val["images"]]
    gt = tmp_path / "val_lvis.json"
    gt.write_text(json.dumps(val))
    by_hand = evaluate_lvis_multi(str(gt), str(tmp_path / "stored/predictions.json"),
                                  iou_types=["bbox"])
    for key in ("AP", "APr", "APc", "APf"):
        assert stored["bbox"][key] == pytest.approx(by_hand["bbox"][key], abs=1e-12), key
    assert stored["bbox"]["APr"] >= 0 and stored["bbox"]["APc"] >= 0 \
        and stored["bbox"]["APf"] >= 0  # every group has classes (-1 would mean none)


def test_older_checkpoints_read_data_train_ann_or_name_the_fix(moved_coco_run, tiny_coco_boxes,
                                                               tmp_path, capsys):
    checkpoint, train_ann = moved_coco_run
    no_groups = _rewrite(checkpoint, tmp_path / "no_groups.pth",
                         lambda s: s["class_statistics"].pop("frequencies"))
    err = _one_line_error(["test", str(no_groups), "--out", str(tmp_path / "a")], capsys)
    assert f"{no_groups} stores class statistics without them" in err
    assert f"data.train_ann={train_ann} does not exist" in err
    assert "--set data.train_ann=" in err
    assert not (tmp_path / "a" / "predictions.json").exists()  # refused before inference
    no_stats = _rewrite(checkpoint, tmp_path / "no_stats.pth",
                        lambda s: s.pop("class_statistics"))
    err = _one_line_error(["test", str(no_stats), "--out", str(tmp_path / "b")], capsys)
    assert f"{no_stats} stores none (written by an earlier version of loce)" in err
    assert "--set data.train_ann=" in err
    # The fix the message names works, and gives the stored groups' figures.
    fixed = f"data.train_ann={tiny_coco_boxes / 'annotations/train.json'}"
    assert _test(no_stats, tmp_path / "c", fixed) == _test(checkpoint, tmp_path / "d")


@pytest.mark.parametrize(("change", "message"), [
    (lambda g: g.pop(), r"11 frequency groups for 12 classes; expected one per class"),
    (lambda g: g.__setitem__(4, "rare"),
     r"frequencies\[4\] is 'rare' \(class label 5\); expected one of 'r', 'c', 'f'"),
    (lambda g: g.__setitem__(0, 3), r"'frequencies' must be a list of 'r', 'c' or 'f'"),
], ids=["short", "not-a-group", "not-a-string"])
def test_malformed_stored_groups_are_refused_in_one_line(moved_coco_run, tmp_path, capsys,
                                                         change, message):
    checkpoint, _ = moved_coco_run
    bad = _rewrite(checkpoint, tmp_path / "bad.pth",
                   lambda s: change(s["class_statistics"]["frequencies"]))
    err = _one_line_error(["test", str(bad), "--out", str(tmp_path / "out")], capsys)
    assert f"{bad}: class_statistics" in err
    assert re.search(message, err), err


def test_lvis_groups_in_the_val_file_need_no_training_file(tiny_dataset, tmp_path):
    """A val file with ``frequency`` but without the federated lists reads no training file."""
    val = json.loads((tiny_dataset / "annotations/val.json").read_text())
    for im in val["images"]:
        del im["neg_category_ids"], im["not_exhaustive_category_ids"]
    path = tmp_path / "val.json"
    path.write_text(json.dumps(val))
    cfg = load_config(FASTER, tiny_overrides(tiny_dataset, tmp_path, **{
        "data.val_ann": str(path), "data.train_ann": str(tmp_path / "gone.json")}))
    gt = build.evaluation_ground_truth(cfg)
    assert [c["frequency"] for c in gt["categories"]] == [c["frequency"] for c in val["categories"]]
    labelled = {a["image_id"] for a in val["annotations"]}
    first = next(im for im in gt["images"] if im["id"] in labelled)
    own = {a["category_id"] for a in val["annotations"] if a["image_id"] == first["id"]}
    assert sorted(first["neg_category_ids"]) == sorted(
        c["id"] for c in val["categories"] if c["id"] not in own)
