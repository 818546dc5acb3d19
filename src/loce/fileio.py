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

PyTorch files are read the one safe way too (:func:`load_torch`): ``torch.load`` with
``weights_only=True``, which builds tensors and plain values (lists, dicts, strings, numbers)
and refuses any other Python object before anything of it runs, so loading a checkpoint made by
someone else cannot run their code. A refusal names the file and the object.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from loce.errors import CheckpointError, LoceError
from loce.faults import fault_point

__all__ = [
    "FileWriteError",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "check_output_file",
    "ensure_directory",
    "fsync_directory",
    "load_torch",
    "remove_stale_temp_files",
    "save_torch_atomic",
]

TEMP_SUFFIX = ".tmp"


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


def _file_size_limit() -> int | None:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _describe_failure(path: Path, what: str, err: OSError, written: int | None) -> str:
    reason = err.strerror or str(err)
    fix = ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        free = _free_space(path.parent)
        need = f"{written / 2**20:.1f} MiB or more" if written else "more space"
        have = f", {free / 2**20:.1f} MiB free" if free is not None else ""
        fix = f"; it needs {need}{have}: free some space or write elsewhere"
    elif err.errno == errno.EFBIG:
        limit = _file_size_limit()
        size = f" of {limit / 2**20:.1f} MiB" if limit is not None else ""
        fix = f"; the file-size limit (ulimit -f){size} is too small for it: raise it"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "; the folder is not writable: choose another output location"
    elif err.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = "; a file stands where a folder is needed: choose another output location"
    elif err.errno == errno.EISDIR:
        fix = "; a folder stands where the file should go: give a file name"
    elif err.errno == errno.EIO:
        free = _free_space(path.parent)
        fix = f" with {free / 2**20:.1f} MiB free there" if free is not None else ""
    return f"{path}: cannot write the {what} ({reason}){fix}."


