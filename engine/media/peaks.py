"""Min/max waveform summaries at several zoom levels, so an hour-long waveform draws instantly.

Level ``k`` holds, for every bucket of ``base * factor**k`` consecutive samples of the mono
mixdown, the bucket's minimum and maximum (float32, exact: no quantisation). Each level is
reduced exactly from the one below, so a single-sample peak survives in every level.

Zoom finer than one level-0 bucket per pixel is answered from level 0: neighbouring pixels then
repeat the same bucket's min/max (a blocky but never wrong envelope). A view that needs
individual samples at that zoom should read them with :func:`engine.media.audio.read_audio`.
"""
from __future__ import annotations

import hashlib
import math
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from engine.errors import RedubError, UsageError
from engine.media.audio import AudioStream
from engine.paths import cache_dir
from engine.progress import CancelToken, ProgressFn, no_progress

__all__ = ["PeakPyramid", "cached_peaks"]

# Bumped when the stored layout or the reduction changes, so old cache files are ignored.
_FORMAT_VERSION = 1


class PeakPyramid:
    """Per-bucket (min, max) of a mono signal at bucket sizes ``base * factor**k``."""

    def __init__(
        self, *, rate: int, frames: int, base: int, factor: int, levels: list[tuple[np.ndarray, np.ndarray]]
    ) -> None:
        self.rate = rate
        self.frames = frames
        self.base = base
        self.factor = factor
        self.levels = levels

    @property
    def duration(self) -> float:
        return self.frames / self.rate

    def bucket_size(self, level: int) -> int:
        """Samples per bucket at ``level``."""
        return self.base * self.factor**level

    @classmethod
    def from_samples(cls, samples: np.ndarray, rate: int, *, base: int = 256, factor: int = 4) -> PeakPyramid:
        """Pyramid of an in-memory signal, (n,) or (n, channels) (channels are averaged)."""
        _check_shape(base, factor)
        mono = _mono(np.asarray(samples, np.float32))
        mins, maxs = _reduce(mono, mono, base)
        return cls._from_level0(rate, len(mono), base, factor, mins, maxs)

    @classmethod
    def build(
        cls,
        source: AudioStream | str | os.PathLike,
        *,
        base: int = 256,
        factor: int = 4,
        chunk: int = 1 << 18,
        stream_index: int | None = None,
        progress: ProgressFn = no_progress,
        cancel: CancelToken | None = None,
    ) -> PeakPyramid:
        """Pyramid of a file's audio (at its own rate), streamed ``chunk`` samples at a time.

        Memory holds one chunk plus the pyramid itself (about 2.7 % of the mono float32 audio at the
        defaults). A given :class:`AudioStream` is read from its current position and not closed.
        """
        _check_shape(base, factor)
        if isinstance(source, AudioStream):
            return cls._build(source, base, factor, chunk, progress, cancel)
        with AudioStream(source, channels=1, stream_index=stream_index) as stream:
            return cls._build(stream, base, factor, chunk, progress, cancel)

    @classmethod
    def _build(
        cls,
        stream: AudioStream,
        base: int,
        factor: int,
        chunk: int,
        progress: ProgressFn,
        cancel: CancelToken | None,
    ) -> PeakPyramid:
        # Whole buckets per chunk, so only the stream's last bucket can be partial.
        chunk = max(base, chunk // base * base)
        total = round(stream.duration * stream.rate) if stream.duration else 0
        mins: list[np.ndarray] = []
        maxs: list[np.ndarray] = []
        frames = 0
        while True:
            if cancel is not None:
                cancel.check()
            mono = _mono(stream.read(chunk, pad=False))
            if not len(mono):
                break
            lo, hi = _reduce(mono, mono, base)
            mins.append(lo)
            maxs.append(hi)
            frames += len(mono)
            progress("peaks", frames, max(total, frames) if total else 0)
        empty = np.zeros(0, np.float32)
        return cls._from_level0(
            stream.rate,
            frames,
            base,
            factor,
            np.concatenate(mins) if mins else empty,
            np.concatenate(maxs) if maxs else empty,
        )

    @classmethod
    def _from_level0(
        cls, rate: int, frames: int, base: int, factor: int, mins: np.ndarray, maxs: np.ndarray
    ) -> PeakPyramid:
        levels = [(mins, maxs)]
        while len(levels[-1][0]) > 1:
            levels.append(_reduce(*levels[-1], factor))
        return cls(rate=rate, frames=frames, base=base, factor=factor, levels=levels)

    def query(self, start_s: float, end_s: float, width: int) -> tuple[np.ndarray, np.ndarray]:
        """``width`` (min, max) pixels evenly covering [start_s, end_s), float32.

        Uses the coarsest level whose bucket is no larger than the samples per pixel; each pixel
        reports the extremes of every bucket it overlaps, so no sample between pixels is missed
        (a pixel may include up to one bucket's worth of samples beyond its own edges). Pixels
        wholly outside the audio are 0 (silence).
        """
        if width < 1:
            raise UsageError(f"peak query width must be at least 1 pixel, got {width}")
        if not end_s > start_s:
            raise UsageError(f"peak query needs end > start, got {start_s}..{end_s}")
        per_pixel = (end_s - start_s) * self.rate / width
        level = 0
        while level + 1 < len(self.levels) and self.bucket_size(level + 1) <= per_pixel:
            level += 1
        lo_all, hi_all = self.levels[level]
        size = self.bucket_size(level)
        count = len(lo_all)

        edges = start_s * self.rate + per_pixel * np.arange(width + 1)
        first = np.floor(edges[:-1] / size)
        last = np.ceil(edges[1:] / size) - 1  # inclusive: the bucket holding the pixel's last sample
        inside = (last >= 0) & (first < count)
        out_lo = np.zeros(width, np.float32)
        out_hi = np.zeros(width, np.float32)
        if not inside.any():
            return out_lo, out_hi
        first = np.clip(first[inside], 0, count - 1).astype(np.int64)
        last = np.clip(last[inside], 0, count - 1).astype(np.int64)
        # reduceat covers [first[i], first[i+1]); a pixel also owns its last bucket, which may be
        # the next pixel's first (shared at the edge). Pixels never skip a bucket, so the two
        # together are exactly [first[i], last[i]].
        stop = last[-1] + 1
        lo = np.minimum(np.minimum.reduceat(lo_all[:stop], first), lo_all[last])
        hi = np.maximum(np.maximum.reduceat(hi_all[:stop], first), hi_all[last])
        out_lo[inside] = lo
        out_hi[inside] = hi
        return out_lo, out_hi

    def save(self, path: str | os.PathLike) -> None:
        """Write as .npz to exactly ``path`` (numpy would otherwise append ".npz" to other names)."""
        meta = [_FORMAT_VERSION, self.rate, self.frames, self.base, self.factor]
        arrays = {"meta": np.array(meta, np.int64)}
        for k, (lo, hi) in enumerate(self.levels):
            arrays[f"min{k}"] = lo
            arrays[f"max{k}"] = hi
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PeakPyramid:
        try:
            with np.load(path, allow_pickle=False) as data:
                version, rate, frames, base, factor = (int(v) for v in data["meta"])
                if version != _FORMAT_VERSION:
                    raise RedubError(f"peak file version {version} is not supported", path)
                levels = []
                for k in range(sum(1 for name in data.files if name.startswith("min"))):
                    levels.append((data[f"min{k}"], data[f"max{k}"]))
        except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise RedubError(f"not a readable peak file ({exc})", path) from None
        return cls(rate=rate, frames=frames, base=base, factor=factor, levels=levels)


def cached_peaks(
    path: str | os.PathLike,
    *,
    base: int = 256,
    factor: int = 4,
    stream_index: int | None = None,
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
) -> PeakPyramid:
    """:meth:`PeakPyramid.build` through a cache in ``cache_dir()/peaks``.

    The key is the file's identity (absolute path, size, mtime_ns) and the settings, so an edited
    file is rebuilt. Unreadable cache entries are rebuilt; entries are written atomically.
    """
    source = Path(path).resolve()
    try:
        st = source.stat()
    except OSError:
        raise RedubError("file not found", path) from None
    key = f"{_FORMAT_VERSION}|{source}|{st.st_size}|{st.st_mtime_ns}|{base}|{factor}|{stream_index}"
    folder = cache_dir() / "peaks"
    entry = folder / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".npz")
    if entry.is_file():
        try:
            return PeakPyramid.load(entry)
        except RedubError:
            pass  # damaged cache entry: rebuild and overwrite it
    pyramid = PeakPyramid.build(
        source, base=base, factor=factor, stream_index=stream_index, progress=progress, cancel=cancel
    )
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    os.close(fd)
    try:
        pyramid.save(tmp)
        os.replace(tmp, entry)
    except BaseException:
        os.unlink(tmp)
        raise
    return pyramid


def _check_shape(base: int, factor: int) -> None:
    if base < 1 or factor < 2:
        raise UsageError(f"peak buckets need base >= 1 and factor >= 2, got {base} and {factor}")


def _mono(samples: np.ndarray) -> np.ndarray:
    if samples.ndim == 1:
        return samples
    if samples.shape[1] == 1:
        return samples[:, 0]
    return samples.mean(axis=1, dtype=np.float32)


def _reduce(lo: np.ndarray, hi: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Min of ``lo`` and max of ``hi`` over consecutive groups of ``size`` (last group partial)."""
    count = math.ceil(len(lo) / size)
    pad = count * size - len(lo)
    if pad:
        lo = np.concatenate([lo, np.full(pad, np.inf, np.float32)])
        hi = np.concatenate([hi, np.full(pad, -np.inf, np.float32)])
    return lo.reshape(count, size).min(axis=1), hi.reshape(count, size).max(axis=1)
