"""The ``loce`` command line: ``loce <command> [options]``.

Each command lives in its own module under :mod:`loce.commands` and exposes
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Command modules import
heavy libraries (torch) inside ``run`` only, so ``loce --help`` and ``loce eval`` start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from loce.errors import LoceError

# command name -> module under loce.commands
COMMANDS: dict[str, str] = {
    "synth": "loce.commands.synth",
    "train": "loce.commands.train",
    "predict": "loce.commands.predict",
    "eval": "loce.commands.eval",
    "convert": "loce.commands.convert",
    "configs": "loce.commands.configs",
    "demo": "loce.demo",
}


def build_parser() -> argparse.ArgumentParser:
    from loce import __version__

    parser = argparse.ArgumentParser(
        prog="loce",
        description="LOCE and long-tailed object detection on PyTorch/torchvision.",
    )
    parser.add_argument("--version", action="version", version=f"loce {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _message(err: LoceError) -> str:
    """The error's own message. One raised in a DataLoader worker process arrives wrapped in
    the worker's traceback, whose last line is the message."""
    text = str(err)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        _, sep, rest = last.partition(f"{type(err).__name__}: ")
        return rest if sep else last
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except LoceError as err:
        print(f"loce {args.command}: error: {_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"loce {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
