"""Counting the host reads of device tensors in a block of code.

On a GPU every ``.item()``, ``.tolist()``, ``bool(t)``/``int(t)``/``float(t)`` of a tensor and
every ``.cpu()``/``.numpy()`` waits for the device's queue to drain (a host sync). The same
calls on the CPU cost nothing, so they are counted by call site, which works on any device.
Shape-dependent operations (``nonzero``, boolean-mask indexing) also synchronise on a GPU and
are not counted here.

Example::

    with count_host_syncs() as syncs:
        model(images, targets)
    print(sum(syncs.values()), syncs.most_common(5))
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["count_host_syncs"]

_METHODS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy")
_TORCH_DIR = os.path.dirname(torch.__file__)


def _call_site() -> str:
    """``file:line (function)`` of the first caller outside this module and torch."""
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename.startswith(_TORCH_DIR)
                                 or frame.f_code.co_filename == __file__):
        frame = frame.f_back
    if frame is None:
        return "?"
    code = frame.f_code
    return f"{os.path.basename(code.co_filename)}:{frame.f_lineno} ({code.co_name})"


@contextmanager
def count_host_syncs() -> Iterator[Counter]:
    """Count host reads of tensors inside the block, by call site and method.

    Yields:
        A ``Counter`` of ``"file:line (function) method"`` -> calls, filled as the block runs.
    """
    counts: Counter = Counter()
    saved = {name: getattr(torch.Tensor, name) for name in _METHODS}
    depth = [0]

    def wrap(name, original):
        def counted(self, *args, **kwargs):
            if depth[0] == 0:  # a read inside a counted read (tolist -> item) counts once
                counts[f"{_call_site()} {name}"] += 1
            depth[0] += 1
            try:
                return original(self, *args, **kwargs)
            finally:
                depth[0] -= 1
        return counted

    for name, original in saved.items():
        setattr(torch.Tensor, name, wrap(name, original))
    try:
        yield counts
    finally:
        for name, original in saved.items():
            setattr(torch.Tensor, name, original)
