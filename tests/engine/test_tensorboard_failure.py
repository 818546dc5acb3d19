"""TensorBoard event files that cannot be written stop TensorBoard logging with one warning;
training (here: the writer's caller) goes on."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("tensorboard")

from loce.engine.tensorboard import ScalarWriter  # noqa: E402


def test_a_folder_that_cannot_be_created_is_one_warning(tmp_path, caplog):
    blocker = tmp_path / "run"
    blocker.write_text("a file where the run folder should be")
    with caplog.at_level(logging.WARNING, logger="loce.engine.tensorboard"):
        writer = ScalarWriter(blocker / "tensorboard", enabled=True)
    assert not writer.active
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"TensorBoard logging stopped: cannot write {blocker}")
    writer.add_scalars({"train/loss": 1.0}, 1)  # a no-op now
    writer.close()


def test_a_file_size_limit_mid_run_stops_logging_not_the_run(tmp_path):
    """A real EFBIG (RLIMIT_FSIZE in a child; Python ignores SIGXFSZ) while scalars are being
    written: one warning, every later call a no-op, no traceback, exit status 0."""
    log_dir = tmp_path / "tensorboard"
    script = textwrap.dedent(f"""
        import logging, resource, sys
        logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
        from loce.engine.tensorboard import ScalarWriter
        writer = ScalarWriter({str(log_dir)!r}, enabled=True)
        writer.add_scalars({{"train/loss": 2.0}}, 0)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        for step in range(1, 400):
            writer.add_scalars({{"train/loss": 1.0 / step, "train/lr": 0.02}}, step)
        writer.close()
        print("finished; active:", writer.active)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    stopped = [line for line in lines if line.startswith("TensorBoard logging stopped")]
    assert stopped == [f"TensorBoard logging stopped: cannot write {log_dir} (File too large); "
                       "training goes on, its metrics are in metrics.jsonl"]
    assert lines[-1] == "finished; active: False"
    assert "Traceback" not in proc.stderr  # nor from the writer's background thread
    # what was written before the limit is kept
    (events,) = log_dir.glob("events.out.tfevents.*")
    assert 0 < events.stat().st_size <= 4096
