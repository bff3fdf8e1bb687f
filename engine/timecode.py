"""Parse and format timeline positions: seconds, frame numbers and SMPTE timecode.

Accepted forms, read against the clip's :class:`Clock` (or just its frame rate):
- ``12.5`` or ``12.5s``: seconds;  ``1500ms``: milliseconds
- ``300f``: a frame number (frame 0 starts at 0 s); on a variable-frame-rate clip the frame's
  own time, so frames mean frames
- ``00:00:12:05``: timecode HH:MM:SS:FF; ``00:00:12;05`` is drop-frame (29.97/59.94). On a clip
  with a start timecode this is source timecode, as the editor sees it; a signed timecode
  (``-00:00:01:00``, ``+00:00:01:00``) is a length, not a position
- ``01:02.5`` / ``00:01:02.5``: minutes and seconds with a decimal point
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from engine.errors import UsageError

_SECONDS = re.compile(r"^([+-]?\d+(?:\.\d*)?|[+-]?\.\d+)(s|ms)?$")
_FRAMES = re.compile(r"^([+-]?\d+)f$")
_TIMECODE = re.compile(r"^([+-]?)(\d+):(\d{1,2}):(\d{1,2})([:;])(\d{1,3})$")
_CLOCK = re.compile(r"^([+-]?)(?:(\d+):)?(\d+):(\d{1,2}(?:\.\d*)?)$")


def _nominal_rate(fps: float) -> int:
    # 29.97 counts frames as 30 per timecode second, 23.976 as 24, and so on.
    return int(round(fps))


def _drop_frames_per_minute(fps: float) -> int:
    nominal = _nominal_rate(fps)
    if nominal % 30 != 0 or abs(fps - nominal) < 1e-3:
        raise UsageError(f"drop-frame timecode needs 29.97 or 59.94 fps, not {fps:g}")
    return 2 * nominal // 30


def timecode_to_frame(hours: int, minutes: int, seconds: int, frames: int, fps: float,
                      drop_frame: bool = False) -> int:
    """Frame number for a timecode at ``fps`` (SMPTE drop-frame counting when asked)."""
    nominal = _nominal_rate(fps)
    if frames >= nominal or seconds >= 60 or minutes >= 60:
        raise UsageError(f"timecode field out of range for {fps:g} fps: "
                         f"{hours:02d}:{minutes:02d}:{seconds:02d}:{frames:02d}")
    total = ((hours * 60 + minutes) * 60 + seconds) * nominal + frames
    if drop_frame:
        drop = _drop_frames_per_minute(fps)
        total_minutes = hours * 60 + minutes
        if minutes % 10 != 0 and seconds == 0 and frames < drop:
            raise UsageError(f"timecode {hours:02d}:{minutes:02d}:00;{frames:02d} "
                             "does not exist in drop-frame counting")
        total -= drop * (total_minutes - total_minutes // 10)
    return total


@dataclass(frozen=True)
class Clock:
    """How a clip counts time: its rate, its frames' own start times, its start timecode."""

    fps: float | Fraction | None
    frame_times: np.ndarray | None = None  # seconds of each frame from the first (VFR: exact)
    duration: float | None = None  # seconds of the whole clip (where frame numbers end)
    start_timecode: str | None = None  # the first frame's source timecode, e.g. 01:00:00:00

    @classmethod
    def of(cls, fps: Clock | float | Fraction | None) -> Clock:
        return fps if isinstance(fps, Clock) else cls(fps)

    def frame_time(self, n: int, text: str) -> float:
        """Start of frame ``n``; the clip's end for the frame after the last."""
        times = self.frame_times
        if times is None or not len(times):
            return n / _need_fps(self.fps, text)
        if 0 <= n < len(times):
            return float(times[n])
        end = self.duration if self.duration is not None else float(times[-1])
        # Past either end: counted at the average rate, so range checks can name the frame.
        return end + (n - len(times)) / _need_fps(self.fps, text) if n >= 0 else \
            n / _need_fps(self.fps, text)

    @property
    def start_frame(self) -> int:
        """The start timecode as a frame count at the nominal rate (0 without one)."""
        if not self.start_timecode:
            return 0
        return _timecode_frames(_TIMECODE.match(self.start_timecode), _need_fps(self.fps, ""))