def _free_space(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _creation_mode() -> int:
    """``0o666 & ~umask``: the permissions of a file created with ``open(path, "w")``."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", *, what: str = "file",
                 encoding: str | None = "utf-8", fsync: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` when the ``with`` block ends without error.

    Args:
        path: the destination; its parent folders are created.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        what: what the file is, for the error message ("checkpoint", "results file", ...).
        encoding: text encoding (ignored in binary mode).
        fsync: flush the file and its folder to the disk before returning (off only for bulk
            outputs whose completion another, durable file records, e.g. dataset images).

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
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        # mkstemp creates 0600; the result gets the mode open() would give (0666 & ~umask), so
        # that checkpoints and results are readable by whoever may read the folder.
        os.chmod(tmp, _creation_mode())
        f = os.fdopen(fd, mode, encoding=None if "b" in mode else encoding)
        yield f
        f.flush()
        if fsync:
            os.fsync(f.fileno())
        f.close()
        fault_point(f"write:{what}")
        os.replace(tmp, path)
        tmp = None
        if fsync:
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
                      indent: int | None = 2, default: Callable[[Any], Any] | None = None,
                      sort_keys: bool = False,
                      separators: tuple[str, str] | None = None) -> Path:
    """Write ``payload`` as JSON (newline-terminated) to ``path`` atomically; returns the path."""
    with atomic_write(path, "w", what=what) as f:
        json.dump(payload, f, indent=indent, default=default, sort_keys=sort_keys,
                  separators=separators)
        f.write("\n")
    return Path(path)


def save_torch_atomic(obj: Any, path: str | os.PathLike, *, what: str = "checkpoint") -> Path:
    """``torch.save(obj)`` to ``path`` atomically; returns the path.

    Raises:
        FileWriteError: the file could not be written (a full disk, a file-size limit, ...):
            the message names the file, the reason and the space; nothing was replaced.
    """
    import torch

    with atomic_write(path, "wb", what=what) as f:
        try:
            torch.save(obj, f)
        except RuntimeError as err:
            failure = _torch_write_failure(err, f, Path(path).parent)
            if failure is None:
                raise
            raise failure from None
    return Path(path)


def _torch_write_failure(err: RuntimeError, f: IO[Any], folder: Path) -> OSError | None:
    """The ``OSError`` behind a failed ``torch.save``, or None when ``err`` is no write failure.

    torch's zip writer turns the ``OSError`` of a full disk or a file-size limit into a
    ``RuntimeError`` ("[enforce fail at inline_container.cc] . unexpected pos ..."); the
    ``OSError`` is its context. Without one, the cause is read from the file-size limit and the
    free space.
    """
    seen = err.__cause__ or err.__context__
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    text = str(err)
    if "inline_container" not in text and "PytorchStreamWriter" not in text:
        return None
    limit = _file_size_limit()
    try:
        size = os.fstat(f.fileno()).st_size
    except (OSError, ValueError):
        size = 0
    if limit is not None and size >= limit:
        return OSError(errno.EFBIG, os.strerror(errno.EFBIG))
    free = _free_space(folder)
    if free is not None and free < 2**20:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return OSError(errno.EIO, f"the write stopped short: {text.strip().splitlines()[0]}")


# Where torch's safe unpickler names the object it refused: "Unsupported global: GLOBAL
# mod.name was not an allowed global" / "Trying to load unsupported GLOBAL mod.name whose module
# mod is blocked" (torch >= 2.4), "Unsupported class mod.name" (earlier).
_REFUSED = re.compile(r"(?:GLOBAL|Unsupported class) ([A-Za-z_][\w.]*)")


def _refused_global(err: Exception, path: Path) -> str | None:
    """The global the safe unpickler refused in ``path``, or None when ``err`` is another failure."""
    found = _REFUSED.search(str(err))
    if found:
        return found.group(1)
    if "Weights only load failed" not in str(err):
        return None
    import torch

    try:  # the message's wording changed; the checkpoint itself names its globals
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - torch < 2.5, or a file it cannot parse
        return None
    return names[0] if names else None


def _load_failure(err: Exception) -> str:
    """What stopped ``torch.load``, in one line (never the advice to load unsafely)."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    detail = lines[0].split(". ")[0].rstrip(".")[:200] if lines else ""
    return f"{type(err).__name__}: {detail}" if detail else type(err).__name__


def _load_weights_only(path: Path, mmap: bool) -> Any:
    import torch

    with warnings.catch_warnings():  # a pickle protocol other than torch's own: not news
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def load_torch(path: str | os.PathLike, *, what: str = "checkpoint",
               legacy: Sequence[tuple[Callable[..., Any], str]] = (), mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU: tensors and plain values only.

    A file that holds any other Python object (whose unpickling could run code) is refused
    before any of it runs.

    Args:
        path: the file.
        what: what the file is, for the error message ("checkpoint", "feature memory", ...).
        legacy: ``(object, "module.name")`` pairs that an earlier format of the file stores and
            that are safe to rebuild; they are allowed only for this file, and only when the
            strict load refuses one of them (needs torch >= 2.5).
        mmap: map the file instead of reading it (for reading one small entry).

    Raises:
        CheckpointError: one line naming the file and either the refused global or what
            made the file unreadable.
    """
    import torch

    path = Path(path)
    try:
        return _load_weights_only(path, mmap)
    except Exception as err:  # noqa: BLE001 - every failure becomes one line
        failure = err
    name = _refused_global(failure, path)
    if name in {full for _, full in legacy}:
        if not hasattr(torch.serialization, "safe_globals"):
            raise CheckpointError(
                f"{path}: this {what} is of an earlier loce format (it holds '{name}'), which "
                f"torch {torch.__version__} cannot read safely; read it with torch>=2.5") from None
        try:
            with torch.serialization.safe_globals(list(legacy)):
                return _load_weights_only(path, mmap)
        except Exception as err:  # noqa: BLE001 - every failure becomes one line
            failure = err
        name = _refused_global(failure, path)
    if name is not None:
        raise CheckpointError(
            f"{path}: refused: the {what} holds the Python object '{name}', and loading it "
            "could run code (nothing of it was run); a checkpoint needs only tensors and plain "
            "values: if you trust its source, re-save those with torch.save"
        ) from None
    raise CheckpointError(f"cannot read the {what} {path}: not a PyTorch checkpoint, or a damaged "
                          f"one ({_load_failure(failure)})") from None


def ensure_directory(path: str | os.PathLike, *, what: str = "output folder") -> Path:
    """Create the folder ``path`` (and its parents) unless it exists; returns it.

    Raises:
        FileWriteError: a file stands at ``path`` or above it, the parent is read-only, or the
            folder exists but is not writable.
    """
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise FileExistsError(errno.EEXIST, "a file of that name exists")
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "permission denied")
    except OSError as err:
        reason = err.strerror or str(err)
        if err.errno in (errno.ENOTDIR, errno.EEXIST):
            fix = "a file stands where the folder should be: choose another location"
        elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            fix = "it is not writable: choose another location"
        elif err.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = "the disk is full: free some space or choose another location"
        else:
            fix = "choose another location"
        raise FileWriteError(f"{path}: cannot create the {what} ({reason}); {fix}.") from None
    return path


def check_output_file(path: str | os.PathLike, *, what: str = "output file") -> Path:
    """Check, before any work is done, that ``path`` can be written; creates nothing.

    The path must not be a folder, and its nearest existing ancestor must be a writable
    folder (the missing folders in between are created when the file is written).

    Raises:
        FileWriteError: naming the path, what is in the way and the fix.
    """
    path = Path(path)
    if path.is_dir():
        raise FileWriteError(_describe_failure(path, what, IsADirectoryError(
            errno.EISDIR, "is a directory"), None))
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise FileWriteError(_describe_failure(path, what, NotADirectoryError(
            errno.ENOTDIR, f"{parent} is a file, not a folder"), None))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FileWriteError(_describe_failure(path, what, PermissionError(
            errno.EACCES, f"{parent} is not writable"), None))
    return path


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writers killed mid-write (SIGKILL, power loss) left in
    ``directory``; returns what was removed. Call it only where no other writer is active."""
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    for tmp in directory.glob(f".*{TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed
