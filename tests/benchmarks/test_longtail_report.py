"""benchmarks/longtail.py's report: differences to the CE of the same seed and run, and
merging runs made later into an earlier report (tagged rows, idempotent)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "longtail.py"
SELECTION = "fracal_lambda_selection_train_box_AP"  # {} when there is one value to try


@pytest.fixture(scope="module")
def longtail():
    spec = importlib.util.spec_from_file_location("longtail_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _entry(lt, box_ap: float, minutes: float = 1.0) -> dict:
    """Every metric equal to ``box_ap`` except mask AP (box_ap + 1)."""
    bbox = dict.fromkeys((*lt.KEYS, *lt.AR_KEYS), box_ap)
    segm = dict.fromkeys((*lt.KEYS, *lt.AR_KEYS), box_ap + 1)
    return {"bbox": bbox, "segm": segm, "minutes": minutes}


def _write_run(lt, out: Path, seed: int, run: str, box_ap: float, extra: dict | None = None):
    """A finished run directory as the study leaves it (metrics in fractions)."""
    d = out / f"seed{seed}" / run
    d.mkdir(parents=True)
    (d / "config.yaml").write_text("x\n")
    metrics = {t: {k: (box_ap + (t == "segm")) / 100 for k in (*lt.KEYS, *lt.AR_KEYS)}
               for t in lt.TYPES}
    (d / "metrics.json").write_text(json.dumps({**metrics, **(extra or {})}))


def test_merged_rows_are_tagged_compared_with_their_own_ce_and_idempotent(longtail, tmp_path):
    lt = longtail
    earlier = {"CE": {0: _entry(lt, 8.0), 1: _entry(lt, 6.0)},
               "NorCal on CE": {0: {**_entry(lt, 9.0), "norcal_gamma": 0.25},
                                1: {**_entry(lt, 7.0), "norcal_gamma": 0.5}}}
    first = tmp_path / "first"
    lt.report(earlier, [0, 1], first, first / "p.png", [])
    out = tmp_path / "runs"
    for seed, ce, fracal in ((0, 7.0, 8.5), (1, 5.0, 5.5)):
        _write_run(lt, out, seed, "control", ce)
        _write_run(lt, out, seed, "fracal", fracal,
                   {"fracal_lambda": 0.5, "fracal_lambda_selection_train_box_AP": {"0.5": 0.1}})
    found, baseline = lt.merge_previous(lt.collect(out, [0, 1]), first / "longtail.json", "new")
    assert set(found) == {"CE", "NorCal on CE", "CE [new]", "FRACAL on CE"}
    assert baseline == {"CE [new]": "CE [new]", "FRACAL on CE": "CE [new]"}
    merged = tmp_path / "merged"
    lt.report(found, [0, 1], merged, merged / "p.png", [], baseline)
    payload = json.loads((merged / "longtail.json").read_text())
    # FRACAL against the new CE of its seed: (8.5 - 7) and (5.5 - 5); NorCal against the
    # earlier CE: (9 - 8) and (7 - 6)
    fracal = payload["minus_ce_percent"]["FRACAL on CE"]["bbox"]["AP"]
    assert fracal["mean"] == pytest.approx(1.0) and fracal["n"] == 2
    assert payload["minus_ce_percent"]["NorCal on CE"]["bbox"]["AP"]["mean"] == pytest.approx(1.0)
    assert "CE [new]" not in payload["minus_ce_percent"]
    table = (merged / "longtail.md").read_text()
    assert table.index("| CE |") < table.index("| CE [new] |") < table.index("| FRACAL on CE |")
    assert "FRACAL lambda chosen on training images" in table and "seed 0: 0.5" in table
    # merging the same runs into the merged report gives the same report
    again = tmp_path / "again"
    found2, baseline2 = lt.merge_previous(lt.collect(out, [0, 1]), merged / "longtail.json",
                                          "new")
    assert set(found2) == set(found) and baseline2 == baseline
    lt.report(found2, [0, 1], again, again / "p.png", [], baseline2)
    assert (again / "longtail.md").read_text() == table


def test_a_later_merge_adds_its_rows_and_keeps_the_earlier_merged_ones(longtail, tmp_path):
    """A third run (the same CE again, one more post-hoc row) merged into the merged report:
    the rows of the first merge stay, the new row joins them, compared with the same CE. A run
    whose CE differs would change what the kept rows are compared with: refused."""
    lt = longtail
    first = tmp_path / "first"
    lt.report({"CE": {0: _entry(lt, 8.0)}}, [0], first, first / "p.png", [])
    runs = tmp_path / "runs"
    _write_run(lt, runs, 0, "control", 7.0)
    _write_run(lt, runs, 0, "fracal", 8.5, {"fracal_lambda": 0.5, SELECTION: {"0.5": 0.1}})
    found, baseline = lt.merge_previous(lt.collect(runs, [0]), first / "longtail.json", "rerun")
    merged = tmp_path / "merged"
    lt.report(found, [0], merged, merged / "p.png", [], baseline)

    later = tmp_path / "later"
    _write_run(lt, later, 0, "control", 7.0)  # the same CE, run again
    _write_run(lt, later, 0, "fracal_l2", 7.75, {"fracal_lambda": 2.0, SELECTION: {}})
    found, baseline = lt.merge_previous(lt.collect(later, [0]), merged / "longtail.json",
                                        "rerun")
    assert set(found) == {"CE", "CE [rerun]", "FRACAL on CE", "FRACAL on CE, λ = 2"}
    assert baseline == {"CE [rerun]": "CE [rerun]", "FRACAL on CE": "CE [rerun]",
                        "FRACAL on CE, λ = 2": "CE [rerun]"}
    both = tmp_path / "both"
    lt.report(found, [0], both, both / "p.png", [], baseline)
    delta = json.loads((both / "longtail.json").read_text())["minus_ce_percent"]
    assert delta["FRACAL on CE"]["bbox"]["AP"]["mean"] == pytest.approx(1.5)  # 8.5 - 7
    assert delta["FRACAL on CE, λ = 2"]["bbox"]["AP"]["mean"] == pytest.approx(0.75)
    assert json.loads((both / "longtail.json").read_text())["merged"] == baseline

    other = tmp_path / "other"
    _write_run(lt, other, 0, "control", 6.0)  # a different CE
    _write_run(lt, other, 0, "fracal_l2", 7.0, {"fracal_lambda": 2.0, SELECTION: {}})
    with pytest.raises(SystemExit, match="'FRACAL on CE' \\(merged earlier\\) is compared with "
                                         "'CE \\[rerun\\]'"):
        lt.merge_previous(lt.collect(other, [0]), merged / "longtail.json", "rerun")


def test_fracal_and_norcal_are_post_hoc_rows_on_the_ce_fine_tune(longtail):
    lt = longtail
    post_hoc = [m for m in (*lt.METHODS, *lt.DIAGNOSTICS) if m.config is None]
    assert {m.run for m in post_hoc} == set(lt.POST_HOC) == {"norcal", "fracal", "fracal_l2"}
    assert lt.POST_HOC["fracal"].key == "model.test.fracal_lambda"
    assert lt.POST_HOC["fracal_l2"].grid == (2.0,)  # the original's value: nothing chosen
