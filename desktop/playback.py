"""Clip playback for the editor: picture synced to sound, shuttle (J/K/L), seek, step, scrub.

Audio is the master clock when a device is open and the clip plays forward at normal speed:
the position is the media time of the sample being heard now, taken from the audio callback
(samples handed to the device, shifted by the device's output latency) and interpolated with the
monotonic clock between callbacks. Otherwise (no device, reverse or fast shuttle) a monotonic
timer clock drives the picture alone.

Nothing decodes on the UI thread: a video thread (its own ``VideoReader``) keeps a small queue of
upcoming frames as RGB arrays, and an audio thread decodes the chosen audio ahead into a short
buffer that the device callback drains. A ``QTimer`` on the UI thread shows the queued frame
whose time matches the clock.
"""
from __future__ import annotations

import atexit
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Qt, QTimer, Signal

from engine.errors import RedubError
from engine.media.mix import DubMix
from engine.media.reader import VideoReader

AUDIO_CHOICES = ("source", "dub", "result")
RATE = 48000  # device format: the mixer converts every input to it
CHANNELS = 2
GRAIN_S = 0.070
GRAIN_FADE_S = 0.005
_BLOCK = 2048  # frames per decoded audio block
_AHEAD_S = 0.3  # audio decoded ahead of the device
_LEAD_S = 0.05 # how far the device may run ahead of the monotonic clock (see _callback)
_VIDEO_AHEAD = 6  # decoded frames queued ahead of the picture
_TICK_MS = 4

_live: weakref.WeakSet[Playback] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # A PortAudio callback into a finalising interpreter crashes it: stop every stream first.
    for playback in list(_live):
        playback.close()


def _default_stream_factory(**kwargs: Any) -> Any:
    import sounddevice  # imported here: a missing PortAudio raises OSError, handled as no device

    return sounddevice.OutputStream(**kwargs)


