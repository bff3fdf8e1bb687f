"""The audio of an export: the source clip's audio with a dub track laid in.

The output timeline starts at t = 0, the first video frame. Sample ``j`` of the output is at
``j / rate`` seconds. Where the dub does not apply, the source's samples pass through unchanged
(bit-exact at the source's own rate and channel count); where it applies, the dub's samples do.
Range edges get a short equal-power crossfade centred on the edge, so there are no clicks.
"""
from __future__ import annotations

import math
import os
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from types import TracebackType

import numpy as np

from engine.errors import RedubError, UsageError
from engine.media.audio import AudioStream, NoAudioError

__all__ = ["DubMix", "MIX_MODES"]

MIX_MODES = ("ranges", "all")


class _Placed:
    """An audio stream positioned on the output timeline, after ``lead`` samples of silence."""

    def __init__(self, stream: AudioStream, lead: int) -> None:
        self.stream = stream
        self._lead = lead

    def read(self, n: int) -> np.ndarray:
        silent = min(self._lead, n)
        self._lead -= silent
        if not silent:
            return self.stream.read(n)
        silence = np.zeros((silent, self.stream.channels), np.float32)
        return np.concatenate([silence, self.stream.read(n - silent)])


def _place(
    path: str | os.PathLike, offset: float, rate: int | None, channels: int | None, stream_index: int | None
) -> _Placed:
    # A negative offset skips the file's beginning; a positive one is silence first.
    stream = AudioStream(
        path, rate=rate, channels=channels, start=max(0.0, -offset), stream_index=stream_index
    )
    return _Placed(stream, round(offset * stream.rate) if offset > 0 else 0)


class DubMix:
    """Streams the export audio: ``read(n)`` gives the next ``n`` output frames.

    ``mode="ranges"``: the dub replaces the source only inside ``ranges`` (timeline seconds);
    ``mode="all"``: everywhere. Without a dub the source passes through in either mode. Output
    rate and channels default to the source audio's (its samples kept exact, the dub converted to
    match), or the dub's when the source has no audio. Memory stays bounded: both inputs are
    decoded on demand.
    """

    def __init__(
        self,
        *,
        source: str | os.PathLike | None,
        source_offset: float = 0.0,
        source_stream: int | None = None,
        dub: str | os.PathLike | None,
        dub_offset: float = 0.0,
        ranges: Sequence[tuple[float, float]] | None = None,
        mode: str = "ranges",
        rate: int | None = None,
        channels: int | None = None,
        crossfade: float = 0.010,
    ) -> None:
        if mode not in MIX_MODES:
            raise UsageError(f"unknown mix mode {mode!r} (use one of: {', '.join(MIX_MODES)})")
        if source is None and dub is None:
            raise UsageError("nothing to mix: neither a source nor a dub track was given")
        if not (math.isfinite(crossfade) and crossfade >= 0):
            raise UsageError(f"crossfade must be a non-negative number of seconds, got {crossfade}")
        if not (math.isfinite(source_offset) and math.isfinite(dub_offset)):
            raise UsageError("audio offsets must be finite numbers of seconds")
        for start, end in ranges or ():
            if not (math.isfinite(start) and math.isfinite(end) and end > start):
                raise UsageError(f"dub range {start}..{end}: the end must be after the start")

        self._source: _Placed | None = None
        self._dub: _Placed | None = None
        try:
            if source is not None:
                try:
                    self._source = _place(source, source_offset, rate, channels, source_stream)
                except NoAudioError:
                    pass  # a video-only source: the dub is all there is
            if self._source is not None:
                rate, channels = self._source.stream.rate, self._source.stream.channels
            if dub is not None:
                try:
                    self._dub = _place(dub, dub_offset, rate, channels, None)
                except NoAudioError:
                    raise RedubError("the dub track has no audio stream", dub) from None
            reference = self._source if self._source is not None else self._dub
            if reference is None:
                raise RedubError("the source has no audio stream and there is no dub track", source)
        except BaseException:
            self.close()
            raise
        self.rate: int = reference.stream.rate
        self.channels: int = reference.stream.channels
        self.mode = mode
        self._fade = round(crossfade * self.rate)
        self._starts, self._ends = self._merge(ranges or (), self.rate)
        self._pos = 0

    @staticmethod
    def _merge(ranges: Sequence[tuple[float, float]], rate: int) -> tuple[list[int], list[int]]:
        """Ranges as sorted, non-overlapping [start, end) output sample spans."""
        spans = sorted((round(a * rate), round(b * rate)) for a, b in ranges)
        starts: list[int] = []
        ends: list[int] = []
        for a, b in spans:
            if b <= a:
                continue  # shorter than one sample at this rate
            if ends and a <= ends[-1]:
                ends[-1] = max(ends[-1], b)
            else:
                starts.append(a)
                ends.append(b)
        return starts, ends

    def read(self, n: int) -> np.ndarray:
        """Next ``n`` output frames, float32 (n, channels); silence after both inputs end."""
        if n < 0:
            raise UsageError(f"cannot read a negative number of audio frames ({n})")
        if self._dub is None:  # nothing to lay in, whatever the mode: the source plays as is
            assert self._source is not None  # __init__ guarantees one of the two
            return self._source.read(n)
        dub = self._dub.read(n)
        if self.mode == "all":
            return dub
        if self._source is not None:
            src = self._source.read(n)
        else:
            src = np.zeros((n, self.channels), np.float32)
        weight = self._dub_weight(self._pos, n)
        self._pos += n
        out = src.copy()
        whole = weight >= 1.0
        out[whole] = dub[whole]
        part = (weight > 0.0) & ~whole
        if part.any():
            angle = weight[part, None] * (math.pi / 2)
            out[part] = (src[part] * np.cos(angle) + dub[part] * np.sin(angle)).astype(np.float32)
        return out

    def _dub_weight(self, pos: int, n: int) -> np.ndarray:
        """Crossfade position per output sample: 0 = source only, 1 = dub only."""
        weight = np.zeros(n)
        fade = self._fade
        first = bisect_left(self._ends, pos - fade)
        last = bisect_right(self._starts, pos + n + fade)
        if first >= last:
            return weight
        centres = np.arange(pos, pos + n) + 0.5
        for a, b in zip(self._starts[first:last], self._ends[first:last]):
            if fade:
                # Ramps of `fade` samples centred on each edge, equal power (weight 0.5) at the edge.
                rise = np.clip((centres - a) / fade + 0.5, 0.0, 1.0)
                fall = np.clip((b - centres) / fade + 0.5, 0.0, 1.0)
                np.maximum(weight, np.minimum(rise, fall), out=weight)
            else:
                weight[max(a - pos, 0) : max(b - pos, 0)] = 1.0
        return weight

    def close(self) -> None:
        for placed in (self._source, self._dub):
            if placed is not None:
                placed.stream.close()

    def __enter__(self) -> DubMix:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
