"""Long-tail study: LOCE and its peers on one detector, one dataset and one evaluation.

On the default synthetic long-tailed dataset (``loce synth``), for each training seed:

1. stage 1 (``mask_rcnn_r18_fpn_normed_mask_synthetic``, 2 epochs from scratch) is trained
   once and shared by every method below;
2. every method is the same 1-epoch fine-tune of that model (same trainable layers, schedule
   and data; ``finetune_ce_mask_rcnn_r18_fpn_normed_mask_synthetic``) with only the
   classification changed: cross-entropy (CE), CE with repeat factor sampling, EQL, EQLv2,
   Seesaw, federated loss, ECM, Gumbel (GOL) and LOCE, each with its bundled synthetic
   config. Sigmoid, normalised and K + 2 classifiers start afresh (``train.reinit``);
   softmax ones continue from the stage-1 classifier;
3. NorCal and FRACAL are post-hoc: the CE fine-tune evaluated with
   ``model.test.norcal_gamma`` (``model.test.fracal_lambda``), gamma (lambda) chosen on
   training images (a class-balanced subset, up to 5 images per class) from a grid, as
   NorCal's authors recommend, never on the validation set.

Diagnostics (``--methods`` with their labels; not part of the default run): CE with the
classifier started afresh like the sigmoid methods (what the restart costs by itself), LOCE
without its feature memory, 3-epoch fine-tunes of CE and EQLv2, and FRACAL at the original's
lambda (2); ``--diagnose`` re-evaluates
finished runs with 300 detections per image (boxes only).

Box and mask AP, APr, APc and APf are summarised as mean and spread over seeds. Writes
``REPORT/longtail.json``, ``REPORT/longtail.md`` and the APr-against-APf plot ``PLOT``.

    python benchmarks/longtail.py                          # the study, seeds 0 1 2
    python benchmarks/longtail.py --seeds 0 --out /tmp/lt  # one seed
    python benchmarks/longtail.py --methods CE LOCE        # a subset (stage 1 always runs)
    python benchmarks/longtail.py --report-only            # tables and plot from finished runs
    python benchmarks/longtail.py --report-only --diagnose 0   # + 300-detection re-evaluation
    python benchmarks/longtail.py --methods "FRACAL on CE" --out runs/lt_fracal \\
        --merge benchmarks/results/longtail.json --tag "loce 0.2"  # one method added later

Every run resumes and a finished run is reused, so an interrupted study continues where it
stopped. Run times are measured from each run directory's files (config written at the start,
metrics at the end), so reused runs report the time they took.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
AR_KEYS = ("AR", "ARr", "ARc", "ARf")  # recall at 300 detections: a diagnostic
TYPES = ("bbox", "segm")
REINIT = "train.reinit=[roi_heads.box_predictor.cls_score]"
NORCAL_GAMMAS = (0.0, 0.25, 0.5, 0.75, 1.0)
# FRACAL's lambda (the exponent of its fractal term; the frequency term is always on): 2.0 is
# the original's value on LVIS.
FRACAL_LAMBDAS = (0.0, 0.5, 1.0, 2.0, 3.0)


@dataclass(frozen=True)
class Method:
    label: str
    run: str  # run directory name inside the seed directory
    config: str | None  # None: post-hoc on the CE fine-tune (POST_HOC[run])
    overrides: tuple[str, ...] = field(default_factory=tuple)
    paper: str = ""


def _synthetic(method: str) -> str:
    return f"{method}_mask_rcnn_r18_fpn_normed_mask_synthetic"


METHODS = (
    Method("CE", "control", CONTROL, paper="-"),
    Method("CE + RFS", "rfs", _synthetic("rfs"), paper="Gupta, Dollár & Girshick, CVPR 2019"),
    Method("EQL", "eql", _synthetic("eql"), paper="Tan et al., CVPR 2020"),
    Method("EQLv2", "eqlv2", _synthetic("eqlv2"), paper="Tan et al., CVPR 2021"),
    Method("Seesaw", "seesaw", _synthetic("seesaw"), paper="Wang et al., CVPR 2021"),
    Method("Federated", "federated", _synthetic("federated"), paper="Zhou, Koltun & Krähenbühl, arXiv 2103.07461"),
    Method("ECM", "ecm", _synthetic("ecm"), paper="Cho & Krähenbühl, ECCV 2022"),
    Method("Gumbel (GOL)", "gumbel", _synthetic("gumbel"), paper="Alexandridis et al., ECCV 2022"),
    Method("NorCal on CE", "norcal", None, paper="Pan et al., NeurIPS 2021"),
    Method("FRACAL on CE", "fracal", None, paper="Alexandridis et al., CVPR 2025"),
    Method("LOCE", "loce", LOCE, paper="Feng et al., ICCV 2021"),
)
# Diagnostics, run only when named in --methods: what the classifier restart of the sigmoid
# methods costs by itself (CE restarted the same way), is it the loss or the memory (LOCE
# without its memory), is it the method or the 1-epoch schedule (3-epoch fine-tunes), and
# FRACAL with the original's lambda instead of one chosen on training images.
DIAGNOSTICS = (
    Method("CE, fresh classifier", "ce_reinit", CONTROL, (REINIT,), paper="-"),
    Method("LOCE without memory", "loce_no_memory", LOCE, ("loce.feature_memory=false",)),
    Method("CE, 3 epochs", "control_3ep", CONTROL, ("solver.epochs=3",)),
    Method("EQLv2, 3 epochs", "eqlv2_3ep", _synthetic("eqlv2"), ("solver.epochs=3",)),
    Method("FRACAL on CE, λ = 2", "fracal_l2", None, paper="Alexandridis et al., CVPR 2025"),
)
BY_LABEL = {m.label: m for m in (*METHODS, *DIAGNOSTICS)}


def _summary(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def _minutes(run_dir: Path) -> float | None:
    start, end = run_dir / "config.yaml", run_dir / "metrics.json"
    if start.is_file() and end.is_file():
        minutes = (end.stat().st_mtime - start.stat().st_mtime) / 60
        return minutes if minutes > 0.1 else None  # copied run directories keep no timing
    return None


def _class_balanced_subset(train_ann: Path, out: Path, per_class: int) -> Path:
    """An annotation file of up to ``per_class`` training images per class (first by id)."""
    if out.is_file():
        return out
    data = json.loads(train_ann.read_text())
    by_class: dict[int, list[int]] = {}
    for ann in data["annotations"]:
        ids = by_class.setdefault(ann["category_id"], [])
        if ann["image_id"] not in ids:
            ids.append(ann["image_id"])
    keep = {i for ids in by_class.values() for i in sorted(ids)[:per_class]}
    subset = {**data,
              "images": [im for im in data["images"] if im["id"] in keep],
              "annotations": [a for a in data["annotations"] if a["image_id"] in keep]}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(subset))
    tmp.replace(out)
    return out


def _evaluate_checkpoint(checkpoint: Path, out_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """Evaluate a trained checkpoint with its stored config plus ``overrides``."""
    import torch

    from loce.engine.checkpoint import load_trained_model
    from loce.engine.evaluate import evaluate

    metrics_file = out_dir / "metrics.json"
    if metrics_file.is_file():
        return json.loads(metrics_file.read_text())
    model, cfg, _ = load_trained_model(checkpoint, overrides)
    with torch.no_grad():
        return evaluate(model, cfg, out_dir, device=torch.device("cpu"))


@dataclass(frozen=True)
class PostHoc:
    """A test-time calibration of the CE fine-tune, its parameter chosen on training images."""

    run: str  # run directory name inside the seed directory
    key: str  # the config key of its parameter
    grid: tuple[float, ...]
    name: str  # of the parameter, in the metrics file and the report


POST_HOC = {
    "norcal": PostHoc("norcal", "model.test.norcal_gamma", NORCAL_GAMMAS, "norcal_gamma"),
    "fracal": PostHoc("fracal", "model.test.fracal_lambda", FRACAL_LAMBDAS, "fracal_lambda"),
    # diagnostic: the original's lambda on LVIS, not chosen
    "fracal_l2": PostHoc("fracal_l2", "model.test.fracal_lambda", (2.0,), "fracal_lambda"),
}


def run_post_hoc(seed_dir: Path, data: Path, base: list[str], spec: PostHoc) -> dict[str, Any]:
    """``spec`` on the seed's CE fine-tune: its parameter chosen on a class-balanced subset of
    the training images (box AP, ties to the smaller value), then validated."""
    run_dir = seed_dir / spec.run
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        print(f"[study] {spec.run}: already done ({run_dir})")
        return json.loads(metrics_file.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(f"post-hoc: the CE fine-tune with {spec.key}\n")
    ckpt = final_checkpoint(seed_dir / "control")
    subset = _class_balanced_subset(data / "annotations" / "train.json",
                                    seed_dir.parent / "norcal_train_subset.json", per_class=5)
    selection = {}
    for value in spec.grid if len(spec.grid) > 1 else ():  # one value: nothing to choose
        m = _evaluate_checkpoint(ckpt, run_dir / f"train_{spec.name.split('_')[1]}_{value}",
                                 [*base, f"data.val_ann={subset}", f"data.val_images={data}",
                                  "eval.iou_types=[bbox]", f"{spec.key}={value}"])
        selection[value] = m["bbox"]["AP"]
        print(f"[study] {spec.run}: {spec.name} {value}: training-subset box AP "
              f"{100 * selection[value]:.1f}")
    value = max(selection, key=lambda v: (selection[v], -v)) if selection else spec.grid[0]
    metrics = _evaluate_checkpoint(ckpt, run_dir / "val", [*base, f"{spec.key}={value}"])
    metrics = {**metrics, spec.name: value,
               f"{spec.name}_selection_train_box_AP": {str(v): ap for v, ap in selection.items()}}
    tmp = run_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2))
    tmp.replace(metrics_file)
    return metrics


DIAG_DIR = "eval_box_300dets"
DIAG = ["model.test.detections_per_img=300", "eval.iou_types=[bbox]"]


def run_diagnostic(seed: int, out: Path, data: Path, extra: list[str],
                   methods: list[Method] | None = None) -> None:
    """Re-evaluate every finished run of ``seed`` with LVIS's 300 detections per image (the
    synthetic preset keeps 50), boxes only: separates what a method learnt about the rare
    classes from where its scores rank them against the per-image cap."""
    base = [*data_overrides(data), f"train.seed={seed}", *extra]
    seed_dir = out / f"seed{seed}"
    chosen = [(m.label, m.run) for m in methods] if methods else \
        [("stage 1", "stage1"), *[(m.label, m.run) for m in METHODS]]
    for label, run in chosen:
        run_dir = seed_dir / run
        if not (run_dir / "metrics.json").is_file():
            continue
        overrides = [*base, *DIAG]
        if run in POST_HOC:
            spec = POST_HOC[run]
            value = json.loads((run_dir / "metrics.json").read_text())[spec.name]
            ckpt = final_checkpoint(seed_dir / "control")
            overrides.append(f"{spec.key}={value}")
        else:
            ckpt = final_checkpoint(run_dir)
        t0 = time.perf_counter()
        m = _evaluate_checkpoint(ckpt, run_dir / DIAG_DIR, overrides)
        print(f"[study] seed {seed} {label}: 300 detections, box AP {100 * m['bbox']['AP']:.1f} "
              f"APr {100 * m['bbox']['APr']:.1f} ({time.perf_counter() - t0:.0f} s)")


def run_seed(seed: int, methods: list[Method], out: Path, data: Path,
             extra: list[str]) -> dict[str, dict[str, Any]]:
    base = [*data_overrides(data), f"train.seed={seed}", *extra]
    seed_dir = out / f"seed{seed}"
    results = {"stage 1": run_stage("stage1", STAGE1, seed_dir, base)}
    init = [f"train.init_from={final_checkpoint(seed_dir / 'stage1')}"]
    for m in methods:
        try:
            if m.config is None:
                results[m.label] = run_post_hoc(seed_dir, data, base, POST_HOC[m.run])
            else:
                results[m.label] = run_stage(m.run, m.config, seed_dir, [*base, *init, *m.overrides])
        except Exception:  # one failed method must not lose the others' runs
            traceback.print_exc()
            print(f"[study] seed {seed}: {m.label} failed; continuing with the next method")
    return results


def collect(out: Path, seeds: list[int]) -> dict[str, dict[int, dict[str, Any]]]:
    """Metrics and minutes of every finished run: ``{label: {seed: {...}}}``."""
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for label, run in [("stage 1", "stage1"), *[(m.label, m.run) for m in (*METHODS, *DIAGNOSTICS)]]:
        for seed in seeds:
            run_dir = out / f"seed{seed}" / run
            f = run_dir / "metrics.json"
            if not f.is_file():
                continue
            m = json.loads(f.read_text())
            entry = {t: {k: 100 * float(m[t][k]) for k in (*KEYS, *AR_KEYS)} for t in TYPES}
            entry["minutes"] = _minutes(run_dir)
            diag = run_dir / DIAG_DIR / "metrics.json"
            if diag.is_file():
                d = json.loads(diag.read_text())["bbox"]
                entry["bbox_300dets"] = {k: 100 * float(d[k]) for k in (*KEYS, *AR_KEYS)}
            for spec in POST_HOC.values():
                if spec.name in m:
                    entry[spec.name] = m[spec.name]
                    entry[f"{spec.name}_selection"] = m[f"{spec.name}_selection_train_box_AP"]
            found.setdefault(label, {})[seed] = entry
    return found


def merge_previous(found: dict[str, dict[int, dict[str, Any]]], previous: Path, tag: str
                   ) -> tuple[dict[str, dict[int, dict[str, Any]]], dict[str, str]]:
    """The runs of an earlier report (its ``per_seed``) with those of ``found`` added: a label
    the earlier study has is kept for it and gets `` [tag]`` for the new run. Returns the
    merged runs and, for each merged label, the CE label it is compared with (the new CE's
    for the new rows).

    A row that an earlier merge added (the report's ``merged``) is replaced when the new run
    has it, and kept otherwise: merging the same run directories again gives the same report,
    and a later run with one more post-hoc row adds that row. Replacing the CE that a kept row
    is compared with is refused unless the new CE's metrics are the same (the same runs, run
    again)."""
    report = _read_report(previous)
    added_before: dict[str, str] = report.get("merged") or {}
    earlier = {lab for lab in report["per_seed"] if lab not in added_before}
    renamed = {lab: f"{lab} [{tag}]" if lab in earlier else lab for lab in found}
    new_rows = set(renamed.values())
    merged = {lab: {int(s): e for s, e in per.items()}
              for lab, per in report["per_seed"].items() if lab not in new_rows}
    new_ce = renamed.get("CE", "CE")
    baseline = {lab: ce for lab, ce in added_before.items() if lab not in new_rows}
    # Kept rows are compared with a CE label; the only one this run can replace is new_ce.
    kept_on_new_ce = [lab for lab, ce in baseline.items() if ce == new_ce]
    if (kept_on_new_ce and new_ce in new_rows
            and not _same_metrics(report["per_seed"][new_ce], found["CE"])):
        raise SystemExit(f"{previous}: '{kept_on_new_ce[0]}' (merged earlier) is compared with "
                         f"'{new_ce}', which this run replaces with different metrics; merge "
                         f"into the report it was merged into before that, or use another --tag")
    for lab, per in found.items():
        merged[renamed[lab]] = per
        baseline[renamed[lab]] = new_ce
    return merged, baseline


def _read_report(path: Path) -> dict[str, Any]:
    """An earlier ``longtail.json``, or a one-line error naming the file."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"--merge {path}: cannot read it ({err}); give the longtail.json an "
                         f"earlier run of this script wrote") from None
    if not isinstance(report, dict) or not isinstance(report.get("per_seed"), dict):
        raise SystemExit(f"--merge {path}: no 'per_seed' runs in it; give the longtail.json an "
                         f"earlier run of this script wrote")
    return report


