"""Two CPU processes with gloo: DDP keeps the model identical; evaluation shards travel to rank 0
over the process group and merge."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from engine_utils import SYNTH_CONFIG, free_port, join_rank_env, spawn_ranks, tiny_overrides


def _worker(rank: int, world: int, port: int, overrides: list[str], out: str) -> None:
    join_rank_env(rank, world, port)
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
    mp.spawn(_worker, args=(2, free_port(), overrides, str(tmp_path)), nprocs=2, join=True)
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


@pytest.mark.distributed
@pytest.mark.slow
def test_a_user_error_on_one_rank_stops_every_rank_promptly(tiny_dataset, tmp_path):
    """A corrupt image in rank 1's shard: rank 1 prints its one-line error last and exits 2;
    rank 0, blocked in a collective, exits at once without a traceback of its own."""
    import shutil
    import subprocess
    import time

    from engine_utils import train_command

    from loce import build
    from loce.config import load_config

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    overrides = tiny_overrides(data, tmp_path / "run")
    cfg = load_config(SYNTH_CONFIG, overrides)
    train_set = build.build_train_dataset(cfg)
    first = build.epoch_batches(cfg, train_set, 0, rank=1, world=2)[0][0]
    broken = train_set.image_path(first)
    broken.write_bytes(b"truncated")
    port = free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)}
        procs.append(subprocess.Popen(train_command(SYNTH_CONFIG, overrides), env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    ended = {}
    deadline = time.time() + 240
    while len(ended) < 2 and time.time() < deadline:
        for rank, p in enumerate(procs):
            if rank not in ended and p.poll() is not None:
                ended[rank] = time.time()
        time.sleep(0.05)
    for p in procs:
        if p.poll() is None:
            p.kill()
    outputs = [p.communicate() for p in procs]
    assert len(ended) == 2, "a rank hung"
    err1 = outputs[1][1]
    assert procs[1].returncode == 2, err1
    last = err1.strip().splitlines()[-1].split("\r")[-1]
    assert last.startswith("loce train: error: [rank 1] cannot read image file")
    assert str(broken) in last and "Traceback" not in err1
    assert procs[0].returncode != 0 and "Traceback" not in outputs[0][1], outputs[0][1]
    assert ended[0] - ended[1] < 15, "rank 0 waited for a timeout"


def _gather_worker(rank: int, world: int, port: int, checkpoint: str, out: str) -> None:
    """Each rank works in its own folder (as on nodes without a shared disk): gather files of
    known bytes, then evaluate the checkpoint."""
    join_rank_env(rank, world, port)
    torch.set_num_threads(1)
    from loce.engine import distributed as dist_utils
    from loce.engine.checkpoint import load_trained_model
    from loce.engine.evaluate import evaluate

    dist_utils.init_distributed(torch.device("cpu"))
    node = Path(out) / f"node{rank}"
    node.mkdir()
    gathered = []
    # 5 bytes on rank 0 and 23 on rank 1 in blocks of 7 (3 full, 1 partial); then rank 1 empty
    for name, payload in (("part", bytes(range(5)) if rank == 0 else bytes(range(100, 123))),
                          ("empty", b"rank0" if rank == 0 else b"")):
        mine = node / f"{name}.bin"
        mine.write_bytes(payload)
        paths = dist_utils.gather_files(mine, lambda r, n=name: node / f"{n}.copy{r}.bin",
                                        chunk_bytes=7)
        gathered.append([(str(p), p.read_bytes()) for p in paths])
    model, cfg, _ = load_trained_model(checkpoint)
    metrics = evaluate(model, cfg, node / "eval", device=torch.device("cpu"))
    torch.save({"gathered": gathered, "metrics": metrics}, node / "record.pt")
    dist_utils.cleanup_distributed()


@pytest.mark.distributed
@pytest.mark.slow
def test_evaluation_shards_reach_rank_0_without_a_shared_folder(tiny_checkpoint, tmp_path):
    from loce.engine.checkpoint import load_trained_model
    from loce.engine.evaluate import evaluate

    spawn_ranks(_gather_worker, (2, free_port(), str(tiny_checkpoint), str(tmp_path)))
    r0 = torch.load(tmp_path / "node0" / "record.pt", weights_only=False)
    r1 = torch.load(tmp_path / "node1" / "record.pt", weights_only=False)
    node0 = tmp_path / "node0"
    assert r0["gathered"] == [
        [(str(node0 / "part.bin"), bytes(range(5))),
         (str(node0 / "part.copy1.bin"), bytes(range(100, 123)))],
        [(str(node0 / "empty.bin"), b"rank0"), (str(node0 / "empty.copy1.bin"), b"")],
    ]
    assert r1["gathered"] == [[], []] and r1["metrics"] == {}
    # rank 0's predictions are a single process's, though rank 1 wrote its shard elsewhere
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, cfg, _ = load_trained_model(tiny_checkpoint)
        single = evaluate(model, cfg, tmp_path / "single", device=torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    key = lambda d: (d["image_id"], d["category_id"], d["score"], d["bbox"])  # noqa: E731
    merged = json.loads((node0 / "eval" / "predictions.json").read_text())
    expected = json.loads((tmp_path / "single" / "predictions.json").read_text())
    assert len(expected) > 0 and {d["image_id"] % 2 for d in expected} == {0, 1}
    assert sorted(merged, key=key) == sorted(expected, key=key)
    assert r0["metrics"] == single
    # no shard is left on either node, and rank 1 has no results of its own
    assert sorted(p.name for p in (node0 / "eval").iterdir()) == ["metrics.json",
                                                                   "predictions.json"]
    assert list((tmp_path / "node1" / "eval").iterdir()) == []
