"""``loce export``: a trained detector as one ONNX file (image in, detections out)."""

from __future__ import annotations

import argparse

from loce.commands._args import add_overrides

HELP = "Export a checkpoint to ONNX: resize, model, scoring, NMS and masks in one graph."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="a checkpoint written by `loce train` or `loce convert`")
    parser.add_argument("output", metavar="OUT.onnx", help="the ONNX file to write")
    parser.add_argument("--no-masks", action="store_true",
                        help="boxes, scores and labels only (smaller and faster)")
    parser.add_argument("--opset", type=int, default=17, metavar="N",
                        help="ONNX opset (default 17; at least 16)")
    parser.add_argument("--config", default=None,
                        help="config (default: the one stored in the checkpoint)")
    parser.add_argument("--candidates", type=int, default=None, metavar="N",
                        help="(proposal, class) pairs taken into NMS (default: 4x "
                             "model.test.detections_per_img)")
    add_overrides(parser, "change a test setting before the export, e.g. "
                          "--set model.test.score_thresh=0.05")


def run(args: argparse.Namespace) -> int:
    from loce.errors import ConfigError
    from loce.export.onnx import export_onnx

    if args.candidates is not None and args.candidates < 1:
        raise ConfigError(f"--candidates must be >= 1, got {args.candidates}")
    out = export_onnx(args.checkpoint, args.output, with_masks=not args.no_masks,
                      opset=args.opset, overrides=args.overrides, config=args.config,
                      candidates=args.candidates)
    meta = out.metadata
    size = out.path.stat().st_size / 2**20
    print(f"wrote {out.path} ({size:.1f} MiB): image uint8 [H, W, 3] -> {', '.join(out.outputs)}; "
          f"{meta['loce.method']}, {len(meta['loce.category_ids'].split(','))} classes")
    return 0
