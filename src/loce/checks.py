"""A switch for the input checks of LOCE's running state that read tensors on the host.

Checks such as "labels in 1..K" or "mean scores finite" cost a device-to-host copy and a
stream synchronisation each on a GPU. They are on by default (direct use of the modules);
the training loop runs them every ``train.check_every_iters`` steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["checks_enabled", "input_checks"]

_ENABLED = [True]


def checks_enabled() -> bool:
    """Whether the value checks that read tensors on the host run now."""
    return _ENABLED[-1]


@contextmanager
def input_checks(enabled: bool) -> Iterator[None]:
    """Turn the value checks on or off inside the block (nestable)."""
    _ENABLED.append(bool(enabled))
    try:
        yield
    finally:
        _ENABLED.pop()
