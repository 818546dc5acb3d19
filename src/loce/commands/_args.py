"""Command-line arguments that several commands share, defined once."""

from __future__ import annotations

import argparse

DEVICES = ("auto", "cpu", "cuda")


def add_overrides(parser: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable), collected in ``args.overrides``."""
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help=help)  # fmt: skip


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda`` (default auto: CUDA when available)."""
    parser.add_argument("--device", default="auto", choices=list(DEVICES))


def add_amp(parser: argparse.ArgumentParser) -> None:
    """``--amp none|bf16|fp16``: inference under autocast (``model.test.amp``)."""
    parser.add_argument("--amp", default=None, choices=("none", "bf16", "fp16"),
                        help="run inference under autocast in this dtype; box geometry stays "
                        "float32 (default: the config's model.test.amp, none)")


def amp_overrides(args: argparse.Namespace) -> list[str]:
    """``["model.test.amp=..."]`` when ``--amp`` was given, else nothing."""
    amp = getattr(args, "amp", None)
    return [f"model.test.amp={amp}"] if amp is not None else []
