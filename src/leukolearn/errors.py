"""One exception type for everything a user can get wrong.

The CLI turns a `LeukolearnError` into a one-line message and exit code 2; any other
exception is a bug in leukolearn and keeps its traceback.
"""
from __future__ import annotations

from pathlib import Path


class LeukolearnError(Exception):
    """A problem with the user's input (file, option, dataset), explained in one line."""


class BadFileError(LeukolearnError):
    """A file that cannot be used; the message starts with the file's path."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")
