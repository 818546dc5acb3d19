"""LVIS evaluation against the reference lvis-api 0.5.3, and the fixed-AP protocol."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lvis_eval_data import (
    FIXTURE,
    fixture_detections,
    reference_lvis,
    reference_top_k_per_class,
)

from loce.evaluation import (
    METRIC_KEYS,
    evaluate_lvis,
    evaluate_lvis_multi,
    format_metrics_table,
    load_ground_truth,
    top_k_per_group,
)

TOL = 1e-9
REFERENCE_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf",
                  "AR", "ARs", "ARm", "ARl", "ARr", "ARc", "ARf")  # fmt: skip


def assert_matches_reference(ours: dict[str, Any], ref: dict[str, Any]) -> None:
    for key in REFERENCE_KEYS:
        assert ours[key] == pytest.approx(ref[key], abs=TOL), key
    assert ours["per_category"].keys() == ref["per_category"].keys()
    for cat, ap in ref["per_category"].items():
        assert ours["per_category"][cat] == pytest.approx(ap, abs=TOL), cat


def test_bbox_matches_reference_and_cap_is_across_categories(synthetic, tmp_path):
    ref = reference_lvis(synthetic["gt_path"], synthetic["dets"], "bbox", tmp_path)
    from_list = evaluate_lvis(synthetic["gt"], synthetic["dets"], "bbox")
    from_file = evaluate_lvis(synthetic["gt_path"], synthetic["res_path"], "bbox")
    assert_matches_reference(from_list, ref)
    assert_matches_reference(from_file, ref)
    # Every group is populated, so the comparison covers r/c/f and all areas.
    assert all(ref[k] > 0 for k in REFERENCE_KEYS)
    # The data has images with more than 300 detections: the cap removed some, and it changes
    # the numbers (a per-category cap of 300 would have removed none).
    per_image = np.bincount([d["image_id"] for d in synthetic["dets"]])
    assert per_image.max() > 300
    assert from_list["params"]["num_detections"] < len(synthetic["dets"])
    uncapped = evaluate_lvis(synthetic["gt"], synthetic["dets"], "bbox", max_dets=None)
    # Zero-area boxes are legal and left out, as lvis-api leaves them out.
    nonempty = [d for d in synthetic["dets"] if d["bbox"][2] * d["bbox"][3] > 0]
    assert len(nonempty) < len(synthetic["dets"])
    assert uncapped["params"]["num_detections"] == len(nonempty)
    assert uncapped["AR"] != pytest.approx(from_list["AR"], abs=1e-6)


@pytest.mark.parametrize("max_dets", [100, -1])
def test_bbox_other_caps_match_reference(synthetic, tmp_path, max_dets):
    ref = reference_lvis(synthetic["gt_path"], synthetic["dets"], "bbox", tmp_path, max_dets)
    ours = evaluate_lvis(synthetic["gt_path"], synthetic["res_path"], "bbox", max_dets=max_dets)
    assert_matches_reference(ours, ref)


def test_segm_matches_reference(synthetic, tmp_path):
    ref = reference_lvis(synthetic["gt_path"], synthetic["dets"], "segm", tmp_path)
    both = evaluate_lvis_multi(synthetic["gt_path"], synthetic["res_path"], ("bbox", "segm"))
    assert_matches_reference(both["segm"], ref)
    assert both["segm"]["AP"] != pytest.approx(both["bbox"]["AP"], abs=1e-6)
    # Masks given with bytes counts (as pycocotools.mask.encode returns them) are the same.
    as_bytes = copy.deepcopy(synthetic["dets"])
    for det in as_bytes:
        det["segmentation"]["counts"] = det["segmentation"]["counts"].encode("ascii")
    assert_matches_reference(evaluate_lvis(synthetic["gt"], as_bytes, "segm"), ref)


def test_segm_without_boxes_matches_reference(synthetic, tmp_path):
    # Without boxes, lvis-api takes the area (small/medium/large) from the mask.
    dets = [{k: v for k, v in d.items() if k != "bbox"} for d in synthetic["dets"]]
    ref = reference_lvis(synthetic["gt_path"], dets, "segm", tmp_path)
    ours = evaluate_lvis(synthetic["gt_path"], dets, "segm")
    assert_matches_reference(ours, ref)


def test_fixed_protocol_matches_reference_on_precapped_results(synthetic, tmp_path):
    # AP_fixed = lvis-api with no per-image cap on each class's top-k detections.
    k = 60
    capped = reference_top_k_per_class(synthetic["dets"], k)
    assert len(capped) < len(synthetic["dets"])
    ref = reference_lvis(synthetic["gt_path"], capped, "bbox", tmp_path, max_dets=-1)
    ours = evaluate_lvis(synthetic["gt_path"], synthetic["res_path"], "bbox",
                         protocol="fixed", dets_per_class=k)  # fmt: skip
    assert_matches_reference(ours, ref)
    nonempty = [d for d in capped if d["bbox"][2] * d["bbox"][3] > 0]
    assert ours["params"]["num_detections"] == len(nonempty)
    assert ours["params"]["max_dets"] is None


def test_real_lvis_fixture_matches_reference(tmp_path):
    gt = json.loads(FIXTURE.read_text())
    dets = fixture_detections(gt)
    res_path = tmp_path / "fixture_results.json"
    res_path.write_text(json.dumps(dets))
    ours = evaluate_lvis_multi(FIXTURE, res_path, ("bbox", "segm"))
    assert len(ours["bbox"]["per_category"]) == 1230
    for iou_type in ("bbox", "segm"):
        ref = reference_lvis(FIXTURE, dets, iou_type, tmp_path)
        assert_matches_reference(ours[iou_type], ref)
        assert 0 < ours[iou_type]["AP"] < 1


# --------------------------------------------------------------------------------------
# The fixed protocol on cases small enough to work out by hand
# --------------------------------------------------------------------------------------


def one_object_gt(num_images: int = 1) -> dict[str, Any]:
    images = [{"id": i + 1, "height": 1000, "width": 1000, "neg_category_ids": [],
               "not_exhaustive_category_ids": []} for i in range(num_images)]  # fmt: skip
    categories = [{"id": 1, "name": "a", "frequency": "r"}, {"id": 2, "name": "b", "frequency": "f"}]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10.0, 10.0, 100.0, 100.0],
                    "area": 10000.0, "segmentation": [[10, 10, 110, 10, 110, 110, 10, 110]]}]  # fmt: skip
    return {"images": images, "annotations": annotations, "categories": categories}


def far_boxes(n: int, score_high: float, score_low: float, cat: int = 1) -> list[dict[str, Any]]:
    """n detections that overlap nothing, scores spread between the two bounds."""
    scores = np.linspace(score_high, score_low, n)
    return [{"image_id": 1, "category_id": cat, "bbox": [500.0 + (i % 400), 500.0, 50.0, 50.0],
             "score": float(s)} for i, s in enumerate(scores)]  # fmt: skip


TRUE_POSITIVE = {"image_id": 1, "category_id": 1, "bbox": [10.0, 10.0, 100.0, 100.0]}


def test_fixed_keeps_10000_per_class_over_the_dataset():
    # 10,000 false positives score above the one true positive: the cap drops it.
    dets = far_boxes(10_000, 0.9, 0.2) + [{**TRUE_POSITIVE, "score": 0.1}]
    fixed = evaluate_lvis(one_object_gt(), dets, protocol="fixed")
    assert fixed["params"]["num_detections"] == 10_000
    assert fixed["AP"] == 0.0
    # With room for one more, the true positive comes last: precision 1/10001 at every recall.
    roomier = evaluate_lvis(one_object_gt(), dets, protocol="fixed", dets_per_class=10_001)
    assert roomier["AP"] == pytest.approx(1 / 10_001, abs=1e-12)
    assert roomier["per_category"] == {1: pytest.approx(1 / 10_001, abs=1e-12), 2: -1.0}
    # Category b has no annotations: its group is undefined, reported as -1.
    assert roomier["APf"] == -1.0 and roomier["APr"] == roomier["AP"]


def test_fixed_has_no_per_image_cap():
    # 400 detections in one image; the true positive is 350th. The LVIS cap of 300 per image
    # drops it; AP_fixed keeps it.
    dets = far_boxes(349, 0.9, 0.5) + [{**TRUE_POSITIVE, "score": 0.45}] + far_boxes(50, 0.4, 0.1)
    standard = evaluate_lvis(one_object_gt(), dets)
    fixed = evaluate_lvis(one_object_gt(), dets, protocol="fixed")
    assert standard["params"]["num_detections"] == 300 and standard["AP"] == 0.0
    assert fixed["params"]["num_detections"] == 400
    assert fixed["AP"] == pytest.approx(1 / 350, abs=1e-12)
    assert fixed["AR"] == 1.0 and standard["AR"] == 0.0


def test_top_k_per_group_hand_computed():
    cats = np.array([1, 2, 1, 1, 2, 1])
    scores = np.array([0.5, 0.9, 0.7, 0.5, 0.1, 0.2])
    # class 1: 0.7 (i=2), then the tie 0.5 (i=0 before i=3), then 0.2 (i=5)
    assert top_k_per_group(cats, scores, 2).tolist() == [True, True, True, False, True, False]
    assert top_k_per_group(cats, scores, 1).tolist() == [False, True, True, False, False, False]
    assert top_k_per_group(cats, scores, 10).all()
    assert top_k_per_group(np.zeros(0, int), np.zeros(0), 3).tolist() == []


# --------------------------------------------------------------------------------------
# Output shape and helpers
# --------------------------------------------------------------------------------------


def test_output_keys_and_table(synthetic):
    truth = load_ground_truth(synthetic["gt_path"])
    result = evaluate_lvis(truth, synthetic["dets"])
    assert list(result)[: len(METRIC_KEYS)] == list(METRIC_KEYS)
    assert set(result["per_category"]) == {c["id"] for c in synthetic["gt"]["categories"]}
    assert result["params"]["num_images"] == len(synthetic["gt"]["images"])
    table = format_metrics_table({"bbox": result, "segm": {**result, "APr": -1.0}})
    lines = table.splitlines()
    assert lines[0].split() == ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"]
    assert lines[1].split()[:2] == ["bbox", f"{100 * result['AP']:.1f}"]
    assert lines[2].split()[7] == "-"


def test_bad_arguments_raise_value_error(synthetic):
    with pytest.raises(ValueError, match="iou_type"):
        evaluate_lvis(synthetic["gt"], synthetic["dets"], "keypoints")
    with pytest.raises(ValueError, match="protocol"):
        evaluate_lvis(synthetic["gt"], synthetic["dets"], protocol="coco")
    with pytest.raises(ValueError, match="max_dets"):
        evaluate_lvis(synthetic["gt"], synthetic["dets"], max_dets=0)


def test_evaluation_does_not_modify_inputs(synthetic):
    gt, dets = copy.deepcopy(synthetic["gt"]), copy.deepcopy(synthetic["dets"])
    evaluate_lvis_multi(gt, dets, ("bbox", "segm"), protocol="fixed", dets_per_class=50)
    assert gt == synthetic["gt"] and dets == synthetic["dets"]


def test_ground_truth_path_and_dict_agree(synthetic):
    a = load_ground_truth(synthetic["gt_path"])
    b = load_ground_truth(synthetic["gt"])
    for field in ("image_ids", "image_sizes", "category_ids", "frequencies"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert a.source == str(Path(synthetic["gt_path"]))


def test_no_cap_matches_reference_with_400_detections_of_one_category(tmp_path):
    # lvis-api has no limit per (image, category); the true positive is 350th of 400.
    gt = one_object_gt()
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    dets = far_boxes(349, 0.9, 0.5) + [{**TRUE_POSITIVE, "score": 0.45}] + far_boxes(50, 0.4, 0.1)
    ref = reference_lvis(gt_path, dets, "bbox", tmp_path, max_dets=-1)
    ours = evaluate_lvis(gt_path, dets, max_dets=-1)
    assert ref["AP"] == pytest.approx(1 / 350, abs=1e-12)
    assert_matches_reference(ours, ref)


def test_zero_area_annotation_is_ignored_like_reference(tmp_path):
    # lvis-api keeps annotations of area > 0 only: a detection on a zero-area annotation is a
    # false positive there, and must be here too.
    gt = one_object_gt()
    gt["annotations"].append({"id": 2, "image_id": 1, "category_id": 1, "area": 0.0,
                              "bbox": [700.0, 700.0, 10.0, 10.0],
                              "segmentation": [[700, 700, 710, 700, 710, 710]]})  # fmt: skip
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    dets = [{**TRUE_POSITIVE, "score": 0.5},
            {"image_id": 1, "category_id": 1, "bbox": [700.0, 700.0, 10.0, 10.0], "score": 0.9}]  # fmt: skip
    ref = reference_lvis(gt_path, dets, "bbox", tmp_path)
    assert ref["AP"] == pytest.approx(0.5, abs=1e-12)
    assert_matches_reference(evaluate_lvis(gt_path, dets), ref)
    assert_matches_reference(evaluate_lvis(gt, dets), ref)


@pytest.mark.parametrize("max_dets", [300, 100, -1])
def test_engine_parsed_file_matches_reference(synthetic, tmp_path, monkeypatch, max_dets):
    # Box results from a file are parsed by the engine, not by Python's json, unless the screen
    # finds a problem; make sure that route is taken and gives lvis-api's numbers.
    dets = copy.deepcopy(synthetic["dets"])
    for det in dets:
        det["bbox"][2] = max(det["bbox"][2], 0.5)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(dets))
    import loce.evaluation.lvis_eval as lvis_eval

    def python_parse_not_expected(path):
        raise AssertionError("the file went through the Python route")

    monkeypatch.setattr(lvis_eval, "load_results_json", python_parse_not_expected)
    ours = evaluate_lvis(synthetic["gt_path"], path, max_dets=max_dets)
    ref = reference_lvis(synthetic["gt_path"], dets, "bbox", tmp_path, max_dets)
    assert_matches_reference(ours, ref)
