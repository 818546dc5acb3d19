"""``loce synth``: write the synthetic long-tailed dataset (LVIS v1 format).

Example::

    loce synth --out data/synth                  # default preset: 48 classes, 1500+480 images
    loce synth --out /tmp/tiny --preset tiny     # 12 classes, 24+12 images, for tests
    loce synth --out data/own --format coco --boxes-only   # as a user's detection data

Writes ``DIR/{train,val}/*.jpg``, ``DIR/annotations/{train,val}.json`` and ``DIR/summary.json``
and prints the class-frequency table. The images root for loaders is ``DIR``. See
:mod:`loce.data.synthetic` for what the dataset contains.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

# The keys of loce.data.synthetic.PRESETS, spelled out so that `loce --help` imports no numpy.
PRESET_NAMES = ("tiny", "default")

HELP = "generate the synthetic long-tailed instance-segmentation dataset (LVIS v1 format)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument(
        "--preset",
        default="default",
        choices=PRESET_NAMES,
        help="base settings: 'default' (demo and benchmark) or 'tiny' (tests); default: default",
    )
    parser.add_argument(
        "--format",
        default="lvis",
        choices=("lvis", "coco"),
        help="annotation files: 'lvis' (LVIS v1) or 'coco' (a COCO instance file as users' "
        "own data comes: no frequency fields, non-contiguous ids, an empty image, a crowd "
        "box); default: lvis",
    )
    parser.add_argument("--boxes-only", action="store_true",
                        help="with --format coco: no segmentations (detection-only data)")
    parser.add_argument("--num-classes", type=int, metavar="K", help="number of categories")
    parser.add_argument("--train-images", type=int, metavar="N", help="training images")
    parser.add_argument("--val-images", type=int, metavar="M", help="validation images")
    parser.add_argument("--image-size", type=int, metavar="S", help="image side in pixels")
    parser.add_argument("--seed", type=int, metavar="S", help="dataset seed (default 0)")
    parser.add_argument(
        "--workers",
        type=int,
        metavar="W",
        help="rendering processes (default: up to 4; the output does not depend on it)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a dataset previously written to a non-empty --out",
    )
    parser.add_argument("--quiet", action="store_true", help="print no progress bar or table")


def run(args: argparse.Namespace) -> int:
    from loce.data.synthetic.config import PRESETS
    from loce.data.synthetic.write import format_summary, generate

    overrides = {
        "num_classes": args.num_classes,
        "train_images": args.train_images,
        "val_images": args.val_images,
        "image_size": args.image_size,
        "seed": args.seed,
    }
    config = dataclasses.replace(
        PRESETS[args.preset], **{k: v for k, v in overrides.items() if v is not None}
    )
    start = time.perf_counter()
    summary = generate(
        args.out,
        config,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.quiet and sys.stderr.isatty(),
        annotation_format=args.format,
        boxes_only=args.boxes_only,
    )
    elapsed = time.perf_counter() - start
    if not args.quiet:
        print(format_summary(summary))
        if summary["dropped_instances"]:
            print(f"note: {summary['dropped_instances']} planned instances found no free place")
        print(f"wrote {args.out} in {elapsed:.1f} s (images root: {args.out})")
    return 0