def _same_metrics(a: dict[Any, dict[str, Any]], b: dict[int, dict[str, Any]]) -> bool:
    """Whether two ``{seed: entry}`` runs have the same seeds and AP/AR values (to 1e-9)."""
    a = {int(s): e for s, e in a.items()}
    return a.keys() == b.keys() and all(
        abs(a[s][t][k] - b[s][t][k]) <= 1e-9 for s in a for t in TYPES for k in (*KEYS, *AR_KEYS))


def _ordered(found: dict[str, Any]) -> list[str]:
    """The labels of ``found`` in the study's order, each followed by its tagged reruns."""
    order = ["stage 1", *[m.label for m in (*METHODS, *DIAGNOSTICS)]]
    return sorted(found, key=lambda lab: (order.index(lab.split(" [")[0]), lab))


def report(found: dict[str, dict[int, dict[str, Any]]], seeds: list[int], report_dir: Path,
           plot_path: Path, extra: list[str], baseline: dict[str, str] | None = None) -> str:
    """Tables (returned and written as ``longtail.md``), ``longtail.json`` and the plot.

    ``baseline`` names the CE run each label's difference is taken against (default "CE");
    labels with a `` [tag]`` are reruns (:func:`merge_previous`), not part of the plot or of
    the study's minutes.
    """
    baseline = baseline or {}
    labels = _ordered(found)
    summary = {lab: {t: {k: _summary([found[lab][s][t][k] for s in found[lab]])
                         for k in (*KEYS, *AR_KEYS)} for t in TYPES} for lab in labels}
    delta = {}
    for lab in labels:
        ce = found.get(baseline.get(lab, "CE"), {})
        common = [s for s in found[lab] if s in ce]
        if lab.split(" [")[0] in ("CE", "stage 1") or not common:
            continue
        delta[lab] = {t: {k: _summary([found[lab][s][t][k] - ce[s][t][k]
                                       for s in common]) for k in KEYS} for t in TYPES}
    minutes = {lab: [found[lab][s]["minutes"] for s in found[lab] if found[lab][s]["minutes"]]
               for lab in labels}
    mean_minutes = {lab: statistics.fmean(v) for lab, v in minutes.items() if v}
    # Unknown times (runs copied from elsewhere) count at the mean of the measured ones.
    default = {"stage 1", *(m.label for m in METHODS)}
    per_seed_total = {s: sum(found[lab][s]["minutes"] or mean_minutes.get(lab, 0.0)
                             for lab in labels if s in found[lab] and lab in default)
                      for s in seeds}

    def cell(x: dict[str, float]) -> str:
        return f"{x['mean']:.1f} ± {x['std']:.1f}"

    head = ("| method | seeds | " + " | ".join(f"box {k}" for k in KEYS) + " | "
            + " | ".join(f"mask {k}" for k in KEYS) + " |")
    rule = "|---|---:|" + "---:|" * (2 * len(KEYS))
    lines = [f"Synthetic long tail (default preset, 48 classes), seeds {seeds}: mean ± std "
             "over seeds, AP in percent.", "", head, rule]
    for lab in labels:
        cells = [cell(summary[lab][t][k]) for t in TYPES for k in KEYS]
        lines.append(f"| {lab} | {len(found[lab])} | " + " | ".join(cells) + " |")
    lines += ["", "Difference to the CE fine-tune of the same seed (mean ± std over seeds):", "",
              head.replace("| method |", "| method − CE |"), rule]
    for lab, d in delta.items():
        cells = [f"{d[t][k]['mean']:+.1f} ± {d[t][k]['std']:.1f}" for t in TYPES for k in KEYS]
        lines.append(f"| {lab} | {d['bbox']['AP']['n']} | " + " | ".join(cells) + " |")
    lines += ["", "Box recall (LVIS AR over an image's detections, 50 with the preset; mean ± std "
              "over seeds): does a method find the rare objects at all, whatever their rank?", "",
              "| method | " + " | ".join(f"box {k}" for k in AR_KEYS) + " |",
              "|---|" + "---:|" * len(AR_KEYS)]
    for lab in labels:
        lines.append(f"| {lab} | " + " | ".join(cell(summary[lab]["bbox"][k]) for k in AR_KEYS) + " |")
    diag = {lab: [found[lab][s]["bbox_300dets"] for s in found[lab] if "bbox_300dets" in found[lab][s]]
            for lab in labels}
    if any(diag.values()):
        lines += ["", "Diagnostic: boxes evaluated again with 300 detections per image (LVIS's cap; "
                  "the synthetic preset keeps 50), mean ± std over the seeds evaluated:", "",
                  "| method | seeds | " + " | ".join(f"box {k}" for k in (*KEYS, "ARr")) + " |",
                  "|---|---:|" + "---:|" * (len(KEYS) + 1)]
        for lab, rows in diag.items():
            if rows:
                cells = [cell(_summary([r[k] for r in rows])) for k in (*KEYS, "ARr")]
                lines.append(f"| {lab} | {len(rows)} | " + " | ".join(cells) + " |")
    for lab, spec in (("NorCal on CE", POST_HOC["norcal"]), ("FRACAL on CE", POST_HOC["fracal"])):
        if lab in found:
            picks = ", ".join(f"seed {s}: {e[spec.name]}" for s, e in found[lab].items())
            lines += ["", f"{lab.split()[0]} {spec.name.split('_')[1]} chosen on training images "
                      f"(grid {list(spec.grid)}): {picks}."]
    def minute(lab: str, s: int) -> str:
        m = found[lab].get(s, {}).get("minutes")
        return f"{m:.1f}" if m else "—"

    lines += ["", "Minutes per run, training and evaluation (— : not measured, e.g. a run "
              "directory copied from elsewhere):", "",
              "| run | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|" + "---:|" * len(seeds)]
    lines += [f"| {lab} | " + " | ".join(minute(lab, s) for s in seeds) + " |" for lab in labels]
    lines += ["", "The default study (stage 1 and the methods above the diagnostics), per seed, "
              "counting a run without a measured time at its mean over the other seeds: "
              + ", ".join(f"seed {s}: {m:.1f} min" for s, m in per_seed_total.items())
              + f"; all seeds {sum(per_seed_total.values()):.0f} min."]
    if extra:
        lines.append(f"Config overrides for every run: {extra}")
    table = "\n".join(lines) + "\n"

    report_dir.mkdir(parents=True, exist_ok=True)
    payload = {"seeds": seeds, "overrides": extra, "per_seed": found, "merged": baseline,
               "summary_percent": summary,
               "minus_ce_percent": delta, "minutes_per_seed": per_seed_total,
               "mean_minutes_per_run": mean_minutes}
    (report_dir / "longtail.json").write_text(json.dumps(payload, indent=2, default=str))
    (report_dir / "longtail.md").write_text(table)
    main_rows = {"stage 1", *(m.label for m in METHODS)}
    _plot({lab: v for lab, v in summary.items() if lab in main_rows}, plot_path)
    return table