def parse_time(text: str, clock: Clock | float | Fraction | None) -> float:
    """Seconds on the timeline for ``text`` in any accepted form.

    ``clock`` is the clip's :class:`Clock`, or only its frame rate where frames are evenly
    spaced and there is no start timecode.
    """
    clock = Clock.of(clock)
    s = text.strip()
    m = _SECONDS.match(s)
    if m:
        value = float(m.group(1))
        return value / 1000.0 if m.group(2) == "ms" else value
    m = _FRAMES.match(s)
    if m:
        return clock.frame_time(int(m.group(1)), s)
    m = _TIMECODE.match(s)
    if m:
        rate = _need_fps(clock.fps, s)
        frame = _timecode_frames(m, rate)
        if m.group(1):  # signed: a length
            return (-1.0 if m.group(1) == "-" else 1.0) * frame / rate
        start = clock.start_frame
        if frame < start:
            raise UsageError(f"timecode {s} lies before the clip's start timecode "
                             f"{clock.start_timecode}")
        return (frame - start) / rate
    m = _CLOCK.match(s)
    if m:
        sign = -1.0 if m.group(1) == "-" else 1.0
        hours = int(m.group(2) or 0)
        minutes = int(m.group(3))
        seconds = float(m.group(4))
        if seconds >= 60 or (m.group(2) and minutes >= 60):
            raise UsageError(f"bad time '{text}': field out of range")
        return sign * ((hours * 60 + minutes) * 60 + seconds)
    raise UsageError(f"bad time '{text}': use seconds (12.5), frames (300f) "
                     "or timecode (HH:MM:SS:FF)")


def parse_range(text: str, clock: Clock | float | Fraction | None) -> tuple[float, float]:
    """``IN-OUT`` (either side in any accepted form) as (start, end) seconds, end > start."""
    parts = text.strip().split("-")
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
        raise UsageError(f"bad range '{text}': use IN-OUT, e.g. 2.0-5.5, 50f-120f "
                         "or 00:00:02:00-00:00:05:12")
    start, end = parse_time(parts[0], clock), parse_time(parts[1], clock)
    if end <= start:
        raise UsageError(f"bad range '{text}': out point must come after in point")
    return start, end


def format_timecode(seconds: float, fps: float | Fraction, drop_frame: bool = False,
                    start_frame: int = 0) -> str:
    """SMPTE timecode of the frame that contains ``seconds`` (HH:MM:SS:FF, ';' when drop-frame).

    ``start_frame``: the clip's start timecode as a frame count (:attr:`Clock.start_frame`),
    for source timecode; 0 for a length or a clip without one.
    """
    rate = float(fps)
    nominal = _nominal_rate(rate)
    sign = "-" if seconds < 0 else ""
    frame = int(math.floor(abs(seconds) * rate + 1e-6)) + start_frame
    if drop_frame:
        drop = _drop_frames_per_minute(rate)
        per_10min = nominal * 600 - drop * 9
        per_min = nominal * 60 - drop
        tens, rem = divmod(frame, per_10min)
        frame += drop * 9 * tens
        if rem > drop:
            frame += drop * ((rem - drop) // per_min)
    ff = frame % nominal
    total_seconds = frame // nominal
    hh, rest = divmod(total_seconds, 3600)
    mm, ss = divmod(rest, 60)
    sep = ";" if drop_frame else ":"
    return f"{sign}{hh:02d}:{mm:02d}:{ss:02d}{sep}{ff:02d}"


def _timecode_frames(m: re.Match, rate: float) -> int:
    return timecode_to_frame(int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(6)),
                             rate, drop_frame=m.group(5) == ";")


def _need_fps(fps: float | Fraction | None, text: str) -> float:
    if not fps:
        raise UsageError(f"'{text}' counts frames, but the frame rate is unknown")
    return float(fps)
