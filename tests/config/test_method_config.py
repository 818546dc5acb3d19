"""The ``loce`` config section and the bundled stage-2 configs."""

from __future__ import annotations

import pytest

from loce.config import bundled_configs, config_to_dict, load_config
from loce.errors import ConfigError

STAGE2 = {
    "loce_mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1":
        "mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v1",
    "loce_mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v0.5":
        "mask_rcnn_r50_fpn_normed_mask_mstrain_2x_lvis_v0.5",
    "loce_mask_rcnn_r101_fpn_normed_mask_mstrain_2x_lvis_v1":
        "mask_rcnn_r101_fpn_normed_mask_mstrain_2x_lvis_v1",
    "loce_mask_rcnn_r18_fpn_normed_mask_synthetic": "mask_rcnn_r18_fpn_normed_mask_synthetic",
    "finetune_ce_mask_rcnn_r18_fpn_normed_mask_synthetic": "mask_rcnn_r18_fpn_normed_mask_synthetic",
}
TRAINABLE = ["rpn", "roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_pred",
             "roi_heads.mask_head", "roi_heads.mask_predictor"]


def test_defaults_are_the_original_values_and_off():
    cfg = load_config()
    loce = cfg.loce
    assert not loce.enabled and cfg.train.trainable is None
    assert (loce.alpha, loce.bg_score, loce.init_score) == (0.9, 0.01, 0.01)
    assert (loce.memory_capacity, loce.classes_per_step, loce.features_per_class) == (80, 8, 4)
    assert (loce.memory_dtype, loce.memory_device) == ("float16", "auto")
    assert loce.init_pass and loce.images_per_class == 5 and loce.save_memory


def test_images_per_class_follows_the_capacity():
    assert load_config(None, ["loce.memory_capacity=40"]).loce.images_per_class == 2
    assert load_config(None, ["loce.memory_capacity=8"]).loce.images_per_class == 1
    assert load_config(None, ["loce.init_images_per_class=3"]).loce.images_per_class == 3


@pytest.mark.parametrize(("override", "message"), [
    ("loce.alpha=1.0", "loce.alpha must be in [0, 1), got 1.0"),
    ("loce.bg_score=0", "loce.bg_score must be in (0, 1]"),
    ("loce.init_score=-1", "loce.init_score must be in (0, 1]"),
    ("loce.memory_capacity=0", "loce.memory_capacity must be >= 1, got 0"),
    ("loce.classes_per_step=-1", "loce.classes_per_step must be >= 0"),
    ("loce.init_images_per_class=0", "loce.init_images_per_class must be >= 1 or null"),
    ("loce.memory_dtype=float8", "loce.memory_dtype: Invalid value 'float8'"),
    ("loce.memory_device=gpu", "loce.memory_device: Invalid value 'gpu'"),
    ("loce.queue_size=80", "unknown key 'loce.queue_size'"),
    ("train.trainable=[' ']", "train.trainable[0] must be a module name"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)


@pytest.mark.parametrize("name", sorted(STAGE2))
def test_stage2_configs_follow_their_stage1_run(name):
    assert name in bundled_configs()
    cfg = load_config(name)
    stage1 = load_config(STAGE2[name])
    # initialised from the last epoch of the stage-1 run, with the same model and data
    last = f"{stage1.train.output_dir}/checkpoints/epoch_{stage1.solver.epochs}.pth"
    assert cfg.train.init_from == last
    assert config_to_dict(cfg)["model"] == config_to_dict(stage1)["model"]
    assert config_to_dict(cfg)["data"] == config_to_dict(stage1)["data"]
    assert cfg.train.trainable == TRAINABLE
    assert cfg.train.output_dir == f"runs/{name}"
    assert cfg.loce.enabled == name.startswith("loce_")
    if "lvis" in name:
        assert (cfg.solver.epochs, cfg.solver.steps, cfg.solver.lr) == (6, [3, 5], 0.02)
        assert cfg.solver.warmup_iters == 500
        assert cfg.loce.memory_dtype == "float16" and cfg.loce.images_per_class == 5


def test_control_differs_from_loce_only_by_the_method():
    loce = config_to_dict(load_config("loce_mask_rcnn_r18_fpn_normed_mask_synthetic"))
    ce = config_to_dict(load_config("finetune_ce_mask_rcnn_r18_fpn_normed_mask_synthetic"))
    for d in (loce, ce):
        d.pop("name")
        d["train"].pop("output_dir")
        d.pop("loce")
    assert loce == ce
