"""Frame-accurate video reading by timeline position, in bounded memory.

Every frame is addressed by its index in presentation order (from a packet scan, see
``index.py``). Random access seeks to the keyframe at or before the wanted frame and decodes
forward; a request a little ahead of the last one decoded continues instead of seeking, which
makes playback and forward scrubbing cheap. Decoded frames are upright (rotation applied
losslessly to the native planes) and kept in a byte-bounded cache.
"""
from __future__ import annotations

import os
import threading
from typing import Iterator

import av
import numpy as np

from engine.errors import RedubError
from engine.media.cache import FrameCache
from engine.media.container import decode_error
from engine.media.frame import Frame, native_format, planes_from_av, turned_format
from engine.media.hwdecode import as_software, open_decoding
from engine.media.index import FrameIndex
from engine.media.probe import MediaInfo, VideoStreamInfo, probe


class VideoReader:
    def __init__(self, path: str | os.PathLike, *, cache_bytes: int = 256 << 20,
                 stream: int | None = None, threads: int = 0,
                 allow_truncated: bool = False, hwdecode: str | None = None) -> None:
        """``hwdecode``: an FFmpeg device type to decode on (``"cuda"``: NVDEC), ``""`` for
        software; None reads ``REDUB_HWDECODE`` (see ``hwdecode.py``)."""
        self.path = os.fspath(path)
        self.media: MediaInfo = probe(self.path)
        if not self.media.video:
            raise RedubError("has no video stream (audio only?)", self.path)
        chosen = [v for v in self.media.video if stream is None or v.index == stream]
        if not chosen:
            raise RedubError(f"has no video stream #{stream}", self.path)
        self.info: VideoStreamInfo = chosen[0]
        if self.info.truncated and not allow_truncated:
            raise RedubError(f"file is truncated: only {self.info.frame_count} frames "
                             f"({self.info.duration:.2f} s) of the video are present", self.path)
        self.index: FrameIndex = self.info.index_data
        self.cache = FrameCache(cache_bytes)
        self._threads = threads
        self.hwdecode = hwdecode
        self._lock = threading.Lock()
        self._cursor: _Decoder | None = None  # decoder kept open for random access

    # -- geometry and timing -------------------------------------------------------------
    @property
    def frame_count(self) -> int:
        return self.index.frame_count

    @property
    def times(self) -> np.ndarray:
        return self.index.times

    def index_at(self, t: float) -> int:
        return self.index.index_at(t)

    # -- access --------------------------------------------------------------------------
    def frame(self, i: int) -> Frame:
        """Frame ``i`` (presentation order), exactly as a sequential decode gives it."""
        if not 0 <= i < self.frame_count:
            raise IndexError(f"frame {i} outside 0..{self.frame_count - 1}")
        cached = self.cache.get(i)
        if cached is not None:
            return cached
        with self._lock:
            cur = self._cursor
            # Continue forward when the wanted frame is no further than the next keyframe.
            if cur is None or not cur.can_reach(i):
                if cur is not None:
                    cur.close()
                cur = self._cursor = _Decoder(self, i)
            for frame in cur:
                self.cache.put(frame)
                if frame.index >= i:
                    if frame.index == i:
                        return frame
                    break
        raise RedubError(f"frame {i} could not be decoded (damaged file?)", self.path)

    def frame_at(self, t: float) -> Frame:
        return self.frame(self.index_at(t))

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        """Frames ``start`` to ``stop`` (exclusive), streamed; independent of :meth:`frame`."""
        stop = self.frame_count if stop is None else min(stop, self.frame_count)
        if start >= stop:
            return
        decoder = _Decoder(self, start)
        try:
            expected = start
            for frame in decoder:
                if frame.index >= stop:
                    break
                if frame.index != expected:
                    raise RedubError(f"frame {expected} missing or damaged "
                                     f"(decoder skipped to frame {frame.index})", self.path)
                expected += 1
                yield frame
            if expected < stop:
                raise RedubError(f"file ends early: frame {expected} of {self.frame_count} "
                                 "could not be decoded (truncated or damaged)", self.path)
        finally:
            decoder.close()

    def close(self) -> None:
        with self._lock:
            if self._cursor is not None:
                self._cursor.close()
                self._cursor = None
        self.cache.clear()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Decoder:
    """An open container decoding forward from the keyframe before a start frame."""

    def __init__(self, reader: VideoReader, start: int) -> None:
        self.reader = reader
        self.index = reader.index
        self.info = reader.info
        self.start = start
        self.last = -1  # index of the last frame produced
        self.container = open_decoding(reader.path, reader.hwdecode)
        self.stream = self.container.streams[self.info.index]
        # Pictures from a hardware decoder (NV12, P010, ...) go into the software planes.
        self._software = self.info.pix_fmt if self.stream.codec_context.is_hwaccel else None
        self.stream.thread_type = "AUTO"
        self.stream.codec_context.thread_count = reader._threads
        self._rot = self.info.rotation // 90
        self._color = reader.info.color  # the stream's tags (see probe): one per stream
        self._frames = self._decode(start)

    def can_reach(self, i: int) -> bool:
        if i <= self.last:
            return False
        next_key = self.index.keyframe_for(i)
        return next_key <= self.index.keyframe_for(max(self.last, self.start))

    def __iter__(self) -> Iterator[Frame]:
        return self

    def __next__(self) -> Frame:
        frame = next(self._frames)
        self.last = frame.index
        return frame

    def close(self) -> None:
        self._frames.close()
        self.container.close()

    def _decode(self, start: int) -> Iterator[Frame]:
        k = self.index.keyframe_for(start)
        while True:
            self._seek(k)
            first = True
            for av_frame in self._decoded():
                i = self.index.index_of_pts(av_frame.pts) if av_frame.pts is not None else None
                if i is None:
                    continue  # e.g. leading pictures of an open GOP decoded without references
                if first and i > start and k > 0:
                    break  # the demuxer seeked past the wanted frame: start a keyframe earlier
                first = False
                if i >= start:
                    yield self._to_frame(av_frame, i)
            else:
                return
            k -= 1

    def _seek(self, k: int) -> None:
        if k == 0:
            self.container.seek(0, stream=self.stream, backward=True)
            return
        self.container.seek(int(self.index.key_dts[k]), stream=self.stream, backward=True)

    def _decoded(self) -> Iterator[av.VideoFrame]:
        try:
            for packet in self.container.demux(self.stream):
                for av_frame in packet.decode():
                    yield av_frame
        except av.FFmpegError as exc:
            raise decode_error(exc, self.reader.path, f"frame {self.last + 1}") from exc

    def _to_frame(self, av_frame: av.VideoFrame, i: int) -> Frame:
        if self._software:
            av_frame = as_software(av_frame, self._software)
        fmt = native_format(av_frame.format.name)
        if turned_format(fmt, self._rot) is None:
            # No format holds this chroma turned on its side (4:1:1): full chroma instead.
            fmt = "yuv444p16le" if av.VideoFormat(fmt).components[0].bits > 8 else "yuv444p"
        if fmt != av_frame.format.name:
            av_frame = av_frame.reformat(format=fmt)
        planes = planes_from_av(av_frame)
        w, h = av_frame.width, av_frame.height
        if self._rot:
            planes = tuple(np.ascontiguousarray(np.rot90(p, self._rot)) for p in planes)
            fmt = turned_format(fmt, self._rot)
            if self._rot % 2:
                w, h = h, w
        return Frame(index=i, time=float(self.index.times[i]),
                     pts=int(self.index.pts[i] - self.index.start_pts), pix_fmt=fmt,
                     width=w, height=h, planes=planes, color=self._color)
