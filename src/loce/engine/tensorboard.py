"""TensorBoard scalars of a training run, written with ``torch.utils.tensorboard``.

Optional: with the ``tensorboard`` package installed (``pip install 'loce[tensorboard]'``) the
main process writes ``RUN/tensorboard/``; without it one log line says how to get it and
nothing else changes. View with ``tensorboard --logdir RUN``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping

__all__ = ["INSTALL_HINT", "ScalarWriter"]

logger = logging.getLogger(__name__)

INSTALL_HINT = "TensorBoard logging is off: pip install 'loce[tensorboard]' to get it"


class ScalarWriter:
    """Writes scalars under ``log_dir``, or does nothing (not enabled, or no tensorboard).

    Args:
        log_dir: the event-file folder.
        enabled: False on processes other than rank 0, or when the config turns it off.
    """

    def __init__(self, log_dir: str | os.PathLike, enabled: bool) -> None:
        self._writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.info(INSTALL_HINT)
            return
        self._writer = SummaryWriter(log_dir=str(log_dir))
        logger.debug("TensorBoard scalars in %s", log_dir)

    @property
    def active(self) -> bool:
        return self._writer is not None

    def add_scalars(self, values: Mapping[str, float], step: int) -> None:
        """One point per tag at ``step`` (the global iteration); NaN values are skipped."""
        if self._writer is None:
            return
        for tag, value in values.items():
            value = float(value)
            if not math.isnan(value):
                self._writer.add_scalar(tag, value, global_step=step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
