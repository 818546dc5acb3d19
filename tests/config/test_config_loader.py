"""Config loading: YAML onto the schema, --set overrides, errors with key paths and hints."""

from __future__ import annotations

import pytest

from loce.config import (
    Config,
    bundled_configs,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from loce.errors import ConfigError

LVIS_V1 = "mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1"


def test_schema_defaults_are_the_original_stage1_recipe():
    cfg = load_config()
    assert (cfg.solver.lr, cfg.solver.epochs, cfg.solver.steps) == (0.02, 24, [16, 22])
    assert cfg.solver.warmup_iters == 500 and cfg.solver.momentum == 0.9
    assert cfg.solver.weight_decay == 1e-4 and cfg.solver.grad_clip is None
    assert cfg.data.train_scales == [640, 672, 704, 736, 768, 800] and cfg.data.max_size == 1333
    assert cfg.data.images_per_gpu == 2 and cfg.data.sampler == "random"
    assert cfg.model.backbone == "resnet50" and cfg.model.mask.predictor == "normed"
    assert (cfg.model.test.score_thresh, cfg.model.test.nms_thresh,
            cfg.model.test.detections_per_img) == (1e-4, 0.5, 300)
    assert cfg.model.roi.batch_size_per_image == 512 and cfg.model.roi.positive_fraction == 0.25


def test_bundled_configs_load_and_name_themselves():
    names = bundled_configs()
    for required in (LVIS_V1, "mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v0.5",
                     "mask_rcnn_r101_fpn_normed_mask_mstrain_2x_lvis_v1",
                     "mask_rcnn_r18_fpn_normed_mask_synthetic"):
        assert required in names
    for name in names:
        cfg = load_config(name)
        assert cfg.name == name
    assert load_config("mask_rcnn_r101_fpn_normed_mask_mstrain_2x_lvis_v1").model.backbone == "resnet101"


def test_overrides_are_typed_yaml_values():
    cfg = load_config(LVIS_V1, ["solver.lr=0.01", "solver.steps=[3,5]", "solver.epochs=6",
                                "train.init_from=null", "model.backbone=resnet18",
                                "solver.grad_clip=35"])
    assert cfg.solver.lr == 0.01 and cfg.solver.steps == [3, 5] and cfg.solver.epochs == 6
    assert cfg.train.init_from is None and cfg.model.backbone == "resnet18"
    assert cfg.solver.grad_clip == 35.0


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (["solver.lrr=1"], r"unknown key 'solver\.lrr'\. Did you mean solver\.lr\?"),
        (["model.backbne=resnet18"], r"Did you mean model\.backbone\?"),
        (["sover.lr=1"], r"unknown key 'sover'.*Did you mean solver\?"),
        (["solver.epochs=abc"], r"solver\.epochs: .*'abc'"),
        (["data.sampler=balanced"], r"data\.sampler.*'random', 'repeat_factor'"),
        (["model.backbone=resnet152"], r"model\.backbone"),
        (["model.roi.positive_fraction=1.5"], r"model\.roi\.positive_fraction must be in \(0, 1\], got 1\.5"),
        (["solver.steps=[30]"], r"solver\.steps\[0\] must be in 1\.\.epochs \(24\), got 30"),
        (["solver.steps=[5,3]"], r"solver\.steps must be increasing"),
        (["data.flip_prob=2"], r"data\.flip_prob must be in \[0, 1\]"),
        (["solver.lr"], r"expected KEY=VALUE"),
        # non-finite numbers are refused everywhere (YAML spells them .inf and .nan)
        (["solver.lr=.inf"], r"solver\.lr must be a finite number, got inf"),
        (["solver.grad_clip=.nan"], r"solver\.grad_clip must be a finite number, got nan"),
        (["solver.weight_decay=-.inf"], r"solver\.weight_decay must be a finite number"),
        (["model.test.norcal_gamma=.inf"], r"model\.test\.norcal_gamma must be a finite"),
    ],
)
def test_bad_values_name_the_key(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(LVIS_V1, overrides)


def test_yaml_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("solver:\n  lr: [1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+, column \d+ is not valid YAML"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("solver:\n  warmup: 10\n")
    with pytest.raises(ConfigError, match=r"unknown\.yaml: unknown key 'solver\.warmup'.*warmup_iters"):
        load_config(unknown)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(listing)
    with pytest.raises(ConfigError, match=r"neither a file nor a bundled config\. Did you mean: "
                                          r"mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1"):
        load_config("mask_rcnn_r50_fpn_normed_mask_mstrain_lvis_v1")


def test_save_and_dict_round_trip(tmp_path):
    cfg = load_config(LVIS_V1, ["solver.lr=0.005", "model.fpn_channels=128"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert config_to_dict(again) == {**config_to_dict(cfg), "name": cfg.name}
    rebuilt = config_from_dict(config_to_dict(cfg), overrides=["solver.lr=0.1"])
    assert isinstance(rebuilt, Config) and rebuilt.solver.lr == 0.1
    assert rebuilt.model.fpn_channels == 128


def test_base_config_is_applied_first_and_cycles_are_refused(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {LVIS_V1}\nsolver:\n  epochs: 6\n  steps: [3, 5]\n")
    cfg = load_config(child)
    assert cfg.data.train_ann.endswith("lvis_v1_train.json")  # from the base
    assert (cfg.solver.epochs, cfg.solver.steps) == (6, [3, 5])  # from the child
    assert cfg.name == "child"
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle: a.yaml -> b.yaml -> a.yaml"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "bad.yaml").write_text("base: [1]\n")
    with pytest.raises(ConfigError, match="'base' must be a config name or path"):
        load_config(tmp_path / "bad.yaml")



def test_non_utf8_config_and_a_non_mapping_stored_config(tmp_path):
    from loce.config import config_from_dict

    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not a UTF-8 text file \(byte 9"):
        load_config(latin)
    with pytest.raises(ConfigError, match="ckpt: expected a mapping of config sections, found a "
                       "list"):
        config_from_dict(["solver"], "ckpt")
    # negative control: finite values pass
    assert load_config(LVIS_V1, ["solver.lr=1e-3"]).solver.lr == 1e-3
