"""Errors the user sees: one clear line naming the file and the problem."""
from __future__ import annotations

import os


class RedubError(Exception):
    """A failure caused by input, environment or settings, explained in one line.

    ``path`` names the file at fault, when there is one; ``str()`` gives
    ``"<path>: <problem>"`` so every front end (CLI, desktop) prints the same words.
    """

    def __init__(self, problem: str, path: str | os.PathLike | None = None) -> None:
        self.problem = problem
        self.path = os.fspath(path) if path is not None else None
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class UsageError(RedubError):
    """The request itself is malformed (bad range syntax, unknown codec, bad output path)."""


class Cancelled(RedubError):
    """The user cancelled a job; outputs were discarded."""

    def __init__(self) -> None:
        super().__init__("cancelled")
