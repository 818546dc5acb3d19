"""Frequency groups from training image counts, and the summary of an annotation file."""

from __future__ import annotations

import pytest

from loce.data.lvis.index import LVISIndex
from loce.data.statistics import frequency_of_counts
from loce.data.summary import format_split_summary, summarize_split


def test_lvis_rule_at_its_boundaries():
    # LVIS: rare 1-10 training images, common 11-100, frequent > 100; none counts as rare
    counts = [0, 1, 10, 11, 100, 101, 5000]
    assert frequency_of_counts(counts) == ["r", "r", "r", "c", "c", "f", "f"]
    assert frequency_of_counts(counts, (1, 10)) == ["r", "r", "c", "f", "f", "f", "f"]
    with pytest.raises(ValueError, match="rare_max < common_max"):
        frequency_of_counts(counts, (10, 10))


def _coco(images, anns, cat_ids):
    return {
        "images": [{"id": i, "width": 10, "height": 10, "file_name": f"d/{i}.jpg"}
                   for i in images],
        "annotations": [{"id": k + 1, "image_id": img, "category_id": cat, "bbox": [1, 1, 4, 4],
                         "iscrowd": crowd} for k, (img, cat, crowd) in enumerate(anns)],
        "categories": [{"id": c, "name": f"c{c}"} for c in cat_ids],
    }


def test_hand_counted_split(tmp_path):
    # class 7: images 1, 2, 3 (two instances in image 1) -> 3 images, frequent with (1, 2)
    # class 20: images 2, 4 -> 2 images, common; class 33: image 4 and a crowd box in image 5
    # (crowd does not count) -> 1 image, rare; class 40: only a crowd box -> 0 images, rare.
    # image 6 has no annotation; image 5 only a crowd one.
    anns = [(1, 7, 0), (1, 7, 0), (2, 7, 0), (3, 7, 0), (2, 20, 0), (4, 20, 0), (4, 33, 0),
            (5, 33, 1), (5, 40, 1)]
    index = LVISIndex.from_json(_coco([1, 2, 3, 4, 5, 6], anns, [40, 7, 33, 20]),
                                source="own.json")
    (tmp_path / "d").mkdir()
    for i in (1, 2, 3, 4, 5):
        (tmp_path / "d" / f"{i}.jpg").write_bytes(b"")
    s = summarize_split(index, (1, 2), image_root=tmp_path)
    assert s["ids"] == [7, 20, 33, 40]
    assert s["image_counts"] == [3, 2, 1, 0]
    assert s["groups"] == ["f", "c", "r", "r"]
    assert s["group_sizes"] == {"r": 2, "c": 1, "f": 1}
    assert (s["images"], s["instances"], s["crowd"], s["empty_images"]) == (6, 7, 2, 2)
    assert s["head_to_tail"] == 3.0
    assert s["classes_without_images"] == [40]
    assert s["missing_files"] == ["d/6.jpg"]
    text = format_split_summary(s)
    assert "6 images (2 without annotations), 7 instances, 2 crowd, 4 classes" in text
    assert "1 rare" not in text and "2 rare, 1 common, 1 frequent" in text
    assert "r 1-1, c 2-2, f > 2" in text and "1 classes have no training image (ids 40)" in text
    assert "1 of 6 image files missing (first: d/6.jpg)" in text


def test_file_groups_win_over_counts():
    data = _coco([1], [(1, 3, 0)], [3])
    data["categories"][0]["frequency"] = "f"
    s = summarize_split(LVISIndex.from_json(data))
    assert (s["groups"], s["group_source"]) == (["f"], "file")
