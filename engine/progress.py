"""Progress reporting and cancellation shared by every long-running engine job."""
from __future__ import annotations

import threading
from typing import Protocol

from engine.errors import Cancelled

class ProgressFn(Protocol):
    def __call__(self, stage: str, done: int, total: int) -> None:
        """Report that ``done`` of ``total`` units of ``stage`` are complete (total 0: unknown)."""

def no_progress(stage: str, done: int, total: int) -> None:
    """Progress sink that ignores reports."""

class CancelToken:
    """Set from any thread; long loops call :meth:`check` between units of work."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` once :meth:`cancel` has been called."""
        if self._event.is_set():
            raise Cancelled()
