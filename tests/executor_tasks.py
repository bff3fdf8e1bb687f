"""Tasks for the executor tests: top-level functions, so worker processes and Ray workers
import them by name."""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from engine.errors import RedubError


def double(x: int, *, progress, cancel, media) -> tuple[int, int]:
    """x * 2 and the process that computed it, reporting two steps."""
    progress("double", 0, 2)
    progress("double", 1, 2)
    progress("double", 2, 2)
    return x * 2, os.getpid()


def stamp(log: str, key: str, seconds: float, *, progress, cancel, media) -> str:
    """Append "start key" and, ``seconds`` later, "end key" to ``log``."""
    with open(log, "a") as f:
        f.write(f"start {key}\n")
    time.sleep(seconds)
    with open(log, "a") as f:
        f.write(f"end {key}\n")
    return key


def fail(log: str, *, progress, cancel, media) -> None:
    """Count the attempt in ``log``, then fail as the engine fails."""
    with open(log, "a") as f:
        f.write("attempt\n")
    raise RedubError("no face in the analysed range", "/clips/shot.mov")


def count_attempts(log: str, seconds: float, value: str, *, progress, cancel, media) -> str:
    """Count the attempt in ``log``, work ``seconds`` (cancellable), return ``value``."""
    with open(log, "a") as f:
        f.write("attempt\n")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        cancel.check()
        progress("work", 0, 1)
        time.sleep(0.05)
    return value


def until_cancelled(started: str, *, progress, cancel, media) -> None:
    """Touch ``started``, then work between cancel checks for up to a minute."""
    Path(started).touch()
    end = time.monotonic() + 60
    while time.monotonic() < end:
        cancel.check()
        progress("work", 0, 0)
        time.sleep(0.05)
    raise AssertionError("never cancelled")


def deaf(started: str, *, progress, cancel, media) -> None:
    """Touch ``started``, then work for a minute without ever looking at the cancel token."""
    Path(started).touch()
    time.sleep(60)


def digest(path: str, *, progress, cancel, media) -> tuple[str, str, bool]:
    """The sha256 of the file the task was given for ``path``, where it was, and whether
    it is still there now (it is the task's own, while the task runs)."""
    local = media[path]
    return hashlib.sha256(Path(local).read_bytes()).hexdigest(), local, Path(local).exists()
