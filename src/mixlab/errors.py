"""User-facing errors.

Every error a user can cause (bad config, bad data file, missing data) is a ``MixlabError``.
The CLI prints its message without a traceback and exits non-zero, so the message must say
which file, line or field is wrong and what to do about it.
"""

from __future__ import annotations

from pathlib import Path


class MixlabError(Exception):
    """An error caused by the user's input, with a message meant to be read by them."""


class ConfigError(MixlabError):
    """A config file or override that does not validate."""


class DataError(MixlabError):
    """A data file that is missing or does not parse."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = str(path) if path is not None else None
        self.line = line
