"""TensorBoard scalars of a training run, written with ``torch.utils.tensorboard``.

Optional: with the ``tensorboard`` package installed (``pip install 'loce[tensorboard]'``) the
main process writes ``RUN/tensorboard/``; without it one log line says how to get it and
nothing else changes. View with ``tensorboard --logdir RUN``.

The event files are a view of what ``metrics.jsonl`` and ``log.txt`` also hold, so a write that
fails (a full disk, a file size limit, a folder that cannot be created) stops TensorBoard
logging with one warning naming the folder and the error, and training goes on.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Mapping

__all__ = ["INSTALL_HINT", "ScalarWriter"]

logger = logging.getLogger(__name__)

INSTALL_HINT = "TensorBoard logging is off: pip install 'loce[tensorboard]' to get it"


def _quiet_writer_thread_errors() -> None:
    """Keep the event writer's background thread from printing a traceback when its write
    fails: the failure reaches :class:`ScalarWriter` at its next call, which warns once.
    Other threads' exceptions go to the hook that was installed before."""
    if getattr(threading.excepthook, "_loce_tensorboard", False):
        return
    try:
        from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread
    except ImportError:  # another tensorboard layout: keep Python's default report
        return
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if not (isinstance(args.thread, _AsyncWriterThread)
                and isinstance(args.exc_value, OSError)):
            previous(args)

    hook._loce_tensorboard = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class ScalarWriter:
    """Writes scalars under ``log_dir``, or does nothing (not enabled, or no tensorboard).

    Args:
        log_dir: the event-file folder.
        enabled: False on processes other than rank 0, or when the config turns it off.
    """

    def __init__(self, log_dir: str | os.PathLike, enabled: bool) -> None:
        self._writer = None
        self._log_dir = str(log_dir)
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.info(INSTALL_HINT)
            return
        try:
            self._writer = SummaryWriter(log_dir=self._log_dir)
        except OSError as err:
            self._stop(err)
            return
        _quiet_writer_thread_errors()
        logger.debug("TensorBoard scalars in %s", log_dir)

    def _stop(self, err: OSError) -> None:
        """Turn logging off after a failed write, with one warning; never raises."""
        writer, self._writer = self._writer, None
        logger.warning("TensorBoard logging stopped: cannot write %s (%s); training goes on, "
                       "its metrics are in metrics.jsonl", self._log_dir,
                       err.strerror or err)  # fmt: skip
        if writer is not None:
            try:
                writer.close()
            except OSError:  # the same failure again, at the final flush
                pass

    @property
    def active(self) -> bool:
        return self._writer is not None

    def add_scalars(self, values: Mapping[str, float], step: int) -> None:
        """One point per tag at ``step`` (the global iteration); NaN values are skipped."""
        if self._writer is None:
            return
        try:
            for tag, value in values.items():
                value = float(value)
                if not math.isnan(value):
                    self._writer.add_scalar(tag, value, global_step=step)
            # The events are written by a background thread; a failed write shows at the
            # next call, and at the latest here.
            self._writer.flush()
        except OSError as err:
            self._stop(err)

    def close(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError as err:
                self._stop(err)
            self._writer = None
