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
