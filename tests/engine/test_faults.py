"""Kills at the exact moments a checkpoint is being written; ``--resume`` must then reproduce
the losses of an uninterrupted run exactly (bit for bit), for stage 1 and the LOCE fine-tune.

The kill points come from the ``LOCE_FAULT`` hook (:mod:`loce.faults`), which SIGKILLs the run
the N-th time it reaches a named point; ``benchmarks/fault_injection.py`` adds kills at random
times.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from engine_utils import SYNTH_CONFIG, logged_losses, tiny_overrides, train_command

LOCE_SYNTH = "loce_mask_rcnn_r18_fpn_normed_mask_synthetic"
# One epoch of 3 iterations with a checkpoint after each: iter_1, iter_2, epoch_1.
EXTRA = {"train.max_iters_per_epoch": 3, "train.checkpoint_every_iters": 1}


def _loce_extra(stage1) -> dict:
    return {**EXTRA, "train.init_from": str(stage1), "loce.memory_capacity": 32}


def _run(config, overrides, *extra, fault=None, timeout=300):
    env = {**os.environ}
    env.pop("LOCE_FAULT", None)
    if fault is not None:
        env["LOCE_FAULT"] = fault
    return subprocess.run(train_command(config, overrides, *extra), env=env, timeout=timeout,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def loce_reference(tiny_dataset, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("loce_reference")
    proc = _run(LOCE_SYNTH, tiny_overrides(tiny_dataset, out, **_loce_extra(tiny_checkpoint)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    losses = logged_losses(out / "metrics.jsonl")
    assert sorted(losses) == [1, 2, 3]
    return losses


def _kill_and_resume(config, overrides, fault):
    killed = _run(config, overrides, fault=fault)
    assert killed.returncode == -signal.SIGKILL, (fault, killed.stderr[-2000:])
    resumed = _run(config, overrides, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return killed, resumed


@pytest.mark.slow
def test_loce_finetune_resumes_exactly_after_kills_mid_epoch_and_while_checkpointing(
        tiny_dataset, tiny_checkpoint, loce_reference, tmp_path):
    """One run killed four times, each process resuming the previous one: mid memory file,
    between the memory files and the pointer (where older memory files used to be deleted
    already), mid checkpoint write, and mid-epoch during an iteration."""
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    overrides = tiny_overrides(tiny_dataset, run, **_loce_extra(tiny_checkpoint))
    resume: tuple[str, ...] = ()
    for fault in ("write:feature memory:2", "checkpoint:after-rank-state:1",
                  "write:checkpoint:1"):
        killed = _run(LOCE_SYNTH, overrides, *resume, fault=fault)
        assert killed.returncode == -signal.SIGKILL, (fault, killed.stderr[-2000:])
        # the pointer names the first checkpoint, and that checkpoint still has its memory
        assert (ckpts / "last_checkpoint").read_text().strip() == "iter_1.pth", fault
        assert (ckpts / "iter_1.pth.memory.rank0.pth").is_file(), fault
        resume = ("--resume",)
    # mid-epoch: SIGKILL while iteration 3 runs (after iteration 2 is logged)
    proc = subprocess.Popen(train_command(LOCE_SYNTH, overrides, "--resume"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={k: v for k, v in os.environ.items() if k != "LOCE_FAULT"})
    log = run / "metrics.jsonl"
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        if 2 in logged_losses(log) and len(log.read_text().splitlines()) > 1:
            if (ckpts / "last_checkpoint").read_text().strip() == "iter_2.pth":
                break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = _run(LOCE_SYNTH, overrides, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "initialisation pass skipped" in resumed.stdout and "resumed from" in resumed.stdout
    got = logged_losses(log)
    assert sorted(got) == [1, 2, 3]
    for it in (1, 2, 3):
        assert got[it] == loce_reference[it], it  # exact, not approximate
    # the resumes cleaned up the half-written files and kept only the newest memory
    assert not list(ckpts.glob(".*.tmp")) and not list(run.glob(".*.tmp"))
    assert sorted(p.name for p in ckpts.glob("*.memory.*")) == ["epoch_1.pth.memory.rank0.pth"]


@pytest.mark.slow
def test_stage1_resumes_exactly_after_a_kill_mid_checkpoint(tiny_dataset, tmp_path):
    ref = tmp_path / "ref"
    proc = _run(SYNTH_CONFIG, tiny_overrides(tiny_dataset, ref, **EXTRA))
    assert proc.returncode == 0, proc.stderr[-2000:]
    reference = logged_losses(ref / "metrics.jsonl")
    run = tmp_path / "run"
    overrides = tiny_overrides(tiny_dataset, run, **EXTRA)
    _kill_and_resume(SYNTH_CONFIG, overrides, "write:checkpoint:2")  # half written
    got = logged_losses(run / "metrics.jsonl")
    assert sorted(got) == [1, 2, 3]
    for it in (2, 3):
        assert got[it] == reference[it], it


@pytest.mark.slow
def test_memory_files_left_by_a_kill_after_the_pointer_moved_are_removed_on_resume(
        tiny_dataset, tiny_checkpoint, tmp_path):
    run = tmp_path / "run"
    overrides = tiny_overrides(tiny_dataset, run, **_loce_extra(tiny_checkpoint))
    killed = _run(LOCE_SYNTH, overrides, fault="checkpoint:after-pointer:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    ckpts = run / "checkpoints"
    assert (ckpts / "last_checkpoint").read_text().strip() == "epoch_1.pth"
    assert sorted(p.name for p in ckpts.glob("*.memory.*")) == [
        "epoch_1.pth.memory.rank0.pth", "iter_2.pth.memory.rank0.pth"]
    resumed = _run(LOCE_SYNTH, overrides, "--resume")  # nothing left to train
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert sorted(p.name for p in ckpts.glob("*.memory.*")) == ["epoch_1.pth.memory.rank0.pth"]
