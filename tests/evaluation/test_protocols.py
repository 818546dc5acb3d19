"""AP-fixed for masks and AP-pooled: hand-computed cases and the reference lvis-api."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from lvis_eval_data import reference_lvis, reference_pooled, reference_top_k_per_class

from loce.evaluation import evaluate_lvis, evaluate_lvis_multi, format_metrics_table

TOL = 1e-9
SIDE = 1000


def square_rle(x: int, y: int, side: int) -> dict[str, Any]:
    """Compressed RLE (counts as str) of a filled square in a SIDE x SIDE image."""
    mask = np.zeros((SIDE, SIDE), dtype=np.uint8, order="F")
    mask[y : y + side, x : x + side] = 1
    rle = mask_utils.encode(mask)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def gt_with(categories: list[tuple[int, str]], objects: list[tuple[int, int, int, int]]) -> dict:
    """One SIDE x SIDE image; ``objects`` are ``(category, x, y, side)`` squares."""
    image = {"id": 1, "height": SIDE, "width": SIDE, "neg_category_ids": [],
             "not_exhaustive_category_ids": []}  # fmt: skip
    annotations = [
        {"id": i + 1, "image_id": 1, "category_id": c, "bbox": [x, y, s, s], "area": s * s,
         "segmentation": [[x, y, x + s, y, x + s, y + s, x, y + s]]}
        for i, (c, x, y, s) in enumerate(objects)
    ]  # fmt: skip
    cats = [{"id": c, "name": f"c{c}", "frequency": f} for c, f in categories]
    return {"images": [image], "annotations": annotations, "categories": cats}


def det(cat: int, score: float, box: list[float], rle: dict[str, Any]) -> dict[str, Any]:
    return {"image_id": 1, "category_id": cat, "score": score, "bbox": box, "segmentation": rle}


# --------------------------------------------------------------------------------------
# AP-fixed for masks: the area comes from the mask
# --------------------------------------------------------------------------------------


@pytest.fixture()
def small_object_case(tmp_path):
    """A 20x20 object (small: area 400 < 32^2); a true positive; a false positive whose mask
    is 20x20 but whose box is 100x100 (area 10,000: large); an empty mask with a 50x50 box."""
    gt = gt_with([(1, "r")], [(1, 10, 10, 20)])
    empty = mask_utils.encode(np.zeros((SIDE, SIDE), np.uint8, order="F"))
    empty["counts"] = empty["counts"].decode("ascii")
    dets = [
        det(1, 0.95, [700.0, 700.0, 50.0, 50.0], empty),
        det(1, 0.9, [480.0, 480.0, 100.0, 100.0], square_rle(500, 500, 20)),
        det(1, 0.5, [10.0, 10.0, 20.0, 20.0], square_rle(10, 10, 20)),
    ]
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    res_path = tmp_path / "res.json"
    res_path.write_text(json.dumps(dets))
    return gt_path, res_path, dets


def test_fixed_masks_take_the_mask_area(small_object_case):
    gt_path, res_path, dets = small_object_case
    assert mask_utils.area(dets[0]["segmentation"]) == 0
    for results in (res_path, dets):
        standard = evaluate_lvis(gt_path, results, "segm")
        fixed = evaluate_lvis(gt_path, results, "segm", protocol="fixed", dets_per_class=10)
        # Standard (lvis-api): the box area. The empty mask has a 50x50 box, so it stays and
        # ranks first; the true positive comes third: precision 1/3 at recall 1.
        assert standard["params"]["num_detections"] == 3
        assert standard["AP"] == pytest.approx(1 / 3, abs=TOL)
        # Small objects: both false positives have large/medium boxes and are ignored there.
        assert standard["APs"] == pytest.approx(1.0, abs=TOL)
        # Fixed (the authors' script drops bbox): the empty mask has area 0 and is left out;
        # the false positive's mask is small (400), so it counts among small objects.
        assert fixed["params"]["num_detections"] == 2
        assert fixed["AP"] == pytest.approx(0.5, abs=TOL)
        assert fixed["APs"] == pytest.approx(0.5, abs=TOL)
        # Boxes keep the box area under either protocol.
        box_fixed = evaluate_lvis(gt_path, results, "bbox", protocol="fixed", dets_per_class=10)
        assert box_fixed["params"]["num_detections"] == 3


def test_fixed_masks_match_reference_without_boxes(synthetic, tmp_path):
    k = 60
    capped = reference_top_k_per_class(synthetic["dets"], k)
    without_boxes = [{key: v for key, v in d.items() if key != "bbox"} for d in capped]
    ref = reference_lvis(synthetic["gt_path"], without_boxes, "segm", tmp_path, max_dets=-1)
    both = evaluate_lvis_multi(synthetic["gt_path"], synthetic["res_path"], ("bbox", "segm"),
                               protocol="fixed", dets_per_class=k)  # fmt: skip
    ours = both["segm"]
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf", "AR"):
        assert ours[key] == pytest.approx(ref[key], abs=TOL), key
    for cat, ap in ref["per_category"].items():
        assert ours["per_category"][cat] == pytest.approx(ap, abs=TOL), cat
    # Negative control: with box areas (the standard rule) small/medium/large differ.
    with_boxes = reference_lvis(synthetic["gt_path"], capped, "segm", tmp_path, max_dets=-1)
    assert max(abs(with_boxes[k] - ref[k]) for k in ("APs", "APm", "APl")) > 1e-3


# --------------------------------------------------------------------------------------
# AP-pooled
# --------------------------------------------------------------------------------------


def test_pooled_hand_computed():
    # Category 1 (rare): its object found at score 0.9. Category 2 (frequent): a false
    # positive at 0.8, then its object at 0.7. Per category: AP 1 and 0.5 (mean 0.75).
    gt = gt_with([(1, "r"), (2, "f")], [(1, 10, 10, 100), (2, 300, 300, 100)])
    dets = [
        {"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [10.0, 10.0, 100.0, 100.0]},
        {"image_id": 1, "category_id": 2, "score": 0.8, "bbox": [600.0, 600.0, 100.0, 100.0]},
        {"image_id": 1, "category_id": 2, "score": 0.7, "bbox": [300.0, 300.0, 100.0, 100.0]},
    ]
    standard = evaluate_lvis(gt, dets)
    assert standard["AP"] == pytest.approx(0.75, abs=TOL)
    pooled = evaluate_lvis(gt, dets, protocol="pooled", dets_per_class=3)
    # Pooled over both: recall 1/2 at precision 1, then recall 1 at precision 2/3. The 51
    # recall points 0.00-0.50 get 1, the 50 points 0.51-1.00 get 2/3.
    assert pooled["AP-pooled"] == pytest.approx((51 + 50 * 2 / 3) / 101, abs=TOL)
    assert pooled["AP-pooled-r"] == pytest.approx(1.0, abs=TOL)
    assert pooled["AP-pooled-f"] == pytest.approx(0.5, abs=TOL)
    assert pooled["AP-pooled-c"] == -1.0  # no common category
    assert pooled["params"]["protocol"] == "pooled" and pooled["params"]["max_dets"] is None
    assert "AP-pooled" in format_metrics_table({"bbox": pooled}).splitlines()[0]


def test_pooled_applies_the_per_class_cap():
    gt = gt_with([(1, "r"), (2, "f")], [(1, 10, 10, 100), (2, 300, 300, 100)])
    fps = [{"image_id": 1, "category_id": 2, "score": 0.9 - 0.01 * i,
            "bbox": [600.0, 600.0 - i, 100.0, 100.0]} for i in range(3)]  # fmt: skip
    tp = {"image_id": 1, "category_id": 2, "score": 0.5, "bbox": [300.0, 300.0, 100.0, 100.0]}
    capped = evaluate_lvis(gt, [*fps, tp], protocol="pooled", dets_per_class=3)
    assert capped["AP-pooled-f"] == 0.0 and capped["params"]["num_detections"] == 3
    room = evaluate_lvis(gt, [*fps, tp], protocol="pooled", dets_per_class=4)
    assert room["AP-pooled-f"] == pytest.approx(0.25, abs=TOL)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_pooled_matches_pooling_of_reference_matches(synthetic, tmp_path, iou_type):
    k = 60
    capped = reference_top_k_per_class(synthetic["dets"], k)
    if iou_type == "segm":
        capped = [{key: v for key, v in d.items() if key != "bbox"} for d in capped]
    ref = reference_pooled(synthetic["gt_path"], capped, iou_type, tmp_path)
    ours = evaluate_lvis(synthetic["gt_path"], synthetic["res_path"], iou_type,
                         protocol="pooled", dets_per_class=k)  # fmt: skip
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=TOL), key
    assert 0 < ours["AP-pooled"] < 1


def test_per_class_protocols_warn_when_classes_are_short(synthetic):
    with pytest.warns(UserWarning, match=r"categories have fewer than 10000 detections"):
        evaluate_lvis(synthetic["gt"], synthetic["dets"], protocol="fixed")


def test_pooled_in_image_chunks_equals_one_chunk(synthetic, monkeypatch):
    import loce.evaluation.lvis_eval as lvis_eval

    whole = evaluate_lvis(synthetic["gt"], synthetic["dets"], "bbox", protocol="pooled",
                          dets_per_class=60)  # fmt: skip
    monkeypatch.setattr(lvis_eval, "_POOL_CHUNK_IMAGES", 7)  # 120 images: 18 chunks
    chunked = evaluate_lvis(synthetic["gt"], synthetic["dets"], "bbox", protocol="pooled",
                            dets_per_class=60)  # fmt: skip
    for key in ("AP-pooled", "AP-pooled-r", "AP-pooled-c", "AP-pooled-f"):
        assert chunked[key] == pytest.approx(whole[key], abs=1e-12), key
