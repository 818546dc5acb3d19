"""``loce eval``: LVIS box/mask AP of a results file.

Example::

    loce eval --gt data/annotations/val.json --results predictions.json --out metrics.json

prints one row per IoU type (AP, AP50, AP75, APs, APm, APl, APr, APc, APf in percent; with
``--protocol pooled`` AP-pooled and its r/c/f groups) and writes ``{"bbox": {...}, "segm":
{...}}`` with all metrics, per-category AP and the parameters. Warnings (categories with
fewer detections than the per-class cap) are printed in one line each. Imports no torch.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

HELP = "Evaluate a detection results file with the LVIS protocol (box and mask AP)."


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _max_dets(text: str) -> int:
    value = _int(text)
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(f"must be >= 1, or -1 for no cap (got {value})")
    return value


def _positive(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {value})")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", required=True, metavar="GT.json", help="LVIS v0.5/v1 annotations")
    parser.add_argument(
        "--results",
        required=True,
        metavar="RES.json",
        help="LVIS results: a JSON list of {image_id, category_id, score, bbox[, segmentation]}",
    )
    parser.add_argument(
        "--iou-type",
        nargs="+",
        choices=("bbox", "segm"),
        default=None,
        help="what to evaluate (default: bbox, plus segm when the results have masks)",
    )
    parser.add_argument(
        "--max-dets",
        type=_max_dets,
        default=300,
        help="detections kept per image across categories, standard protocol (default: 300; "
        "-1: all)",
    )
    parser.add_argument(
        "--protocol",
        choices=("standard", "fixed", "pooled"),
        default="standard",
        help="standard: LVIS, top --max-dets per image; fixed: AP_fixed (Dave et al. 2021), "
        "top --dets-per-class per category over the dataset, no per-image cap; pooled: "
        "AP_pool (same paper), the fixed selection with one precision-recall curve per "
        "category group",
    )
    parser.add_argument(
        "--dets-per-class",
        type=_positive,
        default=10_000,
        help="detections kept per category under --protocol fixed/pooled (default: 10000)",
    )
    parser.add_argument("--out", metavar="metrics.json", help="write all metrics as JSON here")


def run(args: argparse.Namespace) -> int:
    from loce.evaluation import evaluate_lvis_multi, format_metrics_table
    from loce.evaluation.results import file_has_masks
    from loce.fileio import atomic_write_json, check_output_file

    if args.out:
        check_output_file(args.out, what="metrics file")

    iou_types = args.iou_type
    if iou_types is None:
        iou_types = ["bbox"]
        results_path = Path(args.results)
        if results_path.is_file() and file_has_masks(results_path):
            iou_types.append("segm")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = evaluate_lvis_multi(
            args.gt,
            args.results,
            iou_types=iou_types,
            max_dets=args.max_dets,
            protocol=args.protocol,
            dets_per_class=args.dets_per_class,
        )
    for warning in caught:
        print(f"loce eval: warning: {warning.message}", file=sys.stderr)
    params = next(iter(results.values()))["params"]
    if args.protocol in ("fixed", "pooled"):
        rule = (
            f"{args.protocol}: top {args.dets_per_class} detections per category, no per-image "
            "cap"
        )
    else:
        cap = params["max_dets"]
        rule = "standard: all detections" if cap is None else f"standard: top {cap} per image"
    print(
        f"LVIS evaluation ({rule}); {params['num_images']} images, "
        f"{params['num_detections']} detections evaluated"
    )
    print(format_metrics_table(results))
    if args.out:
        atomic_write_json(args.out, results, what="metrics file")
        print(f"wrote {args.out}")
    return 0
