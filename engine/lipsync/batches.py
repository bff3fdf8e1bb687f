"""A neural generator's outputs per analysed frame, made in batches on a fixed grid.

Render threads ask for frames one by one in clip order, two at a time. The grid runs the
model on batches of consecutive edited frames, the same frames together whichever thread asks
first: no work is repeated and results do not depend on thread timing. Only the last few
batches are kept (the two threads' neighbouring frames may straddle a batch boundary).
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Generic, TypeVar

import numpy as np

from engine.errors import RedubError
from engine.models.session import CPU, providers as provider_order

T = TypeVar("T")
KEPT_BATCHES = 3


def default_batch(providers: list[str] | None, cpu: int, gpu: int) -> int:
    """``cpu`` frames per run when the CPU comes first among ``providers``, else ``gpu``:
    a GPU wants larger batches, a CPU's memory and latency smaller ones."""
    return cpu if provider_order(providers)[0][0] == CPU else gpu


class BatchGrid(Generic[T]):
    """``run(frames)`` makes the outputs of a batch of analysed frames: frame -> output."""

    def __init__(self, run: Callable[[np.ndarray], dict[int, T]]) -> None:
        self._run = run
        self.lock = threading.Lock()  # generators update their plan under it too
        # Read without the lock (a dict lookup is atomic), written under it.
        self._ready: dict[int, T] = {}
        self._batches: deque[list[int]] = deque()
        self._targets = np.zeros(0, np.int64)
        self._batch = 1
        self._start, self._source = 0, ""

    def reset(self, targets: np.ndarray, batch: int, start: int, source: str) -> None:
        """Plan batches of ``batch`` over ``targets`` (sorted analysed frames; clip frame
        ``start + k``, of ``source``, for messages); outputs made before are dropped. Call with
        :attr:`lock` held."""
        self._targets = np.asarray(targets, np.int64)
        self._batch, self._start, self._source = batch, start, source
        self.clear()

    def clear(self) -> None:
        self._ready.clear()
        self._batches.clear()

    def get(self, k: int) -> T:
        """The output of analysed frame ``k``, its batch run first if needed."""
        hit = self._ready.get(k)
        if hit is not None:
            return hit
        with self.lock:
            if k not in self._ready:
                at = int(np.searchsorted(self._targets, k))
                if at == len(self._targets) or self._targets[at] != k:
                    raise RedubError(f"frame {self._start + k} was not prepared for lip sync",
                                     self._source)
                first = at - at % self._batch
                outputs = self._run(self._targets[first:first + self._batch])
                self._ready.update(outputs)
                self._batches.append(list(outputs))
                while len(self._batches) > KEPT_BATCHES:
                    for old in self._batches.popleft():
                        self._ready.pop(old, None)
            return self._ready[k]
