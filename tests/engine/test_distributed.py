"""Two CPU processes with gloo: DDP keeps the model identical; evaluation shards merge."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from engine_utils import SYNTH_CONFIG, tiny_overrides


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, overrides: list[str], out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    from loce.config import load_config
    from loce.engine import distributed as dist_utils
    from loce.engine.train import train

    cfg = load_config(SYNTH_CONFIG, overrides)
    result = train(cfg)
    params = {k: v.detach().clone() for k, v in result.model.state_dict().items()}
    torch.save({"params": params, "metrics": result.metrics, "rank": dist_utils.get_rank(),
                "world": dist_utils.get_world_size()}, os.path.join(out, f"rank{rank}.pt"))
    dist_utils.cleanup_distributed()


@pytest.mark.distributed
@pytest.mark.slow
def test_two_process_gloo_training_keeps_ranks_identical(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    overrides = tiny_overrides(tiny_dataset, run, **{"train.max_iters_per_epoch": 3,
                                                     "train.eval_at_end": True})
    mp.spawn(_worker, args=(2, _free_port(), overrides, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert (r0["rank"], r0["world"], r1["rank"]) == (0, 2, 1)
    assert r0["params"].keys() == r1["params"].keys()
    for key, value in r0["params"].items():
        torch.testing.assert_close(value, r1["params"][key], rtol=0, atol=0, msg=key)
    # training moved the weights, so the equality above is of synchronised updates
    from loce.build import build_model
    from loce.config import load_config

    torch.manual_seed(0)
    fresh = build_model(load_config(SYNTH_CONFIG, overrides), num_classes=12).state_dict()
    key = "roi_heads.box_predictor.cls_score.weight"
    assert not torch.equal(fresh[key], r0["params"][key])
    assert torch.load(run / "checkpoints" / "epoch_1.pth", weights_only=False)["global_iter"] == 3
    # rank 0 evaluated the merged shards; rank 1 returned nothing
    assert set(r0["metrics"]) == {"bbox", "segm"} and r1["metrics"] == {}
    merged = json.loads((run / "eval_epoch_1" / "predictions.json").read_text())
    val = json.loads((tiny_dataset / "annotations/val.json").read_text())
    assert {r["image_id"] for r in merged} <= {im["id"] for im in val["images"]}
    assert not list((run / "eval_epoch_1").glob("predictions.rank*.json"))
    # each rank logged the same number of iterations: the batches were sharded evenly
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["global_iter"] for x in lines if x["type"] == "train"] == [1, 2, 3]