def _plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, t, name in zip(axes, TYPES, ("box", "mask"), strict=True):
        for i, (lab, s) in enumerate(summary.items()):
            x, y = s[t]["APf"], s[t]["APr"]
            others = [f"C{j}" for j in range(10) if j != 3]  # red is LOCE's
            color = "C3" if lab == "LOCE" else ("0.4" if lab == "stage 1" else others[i % 9])
            ax.errorbar(x["mean"], y["mean"], xerr=x["std"], yerr=y["std"], fmt="o",
                        color=color, capsize=3, markersize=6)
            ax.annotate(lab, (x["mean"], y["mean"]), textcoords="offset points",
                        xytext=(5, 4), fontsize=8)
        ax.set_xlabel(f"{name} APf (frequent classes, %)")
        ax.set_ylabel(f"{name} APr (rare classes, %)")
        ax.set_title(f"{name}: rare against frequent (mean ± std over seeds)", fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=None, metavar="LABEL",
                        help=f"run only these (default all): {', '.join(BY_LABEL)}")
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--out", default="runs/longtail", help="run directories (checkpoints)")
    parser.add_argument("--report", default="benchmarks/results",
                        help="where longtail.json and longtail.md go")
    parser.add_argument("--plot", default="docs/longtail-study.png")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: summarise the finished runs")
    parser.add_argument("--diagnose", type=int, nargs="*", default=None, metavar="SEED",
                        help="also re-evaluate the finished runs of these seeds (default: all "
                             "--seeds; only --methods when given) with 300 detections per "
                             "image, boxes only")
    parser.add_argument("--merge", default=None, metavar="LONGTAIL_JSON",
                        help="report these runs together with an earlier report's (its run "
                             "directories need not exist); a method both have is shown twice, "
                             "this run's as 'LABEL [TAG]' and compared with this run's CE")
    parser.add_argument("--tag", default="rerun", help="the suffix of --merge (default rerun)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    from loce.logs import setup_console

    setup_console()  # the runs' progress lines, as under the loce command

    if args.methods:
        unknown = [m for m in args.methods if m not in BY_LABEL]
        if unknown:
            parser.error(f"unknown method(s) {unknown}; choose from {list(BY_LABEL)}")
        methods = [BY_LABEL[m] for m in args.methods]
        if any(m.config is None for m in methods) and BY_LABEL["CE"] not in methods:
            methods.insert(0, BY_LABEL["CE"])  # NorCal and FRACAL calibrate the CE fine-tune
    else:
        methods = list(METHODS)
    out, data = Path(args.out), Path(args.data)
    if args.merge:
        _read_report(Path(args.merge))  # a wrong file fails now, not after the runs
    if not args.report_only:
        ensure_dataset(data, "default")
        t0 = time.perf_counter()
        for seed in args.seeds:
            run_seed(seed, methods, out, data, args.overrides)
        print(f"[study] this invocation: {(time.perf_counter() - t0) / 60:.1f} min")
    if args.diagnose is not None:
        for seed in args.diagnose or args.seeds:
            run_diagnostic(seed, out, data, args.overrides, methods if args.methods else None)
    found, baseline = collect(out, args.seeds), None
    if args.merge:
        found, baseline = merge_previous(found, Path(args.merge), args.tag)
    table = report(found, args.seeds, Path(args.report), Path(args.plot), args.overrides,
                   baseline)
    print(table)
    print(f"wrote {Path(args.report) / 'longtail.json'}, {Path(args.report) / 'longtail.md'} "
          f"and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
