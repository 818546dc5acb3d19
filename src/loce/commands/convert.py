"""``loce convert``: MMDetection 2.x Mask R-CNN checkpoints to loce checkpoints, and back."""

from __future__ import annotations

import argparse

HELP = "Convert an MMDetection Mask R-CNN R50/R101-FPN checkpoint to a loce checkpoint (or back)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN.pth",
                        help="an MMDetection checkpoint (or, with --to mmdet, a loce checkpoint)")
    parser.add_argument("output", metavar="OUT.pth", help="the checkpoint to write")
    parser.add_argument("--to", choices=["loce", "mmdet"], default="loce",
                        help="output format (default loce)")
    parser.add_argument("--config", default=None, metavar="NAME",
                        help="an MMDetection config file (.py) to read the model from instead of "
                             "the checkpoint's meta['config'], or a loce config (bundled name or "
                             "YAML) to use instead of the automatic choice; needed for a bare "
                             "state dict")
    parser.add_argument("--normed-mask", choices=["auto", "yes", "no"], default="auto",
                        help="the mask head: auto = what the config says (FCNNormMaskHead or a "
                             "NormedConv2d predictor: normed), yes = normed, no = plain")
    parser.add_argument("--gt", default=None, metavar="ANN.json",
                        help="an LVIS annotation file: resolve the category ids from the class "
                             "names (default: LVIS ids 1..K in label order)")


def run(args: argparse.Namespace) -> int:
    from loce.convert import loce_to_mmdet, mmdet_to_loce
    from loce.errors import ConfigError

    if args.to == "mmdet":
        if args.config is not None or args.gt is not None or args.normed_mask != "auto":
            raise ConfigError("--config, --gt and --normed-mask apply to MMDetection input; "
                              "--to mmdet reads everything from the loce checkpoint")
        loce_to_mmdet(args.input, args.output)
    else:
        mmdet_to_loce(args.input, args.output, config=args.config,
                      normed_mask=args.normed_mask, gt=args.gt)
    return 0
