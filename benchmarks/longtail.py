"""Long-tail benchmark: stage 1, the cross-entropy fine-tune (control) and LOCE, several seeds.

The three runs of ``loce demo`` on the default synthetic long-tailed dataset, repeated for
several training seeds (the dataset stays the same), summarised as mean and spread of box and
mask AP, APr, APc and APf. Writes ``OUT/longtail.json`` and ``OUT/longtail.md``.

    python benchmarks/longtail.py                          # seeds 0 1 2, about an hour on 2 cores
    python benchmarks/longtail.py --seeds 0 --out /tmp/lt  # one seed
    python benchmarks/longtail.py --set solver.epochs=3    # change every run's config

Every run resumes, so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from loce.demo import (
    CONTROL,
    LOCE,
    STAGE1,
    data_overrides,
    ensure_dataset,
    final_checkpoint,
    run_stage,
)

KEYS = ("AP", "APr", "APc", "APf")
RUNS = (("stage 1", "stage1", STAGE1), ("CE fine-tune", "control", CONTROL), ("LOCE", "loce", LOCE))


def _summary(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--out", default="runs/longtail", help="run directories (checkpoints)")
    parser.add_argument("--report", default="benchmarks/results",
                        help="where longtail.json and longtail.md go")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    out = Path(args.out)
    data = Path(args.data)
    ensure_dataset(data, "default")
    per_seed: dict[int, dict[str, dict]] = {}
    minutes: dict[int, float] = {}
    for seed in args.seeds:
        t0 = time.perf_counter()
        base = [*data_overrides(data), f"train.seed={seed}", *args.overrides]
        seed_dir = out / f"seed{seed}"
        results = {"stage 1": run_stage("stage1", STAGE1, seed_dir, base)}
        init = [f"train.init_from={final_checkpoint(seed_dir / 'stage1')}"]
        for label, name, config in RUNS[1:]:
            results[label] = run_stage(name, config, seed_dir, [*base, *init])
        per_seed[seed] = {label: {t: {k: m[t][k] for k in KEYS} for t in ("bbox", "segm")}
                          for label, m in results.items()}
        minutes[seed] = (time.perf_counter() - t0) / 60

    summary = {label: {t: {k: _summary([100 * per_seed[s][label][t][k] for s in args.seeds])
                           for k in KEYS} for t in ("bbox", "segm")} for label, _, _ in RUNS}
    delta = {t: {k: _summary([100 * (per_seed[s]["LOCE"][t][k] - per_seed[s]["CE fine-tune"][t][k])
                              for s in args.seeds]) for k in KEYS} for t in ("bbox", "segm")}
    report = {"seeds": args.seeds, "overrides": args.overrides, "minutes_per_seed": minutes,
              "per_seed": per_seed, "summary_percent": summary,
              "loce_minus_control_percent": delta}
    report_dir = Path(args.report)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "longtail.json").write_text(json.dumps(report, indent=2))

    lines = [f"Synthetic long tail (default preset), seeds {args.seeds}: mean ± std over seeds, "
             "AP in percent.", "",
             "| run | " + " | ".join(f"box {k}" for k in KEYS) + " | "
             + " | ".join(f"mask {k}" for k in KEYS) + " |",
             "|---|" + "---:|" * (2 * len(KEYS))]
    for label, _, _ in RUNS:
        cells = [f"{summary[label][t][k]['mean']:.1f} ± {summary[label][t][k]['std']:.1f}"
                 for t in ("bbox", "segm") for k in KEYS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cells = [f"{delta[t][k]['mean']:+.1f} ± {delta[t][k]['std']:.1f}"
             for t in ("bbox", "segm") for k in KEYS]
    lines.append("| LOCE − control | " + " | ".join(cells) + " |")
    lines += ["", "Minutes per seed (all three runs): "
              + ", ".join(f"{s}: {m:.1f}" for s, m in minutes.items())]
    table = "\n".join(lines) + "\n"
    (report_dir / "longtail.md").write_text(table)
    print(table)
    print(f"wrote {report_dir / 'longtail.json'} and {report_dir / 'longtail.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
