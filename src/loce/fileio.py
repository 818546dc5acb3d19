"""Atomic file writes: the one way loce writes a file that a reader or a resume relies on.

Every write goes to a temporary file in the destination's folder, is flushed and ``fsync``-ed,
and is then renamed over the destination (``os.replace``, atomic on POSIX and Windows). So a
reader sees either the old file or the complete new one, never half of it; a process killed
mid-write leaves the old file in place. On any failure (disk full, read-only folder, file-size
limit, an exception from the code producing the content) the temporary file is removed and an
``OSError`` becomes a :class:`~loce.errors.LoceError` that says what could not be written,
where, and why — and how much space it needed where that is known.

Temporary files are named ``.NAME.<random>.tmp``: hidden, unique per writer, and never
mistaken for a checkpoint or a results file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from loce.errors import LoceError

__all__ = [
    "FileWriteError",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "fsync_directory",
    "save_torch_atomic",
]


class FileWriteError(LoceError, OSError):
    """A file could not be written (its message names the file, the reason and the fix)."""


def fsync_directory(directory: str | os.PathLike) -> None:
    """Make a rename inside ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _describe_failure(path: Path, what: str, err: OSError, written: int | None) -> str:
    reason = err.strerror or str(err)
    fix = ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = None
        need = f"{written / 2**20:.1f} MiB or more" if written else "more space"
        have = f", {free / 2**20:.1f} MiB free" if free is not None else ""
        fix = f"; it needs {need}{have}: free some space or write elsewhere"
    elif err.errno == errno.EFBIG:
        fix = "; the file-size limit (ulimit -f) is too small for it"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "; the folder is not writable: choose another output location"
    elif err.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = "; a file stands where a folder is needed: choose another output location"
    elif err.errno == errno.EISDIR:
        fix = "; a folder stands where the file should go: give a file name"
    return f"{path}: cannot write the {what} ({reason}){fix}."


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", *, what: str = "file",
                 encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` when the ``with`` block ends without error.

    Args:
        path: the destination; its parent folders are created.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        what: what the file is, for the error message ("checkpoint", "results file", ...).
        encoding: text encoding (ignored in binary mode).

    Raises:
        FileWriteError: the folder or the file could not be written; nothing was replaced
            and no temporary file is left behind. Other exceptions raised inside the block
            propagate unchanged, with the same clean-up.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    if path.is_dir():
        raise FileWriteError(_describe_failure(path, what, IsADirectoryError(
            errno.EISDIR, "is a directory"), None))
    tmp: str | None = None
    f: IO[Any] | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        f = os.fdopen(fd, mode, encoding=None if "b" in mode else encoding)
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
        tmp = None
        fsync_directory(path.parent)
    except OSError as err:
        written = None
        if tmp is not None:
            with contextlib.suppress(OSError):
                written = os.path.getsize(tmp)
        raise FileWriteError(_describe_failure(path, what, err, written)) from None
    finally:
        if f is not None and not f.closed:
            with contextlib.suppress(OSError):
                f.close()
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str, *, what: str = "file") -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_write(path, "w", what=what) as f:
        f.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, payload: Any, *, what: str = "JSON file",
                      indent: int | None = 2, default: Callable[[Any], Any] | None = None) -> Path:
    """Write ``payload`` as JSON (newline-terminated) to ``path`` atomically; returns the path."""
    with atomic_write(path, "w", what=what) as f:
        json.dump(payload, f, indent=indent, default=default)
        f.write("\n")
    return Path(path)


def save_torch_atomic(obj: Any, path: str | os.PathLike, *, what: str = "checkpoint") -> Path:
    """``torch.save(obj)`` to ``path`` atomically; returns the path."""
    import torch

    with atomic_write(path, "wb", what=what) as f:
        torch.save(obj, f)
    return Path(path)
