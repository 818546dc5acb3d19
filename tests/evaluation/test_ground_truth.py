"""LVIS evaluation fields for COCO-format files: the training groups and exhaustive negatives."""

from __future__ import annotations

import pytest

from loce.errors import DataError
from loce.evaluation.ground_truth import needs_evaluation_fields, with_evaluation_fields
from loce.evaluation.lvis_eval import evaluate_lvis


def _val():
    return {
        "images": [{"id": 1, "width": 50, "height": 50, "file_name": "a.jpg"},
                   {"id": 2, "width": 50, "height": 50, "file_name": "b.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 9, "bbox": [5, 5, 10, 10], "area": 100,
             "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 4, "bbox": [30, 30, 15, 15], "area": 225,
             "iscrowd": 1},
        ],
        "categories": [{"id": 9, "name": "b"}, {"id": 4, "name": "a"}],
    }


def test_groups_from_training_and_every_absent_category_negative():
    val = _val()
    assert needs_evaluation_fields(val)
    out = with_evaluation_fields(val, {4: "r", 9: "f"}, "val.json")
    assert not needs_evaluation_fields(out)
    assert [c["frequency"] for c in out["categories"]] == ["f", "r"]
    # image 1 holds 9 and (a crowd region of) 4: nothing negative; image 2 holds nothing
    assert [im["neg_category_ids"] for im in out["images"]] == [[], [4, 9]]
    assert [im["not_exhaustive_category_ids"] for im in out["images"]] == [[], []]
    assert "frequency" not in val["categories"][0]  # the input is left as it was


def test_crowd_regions_ignore_detections_and_negatives_count_false_positives():
    gt = with_evaluation_fields(_val(), {4: "r", 9: "f"}, "val.json")
    hit = {"image_id": 1, "category_id": 9, "bbox": [5, 5, 10, 10], "score": 0.9}
    on_crowd = {"image_id": 1, "category_id": 4, "bbox": [30, 30, 15, 15], "score": 0.95}
    assert evaluate_lvis(gt, [hit, on_crowd], iou_type="bbox")["AP"] == pytest.approx(1.0)
    # a higher-scored detection of 9 in image 2 (9 is a verified negative there): precision
    # 1/2 at the only recall point for class 9, so AP (class 4 has no ground truth) is 0.5
    wrong = {"image_id": 2, "category_id": 9, "bbox": [5, 5, 10, 10], "score": 0.99}
    m = evaluate_lvis(gt, [hit, wrong], iou_type="bbox")
    assert m["AP"] == pytest.approx(0.5) and m["APf"] == pytest.approx(0.5) and m["APr"] == -1


def test_a_category_the_training_split_lacks_is_named():
    with pytest.raises(DataError, match=r"val\.json: categories\[1\] \(id 4\) is not a category "
                       "of the training annotations"):
        with_evaluation_fields(_val(), {9: "f"}, "val.json")
