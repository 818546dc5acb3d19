"""loce.fileio: atomic writes leave the old file or the whole new one, clean up, and explain."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from loce.errors import LoceError
from loce.fileio import (
    FileWriteError,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    check_output_file,
    ensure_directory,
    remove_stale_temp_files,
    save_torch_atomic,
)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_writes_replace_the_file_and_leave_no_temporary(tmp_path):
    path = tmp_path / "sub" / "out.json"
    atomic_write_json(path, {"a": [1, 2]}, sort_keys=True)
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    assert path.read_text().endswith("\n")
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    import torch

    save_torch_atomic({"x": torch.arange(3)}, tmp_path / "t.pth")
    assert torch.load(tmp_path / "t.pth")["x"].tolist() == [0, 1, 2]
    assert _leftovers(path.parent) == [] and _leftovers(tmp_path) == []


def test_an_exception_in_the_block_keeps_the_old_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(path, what="results file") as f:
            f.write("half of the new")
            raise RuntimeError("boom")
    assert path.read_text() == "old" and _leftovers(tmp_path) == []


def test_disk_full_names_file_reason_and_size(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    path.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(FileWriteError) as e:
        atomic_write_text(path, "x" * 3 * 2**20, what="checkpoint")
    msg = str(e.value)
    assert isinstance(e.value, LoceError)
    assert str(path) in msg and "checkpoint" in msg and "No space left" in msg
    assert "3.0 MiB or more" in msg and "MiB free" in msg and len(msg.splitlines()) == 1
    assert path.read_text() == "old" and _leftovers(tmp_path) == []


def _write_under_size_limit(limit: int, function: str, arguments: str) -> subprocess.CompletedProcess:
    """Call ``loce.fileio.<function>(<arguments>)`` in a child whose RLIMIT_FSIZE is ``limit``
    bytes (a real EFBIG; Python ignores SIGXFSZ); a FileWriteError is printed, exit status 2."""
    script = textwrap.dedent(f"""
        import resource, sys
        from loce.fileio import FileWriteError, {function}
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        try:
            {function}({arguments})
        except FileWriteError as err:
            print(err)
            sys.exit(2)
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)


def test_file_size_limit_in_a_subprocess(tmp_path):
    """A real EFBIG: the limit (RLIMIT_FSIZE) is set in a child; Python ignores SIGXFSZ."""
    proc = _write_under_size_limit(
        65536, "atomic_write_text",
        f'{str(tmp_path / "big.json")!r}, "x" * 200000, what="results file"')
    assert proc.returncode == 2, proc.stderr
    assert "big.json: cannot write the results file (File too large)" in proc.stdout
    assert "ulimit -f" in proc.stdout and "0.1 MiB" in proc.stdout
    assert not (tmp_path / "big.json").exists() and _leftovers(tmp_path) == []


def test_read_only_folder(tmp_path):
    """A folder this process cannot write: a chmod-ed one, or /sys where the tests run as root
    (root ignores permission bits)."""
    if os.geteuid() == 0:
        folder = Path("/sys")
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        (folder / "metrics.json").write_text("old")
        folder.chmod(0o555)
        with pytest.raises(FileWriteError, match=r"metrics\.json: cannot write the metrics file "
                           r"\(.*not writable\).*not writable: choose another output location"):
            check_output_file(folder / "metrics.json", what="metrics file")
    try:
        with pytest.raises(FileWriteError, match=r"metrics\.json: cannot write the metrics file "
                           r"\(Permission denied\); the folder is not writable"):
            atomic_write_text(folder / "metrics.json", "new", what="metrics file")
    finally:
        if folder != Path("/sys"):
            folder.chmod(0o755)
            assert (folder / "metrics.json").read_text() == "old"
    assert _leftovers(folder) == []


