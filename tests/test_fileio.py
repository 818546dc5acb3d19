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


def test_file_size_limit_in_a_subprocess(tmp_path):
    """A real EFBIG: the limit (RLIMIT_FSIZE) is set in a child; Python ignores SIGXFSZ."""
    script = textwrap.dedent(f"""
        import resource, sys
        from loce.fileio import FileWriteError, atomic_write_text
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        try:
            atomic_write_text({str(tmp_path / "big.json")!r}, "x" * 200000, what="results file")
        except FileWriteError as err:
            print(err)
            sys.exit(2)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
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
