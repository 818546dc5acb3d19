"""Test-wide settings: headless plotting, and threads shared out among pytest-xdist workers.

``make test`` runs the suite in one worker process per core (``-n auto``); each worker, and
every process a test starts, then uses ``cores // workers`` (at least one) intra-op threads,
so that two workers on two cores do not each start two threads that wait on each other.
"""

import os
import sys

os.environ.setdefault("MPLBACKEND", "Agg")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


if os.environ.get("PYTEST_XDIST_WORKER"):
    _threads = str(max(1, _cores() // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, _threads)
    if "torch" in sys.modules:  # imported before this file by a plugin: set it there too
        sys.modules["torch"].set_num_threads(int(_threads))