class Playback(QObject):
    """Plays one clip. All methods are called on the UI thread; signals are emitted there.

    ``audio_device``: a sounddevice device (index or name; ``"default"`` for the system's), or
    None to play picture-only on the timer clock. ``stream_factory`` makes the output stream
    (``sounddevice.OutputStream``'s keyword arguments); tests pass a fake.
    """

    frame_ready = Signal(int, object)  # frame index, RGB uint8 (h, w, 3)
    position_changed = Signal(float)
    state_changed = Signal(str)  # "playing" / "paused"
    notice = Signal(str)

    def __init__(self, parent: QObject | None = None, *, audio_device: int | str | None = "default",
                 stream_factory: Callable[..., Any] | None = None) -> None:
        super().__init__(parent)
        self._device = audio_device
        self._stream_factory = stream_factory or _default_stream_factory
        self._stream: Any = None
        self._noticed = False
        self._reader: VideoReader | None = None
        self._video_path: str | None = None
        self._dub_path: str | None = None
        self._dub_offset = 0.0
        self._ranges: tuple[tuple[float, float], ...] = ()
        self._which = "source"
        self._span: tuple[float, float] | None = None  # playing in to out: where the run ends
        self._loop = False
        # Transport, UI thread only.
        self._pos = 0.0  # position while paused, or where the current run started
        self._rate = 0.0
        self._t0 = 0.0  # monotonic time the current run started
        self._audio_clock = False
        self._last_clock = 0.0
        self._shown = -1
        self._index = 0
        self._end = 0.0
        # Video thread.
        self._vcond = threading.Condition()
        self._vreq: tuple[int, str, int, int] | None = None  # (generation, mode, index, step)
        self._vgen = 0
        self._vqueue: deque[tuple[int, int, np.ndarray]] = deque()
        # Audio thread and device callback.
        self._acond = threading.Condition()
        self._areq: tuple[str, int, float] | None = None  # ("play"/"grain", generation, time)
        self._agen = 0
        self._ablocks: deque[np.ndarray] = deque()
        self._abuffered = 0
        self._apos = 0  # offset into _ablocks[0]
        self._aplaying = False
        self._astart_t = 0.0  # media time of the first sample of this run
        self._astart_mono = 0.0
        self._delivered = 0  # media samples handed to the device in this run
        self._anchor: tuple[float, float, int] | None = None  # (media t, heard at, samples)
        self._latency = 0.0
        self._grain: np.ndarray | None = None
        self._stop = False
        self._vthread = threading.Thread(target=self._video_loop, name="playback-video", daemon=True)
        self._athread = threading.Thread(target=self._audio_loop, name="playback-audio", daemon=True)
        self._vthread.start()
        self._athread.start()
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(_TICK_MS)
        self._timer.timeout.connect(self._tick)
        _live.add(self)

    # -- media ---------------------------------------------------------------------------
    def set_media(self, video_path: str | os.PathLike, *, dub_path: str | os.PathLike | None = None,
                  dub_offset: float = 0.0, ranges: Sequence[tuple[float, float]] = ()) -> None:
        """Open a clip (and its dub); shows the first frame, paused."""
        self.pause()
        # Indexing (a packet scan, no decoding) happens here; decoding only on the video thread.
        reader = VideoReader(video_path)
        with self._vcond:
            old, self._reader = self._reader, reader
            self._vgen += 1
            self._vreq = None
            self._vqueue.clear()
            self._vcond.notify_all()
        if old is not None:
            old.close()
        self._video_path = os.fspath(video_path)
        self._dub_path = os.fspath(dub_path) if dub_path is not None else None
        self._dub_offset = float(dub_offset)
        self._ranges = tuple((float(a), float(b)) for a, b in ranges)
        self._end = reader.info.duration
        self._open_stream()
        self._shown = -1
        self.seek(0.0)

    def set_dub_offset(self, seconds: float) -> None:
        self._dub_offset = float(seconds)
        self._restart_audio()

    def set_ranges(self, ranges: Sequence[tuple[float, float]]) -> None:
        """The sync ranges, where the "result" audio takes the dub; at once, also while playing."""
        ranges = tuple((float(a), float(b)) for a, b in ranges)
        if ranges != self._ranges:
            self._ranges = ranges
            if self._which == "result":
                self._restart_audio()

    def set_audio(self, which: str) -> None:
        """Which audio plays: "source", "dub" or "result"; at once, also while playing."""
        if which not in AUDIO_CHOICES:
            raise ValueError(f"unknown audio {which!r} (use one of: {', '.join(AUDIO_CHOICES)})")
        self._which = which
        self._restart_audio()

    @property
    def audio(self) -> str:
        return self._which

    @property
    def has_audio_device(self) -> bool:
        return self._stream is not None

    @property
    def duration(self) -> float:
        return self._end

    @property
    def times(self) -> np.ndarray:
        return self._reader.times if self._reader is not None else np.zeros(0)

    # -- transport -----------------------------------------------------------------------
    @property
    def state(self) -> str:
        return "playing" if self._rate else "paused"

    @property
    def rate(self) -> float:
        return self._rate

    def play(self) -> None:
        self.shuttle(1.0)

    def pause(self) -> None:
        self.shuttle(0.0)

    def toggle(self) -> None:
        self.shuttle(0.0 if self._rate else 1.0)

    @property
    def loop(self) -> bool:
        return self._loop

    def set_loop(self, on: bool) -> None:
        """Looping: forward play goes round again from the in point (playing in to out) or the
        clip's start, instead of stopping at the end."""
        self._loop = bool(on)

    def play_span(self, start: float, end: float) -> None:
        """Play from ``start`` to ``end`` (a range's in to out), then stop on its last frame, or
        go round again while looping; any other transport move ends the span."""
        if self._reader is None or end <= start:
            return
        self.seek(start)
        self.shuttle(1.0)
        self._span = (float(start), float(end))

    def shuttle(self, rate: float) -> None:
        """Play at ``rate`` (J/K/L: -2, -1, 0, 1, 2 ...); 0 pauses. Only rate 1 plays sound."""
        if self._reader is None:
            return
        self._span = None
        was = self.state
        pos = self.clock()
        if rate > 0 and pos >= self._end - 1e-6 or rate < 0 and pos <= 0.0:
            rate = 0.0  # nothing left to play in that direction
        self._rate = float(rate)
        self._start_run(pos)
        if self.state != was:
            self.state_changed.emit(self.state)
            if not self._rate:
                self.position_changed.emit(pos)  # where it stopped, exactly

    def seek(self, t: float) -> None:
        """Show the frame at ``t`` seconds; playback, if running, continues from there."""
        if self._reader is None:
            return
        self._span = None
        self._start_run(min(max(float(t), 0.0), self._end))
        self.position_changed.emit(self._pos)

    def step(self, frames: int) -> None:
        """Pause and move by ``frames`` frames (negative: back)."""
        if self._reader is None:
            return
        self.pause()
        i = min(max(self._index + frames, 0), self._reader.frame_count - 1)
        self._start_run(float(self._reader.times[i]), index=i)
        self.position_changed.emit(self._pos)

    def scrub(self, t: float) -> None:
        """Pause, show the frame at ``t`` and play a short grain of the chosen audio there."""
        if self._reader is None:
            return
        self.pause()
        self.seek(t)
        if self._stream is not None:
            with self._acond:
                self._agen += 1
                self._areq = ("grain", self._agen, self._pos)
                self._acond.notify_all()

    def clock(self) -> float:
        """The playback position in seconds, as heard (audio clock) or as timed (timer clock)."""
        if not self._rate:
            return self._pos
        now = time.monotonic()
        if self._audio_clock:
            with self._acond:
                anchor = self._anchor
            if anchor is None:
                t = self._pos  # nothing audible yet
            else:
                t0, heard_at, n = anchor
                # Interpolate from the last buffer's first sample, but never past what was sent.
                t = min(t0 + (now - heard_at), t0 + n / RATE)
            t = max(t, self._last_clock)  # callback jitter must not run the picture backwards
        else:
            t = self._pos + (now - self._t0) * self._rate
        t = min(max(t, 0.0), self._end)
        self._last_clock = t
        return t

    def close(self) -> None:
        """Stop the threads and the audio stream; the object is unusable afterwards."""
        if self._stop:
            return
        self._timer.stop()
        self._rate = 0.0
        self._stop = True
        for cond in (self._vcond, self._acond):
            with cond:
                cond.notify_all()
        self._vthread.join()
        self._athread.join()
        if self._stream is not None:
            stream, self._stream = self._stream, None
            try:
                stream.stop()
            finally:
                stream.close()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        _live.discard(self)

    # -- internals: UI thread ------------------------------------------------------------
    def _open_stream(self) -> None:
        if self._stream is not None or self._device is None:
            return
        try:
            device = None if self._device == "default" else self._device
            stream = self._stream_factory(samplerate=RATE, channels=CHANNELS, dtype="float32",
                                          device=device, callback=self._callback)
            stream.start()
        except Exception as exc:  # PortAudioError, OSError (no PortAudio), ValueError (no device)
            if not self._noticed:
                self._noticed = True
                self.notice.emit(f"No audio output ({exc}); playing picture only.")
            return
        latency = getattr(stream, "latency", 0.0)
        self._latency = float(latency) if isinstance(latency, (int, float)) else 0.0
        self._stream = stream

    def _start_run(self, pos: float, index: int | None = None) -> None:
        """(Re)start the video and audio threads at ``pos`` for the current rate."""
        assert self._reader is not None
        self._pos = self._last_clock = pos
        self._t0 = time.monotonic()
        if index is None:
            index = self._reader.index_at(pos)
        self._index = index  # the frame this run starts on (shown next when paused)
        with self._vcond:
            self._vgen += 1
            self._vqueue.clear()
            step = 1 if self._rate >= 0 else -1
            self._vreq = (self._vgen, "stream" if self._rate else "single", index, step)
            self._vcond.notify_all()
        self._audio_clock = self._rate == 1.0 and self._stream is not None
        self._restart_audio(new_run=True)
        self._timer.start()

    def _restart_audio(self, *, new_run: bool = False) -> None:
        """Refill the device buffer with the current audio choice: from the transport position
        for a new run, else (a switch while playing) from the next sample the device will take."""
        with self._acond:
            continuing = self._aplaying and not new_run
            self._agen += 1
            self._ablocks.clear()
            self._abuffered = self._apos = 0
            self._grain = None
            self._aplaying = self._audio_clock and bool(self._rate)
            if not self._aplaying:
                self._anchor, self._delivered, self._areq = None, 0, None
            elif continuing:
                self._areq = ("play", self._agen, self._astart_t + self._delivered / RATE)
            else:
                self._astart_t, self._astart_mono = self._pos, time.monotonic()
                self._anchor, self._delivered = None, 0
                self._areq = ("play", self._agen, self._pos)
            self._acond.notify_all()

    def _tick(self) -> None:
        reader = self._reader
        if reader is None:
            self._timer.stop()
            return
        t = self.clock()
        span = self._span
        if span is not None and self._rate > 0 and t >= span[1]:
            self._end_span(span)  # before showing a frame past the out point
            return
        forward = self._rate >= 0
        target = reader.index_at(t)
        best: tuple[int, np.ndarray] | None = None
        with self._vcond:
            gen = self._vgen
            q = self._vqueue
            while q and q[0][0] != gen:
                q.popleft()
            if not self._rate:
                if q:
                    _, i, rgb = q.popleft()
                    best = (i, rgb)
            else:
                # Show the latest frame due by now; older ones were missed (dropped).
                while q and (q[0][1] <= target if forward else q[0][1] >= target):
                    _, i, rgb = q.popleft()
                    best = (i, rgb)
            self._vcond.notify_all()
            pending = self._vreq is not None  # still decoding the requested frame
        if best is not None and best[0] != self._shown:
            self._shown = best[0]
            self.frame_ready.emit(best[0], best[1])
            if self._rate:
                self.position_changed.emit(t)
        if self._rate and (t >= self._end if forward else t <= 0.0):
            if self._loop and forward:
                self._start_run(0.0)  # round again from the start
            else:
                self.pause()  # ran off the clip
        elif not self._rate and not pending and best is None:
            self._timer.stop()  # idle: nothing to show until the next request

    def _end_span(self, span: tuple[float, float]) -> None:
        """At the out point: round again from the in point, or stop on the range's last frame."""
        if self._loop:
            self._start_run(span[0])
            return
        self._rate = 0.0
        self._span = None
        last = max(self._reader.index_at(span[1] - 1e-6), 0)
        self._start_run(float(self._reader.times[last]), index=last)
        self.state_changed.emit(self.state)
        self.position_changed.emit(self._pos)

    # -- internals: video thread ---------------------------------------------------------
    def _video_loop(self) -> None:
        while True:
            with self._vcond:
                while self._vreq is None and not self._stop:
                    self._vcond.wait()
                if self._stop:
                    return
                gen, mode, index, step = self._vreq
                reader = self._reader
            try:
                if mode == "single":
                    self._offer(gen, index, reader.frame(index).rgb())
                elif step > 0:
                    for frame in reader.frames(index):
                        if not self._offer(gen, frame.index, frame.rgb()):
                            break
                else:
                    for i in range(index, -1, -1):
                        if not self._offer(gen, i, reader.frame(i).rgb()):
                            break
            except (RedubError, ValueError, IndexError):
                pass  # a damaged tail or a reader closed under us: the picture just stops
            with self._vcond:
                if self._vreq is not None and self._vreq[0] == gen:
                    self._vreq = None  # all queued: wait for the next request

    def _offer(self, gen: int, index: int, rgb: np.ndarray) -> bool:
        """Queue a decoded frame, waiting for room; False once the request is superseded."""
        with self._vcond:
            while len(self._vqueue) >= _VIDEO_AHEAD and self._vgen == gen and not self._stop:
                self._vcond.wait(0.05)
            if self._vgen != gen or self._stop:
                return False
            self._vqueue.append((gen, index, rgb))
            return True

    # -- internals: audio thread and device callback -------------------------------------
    def _open_mix(self, start: float) -> DubMix | None:
        """The chosen audio from ``start`` seconds on, at the device format; None for silence."""
        src = self._video_path if self._which in ("source", "result") else None
        dub = self._dub_path if self._which in ("dub", "result") else None
        if src is None and dub is None:
            return None
        try:
            return DubMix(source=src, source_offset=-start, dub=dub,
                          dub_offset=self._dub_offset - start,
                          ranges=[(a - start, b - start) for a, b in self._ranges],
                          mode="all" if src is None else "ranges", rate=RATE, channels=CHANNELS)
        except RedubError:
            return None  # e.g. a silent clip: play silence

    def _audio_loop(self) -> None:
        while True:
            with self._acond:
                while self._areq is None and not self._stop:
                    self._acond.wait()
                if self._stop:
                    return
                kind, gen, start = self._areq
                self._areq = None
            mix = self._open_mix(start)
            try:
                if kind == "grain":
                    grain = _read(mix, round(GRAIN_S * RATE))
                    with self._acond:
                        if self._agen == gen:
                            self._grain = grain * _grain_envelope(len(grain))[:, None]
                    continue
                while True:
                    with self._acond:
                        while (self._abuffered >= _AHEAD_S * RATE and self._agen == gen
                               and not self._stop):
                            self._acond.wait(0.05)
                        if self._agen != gen or self._stop:
                            break
                    block = _read(mix, _BLOCK)
                    with self._acond:
                        if self._agen != gen:
                            break
                        self._ablocks.append(block)
                        self._abuffered += len(block)
            finally:
                if mix is not None:
                    mix.close()

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio thread: hand the device decoded samples; never decodes or blocks long."""
        outdata.fill(0.0)
        now = time.monotonic()
        with self._acond:
            if self._grain is not None:
                n = min(frames, len(self._grain))
                outdata[:n] = self._grain[:n]
                self._grain = self._grain[n:] if n < len(self._grain) else None
                return
            if not self._aplaying:
                return
            # A device that does not keep real time (e.g. ALSA's null device) may ask for samples
            # far faster than they play: send media only up to the monotonic clock plus a lead,
            # silence beyond, so the clock cannot race. A real device is never throttled.
            allowed = (int((now - self._astart_mono + self._latency + _LEAD_S) * RATE) + frames
                       - self._delivered)
            want = min(frames, max(allowed, 0))
            got = 0
            while got < want and self._ablocks:
                block = self._ablocks[0]
                take = min(want - got, len(block) - self._apos)
                outdata[got : got + take] = block[self._apos : self._apos + take]
                got += take
                self._apos += take
                if self._apos >= len(block):
                    self._ablocks.popleft()
                    self._apos = 0
            if not got:
                return
            self._abuffered -= got
            self._acond.notify_all()
            heard_at = now + _output_delay(time_info, self._latency)
            self._anchor = (self._astart_t + self._delivered / RATE, heard_at, got)
            self._delivered += got


def _read(mix: DubMix | None, n: int) -> np.ndarray:
    """``n`` frames of ``mix``; silence for no mix or a damaged stretch, so the clock runs on."""
    if mix is not None:
        try:
            return mix.read(n)
        except RedubError:
            pass
    return np.zeros((n, CHANNELS), np.float32)


def _output_delay(time_info: Any, fallback: float) -> float:
    """Seconds from now until the first sample of this buffer is heard."""
    try:
        delay = float(time_info.outputBufferDacTime) - float(time_info.currentTime)
    except (AttributeError, TypeError, ValueError):
        return fallback
    # Some host APIs (and null devices) report zeros or nonsense: trust only plausible values.
    return delay if 0.0 < delay < 1.0 and math.isfinite(delay) else fallback


def _grain_envelope(n: int) -> np.ndarray:
    """Flat with raised-cosine ends, so a scrub grain does not click."""
    fade = min(round(GRAIN_FADE_S * RATE), n // 2)
    env = np.ones(n, np.float32)
    ramp = (0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)).astype(np.float32)
    env[:fade] = ramp
    env[n - fade:] = ramp[::-1]
    return env
