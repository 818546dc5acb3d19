"""Memory housekeeping helpers."""

from __future__ import annotations

import gc

import pytest

from loce.memory import paused_gc, trim_heap


@pytest.mark.parametrize("enabled", [True, False])
def test_paused_gc_restores_the_collector_as_it_was(enabled):
    (gc.enable if enabled else gc.disable)()
    try:
        with paused_gc():
            assert not gc.isenabled()
        assert gc.isenabled() is enabled
        with pytest.raises(KeyError), paused_gc():
            raise KeyError("even on an error")
        assert gc.isenabled() is enabled
    finally:
        gc.enable()


def test_trim_heap_is_safe_to_call_anywhere():
    blob = [bytearray(1 << 16) for _ in range(64)]  # 4 MB of C heap
    del blob
    assert trim_heap() is None
