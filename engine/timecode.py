"""Parse and format timeline positions: seconds, frame numbers and SMPTE timecode.

Accepted forms (``fps`` is the clip's frame rate):
- ``12.5`` or ``12.5s``: seconds;  ``1500ms``: milliseconds
- ``300f``: a frame number (frame 0 starts at 0 s)
- ``00:00:12:05``: timecode HH:MM:SS:FF; ``00:00:12;05`` is drop-frame (29.97/59.94)
- ``01:02.5`` / ``00:01:02.5``: minutes and seconds with a decimal point
"""
from __future__ import annotations

import math
import re
from fractions import Fraction

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


def parse_time(text: str, fps: float | Fraction | None) -> float:
    """Seconds on the timeline for ``text`` in any accepted form."""
    s = text.strip()
    m = _SECONDS.match(s)
    if m:
        value = float(m.group(1))
        return value / 1000.0 if m.group(2) == "ms" else value
    m = _FRAMES.match(s)
    if m:
        return int(m.group(1)) / _need_fps(fps, s)
    m = _TIMECODE.match(s)
    if m:
        rate = _need_fps(fps, s)
        sign = -1.0 if m.group(1) == "-" else 1.0
        frame = timecode_to_frame(int(m.group(2)), int(m.group(3)), int(m.group(4)),
                                  int(m.group(6)), rate, drop_frame=m.group(5) == ";")
        return sign * frame / rate
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


def parse_range(text: str, fps: float | Fraction | None) -> tuple[float, float]:
    """``IN-OUT`` (either side in any accepted form) as (start, end) seconds, end > start."""
    parts = text.strip().split("-")
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
        raise UsageError(f"bad range '{text}': use IN-OUT, e.g. 2.0-5.5, 50f-120f "
                         "or 00:00:02:00-00:00:05:12")
    start, end = parse_time(parts[0], fps), parse_time(parts[1], fps)
    if end <= start:
        raise UsageError(f"bad range '{text}': out point must come after in point")
    return start, end


def format_timecode(seconds: float, fps: float | Fraction, drop_frame: bool = False) -> str:
    """SMPTE timecode of the frame that contains ``seconds`` (HH:MM:SS:FF, ';' when drop-frame)."""
    rate = float(fps)
    nominal = _nominal_rate(rate)
    sign = "-" if seconds < 0 else ""
    frame = int(math.floor(abs(seconds) * rate + 1e-6))
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


def _need_fps(fps: float | Fraction | None, text: str) -> float:
    if not fps:
        raise UsageError(f"'{text}' counts frames, but the frame rate is unknown")
    return float(fps)
