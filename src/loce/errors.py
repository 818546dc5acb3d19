"""User-facing errors.

Every problem caused by user input (an annotation file, a results file, a config key, a
checkpoint, a command-line flag) is raised as :class:`LoceError` with a message that says what
was expected, what was found, where (file, key or index) and how to fix it. The command line
prints such errors in one or two lines without a traceback and exits with status 2.
"""

from __future__ import annotations


class LoceError(Exception):
    """An error in user input, with a message meant to be read by the user."""


class DataError(LoceError, ValueError):
    """Invalid dataset or annotation content."""


class ResultsError(LoceError, ValueError):
    """Invalid detection results (the file given to evaluation)."""


class ConfigError(LoceError, ValueError):
    """Invalid configuration key, type or value."""


class CheckpointError(LoceError, ValueError):
    """A checkpoint that cannot be read or does not fit the model."""
