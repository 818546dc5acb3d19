"""``loce convert``: MMDetection checkpoints → loce checkpoints (and back), end to end.

The MMDetection files are built here: random tensors of MMDetection's shapes, config texts in
mmcv's pretty-printed form (tests/convert/mmdet_fakes.py). R50 with few classes keeps them
small; the R101 / K = 1203 decisions are covered from the config text (test_mmdet_spec.py)
and the key counts by the key-map tests.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmdet_fakes import lvis_like_classes, mmdet_config, random_mmdet_state, write_mmdet_checkpoint

from loce import build
from loce.config import config_from_dict, load_config
from loce.convert import loce_to_mmdet, mmdet_to_loce
from loce.engine.checkpoint import load_trained_model
from loce.models.weights import load_initial_weights

FIXTURES = Path(__file__).parents[1] / "fixtures"
V05 = FIXTURES / "lvis_v0.5_val_100.json"


def _cli(*args: str) -> subprocess.CompletedProcess:
    """``loce convert ARGS`` in this process (the CLI's own entry point)."""
    from loce.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["convert", *map(str, args)])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def r50_state():
    """MMDetection's R50 shapes, 8 classes, as zero tensors that take no memory or disk
    (expanded views: one stored value each); random where the values are checked."""
    return random_mmdet_state(50, 8, zeros=True)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    path = tmp_path_factory.mktemp("mmdet") / "epoch_24.pth"
    return write_mmdet_checkpoint(path, random_mmdet_state(50, 8), mmdet_config(50, 8),
                                  classes=lvis_like_classes(8))


def _equal_state(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k])
        for k in a)


