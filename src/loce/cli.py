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
    "summarize": "loce.commands.summarize",
    "train": "loce.commands.train",
    "test": "loce.commands.test",
    "predict": "loce.commands.predict",
    "eval": "loce.commands.eval",
    "analyze": "loce.commands.analyze",
    "convert": "loce.commands.convert",
    "export": "loce.commands.export",
    "configs": "loce.commands.configs",
    "demo": "loce.demo",
}


def build_parser() -> argparse.ArgumentParser:
    from loce import __version__

    # allow_abbrev=False everywhere: a prefix such as --res must not silently mean --resume.
    parser = argparse.ArgumentParser(
        prog="loce",
        description="LOCE and long-tailed object detection on PyTorch/torchvision.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"loce {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, allow_abbrev=False)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    from loce.logs import setup_console

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_console()
    try:
        return int(args._run(args) or 0)
    except LoceError as err:
        print(f"loce {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as err:
        # A path given by the user that a library opened directly.
        where = f"{err.filename}: " if err.filename else ""
        print(f"loce {args.command}: error: {where}{err.strerror or err}; check the path",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"loce {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
