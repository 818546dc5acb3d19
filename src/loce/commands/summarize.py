"""``loce summarize ANN``: what an annotation file holds, before training on it.

Example::

    loce summarize data/own/annotations/train.json --images data/own \\
        --val data/own/annotations/val.json --val-images data/own --plot train_classes.png

Prints images, instances, classes, images without annotations, crowd instances, the r/c/f
group sizes with the thresholds used (the file's own ``frequency`` fields for LVIS), the
head-to-tail ratio, classes missing from either split, and image files that cannot be found
under the given roots; ``--plot`` draws the training images per class, sorted, log scale,
coloured by group. ``loce train`` logs the same summary of its training split.
"""

from __future__ import annotations

import argparse

HELP = "summarise an annotation file: images, instances, r/c/f groups, missing files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ann", help="training annotation file (LVIS or COCO JSON)")
    parser.add_argument("--images", metavar="DIR", help="its image root: look up every file")
    parser.add_argument("--val", metavar="JSON", help="the validation file, to compare classes")
    parser.add_argument("--val-images", metavar="DIR", help="the validation image root")
    parser.add_argument("--thresholds", type=int, nargs=2, default=(10, 100),
                        metavar=("RARE_MAX", "COMMON_MAX"),
                        help="groups of a file without 'frequency': rare up to RARE_MAX "
                        "training images, common up to COMMON_MAX (default: LVIS's 10 100, "
                        "as data.frequency_thresholds)")
    parser.add_argument("--plot", metavar="PNG", help="write the images-per-class plot here")


def run(args: argparse.Namespace) -> int:
    from loce.data.lvis.index import LVISIndex
    from loce.data.summary import format_split_summary, summarize_split
    from loce.errors import LoceError

    rare_max, common_max = args.thresholds
    if not 1 <= rare_max < common_max:
        raise LoceError(f"--thresholds {rare_max} {common_max}: expected 1 <= RARE_MAX < "
                        "COMMON_MAX, e.g. --thresholds 10 100")
    train = summarize_split(LVISIndex.from_json(args.ann), args.thresholds,
                            image_root=args.images)
    val = None
    if args.val is not None:
        val = summarize_split(LVISIndex.from_json(args.val), args.thresholds,
                              image_root=args.val_images)
    print(format_split_summary(train, val))
    if args.plot:
        from loce.evaluation.plots import plot_images_per_class

        path = plot_images_per_class(train["image_counts"], train["groups"], args.plot,
                                     train["thresholds"] if train["group_source"] == "counts"
                                     else None, title=f"training images per class: {args.ann}")
        print(f"wrote {path}")
    return 0