def test_stage1_checkpoint_converts_and_loads_like_a_trained_one(stage1, tmp_path):
    out = tmp_path / "loce.pth"
    # The real command line, once.
    res = subprocess.run([sys.executable, "-m", "loce", "convert", str(stage1), str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "MASK HEAD  normed — FCNNormMaskHead in the config" in res.stdout
    assert "360 MMDetection keys -> 307 loce keys; strict load OK" in res.stdout
    assert "category ids 1..8 in label order" in res.stdout
    state = torch.load(out, map_location="cpu", weights_only=False)
    # The format `loce train` writes (engine/train.py): model, config, category table.
    for key in ("model", "config", "num_classes", "category_ids", "category_names"):
        assert key in state
    assert state["category_ids"] == list(range(1, 9))
    assert state["category_names"] == lvis_like_classes(8)
    assert len(state["model"]) == 307
    cfg = config_from_dict(state["config"])
    assert cfg.name == "mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1"
    assert cfg.model.mask.predictor == "normed" and cfg.model.backbone == "resnet50"
    assert (cfg.model.test.score_thresh, cfg.model.test.detections_per_img) == (1e-4, 300)
    # load_trained_model (loce predict, loce.Detector) takes it with no flag, strictly.
    model, cfg2, _ = load_trained_model(out)
    assert cfg2.model.mask.predictor == "normed"
    # The classifier's background row moved first: loce row 0 is MMDetection's last row.
    src = torch.load(stage1, weights_only=True)["state_dict"]
    assert torch.equal(model.roi_heads.box_predictor.cls_score.weight[0],
                       src["roi_head.bbox_head.fc_cls.weight"][-1])


def test_round_trip_is_bit_exact(stage1, tmp_path):
    loce_file, back = tmp_path / "loce.pth", tmp_path / "mmdet.pth"
    mmdet_to_loce(stage1, loce_file, log=lambda line: None)
    res = _cli(loce_file, back, "--to", "mmdet")
    assert res.returncode == 0, res.stderr
    original = torch.load(stage1, weights_only=True)
    again = torch.load(back, weights_only=True)
    assert _equal_state(original["state_dict"], again["state_dict"])
    assert again["meta"]["config"] == original["meta"]["config"]
    assert tuple(again["meta"]["CLASSES"]) == tuple(original["meta"]["CLASSES"])
    # Negative control: one changed value is detected.
    again["state_dict"]["rpn_head.rpn_cls.bias"][0] += 1e-3
    assert not _equal_state(original["state_dict"], again["state_dict"])


def test_plain_mask_head_and_overriding_it(tmp_path, r50_state):
    src = write_mmdet_checkpoint(tmp_path / "rfs.pth", r50_state, mmdet_config(50, 8, variant="rfs"),
                                 classes=lvis_like_classes(8))
    res = _cli(src, tmp_path / "plain.pth")
    assert res.returncode == 0, res.stderr
    assert "MASK HEAD  plain — FCNMaskHead in the config" in res.stdout
    cfg = config_from_dict(torch.load(tmp_path / "plain.pth", weights_only=False)["config"])
    assert cfg.name == "rfs_mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1"
    assert cfg.model.mask.predictor == "plain" and cfg.data.sampler == "repeat_factor"
    res = _cli(src, tmp_path / "forced.pth", "--normed-mask", "yes")
    assert res.returncode == 0, res.stderr
    assert "OVERRIDING the config, which says FCNMaskHead" in res.stdout
    cfg = config_from_dict(torch.load(tmp_path / "forced.pth", weights_only=False)["config"])
    assert cfg.model.mask.predictor == "normed"


def test_loce_finetune_checkpoint_feeds_train_init_from(tmp_path, r50_state):
    src = write_mmdet_checkpoint(tmp_path / "epoch_6.pth", r50_state,
                                 mmdet_config(50, 8, variant="loce"), classes=lvis_like_classes(8))
    out = tmp_path / "loce.pth"
    res = _cli(src, out)
    assert res.returncode == 0, res.stderr
    assert "roi_heads.score_tracker.scores" in res.stdout  # filled at its initial value
    state = torch.load(out, weights_only=False)
    cfg = config_from_dict(state["config"])
    assert cfg.name == "loce_mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1" and cfg.loce.enabled
    load_trained_model(out)
    # train.init_from: the stage-2 fine-tune config loads a converted stage-1 or stage-2 file.
    finetune = load_config("loce_mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1")
    model = build.build_model(finetune, num_classes=8, load_backbone=False)
    load_initial_weights(model, state, str(out), finetune.train.reinit)
    assert torch.equal(model.roi_heads.box_head.fc6.weight,
                       state["model"]["roi_heads.box_head.fc6.weight"])


def test_seesaw_k_plus_2_with_its_counts_round_trips(tmp_path):
    k = 8
    state = random_mmdet_state(50, k, num_logits=k + 2, seed=1)
    state["roi_head.bbox_head.loss_cls.cum_samples"] = torch.arange(k + 1, dtype=torch.float32) * 10
    src = write_mmdet_checkpoint(tmp_path / "seesaw.pth", state,
                                 mmdet_config(50, k, variant="seesaw_normed"),
                                 classes=lvis_like_classes(k))
    out, back = tmp_path / "loce.pth", tmp_path / "back.pth"
    mmdet_to_loce(src, out, log=lambda line: None)
    converted = torch.load(out, weights_only=False)
    cfg = config_from_dict(converted["config"])
    assert (cfg.model.roi.cls_loss, cfg.model.roi.classifier) == ("seesaw", "normed")
    assert cfg.model.mask.predictor == "normed"
    counts = converted["model"]["roi_heads.cls_loss.cum_samples"]
    # Background count (MMDetection's last) first, as loce counts.
    assert counts.tolist() == [80.0] + [10.0 * i for i in range(k)]
    assert converted["model"]["roi_heads.box_predictor.cls_score.weight"].shape[0] == k + 2
    loce_to_mmdet(out, back, log=lambda line: None)
    assert _equal_state(state, torch.load(back, weights_only=True)["state_dict"])


def test_lvis_v05_categories_resolved_by_name(tmp_path):
    cats = sorted(json.loads(V05.read_text())["categories"], key=lambda c: c["id"])
    names = [c["name"] for c in cats]
    k = len(names)
    state = random_mmdet_state(50, k, zeros=True)
    src = write_mmdet_checkpoint(tmp_path / "v05.pth", state,
                                 mmdet_config(50, k, dataset="v0.5"), classes=names)
    out = tmp_path / "loce.pth"
    res = _cli(src, out, "--gt", V05)
    assert res.returncode == 0, res.stderr
    assert f"matched by name ({k} of {k} classes)" in res.stdout
    converted = torch.load(out, weights_only=False)
    assert converted["category_ids"] == [c["id"] for c in cats]
    assert converted["category_names"] == names
    cfg = config_from_dict(converted["config"])
    assert cfg.name == "mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v0.5"
    # Without --gt the bundled LVIS v0.5 table resolves the same ids.
    lines: list[str] = []
    mmdet_to_loce(src, tmp_path / "bundled.pth", log=lines.append)
    assert any("category ids of LVIS v0.5, matched by name" in line for line in lines)
    assert torch.load(tmp_path / "bundled.pth", weights_only=False)["category_ids"] == \
        [c["id"] for c in cats]
    # A class name the annotation file does not have is named.
    wrong = write_mmdet_checkpoint(tmp_path / "wrong.pth", state,
                                   mmdet_config(50, k, dataset="v0.5"),
                                   classes=["not_a_category", *names[1:]])
    res = _cli(wrong, tmp_path / "never.pth", "--gt", V05)
    assert res.returncode == 2 and "class 0 ('not_a_category')" in res.stderr
    assert not (tmp_path / "never.pth").exists()


def test_bare_state_dict_needs_a_config(tmp_path, r50_state):
    src = write_mmdet_checkpoint(tmp_path / "bare.pth", r50_state, None, bare=True)
    res = _cli(src, tmp_path / "x.pth")
    assert res.returncode == 2
    assert "holds no meta['config']" in res.stderr and "--config" in res.stderr
    assert not (tmp_path / "x.pth").exists()
    # With a loce config the mask head comes from it (and says so).
    res = _cli(src, tmp_path / "y.pth", "--config", "mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1")
    assert res.returncode == 0, res.stderr
    assert "MASK HEAD  normed — from the loce config" in res.stdout
    # With an MMDetection config file (.py) the text decides.
    (tmp_path / "base.py").write_text(mmdet_config(50, 8, variant="rfs"))
    py = tmp_path / "rfs_config.py"
    py.write_text("_base_ = './base.py'\nmodel = dict(test_cfg=dict(rcnn=dict(max_per_img=100)))\n")
    res = _cli(src, tmp_path / "z.pth", "--config", py)
    assert res.returncode == 0, res.stderr
    assert "MASK HEAD  plain — FCNMaskHead in the config" in res.stdout
    converted = torch.load(tmp_path / "z.pth", weights_only=False)
    assert config_from_dict(converted["config"]).model.test.detections_per_img == 100
    # The merged text is kept (for --to mmdet): it reads back to the same values.
    from loce.convert.mmcv_config import load_config_file, parse_config_text

    kept = parse_config_text(converted["converted_from"]["config_text"])
    assert kept.values == load_config_file(py).values and not kept.skipped
    res = _cli(src, tmp_path / "w.pth", "--config", "mask_rcnn_r101_fpn_normed_mask_mstrain_2x_lvis_v1")
    assert res.returncode == 2 and "builds a resnet101 but the weights are ResNet-50" in res.stderr


def _bad_inputs(tmp_path: Path, state: dict) -> dict[str, tuple[Path, str]]:
    cases: dict[str, tuple[Path, str]] = {}

    def add(name, sd, config, message, **kw):
        cases[name] = (write_mmdet_checkpoint(tmp_path / f"{name}.pth", sd, config,
                                              classes=lvis_like_classes(8), **kw), message)

    add("cascade", state, mmdet_config(50, 8, detector="CascadeRCNN"), "the detector is CascadeRCNN")
    add("x101", state, mmdet_config(101, 8, backbone="ResNeXt"), "the backbone is ResNeXt-101 32x4d")
    add("retinanet", state, mmdet_config(50, 8, detector="RetinaNet"), "the detector is RetinaNet")
    unknown = dict(state)
    unknown["roi_head.bbox_head.shared_fcs.2.weight"] = torch.zeros(1024, 1024)
    add("unknown", unknown, mmdet_config(50, 8), "unknown key 'roi_head.bbox_head.shared_fcs.2.weight'")
    missing = {k: v for k, v in state.items() if k != "rpn_head.rpn_reg.bias"}
    add("missing", missing, mmdet_config(50, 8), "missing key 'rpn_head.rpn_reg.bias'")
    add("classes", state, mmdet_config(50, 1203), "num_classes=1203 but")
    add("depth", state, mmdet_config(101, 8), "describes ResNet-101 but the weights are ResNet-50")
    add("seesaw_rows", state, mmdet_config(50, 8, variant="seesaw"), "has 9 rows but the config's Seesaw")
    not_ckpt = tmp_path / "notes.pth"
    not_ckpt.write_text("this is not a checkpoint\n")
    cases["not_a_checkpoint"] = (not_ckpt, "not a PyTorch checkpoint")
    pickled = tmp_path / "pickled.pth"
    torch.save({"state_dict": state, "meta": {"when": __import__("datetime").date(2021, 1, 1)}},
               pickled)
    cases["pickled_object"] = (pickled, "'datetime.date'")
    cases["no_file"] = (tmp_path / "absent.pth", "no such checkpoint file")
    return cases


def test_every_bad_input_gets_one_line_and_nothing_is_written(tmp_path, r50_state):
    for name, (src, message) in _bad_inputs(tmp_path, r50_state).items():
        out = tmp_path / f"{name}.out.pth"
        res = _cli(src, out)
        assert res.returncode == 2, (name, res.stdout, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (name, res.stderr)
        assert "Traceback" not in res.stderr
        assert not out.exists(), name
        assert not list(tmp_path.glob(f".{out.name}.*")), name  # no temporary file left


def test_to_mmdet_refuses_what_mmdetection_cannot_hold(tmp_path):
    cfg = load_config("mask_rcnn_r18_fpn_normed_mask_synthetic")
    from loce.config import config_to_dict

    model = build.build_model(cfg, num_classes=3, load_backbone=False)
    ckpt = tmp_path / "r18.pth"
    torch.save({"model": model.state_dict(), "config": config_to_dict(cfg), "num_classes": 3,
                "category_ids": [1, 2, 3], "category_names": ["a", "b", "c"]}, ckpt)
    res = _cli(ckpt, tmp_path / "mm.pth", "--to", "mmdet")
    assert res.returncode == 2 and "no MMDetection Mask R-CNN R50/R101-FPN counterpart" in res.stderr
    assert not (tmp_path / "mm.pth").exists()
    res = _cli(ckpt, tmp_path / "mm.pth")
    assert res.returncode == 2 and "already a loce checkpoint" in res.stderr


def test_r101_lvis_v1_loce_checkpoint(tmp_path):
    """R101, K = 1203, LOCE's fine-tune: 666 -> 562 keys, strict load, the R101 config."""
    state = random_mmdet_state(101, 1203, zeros=True)
    src = write_mmdet_checkpoint(tmp_path / "r101.pth", state, mmdet_config(101, 1203, variant="loce"),
                                 classes=lvis_like_classes(1203))
    lines: list[str] = []
    mmdet_to_loce(src, tmp_path / "loce.pth", log=lines.append)
    text = "\n".join(lines)
    assert "666 MMDetection keys -> 562 loce keys" in text and "strict load OK" in text
    assert "1203 (dataset LVIS v1)" in text
    converted = torch.load(tmp_path / "loce.pth", weights_only=False)
    cfg = config_from_dict(converted["config"])
    assert cfg.name == "loce_mask_rcnn_r101_fpn_normed_mask_mstrain_2x_lvis_v1"
    assert cfg.model.backbone == "resnet101" and cfg.loce.enabled
    assert converted["category_ids"] == list(range(1, 1204))
    # 562 network keys plus LOCE's mean scores.
    assert len(converted["model"]) == 563


@pytest.mark.parametrize("name", ["loce_mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1",
                                  "seesaw_mask_rcnn_r50_fpn_normed_mask_rfs_mstrain_2x_lvis_v1",
                                  "mask_rcnn_r101_fpn_normed_mask_mstrain_2x_lvis_v1"])
def test_written_config_text_reads_back_as_the_same_model(name):
    """--to mmdet on a checkpoint trained by loce writes a config text; reading it picks the
    same bundled config and changes nothing the model depends on."""
    from loce.convert import loce_config_name, mmdet_config_text
    from loce.convert.mmcv_config import parse_config_text
    from loce.convert.mmdet_spec import read_model_spec

    cfg = load_config(name)
    spec = read_model_spec(parse_config_text(mmdet_config_text(cfg, 1203)).values, "text")
    assert loce_config_name(spec) == name
    assert spec.num_classes == 1203 and spec.depth == int(cfg.model.backbone[len("resnet"):])
    again = load_config(name, [f"{k}={json.dumps(v)}" for k, v in spec.settings.items()])
    for section in ("rpn", "roi", "mask", "test"):
        assert getattr(again.model, section) == getattr(cfg.model, section), section
    assert again.model.backbone == cfg.model.backbone and again.loce.enabled == cfg.loce.enabled
    assert (again.data.sampler, again.data.test_scale) == (cfg.data.sampler, cfg.data.test_scale)