def test_a_file_where_a_folder_should_be(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for target in (blocker / "out.json", blocker / "deeper" / "out.json"):
        with pytest.raises(FileWriteError, match="a file stands where a folder is needed"):
            atomic_write_text(target, "x")
        with pytest.raises(FileWriteError, match="is a file, not a folder"):
            check_output_file(target)
    with pytest.raises(FileWriteError, match=r"file: cannot create the run directory .*a file "
                       "stands where the folder should be"):
        ensure_directory(blocker, what="run directory")
    with pytest.raises(FileWriteError, match="a folder stands where the file should go"):
        atomic_write_text(tmp_path, "x")
    with pytest.raises(FileWriteError, match="a folder stands where the file should go"):
        check_output_file(tmp_path)
    assert blocker.read_text() == "x" and _leftovers(tmp_path) == []
    # negative control: a fresh path below a writable folder passes both
    assert check_output_file(tmp_path / "new" / "out.json") == tmp_path / "new" / "out.json"
    assert not (tmp_path / "new").exists()
    assert ensure_directory(tmp_path / "new").is_dir()


def test_stale_temporary_files_are_removed(tmp_path):
    (tmp_path / ".epoch_1.pth.abc123.tmp").write_text("half")
    (tmp_path / "epoch_1.pth").write_text("whole")
    (tmp_path / "notes.tmp").write_text("not ours: not hidden")
    removed = remove_stale_temp_files(tmp_path)
    assert [p.name for p in removed] == [".epoch_1.pth.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_1.pth", "notes.tmp"]
    assert remove_stale_temp_files(tmp_path / "missing") == []


# ---------------------------------------------------------------------- torch files


def test_torch_save_under_a_file_size_limit_in_a_subprocess(tmp_path):
    """torch's zip writer turns the EFBIG into a RuntimeError: it is still one line, the old
    file stays and no temporary file is left."""
    (tmp_path / "ckpt.pth").write_text("old")
    # 4 MiB of float32 zeros under a 1 MiB limit
    proc = _write_under_size_limit(
        2**20, "save_torch_atomic",
        f'{{"x": __import__("torch").zeros(2**20)}}, {str(tmp_path / "ckpt.pth")!r}')
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == (f"{tmp_path / 'ckpt.pth'}: cannot write the checkpoint (File too "
                           "large); the file-size limit (ulimit -f) of 1.0 MiB is too small for "
                           "it: raise it.\n")
    assert (tmp_path / "ckpt.pth").read_text() == "old" and _leftovers(tmp_path) == []


def _writer_fails(message, *, context=False):
    """A torch.save that writes 3 bytes and fails as torch's zip writer does."""

    def save(obj, f):
        f.write(b"abc")
        f.flush()
        if context:
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:
                raise RuntimeError(message) from None
        raise RuntimeError(message)

    return save


def test_a_writer_failure_without_its_cause_is_told_from_the_limit_and_the_space(
        tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    import torch

    import loce.fileio as fileio

    zip_error = "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
    monkeypatch.setattr(torch, "save", _writer_fails(zip_error, context=True))
    with pytest.raises(FileWriteError, match=r"a\.pth: cannot write the checkpoint \(No space "
                       r"left on device\); it needs 0\.0 MiB or more, [\d.]+ MiB free"):
        save_torch_atomic({}, tmp_path / "a.pth")
    # no OSError behind it: a size at the file-size limit means the limit ...
    monkeypatch.setattr(torch, "save", _writer_fails(zip_error))
    monkeypatch.setattr(fileio, "_file_size_limit", lambda: 3)
    with pytest.raises(FileWriteError, match=r"\(File too large\); the file-size limit \(ulimit "
                       r"-f\) of 0\.0 MiB"):
        save_torch_atomic({}, tmp_path / "a.pth")
    # ... less than 1 MiB free means the disk, and otherwise the writer's own words
    monkeypatch.setattr(fileio, "_file_size_limit", lambda: None)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(2**30, 2**30 - 2**19, 2**19))
    with pytest.raises(FileWriteError, match=r"\(No space left on device\); it needs 0\.0 MiB "
                       r"or more, 0\.5 MiB free"):
        save_torch_atomic({}, tmp_path / "a.pth")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(2**30, 2**29, 2**29))
    with pytest.raises(FileWriteError, match=r"a\.pth: cannot write the checkpoint \(the write "
                       r"stopped short: \[enforce fail at inline_container\.cc:672\] \. "
                       r"unexpected pos 704 vs 598\) with 512\.0 MiB free there\.$"):
        save_torch_atomic({}, tmp_path / "a.pth")
    # a RuntimeError that is not the writer's is the caller's bug: it goes through unchanged
    monkeypatch.setattr(torch, "save", _writer_fails("a bug"))
    with pytest.raises(RuntimeError, match="^a bug$"):
        save_torch_atomic({}, tmp_path / "a.pth")
    assert _leftovers(tmp_path) == [] and not (tmp_path / "a.pth").exists()


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_load_torch_builds_tensors_and_plain_values_only(tmp_path):
    import numpy as np
    import torch

    from loce.errors import CheckpointError
    from loce.fileio import load_torch

    plain = {"w": torch.arange(3), "names": ["a"], "n": 1, "t": (1.5, None), "s": "x"}
    torch.save(plain, tmp_path / "plain.pth")
    loaded = load_torch(tmp_path / "plain.pth")
    assert loaded["w"].tolist() == [0, 1, 2] and loaded["t"] == (1.5, None)
    assert {k: v for k, v in loaded.items() if k != "w"} == \
        {"names": ["a"], "n": 1, "t": (1.5, None), "s": "x"}

    marker = tmp_path / "code_ran"
    torch.save({"w": torch.zeros(1), "x": _RunsCode(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError) as e:
        load_torch(tmp_path / "evil.pth", what="weights file")
    assert str(e.value).startswith(f"{tmp_path / 'evil.pth'}: refused: the weights file holds "
                                   "the Python object 'io.open'")
    assert len(str(e.value).splitlines()) == 1 and not marker.exists()

    # an array is allowed only where the caller names what rebuilds it, for that load only
    torch.save({"a": np.arange(3, dtype=np.uint32)}, tmp_path / "array.pth")
    with pytest.raises(CheckpointError, match="refused: the checkpoint holds the Python object "
                                              "'numpy"):
        load_torch(tmp_path / "array.pth")
    from loce.engine.checkpoint import LEGACY_GLOBALS

    assert load_torch(tmp_path / "array.pth", legacy=LEGACY_GLOBALS)["a"].tolist() == [0, 1, 2]
    with pytest.raises(CheckpointError, match="'io.open'"):
        load_torch(tmp_path / "evil.pth", legacy=LEGACY_GLOBALS)
    # an allowed array ahead of the code does not let the code through
    torch.save({"a": np.arange(3, dtype=np.uint32), "x": _RunsCode(marker)}, tmp_path / "both.pth")
    with pytest.raises(CheckpointError, match="both.pth: refused: .* object 'io.open'"):
        load_torch(tmp_path / "both.pth", legacy=LEGACY_GLOBALS)
    with pytest.raises(CheckpointError, match="refused"):
        load_torch(tmp_path / "array.pth")
    assert not marker.exists()


def test_atomic_writes_get_the_umask_permissions_of_a_plain_open(tmp_path):
    """mkstemp's temporary file is 0600; the written file must not be (a checkpoint or a
    results file on a shared disk is read by others)."""
    import os
    import stat

    previous = os.umask(0o022)
    try:
        written = atomic_write_text(tmp_path / "a.txt", "x")
        assert stat.S_IMODE(written.stat().st_mode) == 0o644
        os.umask(0o077)
        assert stat.S_IMODE(atomic_write_text(tmp_path / "b.txt", "x").stat().st_mode) == 0o600
    finally:
        os.umask(previous)
