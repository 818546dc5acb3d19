"""``loce configs [NAME]``: list the bundled configs, or print one resolved."""

from __future__ import annotations

import argparse

from loce.commands._args import add_overrides

HELP = "List the bundled configs, or print one (with every default filled in)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="a bundled config name or a YAML file")
    add_overrides(parser, "override a value before printing (repeatable)")


def run(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from loce.config import bundled_configs, load_config

    if args.name is None:
        for name in bundled_configs():
            print(name)
        return 0
    cfg = load_config(args.name, args.overrides)
    print(OmegaConf.to_yaml(OmegaConf.structured(cfg)), end="")
    return 0
