"""Kill training runs again and again; every ``--resume`` must reproduce the uninterrupted losses.

For each target — the stage-1 Mask R-CNN and the LOCE fine-tune on the tiny synthetic preset,
with a checkpoint after every iteration so that kills often land in checkpoint writes — it

1. runs the target once without interruption (the reference losses, from ``metrics.jsonl``);
2. runs it again as a chain of processes, each killed with SIGKILL and the next started with
   ``--resume``: half of the kills at a named point of the checkpoint code (the ``LOCE_FAULT``
   hook of :mod:`loce.faults`: mid checkpoint write, mid feature-memory write, between the
   per-rank files and the pointer, ...), half after a random delay drawn over the length of a
   whole run; the last process runs to the end;
3. compares the losses of every iteration with the reference, bit for bit, and checks what
   the run directory holds (the pointer, no temporary file, only the newest memory file).

Each kill is recorded with what was on the disk when it landed: the checkpoint the pointer
named and whether a temporary file (a write in progress) was there.

    python benchmarks/fault_injection.py                      # 10 kills per target
    python benchmarks/fault_injection.py --kills 12 --seed 1

Writes ``benchmarks/results/fault_injection.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "engine"))

from engine_utils import SYNTH_CONFIG, logged_losses, tiny_overrides, train_command  # noqa: E402

LOCE_CONFIG = "loce_mask_rcnn_r18_fpn_normed_mask_synthetic"
# Named points of the checkpoint code, each the N-th time it is reached in a process.
STAGE1_POINTS = ["write:checkpoint", "checkpoint:after-file", "write:checkpoint pointer",
                 "checkpoint:after-pointer", "checkpoint:after-rank-state"]
LOCE_POINTS = ["write:feature memory", "checkpoint:after-rank-state", "write:checkpoint",
               "checkpoint:after-file", "checkpoint:after-pointer", "write:checkpoint pointer"]


def _env(fault: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LOCE_FAULT"}
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "") if env.get(
        "PYTHONPATH") else src
    if fault is not None:
        env["LOCE_FAULT"] = fault
    return env


def _disk_state(run: Path) -> dict:
    ckpts = run / "checkpoints"
    pointer = ckpts / "last_checkpoint"
    temps = sorted(p.name for p in [*run.glob(".*.tmp"), *ckpts.glob(".*.tmp")])
    return {"pointer": pointer.read_text().strip() if pointer.is_file() else None,
            "temporary_files": temps}


def _start(cmd: list[str], fault: str | None) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=_env(fault), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _log_lines(run: Path) -> int:
    log = run / "metrics.jsonl"
    return len(log.read_text().splitlines()) if log.is_file() else 0


def _wait_for_training(proc: subprocess.Popen, run: Path, lines: int) -> bool:
    """Wait until the process logs a new iteration; False when it ended first."""
    while proc.poll() is None:
        if _log_lines(run) > lines:
            return True
        time.sleep(0.02)
    return False


def _reference(config: str, overrides: list[str], run: Path) -> tuple[dict, float]:
    """The uninterrupted losses, and the mean seconds per iteration (startup excluded)."""
    proc = _start(train_command(config, overrides), None)
    _wait_for_training(proc, run, 0)
    first = time.perf_counter()
    _, err = proc.communicate(timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"reference run of {config} failed:\n{err[-3000:]}")
    losses = logged_losses(run / "metrics.jsonl")
    return losses, (time.perf_counter() - first) / max(1, len(losses) - 1)


def _chain(config: str, overrides: list[str], run: Path, kills: int, points: list[str],
           per_iter: float, rng: random.Random) -> list[dict]:
    """Kill the run ``kills`` times (named points and random delays alternating), then let it
    end. A random kill lands after the process has logged an iteration, 0-2 iterations later."""
    records = []
    resume: tuple[str, ...] = ()
    for k in range(kills):
        named = k % 2 == 0
        fault = f"{rng.choice(points)}:{rng.randint(1, 2)}" if named else None
        start = time.perf_counter()
        proc = _start(train_command(config, overrides, *resume), fault)
        delay = None
        if not named and _wait_for_training(proc, run, _log_lines(run)):
            delay = rng.uniform(0.0, 2.0) * per_iter
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=900)
        killed = proc.returncode == -signal.SIGKILL
        if not killed and proc.returncode != 0:
            raise SystemExit(f"{config}: a resumed process failed:\n{err[-3000:]}")
        how = f"LOCE_FAULT={fault}" if named else (
            f"SIGKILL {delay:.2f} s after an iteration" if delay is not None else "SIGKILL")
        records.append({"kill": k + 1, "how": how, "killed": killed,
                        "seconds": round(time.perf_counter() - start, 2), **_disk_state(run)})
        resume = ("--resume",)
        if not killed:
            break  # the run reached its end before the kill
    final = subprocess.run(train_command(config, overrides, "--resume"), env=_env(None),
                           capture_output=True, text=True, timeout=900)
    if final.returncode != 0:
        raise SystemExit(f"{config}: the final resume failed:\n{final.stderr[-3000:]}")
    return records


def _target(name: str, slug: str, config: str, dataset: Path, work: Path, extra: dict,
            kills: int, points: list[str], rng: random.Random) -> dict:
    ref = work / f"{slug}_reference"
    reference, per_iter = _reference(config, tiny_overrides(dataset, ref, **extra), ref)
    run = work / f"{slug}_killed"
    records = _chain(config, tiny_overrides(dataset, run, **extra), run, kills, points,
                     per_iter, rng)
    got = logged_losses(run / "metrics.jsonl")
    mismatched = [it for it in reference if got.get(it) != reference[it]]
    memory = sorted(p.name for p in (run / "checkpoints").glob("*.memory.*"))
    return {
        "target": name,
        "config": config,
        "iterations": len(reference),
        "seconds_per_iteration": round(per_iter, 2),
        "kills": records,
        "processes_killed": sum(r["killed"] for r in records),
        "kills_during_a_write": sum(bool(r["temporary_files"]) for r in records if r["killed"]),
        "iterations_compared": sorted(reference),
        "iterations_with_different_losses": mismatched,
        "exact": not mismatched and sorted(got) == sorted(reference),
        "final_pointer": _disk_state(run)["pointer"],
        "leftover_temporary_files": _disk_state(run)["temporary_files"],
        "memory_files": memory,
    }


def _markdown(report: dict) -> str:
    lines = ["# Fault injection: kills and exact resumes", "",
             f"Generated by `benchmarks/fault_injection.py --kills {report['kills_per_target']} "
             f"--seed {report['seed']}`; {report['cpu_seconds']:.0f} CPU s (user + sys, all "
             f"processes), {report['wall_seconds']:.0f} s wall.", ""]
    for t in report["targets"]:
        verdict = "identical" if t["exact"] else f"DIFFER at {t['iterations_with_different_losses']}"
        lines += [f"## {t['target']} (`{t['config']}`)", "",
                  f"{t['processes_killed']} processes killed ({t['kills_during_a_write']} with a "
                  f"write in progress), {t['iterations']} iterations; losses of every iteration "
                  f"after the resumes vs the uninterrupted run: **{verdict}** (bit for bit). "
                  f"Final pointer `{t['final_pointer']}`, temporary files left: "
                  f"{len(t['leftover_temporary_files'])}, memory files: "
                  f"{', '.join(t['memory_files']) or 'none'}.", "",
                  "| kill | how | killed | pointer at the kill | temporary files at the kill |",
                  "|---:|---|---|---|---|"]
        for r in t["kills"]:
            lines.append(f"| {r['kill']} | {r['how']} | {'yes' if r['killed'] else 'ended first'}"
                         f" | {r['pointer']} | {', '.join(r['temporary_files']) or '—'} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--kills", type=int, default=10, help="kills per target (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    wall = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory(prefix="loce_faults_") as tmp:
        work = Path(tmp)
        from loce.data.synthetic import PRESETS, generate

        dataset = work / "data"
        generate(dataset, PRESETS["tiny"], workers=1)
        stage1_extra = {"solver.epochs": 3, "solver.steps": "[2]", "train.max_iters_per_epoch": 4,
                        "train.checkpoint_every_iters": 1}
        stage1 = _target("stage 1", "stage1", SYNTH_CONFIG, dataset, work, stage1_extra,
                         args.kills, STAGE1_POINTS, rng)
        init = work / "stage1_reference" / "checkpoints" / "epoch_1.pth"
        loce_extra = {"train.init_from": str(init),
                      "loce.memory_capacity": 32, "solver.epochs": 3,
                      "train.max_iters_per_epoch": 3, "train.checkpoint_every_iters": 1}
        loce = _target("LOCE fine-tune", "loce", LOCE_CONFIG, dataset, work, loce_extra,
                       args.kills, LOCE_POINTS, rng)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = {
        "kills_per_target": args.kills,
        "seed": args.seed,
        "wall_seconds": round(time.perf_counter() - wall, 1),
        "cpu_seconds": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 1),
        "targets": [stage1, loce],
    }
    out = Path(args.out)
    from loce.fileio import atomic_write_json, atomic_write_text

    atomic_write_json(out / "fault_injection.json", report)
    atomic_write_text(out / "fault_injection.md", _markdown(report) + "\n")
    print(_markdown(report))
    return 0 if all(t["exact"] for t in report["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
