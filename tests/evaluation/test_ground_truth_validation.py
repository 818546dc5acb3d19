"""`loce eval` runs the data layer's validation on the ground truth: a broken annotation file
is refused (exit 2, naming the entry) instead of moving AP; image file names are not needed."""

from __future__ import annotations

import copy
import json

import pytest

from loce.cli import main


def _perfect(gt):
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 1.0} for a in gt["annotations"]]


def _eval(gt, tmp_path, capsys, results=None):
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results if results is not None else _perfect(gt)))
    code = main(["eval", "--gt", str(gt_path), "--results", str(res_path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _corrupt_first_annotation(gt, **changes):
    gt["annotations"][0].update(changes)


@pytest.mark.parametrize(("corrupt", "expected"), [
    (lambda g: _corrupt_first_annotation(g, bbox=[1.0, 2.0, -5.0, 4.0]),
     "annotations[0] (id 1): 'bbox' has a negative width or height"),
    (lambda g: _corrupt_first_annotation(g, category_id=99999),
     "category_id 99999 is not in 'categories'"),
    (lambda g: _corrupt_first_annotation(g, image_id=99999),
     "image_id 99999 is not in 'images'"),
    (lambda g: _corrupt_first_annotation(g, id=g["annotations"][1]["id"]),
     "have the same id"),
    (lambda g: g["images"][0]["neg_category_ids"].append(99999),
     "'neg_category_ids' lists category id 99999"),
    (lambda g: g["images"][0]["not_exhaustive_category_ids"].append(99999),
     "'not_exhaustive_category_ids' lists category id 99999"),
    (lambda g: g["images"][1].update(id=g["images"][0]["id"]),
     "images[0] and images[1] have the same id"),
    (lambda g: _corrupt_first_annotation(g, segmentation={"size": [g["images"][0]["height"],
                                                                   g["images"][0]["width"]],
                                                          "counts": "garbage!"}),
     "'counts' is not a valid compressed RLE"),
])
def test_broken_ground_truth_is_refused(corrupt, expected, synthetic, tmp_path, capsys):
    gt = copy.deepcopy(synthetic["gt"])
    gt["annotations"].sort(key=lambda a: a["id"])
    first_image = gt["annotations"][0]["image_id"]
    gt["images"].sort(key=lambda im: im["id"] != first_image)  # its image first
    results = _perfect(gt)
    corrupt(gt)
    code, out, err = _eval(gt, tmp_path, capsys, results)
    assert code == 2 and "Traceback" not in err, err
    assert "gt.json: invalid annotation file" in err and expected in err, err
    assert "results" not in err.splitlines()[0]  # blamed on the ground truth


def test_image_file_names_are_not_needed(synthetic, tmp_path, capsys):
    gt = copy.deepcopy(synthetic["gt"])
    for im in gt["images"]:
        im.pop("coco_url", None)
        im.pop("file_name", None)
    code, out, err = _eval(gt, tmp_path, capsys)
    assert code == 0, err
    # negative control for the refusals above: the unbroken file scores perfect detections 100
    assert out.splitlines()[2].split()[:2] == ["bbox", "100.0"]
