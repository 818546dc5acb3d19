"""Logging: what the console shows, and the ``log.txt`` a run keeps.

Every module logs to its own logger (``logging.getLogger(__name__)``, all under ``loce``). The
command line calls :func:`setup_console` once: messages at INFO and above go to stdout (warnings
and errors to stderr) as plain lines, written through tqdm so that they do not break a
progress bar; processes other than rank 0 of a ``torchrun`` job show warnings only.
:func:`log_to_file` adds a file that receives everything at DEBUG and above with a time stamp,
the logger's name and the level, including warnings raised by libraries (Python's ``warnings``
are routed into logging, not silenced).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["PROGRESS_ENV", "environment_lines", "log_to_file", "progress_bars", "setup_console"]

# Set to 0 to hide every progress bar (e.g. in one of several processes sharing a console).
PROGRESS_ENV = "LOCE_PROGRESS"

ROOT = "loce"
FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_WARNINGS = "py.warnings"


class _ConsoleHandler(logging.Handler):
    """Plain lines to the current ``sys.stdout`` (``sys.stderr`` from WARNING on), via tqdm."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            tqdm.write(self.format(record), file=stream)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A ``warnings.showwarning`` that logs to ``py.warnings`` (as ``logging.captureWarnings``
    does, but installed and removed by loce itself, so nesting with other hooks is safe)."""
    text = warnings.formatwarning(message, category, filename, lineno, line)
    logging.getLogger(_WARNINGS).warning("%s", text.rstrip())


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def progress_bars() -> bool:
    """Whether progress bars are shown (``LOCE_PROGRESS=0`` hides them)."""
    return os.environ.get(PROGRESS_ENV, "1") != "0"


def setup_console(level: int = logging.INFO, prefix: str = "") -> None:
    """Show loce's messages (and library warnings) on the console; idempotent.

    Args:
        level: the lowest level shown (rank 0; other ranks show warnings only).
        prefix: put before every line, e.g. ``"[loce] "`` for one of several processes.
    """
    warnings.showwarning = _log_warning
    handler_level = level if _rank() == 0 else logging.WARNING
    for name in (ROOT, _WARNINGS):
        logger = logging.getLogger(name)
        for h in [h for h in logger.handlers if isinstance(h, _ConsoleHandler)]:
            logger.removeHandler(h)
        handler = _ConsoleHandler(handler_level)
        fmt = prefix + ("%(message)s" if name == ROOT else "warning: %(message)s")
        handler.setFormatter(logging.Formatter(fmt))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False  # libraries that configure the root logger print no copy


@contextmanager
def log_to_file(path: str | os.PathLike) -> Iterator[Path]:
    """Append everything loce logs (DEBUG and up) and every Python warning to ``path``.

    Log files are appended to (a resumed run continues its ``log.txt``), so they are the one
    kind of file loce does not write atomically.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    show_before = warnings.showwarning
    warnings.showwarning = _log_warning
    loggers = [logging.getLogger(ROOT), logging.getLogger(_WARNINGS)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        if lg.level == logging.NOTSET or lg.level > logging.DEBUG:
            lg.setLevel(logging.DEBUG)
    try:
        yield path
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(lvl)
        handler.close()
        if warnings.showwarning is _log_warning:
            warnings.showwarning = show_before


def environment_lines(device, world_size: int) -> list[str]:
    """What the numbers of a run depend on: versions, device, ranks, threads, CPU kernels."""
    import platform

    import torch
    import torchvision

    from loce import __version__

    cuda = torch.version.cuda or "none"
    lines = [
        f"loce {__version__}, Python {platform.python_version()}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__} (CUDA build {cuda})",
        f"device {device}, {world_size} process(es), {torch.get_num_threads()} CPU thread(s) "
        f"per process, CPU kernels {torch.backends.cpu.get_cpu_capability()}",
    ]
    if device.type == "cuda":
        lines.append(f"GPU {torch.cuda.get_device_name(device)}, "
                     f"{torch.cuda.device_count()} visible")
    return lines
