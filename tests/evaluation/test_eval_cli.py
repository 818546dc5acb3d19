"""``loce eval`` end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from loce.cli import main
from loce.evaluation import evaluate_lvis_multi


def test_eval_writes_metrics_for_boxes_and_masks(synthetic, tmp_path, capsys):
    out = tmp_path / "reports" / "metrics.json"
    code = main(["eval", "--gt", str(synthetic["gt_path"]), "--results",
                 str(synthetic["res_path"]), "--out", str(out)])  # fmt: skip
    assert code == 0
    written = json.loads(out.read_text())
    # The results have masks, so segm is evaluated by default next to bbox.
    assert list(written) == ["bbox", "segm"]
    expected = evaluate_lvis_multi(synthetic["gt_path"], synthetic["res_path"], ("bbox", "segm"))
    for iou_type in ("bbox", "segm"):
        for key in ("AP", "APr", "APc", "APf", "AR"):
            assert written[iou_type][key] == expected[iou_type][key]
        per_cat = {int(k): v for k, v in written[iou_type]["per_category"].items()}
        assert per_cat == expected[iou_type]["per_category"]
    assert not list(out.parent.glob(".*.tmp"))  # the atomic write left no temporary file
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:3] == ["AP", "AP50", "AP75"]
    assert lines[2].split()[:2] == ["bbox", f"{100 * expected['bbox']['AP']:.1f}"]
    assert lines[3].split()[0] == "segm"


def test_eval_one_iou_type_and_fixed_protocol(synthetic, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    code = main(["eval", "--gt", str(synthetic["gt_path"]), "--results",
                 str(synthetic["res_path"]), "--iou-type", "bbox", "--protocol", "fixed",
                 "--dets-per-class", "50", "--out", str(out)])  # fmt: skip
    assert code == 0
    written = json.loads(out.read_text())
    assert list(written) == ["bbox"]
    assert written["bbox"]["params"]["protocol"] == "fixed"
    assert written["bbox"]["params"]["dets_per_class"] == 50
    assert "top 50 detections per category" in capsys.readouterr().out


def test_eval_bad_results_is_one_line_error(synthetic, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 1, "category_id": 2, "score": 0.5,
                                "bbox": [0, 0, 1, 1]}]))  # fmt: skip
    code = main(["eval", "--gt", str(synthetic["gt_path"]), "--results", str(bad)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"loce eval: error: {bad}: detection 0 has image_id 1")
    assert err.count("\n") == 1


@pytest.mark.parametrize("flag", [["--max-dets", "0"], ["--dets-per-class", "0"]])
def test_eval_rejects_bad_caps(synthetic, flag, capsys):
    with pytest.raises(SystemExit) as info:
        main(["eval", "--gt", str(synthetic["gt_path"]), "--results",
              str(synthetic["res_path"]), *flag])  # fmt: skip
    assert info.value.code == 2
    assert flag[0] in capsys.readouterr().err


def test_eval_command_does_not_import_torch(synthetic):
    code = (
        "import argparse, sys\n"
        "from loce.commands import eval as cmd\n"
        "p = argparse.ArgumentParser(); cmd.add_arguments(p)\n"
        f"args = p.parse_args(['--gt', {str(synthetic['gt_path'])!r}, "
        f"'--results', {str(synthetic['res_path'])!r}, '--iou-type', 'bbox'])\n"
        "assert cmd.run(args) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_eval_pooled_protocol_prints_pooled_table_and_one_line_warning(synthetic, tmp_path, capsys):
    out = tmp_path / "pooled.json"
    code = main(["eval", "--gt", str(synthetic["gt_path"]), "--results",
                 str(synthetic["res_path"]), "--protocol", "pooled", "--out", str(out)])  # fmt: skip
    assert code == 0
    written = json.loads(out.read_text())
    assert set(written) == {"bbox", "segm"}
    assert 0 < written["segm"]["AP-pooled"] < 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[1].split() == ["AP-pooled", "AP-pooled-r", "AP-pooled-c", "AP-pooled-f"]
    # The synthetic detections are far fewer than 10,000 per class: one warning line.
    warning_lines = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warning_lines) == 1
    assert "fewer than 10000 detections" in warning_lines[0]
