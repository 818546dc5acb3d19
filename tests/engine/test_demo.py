"""`loce demo` end to end on the tiny preset (shrunk runs)."""

from __future__ import annotations

import json

import pytest
from engine_utils import tiny_overrides

from loce.cli import main as cli_main


@pytest.mark.slow
def test_demo_runs_every_stage_and_resumes(tmp_path, capsys):
    """The stage-1 evaluation and the two fine-tunes run in three processes."""
    data = tmp_path / "synthetic"
    out = tmp_path / "demo"
    overrides = [o for o in tiny_overrides(data, out / "unused", **{"train.eval_at_end": True,
                                                                   "train.max_iters_per_epoch": 2})
                 if not o.startswith(("data.train_ann", "data.val_ann", "data.train_images",
                                      "data.val_images", "train.output_dir"))]
    args = ["demo", "--data", str(data), "--preset", "tiny", "--out", str(out)]
    for o in overrides:
        args += ["--set", o]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert "stage 1" in printed and "box APr" in printed and "mask APf" in printed
    assert "CE fine-tune" in printed and "LOCE" in printed
    # each result is shown when it is measured, before the final table
    assert printed.index("[demo] stage 1: box AP") < printed.index("box AP  box APr")
    assert "CPU seconds" in printed
    assert (out / "stage1" / "eval_epoch_1" / "predictions.json").is_file()
    for run in ("stage1", "control", "loce"):
        assert "epoch 1/1: 2 iterations" in (out / run / "log.txt").read_text()
    assert (out / "ap_vs_frequency.png").stat().st_size > 10_000
    assert (out / "mean_scores.png").stat().st_size > 10_000
    for run in ("stage1", "control", "loce"):
        metrics = json.loads((out / run / "metrics.json").read_text())
        assert {"bbox", "segm"} <= set(metrics)
    assert (out / "loce" / "mean_scores_init.json").is_file()
    assert (data / "summary.json").is_file()
    # a second run reuses the dataset and the finished runs
    assert cli_main(args) == 0
    again = capsys.readouterr().out
    assert "using the synthetic dataset" in again and "already done" in again
