"""``loce analyze``: why detections fail, by frequency group, under LVIS's rules.

Example::

    loce analyze --gt data/synthetic/annotations/val.json \\
        --results runs/ce/val_results.json runs/loce/val_results.json --names CE LOCE --out runs/why

prints, per IoU type, AP50 and the ΔAP of each TIDE error type for all categories and for the
rare, common and frequent groups (one block per run), what became of each group's objects,
and the classification confusions between groups; with ``--out``, writes ``analysis.json``,
``delta_ap_<type>.png`` (ΔAP bars per group, one bar per run) and ``confusions_<type>.png``
(the most frequent confusions of each run). Imports no torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Error analysis of results files under LVIS's rules: TIDE's error types by r/c/f group."


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1] (got {value})")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", required=True, metavar="GT.json", help="LVIS v0.5/v1 annotations")
    parser.add_argument("--results", required=True, nargs="+", metavar="RES.json",
                        help="one results file, or several to compare runs")  # fmt: skip
    parser.add_argument("--names", nargs="+", metavar="NAME",
                        help="a name for each results file (default: derived from the paths)")  # fmt: skip
    parser.add_argument("--iou-type", nargs="+", choices=("bbox", "segm"), default=None,
                        help="what to analyse (default: bbox, plus segm when every results "
                        "file has masks)")  # fmt: skip
    parser.add_argument("--max-dets", type=int, default=300,
                        help="detections kept per image across categories (default: 300; -1: all)")  # fmt: skip
    parser.add_argument("--pos-thr", type=_fraction, default=0.5,
                        help="foreground IoU: a match, and the AP's IoU (default: 0.5)")  # fmt: skip
    parser.add_argument("--bg-thr", type=_fraction, default=0.1,
                        help="background IoU (default: 0.1)")  # fmt: skip
    parser.add_argument("--top", type=int, default=10,
                        help="confused class pairs to list per run (default: 10)")  # fmt: skip
    parser.add_argument("--out", metavar="DIR",
                        help="write analysis.json and the plots into this directory")  # fmt: skip


def run_names(paths: list[str], names: list[str] | None) -> list[str]:
    """One distinct name per results file: the given ones, else the shortest distinct path
    suffixes (``val_results`` of ``runs/ce/val_results.json`` becomes ``ce/val_results``)."""
    from loce.errors import ConfigError

    if names is not None:
        if len(names) != len(paths):
            raise ConfigError(f"--names gives {len(names)} names for {len(paths)} results files; "
                              "give one name per file")  # fmt: skip
        if len(set(names)) != len(names):
            raise ConfigError(f"--names {' '.join(names)}: the names must differ")
        return list(names)
    parts = [Path(p).with_suffix("").parts for p in paths]
    depth = 1
    while True:
        candidates = ["/".join(p[-depth:]) for p in parts]
        if len(set(candidates)) == len(candidates) or depth >= max(len(p) for p in parts):
            break
        depth += 1
    if len(set(candidates)) != len(candidates):
        raise ConfigError("the same results file is given twice; give each once or name them "
                          "with --names")  # fmt: skip
    return candidates


def run(args: argparse.Namespace) -> int:
    from loce.errors import ConfigError
    from loce.evaluation.error_analysis import analyze_runs, format_analysis
    from loce.evaluation.plots import plot_confusions, plot_delta_ap
    from loce.evaluation.results import file_has_masks
    from loce.fileio import atomic_write_json, check_output_file

    if args.bg_thr > args.pos_thr:
        raise ConfigError(f"--bg-thr {args.bg_thr} is above --pos-thr {args.pos_thr}; the "
                          "background IoU must not exceed the foreground IoU")  # fmt: skip
    if args.max_dets == 0 or args.max_dets < -1:
        raise ConfigError(f"--max-dets {args.max_dets}: give a count >= 1, or -1 for no cap")
    names = run_names(args.results, args.names)
    out = Path(args.out) if args.out else None
    if out is not None:
        check_output_file(out / "analysis.json", what="analysis file")
    iou_types = args.iou_type
    if iou_types is None:
        iou_types = ["bbox"]
        paths = [Path(p) for p in args.results]
        if all(p.is_file() and file_has_masks(p) for p in paths):
            iou_types.append("segm")
    analyses = analyze_runs(
        args.gt,
        dict(zip(names, args.results)),
        iou_types,
        max_dets=None if args.max_dets == -1 else args.max_dets,
        pos_thr=args.pos_thr,
        bg_thr=args.bg_thr,
        top_confusions=args.top,
    )
    for k, (iou_type, runs) in enumerate(analyses.items()):
        if k:
            print()
        print(format_analysis(runs, iou_type))
    if out is not None:
        report = {
            "gt": str(args.gt),
            "results": dict(zip(names, args.results)),
            **analyses,
        }
        atomic_write_json(out / "analysis.json", report, what="analysis file")
        written = [out / "analysis.json"]
        for iou_type, runs in analyses.items():
            written.append(plot_delta_ap(runs, out / f"delta_ap_{iou_type}.png",
                                         title=f"{iou_type}: ΔAP by error type and group"))  # fmt: skip
            written.append(plot_confusions(runs, out / f"confusions_{iou_type}.png",
                                           title=f"{iou_type}: most frequent confusions"))  # fmt: skip
        print("wrote " + ", ".join(str(p) for p in written))
    return 0
