"""Decode audio from any media file into float32 arrays, whole or streamed.

Plain audio files (wav/flac/ogg/mp3) go through soundfile when libsndfile can open them: it is
fast and sample-exact (16-bit PCM comes out as exactly ``int16 / 32768``). Everything else
(mp4/mov/mkv/webm, AAC, Opus, ...) is decoded with PyAV. Rate conversion uses PyAV's
``AudioResampler`` (swresample), which is delay-compensated, so an impulse stays at the same
time after resampling.

Time is measured in the stream's own clock: sample 0 is the first decoded sample.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from itertools import chain
from numbers import Integral
from types import TracebackType

import av
import numpy as np
import soundfile as sf

from engine.errors import RedubError, UsageError
from engine.media.container import check_readable, ffmpeg_reason, open_input

__all__ = ["Audio", "AudioStream", "NoAudioError", "read_audio"]

# Frames read per call from soundfile and the piece size read_audio assembles from.
_SF_BLOCK = 1 << 16
_READ_BLOCK = 1 << 20
# Decoded audio discarded before a seek target: codecs with overlapping transforms (AAC, MP3,
# Opus) produce wrong samples for the first frame(s) after a seek.
_PREROLL_S = 0.25
# Source audio fed to the resampler before a seek target, so its filter history is warm.
_RESAMPLE_MARGIN_S = 0.05
# Demuxers that seek through a sample index, so packet timestamps after a seek are exact
# (raw ADTS/MP3 streams estimate them from the byte position instead).
_INDEXED_FORMATS = ("mov", "mp4", "matroska", "webm")


class NoAudioError(RedubError):
    """The file is a readable media file but has no audio stream (e.g. a video-only clip)."""


@dataclass
class Audio:
    """Decoded audio: ``samples`` is float32, shape (frames, channels), nominal range [-1, 1]."""

    samples: np.ndarray
    rate: int

    @property
    def frames(self) -> int:
        return int(self.samples.shape[0])

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration(self) -> float:
        return self.frames / self.rate


def read_audio(
    path: str | os.PathLike,
    *,
    rate: int | None = None,
    channels: int | None = None,
    start: float = 0.0,
    duration: float | None = None,
    stream_index: int | None = None,
) -> Audio:
    """Decode ``duration`` seconds (all when None) from ``start`` seconds of a file's audio.

    ``rate``/``channels`` None keep the original; ``channels=1`` averages the channels, mono is
    duplicated to more channels. The result is shorter than ``duration`` only where the stream ends.
    """
    if duration is not None and not (math.isfinite(duration) and duration >= 0):
        raise UsageError(f"audio duration must be a non-negative number of seconds, got {duration}")
    with AudioStream(path, rate=rate, channels=channels, start=start, stream_index=stream_index) as stream:
        limit = None if duration is None else round(duration * stream.rate)
        parts: list[np.ndarray] = []
        total = 0
        while limit is None or total < limit:
            want = _READ_BLOCK if limit is None else min(_READ_BLOCK, limit - total)
            part = stream.read(want, pad=False)
            if not len(part):
                break
            parts.append(part)
            total += len(part)
        samples = np.concatenate(parts) if parts else np.zeros((0, stream.channels), np.float32)
        return Audio(samples=samples, rate=stream.rate)


def read_mono(path: str | os.PathLike, rate: int) -> np.ndarray:
    """The whole audio of ``path`` as float32 (n, 1) at ``rate``: the channels averaged, then
    resampled with soxr's HQ filter to ceil(n * rate / source rate) samples. That is what
    librosa.load gives, so models trained on its output (MuseTalk's Whisper features) hear the
    same samples."""
    import soxr

    audio = read_audio(path)
    mono = audio.samples.mean(axis=1, dtype=np.float32)
    if audio.rate != rate:
        length = int(np.ceil(len(mono) * (float(rate) / audio.rate)))
        mono = soxr.resample(mono, audio.rate, rate, quality="HQ").astype(np.float32)
        mono = np.pad(mono[:length], (0, max(length - len(mono), 0)))
    return mono[:, None]


class AudioStream:
    """Sequential reader with bounded memory: decodes on demand, keeps one decoded block.

    ``duration`` is the source stream's length in seconds as the container reports it (None when
    unknown); it ignores ``start``. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        rate: int | None = None,
        channels: int | None = None,
        start: float = 0.0,
        stream_index: int | None = None,
    ) -> None:
        if rate is not None and (not isinstance(rate, Integral) or rate <= 0):
            raise UsageError(f"audio rate must be a positive integer, got {rate!r}")
        if channels is not None and (not isinstance(channels, Integral) or channels <= 0):
            raise UsageError(f"audio channels must be a positive integer, got {channels!r}")
        if not (math.isfinite(start) and start >= 0):
            raise UsageError(f"audio start must be a non-negative number of seconds, got {start}")
        self.path = os.fspath(path)
        self._source = _open_source(self.path, stream_index)
        self.rate: int = int(rate or self._source.rate)
        self.channels: int = int(channels or self._source.channels)
        self.duration: float | None = self._source.duration
        self._convert = _Converter(self._source, self.rate, self.channels)

        if self._convert.resamples:
            # Start the resampler on a source sample that falls exactly on the output grid and a
            # little before the target: the output then matches a read from 0 sample for sample.
            step = self._source.rate // math.gcd(self._source.rate, self.rate)
            margin = round((start - _RESAMPLE_MARGIN_S) * self._source.rate)
            first = max(0, margin // step * step)
            self._drop = round(start * self.rate) - first * self.rate // self._source.rate
        else:
            first = round(start * self._source.rate)
            self._drop = 0
        self._blocks = self._source.blocks(first)
        self._done = False
        self._buf = np.zeros((0, self.channels), np.float32)
        self._buf_pos = 0

    def read(self, n: int, *, pad: bool = True) -> np.ndarray:
        """Next ``n`` frames as float32 (n, channels); zeros after the end of the stream.

        With ``pad=False`` the result is shorter instead, only once the stream ends.
        """
        if n < 0:
            raise UsageError(f"cannot read a negative number of audio frames ({n})")
        out = np.zeros((n, self.channels), np.float32)
        filled = 0
        while filled < n:
            if self._buf_pos >= len(self._buf) and not self._refill():
                break
            take = min(n - filled, len(self._buf) - self._buf_pos)
            out[filled : filled + take] = self._buf[self._buf_pos : self._buf_pos + take]
            filled += take
            self._buf_pos += take
        return out if pad else out[:filled]

    @property
    def exhausted(self) -> bool:
        """True once every real sample has been returned by :meth:`read`."""
        return self._buf_pos >= len(self._buf) and not self._refill()

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _refill(self) -> bool:
        """Load the next non-empty converted block into the buffer; False at the end."""
        while not self._done:
            block = next(self._blocks, None)
            if block is None:
                self._done = True
                out = self._convert.flush()
            else:
                out = self._convert(block)
            if self._drop:
                skip = min(self._drop, len(out))
                out = out[skip:]
                self._drop -= skip
            if len(out):
                self._buf, self._buf_pos = out, 0
                return True
        return False


def _open_source(path: str, stream_index: int | None) -> _SndSource | _AVSource:
    check_readable(path)
    if stream_index in (None, 0):
        try:
            return _SndSource(path)
        except (sf.SoundFileError, RuntimeError):
            pass  # not something libsndfile reads: PyAV handles every other format
    return _AVSource(path, stream_index)


def _default_layout(channels: int) -> str:
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")


class _SndSource:
    """soundfile reader: exact PCM conversion and sample-exact seeks."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = sf.SoundFile(path)
        self.rate: int = self._file.samplerate
        self.channels: int = self._file.channels
        self.layout = _default_layout(self.channels)
        self.duration: float | None = self._file.frames / self.rate if self._file.frames > 0 else None

    def blocks(self, start: int) -> Iterator[np.ndarray]:
        """Float32 (n, channels) blocks beginning exactly at source frame ``start``."""
        try:
            if start:
                if start >= self._file.frames:
                    return
                self._file.seek(start)
            while True:
                block = self._file.read(_SF_BLOCK, dtype="float32", always_2d=True)
                if not len(block):
                    return
                yield block
        except (sf.SoundFileError, RuntimeError) as exc:
            raise RedubError(f"corrupt audio data ({exc})", self.path) from None

    def close(self) -> None:
        self._file.close()


class _AVSource:
    """PyAV reader for containers and codecs libsndfile does not handle."""

    def __init__(self, path: str, stream_index: int | None) -> None:
        self.path = path
        self._stream_index = stream_index
        self._open()
        cc = self._stream.codec_context
        first = self._first
        self.rate: int = first.sample_rate if first is not None else cc.sample_rate
        self.channels: int = first.layout.nb_channels if first is not None else cc.channels
        if not self.rate or not self.channels:
            raise RedubError("audio stream has no samples", path)
        layout = first.layout.name if first is not None else cc.layout.name
        # swresample cannot remix an "N channels" layout with unknown order: assume the default.
        self.layout = _default_layout(self.channels) if "channels" in layout else layout
        if self._stream.duration:
            self.duration: float | None = float(self._stream.duration * self._stream.time_base)
        elif self._container.duration:
            self.duration = self._container.duration / av.time_base
        else:
            self.duration = None

    def _open(self) -> None:
        """(Re)open the container and decode the first frame, which fixes the time origin."""
        self._container = open_input(self.path)
        try:
            self._stream = self._pick_stream()
        except RedubError:
            self._container.close()  # after the message is built: streams die with the container
            raise
        self._frames = self._decode()
        self._first = next(self._frames, None)

    def _pick_stream(self) -> av.AudioStream:
        streams = self._container.streams
        if self._stream_index is None:
            if not streams.audio:
                raise NoAudioError("no audio stream", self.path)
            stream = streams.audio[0]
        else:
            if not 0 <= self._stream_index < len(streams):
                raise UsageError(f"no stream {self._stream_index} (the file has {len(streams)})", self.path)
            stream = streams[self._stream_index]
            if stream.type != "audio":
                raise UsageError(f"stream {self._stream_index} is {stream.type}, not audio", self.path)
        if stream.codec_context is None:
            raise RedubError("cannot decode the audio (no decoder for its codec)", self.path)
        return stream

    def _decode(self) -> Iterator[av.AudioFrame]:
        try:
            for packet in self._container.demux(self._stream):
                yield from packet.decode()
        except av.FFmpegError as exc:
            raise RedubError(f"corrupt audio data ({ffmpeg_reason(exc)})", self.path) from None

    def blocks(self, start: int) -> Iterator[np.ndarray]:
        """Float32 (n, channels) blocks beginning exactly at source frame ``start``."""
        if self._first is None:
            return
        pending, pos = self._first, 0
        if start > 0:
            landed = self._seek(start)
            if landed is not None:
                pending, pos = landed
            else:
                pending = self._first
        for frame in chain((pending,), self._frames):
            n = frame.samples
            if pos + n > start:
                block = _frame_to_array(frame)
                yield block[max(0, start - pos) :]
            pos += n

    def _seek(self, start: int) -> tuple[av.AudioFrame, int] | None:
        """Seek to a little before ``start``; the first frame and its exact source frame index.

        None when this stream cannot be positioned exactly: decoding then runs from the start
        (after reopening, when a seek was tried and failed).
        """
        target_s = start / self.rate - _PREROLL_S
        if target_s <= 0 or not any(n in self._container.format.name for n in _INDEXED_FORMATS):
            return None
        first = self._first
        cc = self._stream.codec_context
        tb = self._stream.time_base
        fine = tb <= Fraction(1, self.rate)
        if first.pts is None or (not fine and not cc.frame_size):
            return None
        try:
            self._container.seek(first.pts + math.floor(target_s / tb), stream=self._stream, backward=True)
        except av.FFmpegError:
            return self._restart()
        self._frames = self._decode()
        frame = next(self._frames, None)
        if frame is None or frame.pts is None:
            return self._restart()
        offset = Fraction(frame.pts - first.pts) * tb * self.rate
        if fine:
            pos = round(offset)
        elif frame.samples == cc.frame_size:
            # Coarse timestamps (Matroska: 1 ms): snap to the codec's fixed frame grid, which
            # starts after the first (possibly shortened) frame.
            anchor = first.samples
            pos = anchor + round((offset - anchor) / cc.frame_size) * cc.frame_size
        else:
            pos = -1
        if not 0 <= pos <= start:
            return self._restart()
        return frame, pos

    def _restart(self) -> None:
        """Reopen after a failed seek: the demuxer is somewhere unknown."""
        self._container.close()
        self._open()

    def close(self) -> None:
        self._container.close()


_INT_SCALE = {"s16": 2.0**15, "s32": 2.0**31, "s64": 2.0**63}


def _frame_to_array(frame: av.AudioFrame) -> np.ndarray:
    """Decoded frame as float32 (n, channels), integer PCM scaled exactly like libsndfile."""
    data = frame.to_ndarray()
    channels = frame.layout.nb_channels
    data = data.T if frame.format.is_planar else data.reshape(-1, channels)
    name = frame.format.name.rstrip("p")
    if name == "u8":
        return (data.astype(np.float32) - 128.0) / 128.0
    if name in _INT_SCALE:
        return (data / _INT_SCALE[name]).astype(np.float32)
    return data.astype(np.float32)


class _Converter:
    """Channel mixing and rate conversion of source blocks to the requested format.

    Mono targets average the channels and mono sources are duplicated, in numpy; other channel
    changes use swresample's standard matrices. Nothing is touched when the format already matches.
    """

    def __init__(self, source: _SndSource | _AVSource, rate: int, channels: int) -> None:
        self._average = channels == 1 and source.channels > 1
        self._duplicate = source.channels == 1 and channels > 1
        self._channels = channels
        self._in_rate = source.rate
        remix = not (self._average or self._duplicate) and source.channels != channels
        if self._average or self._duplicate:
            self._in_layout = out_layout = "mono"
        else:
            self._in_layout = source.layout
            out_layout = _default_layout(channels) if remix else source.layout
        self.resamples = rate != source.rate
        self._resampler: av.AudioResampler | None = None
        if self.resamples or remix:
            self._resampler = av.AudioResampler(format="fltp", layout=out_layout, rate=rate)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        if self._average:
            block = block.mean(axis=1, keepdims=True, dtype=np.float32)
        if self._resampler is not None:
            planar = np.ascontiguousarray(block.T)
            frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=self._in_layout)
            frame.sample_rate = self._in_rate
            block = self._collect(self._resampler.resample(frame))
        if self._duplicate:
            block = np.repeat(block, self._channels, axis=1)
        return block

    def flush(self) -> np.ndarray:
        if self._resampler is None:
            return np.zeros((0, self._channels), np.float32)
        block = self._collect(self._resampler.resample(None))
        return np.repeat(block, self._channels, axis=1) if self._duplicate else block

    def _collect(self, frames: list[av.AudioFrame]) -> np.ndarray:
        if not frames:
            return np.zeros((0, 1 if self._duplicate else self._channels), np.float32)
        return np.concatenate([f.to_ndarray().T for f in frames])
