"""Process memory housekeeping around bulk loads of large JSON files.

Reading LVIS-size annotations or results creates and frees millions of small Python objects.
Two things make that cost more than it should: the cyclic garbage collector, whose
collections during such a load find nothing and take about half its time, and the C heap,
which keeps the freed memory instead of returning it to the system, so that the engine's load
that follows starts from a higher resident size. :func:`paused_gc` and :func:`trim_heap`
address each.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sys
from collections.abc import Iterator
from functools import cache

__all__ = ["paused_gc", "trim_heap"]


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector around a bulk load.

    Parsing and checking a large JSON file creates millions of lists and dicts and no
    reference cycles; the collections their allocation triggers find nothing and take about
    half the time (2.3 of 4.7 s for LVIS-size annotations of 20,000 images). Collection
    resumes on exit, as it was.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@cache
def _malloc_trim() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def trim_heap() -> None:
    """Return the C heap's free memory to the system (glibc's ``malloc_trim``); elsewhere a no-op.

    Called after a large Python structure is freed and before the engine loads a large file:
    at 20,000 LVIS images it lowers the resident size the engine starts from by about 0.2 GB.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
