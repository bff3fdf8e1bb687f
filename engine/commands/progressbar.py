"""A terminal progress bar with frames per second and time left, usable as a ProgressFn."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    def __init__(self, stream: TextIO | None = None, width: int = 28, unit: str = "frames",
                 min_interval: float = 0.1) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.unit = unit
        self.min_interval = min_interval
        self._stage = ""
        self._t0 = 0.0
        self._last_draw = 0.0
        self._done0 = 0
        self._line_open = False
        # Only draw in place on a terminal; logs get one line per stage.
        self._live = self.stream.isatty()

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage != self._stage:
            self.finish()
            self._stage, self._t0, self._done0 = stage, now, done
        finished = total > 0 and done >= total
        if not finished and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        text = self.render(stage, done, total, now - self._t0, done - self._done0)
        if self._live:
            self.stream.write("\r" + text.ljust(79))
            self._line_open = True
            self.stream.flush()
        elif finished:
            self.stream.write(text + "\n")
            self.stream.flush()

    def render(self, stage: str, done: int, total: int, elapsed: float, counted: int) -> str:
        rate = counted / elapsed if elapsed > 0 else 0.0
        if total > 0:
            frac = min(done / total, 1.0)
            filled = int(round(frac * self.width))
            bar = "#" * filled + "-" * (self.width - filled)
            left = (total - done) / rate if rate > 0 else float("nan")
            eta = _clock(left) if left == left else "--:--"
            return (f"{stage:<10} [{bar}] {frac * 100:5.1f}% {done}/{total} {self.unit} "
                    f"{rate:6.1f}/s  left {eta}")
        return f"{stage:<10} {done} {self.unit} {rate:6.1f}/s  {_clock(elapsed)}"

    def finish(self) -> None:
        if self._line_open:
            self.stream.write("\n")
            self.stream.flush()
            self._line_open = False


def _clock(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
