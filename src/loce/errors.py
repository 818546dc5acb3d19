"""User-facing errors.

Every problem caused by user input (an annotation file, a results file, a config key, a
checkpoint, a command-line flag) is raised as :class:`LoceError` with a message that says what
was expected, what was found, where (file, key or index) and how to fix it. The command line
prints such errors in one or two lines without a traceback and exits with status 2.

An error raised in a DataLoader worker process reaches the main process re-created from a text
that holds the worker's traceback; :class:`LoceError` keeps only the original message, so a
corrupt image reads the same with and without workers.
"""

from __future__ import annotations

_WORKER_PREFIX = "Caught "
_WORKER_TRACEBACK = "\nOriginal Traceback (most recent call last):"


def _original_message(cls: type, text: str) -> str:
    """The message inside a re-raised worker exception's text (``text`` when there is none)."""
    if not (text.startswith(_WORKER_PREFIX) and _WORKER_TRACEBACK in text):
        return text
    for name in (f"{cls.__module__}.{cls.__qualname__}: ", f"{cls.__qualname__}: "):
        at = text.rfind("\n" + name)
        if at >= 0:
            return text[at + 1 + len(name):].rstrip("\n")
    return text


class LoceError(Exception):
    """An error in user input, with a message meant to be read by the user."""

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (_original_message(type(self), args[0]),)
        super().__init__(*args)


class DataError(LoceError, ValueError):
    """Invalid dataset or annotation content."""


class ResultsError(LoceError, ValueError):
    """Invalid detection results (the file given to evaluation)."""


class ConfigError(LoceError, ValueError):
    """Invalid configuration key, type or value."""


class CheckpointError(LoceError, ValueError):
    """A checkpoint that cannot be read or does not fit the model."""
