"""A test hook for fault injection: kill the process at a named point.

The fault tests and ``benchmarks/fault_injection.py`` set ``LOCE_FAULT=NAME:N`` (or just
``NAME`` for ``N = 1``) to SIGKILL a run the N-th time it reaches the point ``NAME`` — for
instance between writing the per-rank feature memory and moving the checkpoint pointer — so
that a resume can be checked at exactly the moments a random kill rarely hits. Without the
variable :func:`fault_point` does nothing.

Points: ``checkpoint:after-rank-state`` (every per-rank file written, pointer not yet
moved), ``checkpoint:after-file`` (the checkpoint written, pointer not yet moved),
``checkpoint:after-pointer`` (pointer moved, older per-rank files not yet deleted), and
``write:<what>`` inside every atomic write, after the temporary file is complete and before
it is renamed (``write:checkpoint``, ``write:feature memory``, ...).
"""

from __future__ import annotations

import os
import signal

__all__ = ["fault_point"]

_ENV = "LOCE_FAULT"
_seen: dict[str, int] = {}


def fault_point(name: str) -> None:
    """SIGKILL this process when ``LOCE_FAULT`` names ``name`` and its count is reached."""
    spec = os.environ.get(_ENV)
    if not spec:
        return
    target, _, count = spec.rpartition(":") if spec.rpartition(":")[2].isdigit() else (spec, "", "1")
    if name != target:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == int(count):
        os.kill(os.getpid(), signal.SIGKILL)
