"""`loce test CHECKPOINT`: the checkpoint's validation set in one step, one process or two
gloo processes, the same numbers as `loce predict --gt` + `loce eval`."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from loce.cli import main as cli_main
from loce.commands.test import default_out_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _key(r: dict) -> tuple:
    return r["image_id"], r["category_id"], r["score"], tuple(r["bbox"])


@pytest.fixture(scope="module")
def tested(tiny_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tested") / "test"
    assert cli_main(["test", str(tiny_checkpoint), "--out", str(out),
                     "--set", "model.test.score_thresh=0.0"]) == 0
    return out


def test_test_equals_predict_then_eval(tiny_dataset, tiny_checkpoint, tested, tmp_path, capsys):
    metrics = json.loads((tested / "metrics.json").read_text())
    assert set(metrics) == {"bbox", "segm"}
    assert (tested / "log.txt").read_text().count("testing ") == 1
    results = tmp_path / "results.json"
    assert cli_main(["predict", "--checkpoint", str(tiny_checkpoint), "--gt",
                     str(tiny_dataset / "annotations/val.json"), "--out", str(results),
                     "--set", "model.test.score_thresh=0.0"]) == 0
    assert cli_main(["eval", "--gt", str(tiny_dataset / "annotations/val.json"), "--results",
                     str(results), "--out", str(tmp_path / "m.json")]) == 0
    two_steps = json.loads((tmp_path / "m.json").read_text())
    predictions = json.loads((tested / "predictions.json").read_text())
    assert predictions, "an untrained model at score threshold 0 still detects"
    assert sorted(map(_key, predictions)) == sorted(map(_key, json.loads(results.read_text())))
    for t in ("bbox", "segm"):
        for k in ("AP", "AP50", "APr", "APc", "APf"):
            assert metrics[t][k] == pytest.approx(two_steps[t][k], abs=1e-12), (t, k)
    assert "APr" in capsys.readouterr().out


def test_eval_types_protocol_and_default_folder(tiny_checkpoint, tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    ckpt = run_dir / "checkpoints" / "epoch_1.pth"
    ckpt.write_bytes(tiny_checkpoint.read_bytes())
    assert default_out_dir(ckpt) == run_dir / "test_epoch_1"
    assert default_out_dir(tmp_path / "model.pth") == tmp_path / "test_model"
    assert cli_main(["test", str(ckpt), "--eval", "bbox", "--protocol", "fixed"]) == 0
    metrics = json.loads((run_dir / "test_epoch_1" / "metrics.json").read_text())
    assert set(metrics) == {"bbox"}
    assert metrics["bbox"]["params"]["protocol"] == "fixed"
    assert "wrote" in capsys.readouterr().out


def test_other_categories_are_refused_in_one_line(tiny_dataset, tiny_checkpoint, tmp_path,
                                                  capsys):
    val = json.loads((tiny_dataset / "annotations/val.json").read_text())
    val["categories"] = val["categories"][:-1]
    kept = {c["id"] for c in val["categories"]}
    val["annotations"] = [a for a in val["annotations"] if a["category_id"] in kept]
    for im in val["images"]:
        for key in ("neg_category_ids", "not_exhaustive_category_ids"):
            im[key] = [c for c in im.get(key, []) if c in kept]
    other = tmp_path / "other.json"
    other.write_text(json.dumps(val))
    code = cli_main(["test", str(tiny_checkpoint), "--out", str(tmp_path / "t"),
                     "--set", f"data.val_ann={other}"])
    err = capsys.readouterr().err
    assert code == 2 and "other.json has 11 categories" in err and "Traceback" not in err


def _worker(rank: int, world: int, port: int, checkpoint: str, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    code = cli_main(["test", checkpoint, "--out", out, "--device", "cpu",
                     "--set", "model.test.score_thresh=0.0"])
    assert code == 0


@pytest.mark.distributed
@pytest.mark.slow
def test_two_gloo_processes_give_the_single_process_results(tiny_checkpoint, tested, tmp_path):
    out = tmp_path / "two"
    mp.spawn(_worker, args=(2, _free_port(), str(tiny_checkpoint), str(out)), nprocs=2, join=True)
    merged = json.loads((out / "predictions.json").read_text())
    single = json.loads((tested / "predictions.json").read_text())
    assert sorted(map(_key, merged)) == sorted(map(_key, single))
    assert not list(out.glob("predictions.rank*.json"))
    two, one = (json.loads((d / "metrics.json").read_text()) for d in (out, tested))
    for t in ("bbox", "segm"):
        assert two[t]["AP"] == pytest.approx(one[t]["AP"], abs=1e-12)
        assert two[t]["APr"] == pytest.approx(one[t]["APr"], abs=1e-12)
