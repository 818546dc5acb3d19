"""Tests of the synthetic long-tailed dataset (loce.data.synthetic, `loce synth`)."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from loce.data import synthetic as synth
from loce.data.synthetic import (
    PRESETS,
    class_frequency_summary,
    format_summary,
    frequency_thresholds,
    generate,
    mask_to_polygons,
    plan_dataset,
    render_image,
)
from loce.errors import LoceError

# pycocotools' decode warns about numpy 2's copy keyword; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

TINY = PRESETS["tiny"]
DEFAULT = PRESETS["default"]


def _decode(polygons: list[list[float]], h: int, w: int) -> np.ndarray:
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))).astype(bool)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "tiny"
    generate(out, TINY, workers=1)
    return out


@pytest.fixture(scope="module")
def tiny_json(tiny_dir: Path) -> dict[str, dict]:
    return {
        split: json.loads((tiny_dir / "annotations" / f"{split}.json").read_text())
        for split in ("train", "val")
    }


@pytest.fixture(scope="module")
def default_plan() -> synth.DatasetPlan:
    return plan_dataset(DEFAULT)


# ------------------------------------------------------------------------------------------
# Plan: long tail, groups, families, val balance (no rendering)
# ------------------------------------------------------------------------------------------


def test_thresholds_scale_lvis_rule_in_log_space():
    # LVIS: head class ~10^4 images <-> thresholds at 10^1 (r) and 10^2 (c) would need
    # exponents 1/4 and 1/2; we use 0.28 / 0.66 (LVIS v1's group shares on a log-linear curve).
    assert frequency_thresholds(10_000) == (round(10_000**0.28), round(10_000**0.66))
    assert frequency_thresholds(569.0) == (6, 66)
    assert frequency_thresholds(13.4) == (2, 6)
    assert frequency_thresholds(1.0) == (1, 2)  # common_max always above rare_max


def test_default_plan_is_long_tailed(default_plan):
    cats = default_plan.categories
    counts = np.array(sorted((c.planned_train_images for c in cats), reverse=True))
    assert len(cats) == DEFAULT.num_classes
    assert counts[0] >= 300  # hundreds of images for the head class
    assert 1 <= counts[-1] <= 3  # a handful for the tail
    assert np.all(np.diff(counts) <= 0)
    # log-count falls linearly with rank: equal ratios between consecutive ranks (up to rounding)
    ratios = counts[:20][:-1] / counts[:20][1:]
    assert ratios.max() / ratios.min() < 1.1
    # the plan really puts each class in that many distinct training images
    seen = Counter(c for ip in default_plan.train for c in set(ip.category_ids))
    assert all(seen[c.id] == c.planned_train_images for c in cats)
    assert all(len(ip.category_ids) >= 1 for ip in default_plan.train)


def test_default_plan_groups(default_plan):
    cats = default_plan.categories
    rare_max, common_max = default_plan.rare_max, default_plan.common_max
    assert (rare_max, common_max) == frequency_thresholds(default_plan.head_images)
    for c in cats:
        expected = (
            "r"
            if c.planned_train_images <= rare_max
            else "c"
            if c.planned_train_images <= common_max
            else "f"
        )
        assert c.frequency == expected, c
    groups = Counter(c.frequency for c in cats)
    assert groups["r"] >= len(cats) / 4
    assert groups["c"] > 0 and groups["f"] > 0


@pytest.mark.parametrize("config", [TINY, DEFAULT], ids=["tiny", "default"])
def test_every_family_spans_head_common_and_rare(config):
    cats = plan_dataset(config).categories
    families: dict[int, list] = {}
    for c in cats:
        families.setdefault(c.family, []).append(c)
    assert len(families) == config.num_classes // config.family_size
    for members in families.values():
        assert len({c.shape for c in members}) == 1
        assert {c.frequency for c in members} == {"r", "c", "f"}
        # siblings share the shape and differ in appearance
        assert len({(c.colour, c.pattern) for c in members}) == len(members)
        for c in members:
            if c.frequency == "r":
                assert any(s.frequency == "f" for s in members if s.id != c.id)
            # each class shares its colour or its pattern with a sibling
            assert any(s.colour == c.colour or s.pattern == c.pattern for s in members if s != c)


def test_category_names_do_not_depend_on_seed_but_ranks_do():
    a = plan_dataset(DEFAULT).categories
    b = plan_dataset(dataclasses.replace(DEFAULT, seed=1)).categories
    assert [c.name for c in a] == [c.name for c in b]
    assert [c.rank for c in a] != [c.rank for c in b]
    assert len({c.name for c in a}) == len(a)


def test_val_is_class_balanced(default_plan):
    images = Counter(c for ip in default_plan.val for c in set(ip.category_ids))
    instances = Counter(c for ip in default_plan.val for c in ip.category_ids)
    assert len(images) == DEFAULT.num_classes
    assert max(images.values()) - min(images.values()) <= 1
    assert min(images.values()) >= 25
    assert min(instances.values()) >= 25


def test_plan_is_deterministic_and_seeded():
    assert plan_dataset(TINY) == plan_dataset(TINY)
    assert plan_dataset(TINY).train != plan_dataset(dataclasses.replace(TINY, seed=3)).train


def test_tiny_plan_has_all_groups():
    groups = Counter(c.frequency for c in plan_dataset(TINY).categories)
    assert set(groups) == {"r", "c", "f"}
    assert groups["r"] >= TINY.num_classes / 4


def test_neg_ids_are_absent_categories(default_plan):
    k = DEFAULT.num_classes
    for ip in default_plan.val[:100]:
        present = set(ip.category_ids)
        assert not present & set(ip.neg_category_ids)
        assert list(ip.neg_category_ids) == sorted(set(ip.neg_category_ids))
        assert len(ip.neg_category_ids) == round(DEFAULT.neg_fraction * (k - len(present)))


def test_uneven_num_classes_spreads_remainder():
    config = dataclasses.replace(DEFAULT, num_classes=14, train_images=400, val_images=60)
    cats = plan_dataset(config).categories
    sizes = sorted(Counter(c.family for c in cats).values())
    assert sizes == [4, 5, 5]


# ------------------------------------------------------------------------------------------
# Polygons
# ------------------------------------------------------------------------------------------


def test_mask_to_polygons_square_hand_computed():
    mask = np.zeros((5, 6), dtype=bool)
    mask[1:3, 2:5] = True  # rows 1-2, cols 2-4: pixels cover x in [2, 5), y in [1, 3)
    polys = mask_to_polygons(mask)
    assert len(polys) == 1
    pts = set(zip(polys[0][0::2], polys[0][1::2]))
    # find_contours cuts the corner pixels diagonally through the border midpoints
    assert pts == {(2.0, 1.5), (2.5, 1.0), (4.5, 1.0), (5.0, 1.5), (5.0, 2.5), (4.5, 3.0),
                   (2.5, 3.0), (2.0, 2.5)}  # fmt: skip
    assert np.array_equal(_decode(polys, 5, 6), mask)


def test_mask_to_polygons_holes_islands_and_parts():
    mask = np.zeros((40, 50), dtype=bool)
    mask[2:30, 2:30] = True
    mask[8:22, 8:22] = False  # hole
    mask[12:17, 12:17] = True  # island inside the hole
    mask[5:7, 40:48] = True  # separate part
    mask[33, 33] = True  # single pixel
    polys = mask_to_polygons(mask)
    assert len(polys) == 4  # one polygon per 4-connected part (holes are bridged in)
    assert all(len(p) >= 6 and len(p) % 2 == 0 for p in polys)
    assert np.array_equal(_decode(polys, 40, 50), mask)
    assert mask_to_polygons(np.zeros((4, 4), dtype=bool)) == []


def test_mask_to_polygons_random_masks_exact():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:60, :70]
    for _ in range(30):
        mask = np.zeros((60, 70), dtype=bool)
        for _ in range(3):
            cx, cy, r = rng.uniform(0, 70), rng.uniform(0, 60), rng.uniform(2, 20)
            mask |= (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        for _ in range(3):
            cx, cy, r = rng.uniform(0, 70), rng.uniform(0, 60), rng.uniform(1, 10)
            mask &= ~((xx - cx) ** 2 + (yy - cy) ** 2 < r * r)
        mask ^= rng.random(mask.shape) < 0.01
        assert np.array_equal(_decode(mask_to_polygons(mask), 60, 70), mask)


# ------------------------------------------------------------------------------------------
# Generated files
# ------------------------------------------------------------------------------------------


def test_lvis_v1_schema(tiny_dir, tiny_json):
    k = TINY.num_classes
    ann_ids, image_ids = set(), set()
    for split, data in tiny_json.items():
        assert set(data) >= {"info", "licenses", "images", "annotations", "categories"}
        assert [c["id"] for c in data["categories"]] == list(range(1, k + 1))
        for cat in data["categories"]:
            assert set(cat) >= {"id", "name", "synonyms", "def", "frequency", "image_count",
                                "instance_count"}  # fmt: skip
            assert cat["frequency"] in ("r", "c", "f")
        sizes = {}
        for im in data["images"]:
            assert set(im) >= {"id", "width", "height", "coco_url", "neg_category_ids",
                               "not_exhaustive_category_ids"}  # fmt: skip
            assert "file_name" not in im  # LVIS v1 names images by coco_url only
            assert im["id"] not in image_ids
            image_ids.add(im["id"])
            # images root = dataset dir; the URL's last two components resolve under it
            rel = "/".join(im["coco_url"].rsplit("/", 2)[-2:])
            assert rel.startswith(f"{split}/")
            with Image.open(tiny_dir / rel) as img:
                assert img.size == (im["width"], im["height"]) == (TINY.image_size,) * 2
                assert img.format == "JPEG" and img.mode == "RGB"
            assert im["not_exhaustive_category_ids"] == []
            sizes[im["id"]] = (im["height"], im["width"])
        positives: dict[int, set[int]] = {}
        for ann in data["annotations"]:
            assert set(ann) >= {"id", "image_id", "category_id", "bbox", "area", "segmentation"}
            assert ann["id"] not in ann_ids
            ann_ids.add(ann["id"])
            assert 1 <= ann["category_id"] <= k
            h, w = sizes[ann["image_id"]]
            x, y, bw, bh = ann["bbox"]
            assert 0 <= x and 0 <= y and bw > 0 and bh > 0 and x + bw <= w and y + bh <= h
            mask = _decode(ann["segmentation"], h, w)
            assert ann["area"] == pytest.approx(mask.sum(), abs=1e-6)
            ys, xs = np.nonzero(mask)
            assert [x, y, x + bw, y + bh] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            positives.setdefault(ann["image_id"], set()).add(ann["category_id"])
        for im in data["images"]:
            assert not set(im["neg_category_ids"]) & positives.get(im["id"], set())
            assert set(im["neg_category_ids"]) <= set(range(1, k + 1))


def test_category_statistics_are_training_statistics(tiny_dir, tiny_json):
    train, val = tiny_json["train"], tiny_json["val"]
    summary = json.loads((tiny_dir / "summary.json").read_text())
    rare_max = summary["thresholds"]["rare_max_images"]
    common_max = summary["thresholds"]["common_max_images"]
    imgs: dict[int, set] = {}
    inst: Counter = Counter()
    for ann in train["annotations"]:
        imgs.setdefault(ann["category_id"], set()).add(ann["image_id"])
        inst[ann["category_id"]] += 1
    for cat in train["categories"]:
        assert cat["image_count"] == len(imgs.get(cat["id"], ()))
        assert cat["instance_count"] == inst[cat["id"]]
        n = cat["image_count"]
        assert cat["frequency"] == ("r" if n <= rare_max else "c" if n <= common_max else "f")
    assert val["categories"] == train["categories"]  # val carries the training statistics
    # nothing was dropped, so the files follow the plan exactly
    plan = plan_dataset(TINY)
    assert summary["dropped_instances"] == 0
    assert {c["id"]: c["image_count"] for c in train["categories"]} == {
        c.id: c.planned_train_images for c in plan.categories
    }
    assert summary["groups"] == dict(Counter(c["frequency"] for c in train["categories"]))


def test_annotations_match_rendered_masks_and_images(tiny_dir, tiny_json):
    plan = plan_dataset(TINY)
    ious = []
    for split in ("train", "val"):
        anns_by_image: dict[int, list] = {}
        for ann in tiny_json[split]["annotations"]:
            anns_by_image.setdefault(ann["image_id"], []).append(ann)
        for ip in plan.split(split)[:8]:
            rendered = render_image(ip, plan.categories, TINY)
            anns = anns_by_image.get(ip.image_id, [])
            assert [a["category_id"] for a in anns] == rendered.category_ids
            assert sorted(rendered.category_ids) == sorted(ip.category_ids)
            for ann, visible in zip(anns, rendered.visible_masks):
                decoded = _decode(ann["segmentation"], TINY.image_size, TINY.image_size)
                ious.append(_iou(decoded, visible))
            # the JPEG on disk is this render (up to JPEG loss)
            with Image.open(tiny_dir / ip.relative_path) as img:
                disk = np.asarray(img, dtype=np.float32)
            assert np.abs(disk - rendered.image.astype(np.float32)).mean() < 8.0
    assert len(ious) > 20
    assert min(ious) >= 0.9


def test_occlusion_keeps_min_visible_fraction():
    plan = plan_dataset(TINY)
    occluded = 0
    for ip in plan.train:
        rendered = render_image(ip, plan.categories, TINY)
        masks, full = rendered.visible_masks, rendered.full_areas
        for i in range(len(masks)):
            visible = int(masks[i].sum())
            assert visible >= 40 and visible >= TINY.min_visible * full[i]
            for j in range(i + 1, len(masks)):
                assert not (masks[i] & masks[j]).any()  # visible silhouettes are disjoint
            # hidden in part by an object drawn above it (z-order is bottom to top)
            if visible < 0.95 * full[i] and any(_touching(masks[i], m) for m in masks[i + 1 :]):
                occluded += 1
    assert occluded >= 3


def _touching(a: np.ndarray, b: np.ndarray) -> bool:
    grown = a.copy()
    grown[1:] |= a[:-1]
    grown[:-1] |= a[1:]
    grown[:, 1:] |= a[:, :-1]
    grown[:, :-1] |= a[:, 1:]
    return bool((grown & b).any())


def test_generation_is_deterministic_and_independent_of_workers(tmp_path, tiny_dir):
    again = tmp_path / "again"
    generate(again, TINY, workers=2)
    assert _hashes(again) == _hashes(tiny_dir)
    other = tmp_path / "other_seed"
    generate(other, dataclasses.replace(TINY, seed=5), workers=1)
    assert (other / "annotations" / "train.json").read_bytes() != (
        tiny_dir / "annotations" / "train.json"
    ).read_bytes()


def test_reference_lvis_api_reads_files_and_scores_ground_truth_perfectly(tiny_dir, tiny_json):
    lvis = pytest.importorskip("lvis")
    if not hasattr(np, "float"):
        np.float = float  # noqa: NPY001 - lvis 0.5.3 uses the alias removed in numpy 2

    gt = str(tiny_dir / "annotations" / "val.json")
    results = []
    for ann in tiny_json["val"]["annotations"]:
        rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], 128, 128))
        rle["counts"] = rle["counts"].decode()
        results.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                        "bbox": ann["bbox"], "segmentation": rle, "score": 1.0})  # fmt: skip
    for iou_type in ("bbox", "segm"):
        ev = lvis.LVISEval(lvis.LVIS(gt), lvis.LVISResults(lvis.LVIS(gt), results), iou_type)
        ev.run()
        metrics = ev.get_results()
        for key in ("AP", "APr", "APc", "APf"):
            assert metrics[key] == pytest.approx(1.0), (iou_type, key)


def test_summary_function_and_table(tiny_json):
    summary = class_frequency_summary(tiny_json["train"], tiny_json["val"], 2, 6)
    counts = [c["train_images"] for c in summary["classes"]]
    assert counts == sorted(counts, reverse=True)
    assert sum(summary["groups"].values()) == TINY.num_classes
    assert summary["splits"]["train"]["images"] == TINY.train_images
    assert summary["splits"]["val"]["annotations"] == len(tiny_json["val"]["annotations"])
    table = format_summary(summary)
    assert "r 1-2 training images" in table and "f > 6 training images" in table
    assert len(table.splitlines()) == TINY.num_classes + 3
    only_train = class_frequency_summary(tiny_json["train"], None, 2, 6)
    assert "val" not in only_train["splits"]
    assert all(c["val_images"] == 0 for c in only_train["classes"])


# ------------------------------------------------------------------------------------------
# Errors and command line
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, field",
    [
        ({"num_classes": 3}, "num_classes"),
        ({"family_size": 2, "num_classes": 8}, "family_size"),
        ({"num_classes": 1000}, "num_classes"),
        ({"train_images": -1}, "train_images"),
        ({"val_images": 0}, "val_images"),
        ({"image_size": 32}, "image_size"),
        ({"seed": -1}, "seed"),
        ({"neg_fraction": 1.5}, "neg_fraction"),
    ],
)
def test_bad_settings_name_the_field(change, field):
    with pytest.raises(LoceError, match=field):
        plan_dataset(dataclasses.replace(TINY, **change))


def test_too_few_images_for_the_families():
    config = dataclasses.replace(TINY, num_classes=40, train_images=12, val_images=40)
    with pytest.raises(LoceError, match="--train-images"):
        plan_dataset(config)


def test_refuses_non_empty_directory_unless_overwrite(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(LoceError, match="not empty.*--overwrite"):
        generate(out, TINY)
    small = dataclasses.replace(TINY, train_images=20, val_images=10)
    generate(out, small, overwrite=True)
    generate(out, dataclasses.replace(small, train_images=16), overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me"  # only our outputs are replaced
    assert len(list((out / "train").glob("*.jpg"))) == 16  # no stale images left
    assert not list(out.rglob(".*.tmp"))
    with pytest.raises(LoceError, match="workers"):
        generate(tmp_path / "w", TINY, workers=0)


def test_command_module(tmp_path, capsys):
    from loce.commands import synth as cmd

    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    out = tmp_path / "cli"
    args = parser.parse_args(
        [
            "--out",
            str(out),
            "--preset",
            "tiny",
            "--num-classes",
            "9",
            "--train-images",
            "20",
            "--seed",
            "2",
        ]  # fmt: skip
    )
    assert set(cmd.PRESET_NAMES) == set(PRESETS)
    assert cmd.run(args) == 0
    printed = capsys.readouterr().out
    assert "groups: r=" in printed and "thresholds:" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["num_classes"] == 9 and summary["config"]["seed"] == 2
    assert len(summary["classes"]) == 9
    assert math.isclose(sum(summary["groups"].values()), 9)


def test_loce_cli_synth(tmp_path, capsys):
    cli = pytest.importorskip("loce.cli")
    for module in cli.COMMANDS.values():  # the dispatcher imports every command module
        pytest.importorskip(module)
    out = tmp_path / "cli"
    assert cli.main(["synth", "--out", str(out), "--preset", "tiny", "--quiet"]) == 0
    assert (out / "annotations" / "val.json").is_file()
    assert cli.main(["synth", "--out", str(out), "--preset", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "loce synth: error:" in err and str(out) in err and "--overwrite" in err
