"""LOCE's per-rank draws generator and the collective decisions of a resume: in one process,
and with two gloo processes (the ranks draw differently, resume exactly, and a missing or
unreadable memory file of one rank neither hangs nor splits the ranks)."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch
from engine_utils import free_port, join_rank_env, logged_losses, spawn_ranks, tiny_overrides

from loce import build
from loce.config import load_config
from loce.engine import method_state
from loce.engine.method_state import (
    DRAWS_KEY,
    before_training,
    draws_seed,
    draws_state,
    restore_draws_state,
    seed_rank_draws,
)
from loce.errors import CheckpointError
from loce.method.box_jitter import jitter_boxes

LOCE_SYNTH = "loce_mask_rcnn_r18_fpn_normed_mask_synthetic"
CE_SYNTH = "finetune_ce_mask_rcnn_r18_fpn_normed_mask_synthetic"


def _model(dataset, out, name=LOCE_SYNTH, **extra):
    cfg = load_config(name, tiny_overrides(dataset, out, **extra))
    return build.build_model(cfg, 12, load_backbone=False), cfg


# ---------------------------------------------------------------------------- one process


def test_draws_seed_mixes_seed_and_rank():
    seeds = {(s, r): draws_seed(s, r) for s in (0, 1, -1, 2**40) for r in range(4)}
    assert len(set(seeds.values())) == len(seeds)  # every (seed, rank) its own stream
    assert all(0 <= v < 2**63 for v in seeds.values())
    assert draws_seed(3, 1) == draws_seed(3, 1)
    # SeedSequence over (seed mod 2^64, rank, "LOCE"), the first 64-bit word halved
    word = np.random.SeedSequence([3, 1, 0x4C4F4345]).generate_state(1, np.uint64)[0]
    assert draws_seed(3, 1) == int(word) // 2
    word = np.random.SeedSequence([2**64 - 1, 0, 0x4C4F4345]).generate_state(1, np.uint64)[0]
    assert draws_seed(-1, 0) == int(word) // 2


def test_each_rank_gets_its_own_generator_and_the_heads_draw_from_it(tiny_dataset, tmp_path):
    model, _ = _model(tiny_dataset, tmp_path)
    heads = model.roi_heads
    g = seed_rank_draws(model, 7, 1, "cpu")
    assert heads.generator is g and g.device == torch.device("cpu")
    assert heads.feature_memory is not None  # allocated where the draws happen
    expected = torch.rand(6, generator=torch.Generator().manual_seed(draws_seed(7, 1)))
    other = torch.rand(6, generator=torch.Generator().manual_seed(draws_seed(7, 0)))
    assert torch.equal(torch.rand(6, generator=g), expected)
    assert not torch.equal(expected, other)

    # the jitter comes from that generator, and torch's global generator is not touched
    seed_rank_draws(model, 7, 1, "cpu")
    boxes = torch.tensor([[10.0, 12.0, 50.0, 60.0], [0.0, 0.0, 30.0, 20.0]])
    targets = [{"boxes": boxes, "labels": torch.tensor([3, 5])}]
    before = torch.get_rng_state()
    got, labels, _ = heads.jitter_gt_boxes(targets, [(100, 120)])
    assert torch.equal(torch.get_rng_state(), before)
    ref = torch.Generator().manual_seed(draws_seed(7, 1))
    torch.testing.assert_close(got[0], jitter_boxes(boxes, (100, 120), generator=ref),
                               rtol=0, atol=0)
    assert labels.tolist() == [3] * 16 + [5] * 16

    # without a feature memory: a CPU generator and no memory allocated
    off, _ = _model(tiny_dataset, tmp_path, **{"loce.feature_memory": False})
    assert seed_rank_draws(off, 7, 0, "cpu").device == torch.device("cpu")
    assert off.roi_heads.feature_memory is None
    plain, _ = _model(tiny_dataset, tmp_path, name=CE_SYNTH)
    assert seed_rank_draws(plain, 7, 0, "cpu") is None and draws_state(plain) == {}


def test_draws_state_round_trip_and_what_a_checkpoint_may_hold(tiny_dataset, tmp_path, caplog):
    model, _ = _model(tiny_dataset, tmp_path)
    g = seed_rank_draws(model, 0, 0, "cpu")
    saved = draws_state(model)
    assert list(saved) == [DRAWS_KEY]
    assert saved[DRAWS_KEY].dtype == torch.uint8 and saved[DRAWS_KEY].dim() == 1
    ahead = torch.rand(4, generator=g)
    assert restore_draws_state(model, saved, "ck.pth")
    assert torch.equal(torch.rand(4, generator=g), ahead)

    # an older checkpoint, or one written with a generator of another device type: a warning
    # and the generator as it is
    state = g.get_state()
    with caplog.at_level(logging.WARNING, logger="loce"):
        assert not restore_draws_state(model, {"torch": torch.get_rng_state()}, "old.pth")
        assert not restore_draws_state(model, {DRAWS_KEY: torch.zeros(16, dtype=torch.uint8)},
                                       "gpu.pth")
    assert "old.pth holds no state for the memory draws" in caplog.text
    assert "gpu.pth holds the memory draws' state of another kind of generator (16 bytes" \
        in caplog.text
    assert torch.equal(g.get_state(), state)
    with pytest.raises(CheckpointError, match=r"bad\.pth: rng 'loce_draws' must be a 1-D uint8 "
                                              r"tensor, found list"):
        restore_draws_state(model, {DRAWS_KEY: [1, 2]}, "bad.pth")


def test_a_resumed_init_pass_starts_from_empty_memories_and_keeps_the_random_state(
        tiny_dataset, tmp_path, monkeypatch):
    model, cfg = _model(tiny_dataset, tmp_path)
    heads = model.roi_heads
    g = seed_rank_draws(model, 0, 0, "cpu")
    # this rank restored its memory, another rank did not: memory_restored is False everywhere
    heads.feature_memory.count[:] = 3
    heads.memory_restored = False
    seen = []

    def fake_pass(model, cfg, dataset, device):
        memory = model.roi_heads.feature_memory
        seen.append(int(memory.count.sum()))
        memory.count[0] = 1
        torch.rand(5, generator=model.roi_heads.generator)  # the pass draws ...
        torch.rand(5)  # ... and so do torchvision's samplers

    monkeypatch.setattr(method_state, "run_init_pass", fake_pass)
    draws, global_state = g.get_state(), torch.get_rng_state()
    before_training(model, cfg, None, torch.device("cpu"), resumed=True)
    assert seen == [0]  # emptied before the pass
    assert heads.feature_memory.count.tolist() == [1] + [0] * 11
    assert torch.equal(g.get_state(), draws)
    assert torch.equal(torch.get_rng_state(), global_state)


# ---------------------------------------------------------------------------- two processes


def _train_worker(rank: int, world: int, port: int, overrides: list[str], resume: bool,
                  out: str) -> None:
    """Train one rank; save what its heads drew each step, its init passes and its state."""
    join_rank_env(rank, world, port)
    from loce.engine import distributed as dist_utils
    from loce.engine.train import train
    from loce.errors import LoceError
    from loce.models.loce_heads import LoceRoIHeads

    draws: list[list[int]] = []
    passes: list[int] = []  # steps recorded when each initialisation pass ended
    observe, run_pass = LoceRoIHeads.observe_box_predictions, method_state.run_init_pass

    def recording(self, output):
        observe(self, output)
        draws.append(self.last_step.memory_labels.tolist())

    def counting(*args, **kwargs):
        result = run_pass(*args, **kwargs)
        passes.append(len(draws))
        return result

    LoceRoIHeads.observe_box_predictions = recording
    method_state.run_init_pass = counting
    try:
        heads = train(load_config(LOCE_SYNTH, overrides), resume=resume).model.roi_heads
        record = {"draws": draws, "passes": passes, "generator": heads.generator.get_state(),
                  "scores": heads.score_tracker.scores.clone(),
                  "count": heads.feature_memory.count.clone(),
                  "features": heads.feature_memory.features.clone()}
    except LoceError as err:
        record = {"error": str(err)}
    torch.save(record, f"{out}/rank{rank}.pt")
    dist_utils.cleanup_distributed()


def _spawn_training(dataset, stage1, run, out, epochs: int, resume: bool = False):
    overrides = tiny_overrides(dataset, run, **{
        "train.init_from": str(stage1), "loce.memory_capacity": 16,
        "train.max_iters_per_epoch": 2, "solver.epochs": epochs})
    out.mkdir(parents=True, exist_ok=True)
    spawn_ranks(_train_worker, (2, free_port(), overrides, resume, str(out)))
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.fixture(scope="module")
def first_epoch(tiny_dataset, tiny_checkpoint, tmp_path_factory):
    """A two-rank LOCE fine-tune stopped after epoch 1 (2 iterations): its run directory."""
    root = tmp_path_factory.mktemp("two_rank_loce")
    _spawn_training(tiny_dataset, tiny_checkpoint, root / "run", root / "records", epochs=1)
    return root / "run"


def _resume_copy(first_epoch, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(first_epoch, run)
    return run


@pytest.mark.distributed
@pytest.mark.slow
def test_two_ranks_draw_their_own_classes_and_resume_exactly(tiny_dataset, tiny_checkpoint,
                                                             first_epoch, tmp_path):
    ref = _spawn_training(tiny_dataset, tiny_checkpoint, tmp_path / "ref", tmp_path / "r",
                          epochs=2)
    for r in ref:
        assert len(r["passes"]) == 1 and len(r["draws"]) == r["passes"][0] + 4
        assert all(len(d) == 32 for d in r["draws"][-4:])  # 8 classes x 4 features, all filled
    # the ranks drew other classes in every training step
    assert all(a != b for a, b in zip(ref[0]["draws"][-4:], ref[1]["draws"][-4:]))
    assert not torch.equal(ref[0]["generator"], ref[1]["generator"])
    # the checkpoint holds each rank's generator state
    ckpt = torch.load(first_epoch / "checkpoints" / "epoch_1.pth", weights_only=False)
    saved = [entry[DRAWS_KEY] for entry in ckpt["rng"]]
    assert len(saved) == 2 and not torch.equal(saved[0], saved[1])

    run = _resume_copy(first_epoch, tmp_path)
    got = _spawn_training(tiny_dataset, tiny_checkpoint, run, tmp_path / "g", epochs=2,
                          resume=True)
    for rank, (g, r) in enumerate(zip(got, ref)):
        assert g["passes"] == [], rank  # memory restored: no initialisation pass
        assert g["draws"] == r["draws"][-2:], rank  # each rank's draws of iterations 3 and 4
        for key in ("generator", "scores", "count", "features"):
            assert torch.equal(g[key], r[key]), (rank, key)
    reference, resumed = logged_losses(tmp_path / "ref" / "metrics.jsonl"), \
        logged_losses(run / "metrics.jsonl")
    assert sorted(resumed) == [1, 2, 3, 4]
    for it in (3, 4):
        assert resumed[it] == reference[it], it  # exact, not approximate


@pytest.mark.distributed
@pytest.mark.slow
def test_a_missing_memory_file_on_one_rank_reruns_the_pass_on_every_rank(
        tiny_dataset, tiny_checkpoint, first_epoch, tmp_path):
    run = _resume_copy(first_epoch, tmp_path)
    ckpts = run / "checkpoints"
    (ckpts / "epoch_1.pth.memory.rank1.pth").unlink()
    ckpt = torch.load(ckpts / "epoch_1.pth", weights_only=False)
    got = _spawn_training(tiny_dataset, tiny_checkpoint, run, tmp_path / "g", epochs=2,
                          resume=True)
    # no hang (spawn_ranks has a deadline); both ranks ran the pass, as many steps each
    assert [len(g["passes"]) for g in got] == [1, 1]
    assert got[0]["passes"] == got[1]["passes"]
    for rank, g in enumerate(got):
        assert len(g["draws"]) == g["passes"][0] + 2
        assert bool((g["count"] > 0).all())
        # the first step after the pass draws from the checkpoint's state with its scores:
        # one jitter per image of the batch (every image has objects), then the 8 classes
        gen = torch.Generator().manual_seed(0)
        gen.set_state(ckpt["rng"][rank][DRAWS_KEY])
        for _ in range(2):
            torch.rand((16, 4), generator=gen)
        scores = ckpt["model"]["roi_heads.score_tracker.scores"][1:].double()
        classes = torch.multinomial(1.0 / (scores + 1e-7), 8, replacement=True, generator=gen)
        assert g["draws"][g["passes"][0]] == (classes + 1).repeat_interleave(4).tolist(), rank
    log = (run / "log.txt").read_text()
    assert "no saved feature memory" in log and "for rank(s) 1" in log
    assert "re-running the initialisation pass on every rank" in log
    assert sorted(logged_losses(run / "metrics.jsonl")) == [1, 2, 3, 4]
    assert sorted(p.name for p in ckpts.glob("*.memory.*")) == [
        "epoch_2.pth.memory.rank0.pth", "epoch_2.pth.memory.rank1.pth"]


@pytest.mark.distributed
@pytest.mark.slow
def test_an_unreadable_memory_file_on_one_rank_stops_every_rank_with_its_name(
        tiny_dataset, tiny_checkpoint, first_epoch, tmp_path):
    run = _resume_copy(first_epoch, tmp_path)
    broken = run / "checkpoints" / "epoch_1.pth.memory.rank1.pth"
    broken.write_bytes(b"not a memory")
    got = _spawn_training(tiny_dataset, tiny_checkpoint, run, tmp_path / "g", epochs=2,
                          resume=True)
    assert got[0]["error"] == got[1]["error"]
    assert got[0]["error"].startswith(f"rank 1: cannot read the feature memory {broken}: ")
