"""Bad results and bad ground truth: one clear error naming the file, the index and the key."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from loce.errors import DataError, ResultsError
from loce.evaluation import evaluate_lvis, evaluate_lvis_multi, load_ground_truth
from loce.evaluation.results import file_has_masks, scan_results_file


@pytest.fixture(scope="module")
def good(synthetic) -> list[dict[str, Any]]:
    """The first 40 synthetic detections (boxes and masks)."""
    return copy.deepcopy(synthetic["dets"][:40])


def expect_error(
    synthetic, tmp_path: Path, results: Any, needles: list[str], iou_types=("bbox",),
    file_too: bool = True,
) -> None:  # fmt: skip
    """The list and the file route both raise one ResultsError containing every needle."""
    routes = [("results", results)]
    if file_too:
        path = tmp_path / "bad_results.json"
        path.write_text(json.dumps(results))  # NaN/inf become NaN/Infinity tokens
        routes.append((str(path), path))
    for source, res in routes:
        with pytest.raises(ResultsError) as info:
            evaluate_lvis_multi(synthetic["gt_path"], res, iou_types)
        message = str(info.value)
        assert message.startswith(f"{source}: "), message
        assert "\n" not in message
        for needle in needles:
            assert needle in message, (needle, message)


def mutate(good: list[dict[str, Any]], index: int, **changes: Any) -> list[dict[str, Any]]:
    dets = copy.deepcopy(good)
    for key, value in changes.items():
        if value is DROP:
            del dets[index][key]
        else:
            dets[index][key] = value
    return dets


DROP = object()


def test_empty_list(synthetic, tmp_path):
    expect_error(synthetic, tmp_path, [], ["empty"])


def test_not_a_list(synthetic, tmp_path, good):
    expect_error(synthetic, tmp_path, {"annotations": good}, ["expected a JSON list", "dict"])


def test_item_not_a_dict(synthetic, tmp_path, good):
    dets = copy.deepcopy(good)
    dets[3] = [1, 2, 3]
    expect_error(synthetic, tmp_path, dets, ["detection 3", "not a dict"])


@pytest.mark.parametrize("key", ["image_id", "category_id", "score", "bbox"])
def test_missing_key(synthetic, tmp_path, good, key):
    expect_error(synthetic, tmp_path, mutate(good, 6, **{key: DROP}), ["detection 6", f"'{key}'"])


def test_unknown_image_id_names_one_and_counts(synthetic, tmp_path, good):
    dets = mutate(good, 8, image_id=999_999)
    dets[20]["image_id"] = 999_998
    expect_error(synthetic, tmp_path, dets, ["detection 8", "image_id 999999", "2 detection(s)"])


def test_unknown_category_id(synthetic, tmp_path, good):
    dets = mutate(good, 9, category_id=4)  # category ids are 3k + 2
    expect_error(synthetic, tmp_path, dets, ["detection 9", "category_id 4", "1 detection(s)"])


@pytest.mark.parametrize(
    ("changes", "needles"),
    [
        ({"score": math.nan}, ["detection 10", "'score'", "nan"]),
        ({"score": "0.5"}, ["detection 10", "'score'", "'0.5'"]),
        ({"bbox": [1.0, 2.0, math.inf, 4.0]}, ["detection 10", "'bbox'", "inf"]),
        ({"bbox": [1.0, 2.0, -3.0, 4.0]}, ["detection 10", "'bbox'", "negative"]),
        ({"bbox": [1.0, 2.0, 3.0, -4.0]}, ["detection 10", "'bbox'", "negative"]),
        # Both negative: the area w * h is positive, so only the sign check catches it.
        ({"bbox": [1.0, 2.0, -3.0, -4.0]}, ["detection 10", "'bbox'", "negative"]),
        ({"bbox": [1.0, 2.0, 3.0]}, ["detection 10", "'bbox'", "four numbers"]),
        ({"image_id": 1000.5}, ["detection 10", "'image_id'", "integer"]),
        ({"category_id": None}, ["detection 10", "'category_id'", "integer"]),
    ],
)
def test_bad_values(synthetic, tmp_path, good, changes, needles):
    expect_error(synthetic, tmp_path, mutate(good, 10, **changes), needles)


def test_polygon_mask_is_refused_with_the_fix(synthetic, tmp_path, good):
    dets = mutate(good, 16, segmentation=[[1, 1, 20, 1, 20, 20]])
    expect_error(synthetic, tmp_path, dets, ["detection 16", "polygon", "pycocotools.mask.encode"],
                 ("segm",))  # fmt: skip


def test_uncompressed_rle_is_refused(synthetic, tmp_path, good):
    size = good[5]["segmentation"]["size"]
    dets = mutate(good, 5, segmentation={"size": size, "counts": [0, 10, 5]})
    expect_error(synthetic, tmp_path, dets, ["detection 5", "uncompressed", "frPyObjects"], ("segm",))


def test_segm_without_masks(synthetic, tmp_path, good):
    dets = mutate(good, 17, segmentation=DROP)
    expect_error(synthetic, tmp_path, dets, ["detection 17", "'segmentation'"], ("bbox", "segm"))


def test_mask_of_the_wrong_size(synthetic, tmp_path, good):
    seg = dict(good[2]["segmentation"])
    seg["size"] = [seg["size"][0] // 2, seg["size"][1]]
    expect_error(synthetic, tmp_path, mutate(good, 2, segmentation=seg),
                 ["detection 2", f"size {seg['size']}", "original size"], ("segm",))  # fmt: skip


def test_mask_results_with_boxes_on_some_only(synthetic, tmp_path, good):
    dets = mutate(good, 0, bbox=DROP)
    expect_error(synthetic, tmp_path, dets, ["detection 1", "'bbox'", "detection 0"], ("segm",))
    dets = mutate(good, 3, bbox=DROP)
    expect_error(synthetic, tmp_path, dets, ["detection 3", "'bbox'"], ("segm",))


def test_missing_and_malformed_files(synthetic, tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ResultsError, match=f"{missing}: results file not found"):
        evaluate_lvis(synthetic["gt_path"], missing)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"image_id": 1,')
    with pytest.raises(ResultsError, match=f"{broken}: not valid JSON"):
        evaluate_lvis(synthetic["gt_path"], broken)


def test_zero_size_boxes_are_legal(synthetic, good):
    dets = mutate(good, 1, bbox=[5.0, 5.0, 0.0, 10.0])
    result = evaluate_lvis(synthetic["gt_path"], dets)
    assert result["params"]["num_detections"] == len(dets) - 1


# --------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, payload: Any) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(payload))
    return path


def test_gt_missing_file(tmp_path, good):
    with pytest.raises(DataError, match="nope.json: annotation file not found"):
        evaluate_lvis(tmp_path / "nope.json", good)


def test_gt_not_json(tmp_path, good):
    path = tmp_path / "gt.json"
    path.write_text("{not json")
    with pytest.raises(DataError, match=f"{path}: "):
        evaluate_lvis(path, good)


def test_coco_file_without_federated_lists(synthetic, tmp_path, good):
    gt = copy.deepcopy(synthetic["gt"])
    del gt["images"][4]["not_exhaustive_category_ids"]
    with pytest.raises(DataError, match=r"ground truth: images\[4\] has no 'not_exhaustive_"):
        evaluate_lvis(gt, good)
    path = write(tmp_path, "coco.json", gt)
    with pytest.raises(DataError, match=rf"{path}: images\[4\] has no 'not_exhaustive_"):
        evaluate_lvis(path, good)


def test_category_without_frequency(synthetic, tmp_path, good):
    gt = copy.deepcopy(synthetic["gt"])
    gt["categories"][2]["frequency"] = "rare"
    path = write(tmp_path, "gt.json", gt)
    for source in (gt, path):
        with pytest.raises(DataError, match=r"category 8 \(categories\[2\]\) has frequency 'rare'"):
            evaluate_lvis(source, good)


def test_gt_without_images(synthetic, good):
    gt = {**synthetic["gt"], "images": []}
    with pytest.raises(DataError, match="'images' is missing or empty"):
        evaluate_lvis(gt, good)


def test_zero_area_annotations_are_counted_as_dropped(synthetic):
    gt = copy.deepcopy(synthetic["gt"])
    for ann in gt["annotations"][:3]:
        ann["area"] = 0.0
    assert load_ground_truth(gt).dropped_annotations == 3
    assert load_ground_truth(synthetic["gt"]).dropped_annotations == 0


# --------------------------------------------------------------------------------------
# The byte-level screen of results files
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("box_text", "negative"),
    [
        ("[1, 2, 3, 4]", False),
        ("[-1, -2, 3, 4]", False),  # negative x, y are legal
        ("[1.5e-05, 2, 1e-05, 4E-3]", False),
        ("[1, 2, -3, 4]", True),
        ("[1, 2, 3, -4]", True),
        ("[ 1 ,\n 2 ,\n  -0.0 , 4 ]", True),
        ("[1,2,3,-1e-05]", True),
    ],
)
def test_scan_negative_sizes(tmp_path, box_text, negative):
    path = tmp_path / "r.json"
    path.write_text(f'[{{"image_id": 1, "score": 0.5, "bbox": {box_text}, "category_id": 2}}]')
    scan = scan_results_file(path)
    assert scan.negative_size is negative
    assert (scan.bbox_keys, scan.score_keys, scan.is_list) == (1, 1, True)
    assert not file_has_masks(path)


def test_scan_counts_across_chunks(tmp_path, monkeypatch):
    import loce.evaluation.results as results_module

    monkeypatch.setattr(results_module, "_CHUNK", 37)  # keys and boxes straddle chunk ends
    dets = [{"image_id": i, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.1,
             "segmentation": {"size": [2, 2], "counts": "04"}} for i in range(50)]  # fmt: skip
    dets[31]["bbox"][3] = -2
    path = tmp_path / "r.json"
    path.write_text(json.dumps(dets))
    scan = scan_results_file(path)
    assert (scan.bbox_keys, scan.score_keys) == (50, 50)
    assert scan.negative_size and scan.is_list
    assert file_has_masks(path)
    dets[31]["bbox"][3] = 2
    path.write_text(json.dumps(dets, indent=3))
    assert not scan_results_file(path).negative_size


# --------------------------------------------------------------------------------------
# Booleans, nulls and masks that do not decode; the column reader of results files
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("iou_types", [("bbox",), ("segm",), ("bbox", "segm")])
@pytest.mark.parametrize(
    ("changes", "needles"),
    [
        ({"score": True}, ["detection 12", "'score' = True", "number"]),
        ({"score": None}, ["detection 12", "'score' = None", "number"]),
        ({"image_id": True}, ["detection 12", "'image_id' = True", "integer"]),
        ({"category_id": False}, ["detection 12", "'category_id' = False", "integer"]),
    ],
)
def test_bool_and_null_values_are_refused(synthetic, tmp_path, good, changes, needles, iou_types):
    expect_error(synthetic, tmp_path, mutate(good, 12, **changes), needles, iou_types)


def test_bool_box_coordinate_is_refused(synthetic, tmp_path, good):
    dets = mutate(good, 12, bbox=[1.0, 2.0, True, 4.0])
    expect_error(synthetic, tmp_path, dets, ["detection 12", "'bbox'", "four numbers"])


def _with_counts(good: list[dict[str, Any]], index: int, counts: str) -> list[dict[str, Any]]:
    seg = {"size": good[index]["segmentation"]["size"], "counts": counts}
    return mutate(good, index, segmentation=seg)


@pytest.mark.parametrize("iou_types", [("segm",), ("bbox", "segm")])
@pytest.mark.parametrize(
    ("counts", "reason"),
    [
        ("!!garbage", "below ASCII '0'"),  # characters outside '0'..'o'
        ("0~~", "above ASCII 'o'"),  # the engine's decoder reads '~' as some run
        ("0PPPPP1", "exceed h*w"),  # a run of 2**25 pixels, beyond the image
        ("532LO", "negative count"),  # runs 5, 3, 2, -1, 1: the fourth below zero
        ("0o", "ends inside a run length"),  # 'o' continues a run length that never ends
    ],
)
def test_masks_that_do_not_decode_are_refused(synthetic, tmp_path, good, counts, reason, iou_types):
    dets = _with_counts(good, 14, counts)
    expect_error(synthetic, tmp_path, dets, ["detection 14", "not a compressed RLE", reason],
                 iou_types)  # fmt: skip


def test_counts_text_problem_names_the_first_bad_string():
    from loce.evaluation.results import _counts_text_problem

    assert _counts_text_problem(["0", "52", "", b"61"]) is None
    # 'p' is 64 after the offset: one past the alphabet; strings 1 and 3 are bad.
    assert _counts_text_problem(["0", "5p2", "", "6"]) == (1, "a character below ASCII '0' or above ASCII 'o'")
    # String 0 ends with 'P' (0x20 set: a run length continues), string 2 with '~' (bad).
    assert _counts_text_problem(["0P", "1", "0~"])[0] == 0
    assert _counts_text_problem(["01", "é1"])[0] == 1  # not ASCII at all
    assert _counts_text_problem(["01", "0o"]) == (1, "the string ends inside a run length")


def test_mask_size_is_checked_before_decoding(synthetic, tmp_path, good):
    # Detection 20 does not decode, detection 25 has the wrong size: the size comes first,
    # on both routes, as it does for a file the column reader reads.
    dets = _with_counts(good, 20, "!!")
    seg = dict(dets[25]["segmentation"])
    seg["size"] = [seg["size"][0] + 1, seg["size"][1]]
    dets[25]["segmentation"] = seg
    expect_error(synthetic, tmp_path, dets, ["detection 25", "original size"], ("segm",))


def test_fixed_protocol_file_errors(synthetic, tmp_path, good):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_with_counts(good, 7, "!!")))
    with pytest.raises(ResultsError, match=r"detection 7 has a 'segmentation'"):
        evaluate_lvis_multi(synthetic["gt_path"], path, ("segm",), protocol="fixed")


def _columns(path: Path, synthetic, iou_types, block_bytes: int):
    from loce.evaluation.results_file import read_results_columns

    truth = load_ground_truth(synthetic["gt_path"])
    return read_results_columns(
        path, gt_image_ids=truth.image_ids, gt_image_sizes=truth.image_sizes,
        gt_category_ids=truth.category_ids, iou_types=iou_types, block_bytes=block_bytes,
    )  # fmt: skip


def test_column_reader_matches_the_exact_route_across_blocks(synthetic, tmp_path):
    import numpy as np
    import pycocotools.mask as mask_utils

    from loce.evaluation import validate_results

    dets = synthetic["dets"]
    path = tmp_path / "spaced.json"
    path.write_text(json.dumps(dets, indent=1))  # whitespace everywhere, newlines in boxes
    truth = load_ground_truth(synthetic["gt_path"])
    exact = validate_results(dets, gt_image_ids=truth.image_ids, gt_image_sizes=truth.image_sizes,
                             gt_category_ids=truth.category_ids, iou_types=("bbox", "segm"))  # fmt: skip
    for block in (1 << 12, 1 << 16, 1 << 25):  # many blocks, a few, one
        cols = _columns(path, synthetic, ("bbox", "segm"), block)
        assert cols is not None and len(cols) == len(dets)
        for key in ("image_ids", "category_ids", "scores", "boxes", "mask_areas"):
            assert np.array_equal(getattr(cols, key), getattr(exact, key)), (block, key)
    areas = mask_utils.area([{**d["segmentation"], "counts": d["segmentation"]["counts"].encode()}
                             for d in dets[:50]])  # fmt: skip
    assert np.array_equal(cols.mask_areas[:50], areas)


def test_column_reader_sends_doubtful_files_to_the_exact_route(synthetic, tmp_path, good):
    # A string holding "}, {" may be cut in the middle: the block then does not decode and
    # the reader declines; evaluation still gives the same numbers.
    dets = copy.deepcopy(good)
    for d in dets:
        d["note"] = "a}, {b" * 200
    path = tmp_path / "notes.json"
    path.write_text(json.dumps(dets))
    assert _columns(path, synthetic, ("segm",), 1 << 12) is None
    ours = evaluate_lvis_multi(synthetic["gt_path"], path, ("bbox", "segm"), protocol="fixed")
    plain = evaluate_lvis_multi(synthetic["gt"], good, ("bbox", "segm"), protocol="fixed")
    assert ours["segm"]["AP"] == plain["segm"]["AP"] and ours["bbox"]["AP"] == plain["bbox"]["AP"]


def test_valid_mask_file_never_builds_python_dicts(synthetic, monkeypatch):
    import loce.evaluation.lvis_eval as lvis_eval

    def refuse(path):
        raise AssertionError(f"json.load of {path}")

    monkeypatch.setattr(lvis_eval, "load_results_json", refuse)
    for protocol in ("standard", "fixed", "pooled"):
        out = evaluate_lvis_multi(synthetic["gt_path"], synthetic["res_path"], ("bbox", "segm"),
                                  protocol=protocol, dets_per_class=50)  # fmt: skip
        assert out["segm"]["params"]["num_detections"] > 0


@pytest.mark.parametrize("many", [False, True])
def test_comma_minus_finds_a_negative_number_after_a_comma(monkeypatch, many):
    import loce.evaluation.results as results_module

    if many:  # the regex route
        monkeypatch.setattr(results_module, "_FEW_MINUS", 0)
    find = results_module._comma_minus
    assert not find(b'[{"score": 9e-05, "bbox": [1, 2, 3, 4]}]')
    assert find(b'"bbox": [1, 2, -3, 4]') and find(b'"bbox": [1,\n   -2, 3, 4]')
    assert find(b"-,-") and not find(b"-") and not find(b"") and not find(b"e-5 -1")


def test_a_file_rewritten_between_the_checks_and_the_engine_is_refused(synthetic, tmp_path, good,
                                                                       monkeypatch):  # fmt: skip
    import loce.evaluation.lvis_eval as lvis_eval

    path = tmp_path / "res.json"
    path.write_text(json.dumps(good))
    real = lvis_eval._file_to_engine

    def rewritten(truth, file, keep, *rest):
        file.write_text(json.dumps(good[:-1]))  # one detection fewer than the checks read
        return real(truth, file, keep, *rest)

    monkeypatch.setattr(lvis_eval, "_file_to_engine", rewritten)
    with pytest.raises(ResultsError) as info:
        evaluate_lvis_multi(synthetic["gt_path"], path, ("segm",))
    message = str(info.value)
    assert message.startswith(f"{path}: the engine read 39 detections where the checks read 40")
    assert "\n" not in message
