"""Error analysis under LVIS's rules: a case worked out by hand, the baseline against
``evaluate_lvis``, the federated rules and the engine's own TIDE numbers."""

from __future__ import annotations

import copy
from typing import Any

import hotcoco
import pytest
from lvis_eval_data import FIXTURE, fixture_detections, make_detections, make_lvis_gt

from loce.evaluation import evaluate_lvis, load_ground_truth
from loce.evaluation.error_analysis import (
    ERROR_TYPES,
    SPECIAL_TYPES,
    analyze_errors,
    format_analysis,
)

A, B, C, D = 1, 2, 3, 4  # rare, common, frequent, rare without objects


def box(x: float, y: float) -> list[float]:
    return [float(x), float(y), 100.0, 100.0]


def hand_case() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Two 1000 x 1000 images; image 2 lists C as not exhaustive; D is verified nowhere."""
    cats = [{"id": A, "name": "a", "frequency": "r"}, {"id": B, "name": "b", "frequency": "c"},
            {"id": C, "name": "c", "frequency": "f"}, {"id": D, "name": "d", "frequency": "r"}]
    images = [{"id": 1, "height": 1000, "width": 1000, "neg_category_ids": [],
               "not_exhaustive_category_ids": []},
              {"id": 2, "height": 1000, "width": 1000, "neg_category_ids": [],
               "not_exhaustive_category_ids": [C]}]  # fmt: skip
    objects = [(1, A, 0, 0), (1, A, 800, 800), (1, A, 800, 0), (1, B, 200, 0),
               (1, C, 400, 0), (1, C, 600, 0), (2, C, 0, 0)]  # fmt: skip
    annotations = [{"id": i + 1, "image_id": img, "category_id": cat, "bbox": box(x, y),
                    "area": 10000.0} for i, (img, cat, x, y) in enumerate(objects)]  # fmt: skip
    dets = [
        (1, A, 0, 0, 0.9),      # TP on a1
        (1, A, 0, 500, 0.85),   # Bkg
        (1, A, 0, 0, 0.8),      # Dupe of a1
        (1, B, 400, 0, 0.7),    # Cls: the C object c1 named b; fixes c1
        (1, C, 650, 0, 0.65),   # Loc: IoU 1/3 with c2
        (1, B, 850, 800, 0.5),  # Both: IoU 1/3 with the A object a2
        (1, A, 400, 0, 0.4),    # Cls: c1 named a; d3 scores higher, so this one is removed
        (1, A, 800, 0, 0.3),    # TP on a3
        (2, C, 500, 500, 0.99),  # C is not exhaustive in image 2: ignored, no error
        (2, D, 0, 0, 0.95),     # D is not verified in image 2: not evaluated, no error
        (2, C, 0, 0, 0.2),      # TP on e1
    ]  # fmt: skip
    results = [{"image_id": img, "category_id": cat, "bbox": box(x, y), "score": s}
               for img, cat, x, y, s in dets]  # fmt: skip
    return {"images": images, "annotations": annotations, "categories": cats}, results


# Per-category AP at IoU 0.5 (101 recall points), in 101ths, worked out in the comments.
# A (3 objects): T .9, F .85, F .8, F .4, T .3 -> recall 1/3 at precision 1 (34 points),
#   2/3 at 2/5 (33 points): 34 + 13.2.  B (1 object): two false positives: 0.
# C (3 objects; the .99 detection is ignored): F .65, T .2 -> 1/3 at 1/2: 17.
BASE = {A: 47.2, B: 0.0, C: 17.0}
FIXED = {
    # d3 becomes a C true positive at .7 (C: 1/3 at 1, 2/3 at 2/3: 34 + 22), d11 leaves A
    # (A: 1/3 at 1, 2/3 at 1/2: 34 + 16.5).
    "Cls": {A: 50.5, B: 0.0, C: 56.0},
    "Loc": {A: 47.2, B: 0.0, C: 67.0},  # d4 a C true positive: 1/3 and 2/3 at 1
    "Both": BASE,  # d6 removed: B still has no true positive
    "Dupe": {A: 50.5, B: 0.0, C: 17.0},
    "Bkg": {A: 50.5, B: 0.0, C: 17.0},
    # a2 and b1 leave: A has 2 objects (1/2 at 1: 51 points, 1 at 2/5: 50 points); B none
    # left but detections, so 0.
    "Miss": {A: 71.0, B: 0.0, C: 17.0},
    "FP": {A: 67.0, B: 0.0, C: 34.0},  # only true positives left
    "FN": {A: 71.0, B: 0.0, C: 50.5},  # C keeps 1 object: recall 1 at precision 1/2
}
GROUP_CATS = {"all": (A, B, C), "r": (A,), "c": (B,), "f": (C,)}


def mean(values: dict[int, float], cats: tuple[int, ...]) -> float:
    return sum(values[c] for c in cats) / len(cats) / 101


def test_hand_built_case_counts_and_delta_ap():
    gt, results = hand_case()
    a = analyze_errors(gt, results, "bbox")
    for group, cats in GROUP_CATS.items():
        assert a["ap"][group] == pytest.approx(mean(BASE, cats), abs=1e-12), group
        for name in (*ERROR_TYPES, *SPECIAL_TYPES):
            expected = max(mean(FIXED[name], cats) - mean(BASE, cats), 0.0)
            assert a["delta_ap"][name][group] == pytest.approx(expected, abs=1e-12), (name, group)
    assert a["ap"]["all"] == pytest.approx(64.2 / 303, abs=1e-12)
    assert a["delta_ap"]["Cls"]["f"] == pytest.approx(39 / 101, abs=1e-12)
    assert a["delta_ap"]["Loc"]["all"] == pytest.approx(50 / 303, abs=1e-12)
    # Cls counts in the object's group (C: f), the other detection errors in the
    # detection's class's group, Miss in the object's.
    assert a["counts"] == {
        "Cls": {"all": 2, "r": 0, "c": 0, "f": 2}, "Loc": {"all": 1, "r": 0, "c": 0, "f": 1},
        "Both": {"all": 1, "r": 0, "c": 1, "f": 0}, "Dupe": {"all": 1, "r": 1, "c": 0, "f": 0},
        "Bkg": {"all": 1, "r": 1, "c": 0, "f": 0}, "Miss": {"all": 2, "r": 1, "c": 1, "f": 0},
    }  # fmt: skip
    assert a["objects"]["r"] == {"detected": 2, "misnamed": 0, "mislocalised": 0, "missed": 1}
    assert a["objects"]["c"] == {"detected": 0, "misnamed": 0, "mislocalised": 0, "missed": 1}
    assert a["objects"]["f"] == {"detected": 1, "misnamed": 1, "mislocalised": 1, "missed": 0}
    # The C object c1 was named b (common) once and a (rare) once.
    assert a["confusions"]["by_group"] == [[0, 0, 0], [0, 0, 0], [1, 1, 0]]
    pairs = [(p["object"], p["detected_as"], p["count"]) for p in a["confusions"]["top_pairs"]]
    assert pairs == [(C, A, 1), (C, B, 1)]
    # 11 detections kept; the unverified D and the ignored C detection are not evaluated.
    assert a["params"]["num_detections"] == 11
    assert a["params"]["num_evaluated"] == 9
    assert a["per_category"][D]["AP"] == -1.0


def test_baseline_is_loce_evals_ap50_and_tide_errors_agree():
    gt, results = hand_case()
    a = analyze_errors(gt, results, "bbox")
    assert a["ap"]["all"] == evaluate_lvis(gt, results, "bbox")["AP50"]
    # The engine's TIDE in LVIS mode: the same numbers for all categories.
    truth = load_ground_truth(gt)
    ev = hotcoco.COCOeval(truth.coco, truth.coco.load_res(results), "bbox", lvis_style=True)
    ev.evaluate()
    tide = ev.tide_errors(pos_thr=0.5, bg_thr=0.1)
    for name in (*ERROR_TYPES, *SPECIAL_TYPES):
        assert a["delta_ap"][name]["all"] == pytest.approx(tide["delta_ap"][name], abs=1e-12)
    assert {k: v["all"] for k, v in a["counts"].items()} == tide["counts"]


def test_federated_rules_unverified_and_not_exhaustive_detections_change_nothing():
    gt, results = hand_case()
    a = analyze_errors(gt, results, "bbox")
    # Without the detection of D (unverified in its image) and the one of C in image 2,
    # where C is not exhaustive, everything is the same.
    kept = [r for r in results if r["score"] not in (0.99, 0.95)]
    b = analyze_errors(gt, kept, "bbox")
    for key in ("ap", "delta_ap", "counts", "objects", "confusions"):
        assert a[key] == b[key], key
    # Once D is verified (a negative) in image 2, its detection on e1 is a Cls error.
    verified = copy.deepcopy(gt)
    verified["images"][1]["neg_category_ids"] = [D]
    c = analyze_errors(verified, results, "bbox")
    assert c["counts"]["Cls"]["f"] == 3
    assert c["confusions"]["by_group"][2] == [2, 1, 0]


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_baseline_equals_evaluate_lvis_on_the_lvis_fixture(tmp_path, iou_type):
    import json

    gt = json.loads(FIXTURE.read_text())
    results = fixture_detections(gt)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    truth = load_ground_truth(FIXTURE)
    a = analyze_errors(truth, path, iou_type)
    m = evaluate_lvis(truth, path, iou_type)
    assert a["ap"]["all"] == m["AP50"]
    assert 0 < a["ap"]["all"] < 1
    assert a["counts"]["Cls"]["all"] > 0 and a["counts"]["Bkg"]["all"] > 0


def test_generated_data_with_cap_and_zero_area_matches_evaluate_lvis():
    gt = make_lvis_gt(num_images=40, num_cats=20)
    results = make_detections(gt, masks=False, crowded_images=2)  # > 300 per image, w = 0
    a = analyze_errors(gt, results, "bbox")
    assert a["ap"]["all"] == evaluate_lvis(gt, results, "bbox")["AP50"]
    assert a["params"]["num_detections"] < len(results)
    text = format_analysis({"run": a}, "bbox")
    assert "AP50" in text and "missed" in text


def test_bad_thresholds_are_refused():
    gt, results = hand_case()
    with pytest.raises(ValueError, match="bg_thr"):
        analyze_errors(gt, results, "bbox", pos_thr=0.3, bg_thr=0.5)


def test_cli_compares_runs_and_writes_json_and_plots(tmp_path, capsys):
    import json

    from loce.cli import main

    gt, results = hand_case()
    gt_path, one, two = tmp_path / "gt.json", tmp_path / "a" / "res.json", tmp_path / "b" / "res.json"
    gt_path.write_text(json.dumps(gt))
    one.parent.mkdir()
    two.parent.mkdir()
    one.write_text(json.dumps(results))
    two.write_text(json.dumps([r for r in results if r["score"] != 0.7]))  # no d3
    out = tmp_path / "why"
    assert main(["analyze", "--gt", str(gt_path), "--results", str(one), str(two),
                 "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "a/res" in printed and "b/res" in printed
    report = json.loads((out / "analysis.json").read_text())
    assert set(report["bbox"]) == {"a/res", "b/res"}
    assert report["bbox"]["a/res"]["counts"]["Cls"]["f"] == 2
    assert report["bbox"]["b/res"]["counts"]["Cls"]["f"] == 1
    for name in ("delta_ap_bbox.png", "confusions_bbox.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Errors in the arguments: one line, status 2.
    assert main(["analyze", "--gt", str(gt_path), "--results", str(one), str(two),
                 "--names", "x"]) == 2  # fmt: skip
    assert "one name per file" in capsys.readouterr().err
    assert main(["analyze", "--gt", str(gt_path), "--results", str(tmp_path / "none.json")]) == 2
    assert "results file not found" in capsys.readouterr().err
