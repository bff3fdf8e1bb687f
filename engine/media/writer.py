"""Encode frames and audio to a file, atomically, at the source's timing, depth and colour.

Output goes to a hidden temporary file beside the target and is renamed over it only when
complete, so a failure, a cancel or a full disk never leaves a partial file and never touches a
source. Frames arrive upright (as the reader gives them) and are turned back to the source's
stored orientation, losslessly, with its rotation written as a display matrix, so the output
plays like the source and its pixels can be compared one to one.
"""
from __future__ import annotations

import errno
import os
import uuid
from fractions import Fraction
from typing import Iterable, Protocol

import av
import numpy as np

from engine.errors import RedubError, UsageError
from engine.media.codecs import audio_codec_for, get_preset
from engine.media.frame import Frame, av_from_planes, native_format, turned_format
from engine.media.probe import VideoStreamInfo
from engine.timecode import format_timecode

_AUDIO_BLOCK = 1024  # AAC's frame size; PCM takes any


class AudioSource(Protocol):
    rate: int
    channels: int

    def read(self, n: int) -> np.ndarray:
        """The next ``n`` samples, float32 (n, channels)."""


def check_output_path(output: str | os.PathLike, sources: Iterable[str | os.PathLike],
                      extensions: tuple[str, ...] | None = None) -> str:
    """Validate an output path before any work starts; returns it as a string."""
    out = os.path.abspath(os.fspath(output))
    folder = os.path.dirname(out)
    if not os.path.isdir(folder):
        raise UsageError("output folder does not exist", folder)
    if os.path.isdir(out):
        raise UsageError("output path is a folder", out)
    for src in sources:
        src = os.path.abspath(os.fspath(src))
        if out == src or (os.path.exists(out) and os.path.exists(src)
                          and os.path.samefile(out, src)):
            raise UsageError("output would overwrite an input file; choose another name", out)
    ext = os.path.splitext(out)[1].lower()
    if extensions is not None and ext not in extensions:
        raise UsageError(f"this codec needs a {' or '.join(extensions)} file, not '{ext or 'no extension'}'", out)
    if not os.access(folder, os.W_OK):
        raise RedubError("output folder is not writable", folder)
    return out


class VideoWriter:
    """Write frames shaped like ``like``; use as a context manager (an exception discards)."""

    def __init__(self, path: str | os.PathLike, like: VideoStreamInfo, *, codec: str = "h264",
                 quality: dict[str, str] | None = None, audio: AudioSource | None = None,
                 audio_sample_format: str | None = None,
                 sources: Iterable[str | os.PathLike] = (), first: int = 0) -> None:
        """``first``: the source frame a trimmed export starts at; the output's timestamps
        count from it and its start timecode is that frame's."""
        preset = get_preset(codec)
        self.path = check_output_path(path, sources, preset.extensions)
        self.like = like
        ext = os.path.splitext(self.path)[1].lower()
        folder, name = os.path.split(self.path)
        self.temp_path = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.part{ext}")
        self.settings = preset.settings(native_format(like.pix_fmt), like.coded_width,
                                        like.coded_height, quality)
        self._durations = (like.index_data.durations if like.index_data is not None
                           else None)
        self._rot = like.rotation // 90
        self._pts0, self._t0 = 0, 0.0
        if first:
            index = like.index_data
            self._pts0 = int(index.pts[first] - index.start_pts)
            self._t0 = float(index.times[first])
        self._audio = audio
        self._audio_written = 0
        self._end_time = 0.0
        self._closed = False
        try:
            self._container = av.open(self.temp_path, mode="w")
            if like.start_timecode:
                # FFmpeg writes it as a timecode track (mov/mp4) or tag (mxf, mkv), so the
                # export conforms back onto the editor's timeline at the source's timecode.
                self._container.metadata["timecode"] = _timecode_at(like, self._t0)
            self._video = self._add_video_stream(preset.name)
            if like.reel_name:
                # QuickTime keeps it in the timecode track (FCP and Premiere read it there),
                # Matroska and MXF as tags: NLEs relink by reel and timecode.
                self._container.metadata["reel_name"] = like.reel_name
                self._video.metadata["reel_name"] = like.reel_name
            self._astream = (self._add_audio_stream(audio_codec_for(ext, audio_sample_format))
                             if audio is not None else None)
        except av.FFmpegError as exc:
            self._discard()
            raise _write_error(exc, self.path) from exc

    @property
    def note(self) -> str:
        """What the export changed about the source's format, if anything (for the user)."""
        return self.settings.note

    def _add_video_stream(self, preset: str) -> av.VideoStream:
        like = self.like
        rate = like.frame_rate if like.frame_rate else Fraction(25)
        stream = self._container.add_stream(self.settings.encoder, rate=rate)
        stream.width, stream.height = like.coded_width, like.coded_height
        stream.pix_fmt = self.settings.pix_fmt
        stream.time_base = like.time_base
        cc = stream.codec_context
        cc.time_base = like.time_base
        cc.options = dict(self.settings.options)
        cc.color_primaries = like.color.primaries
        cc.color_trc = like.color.transfer
        cc.colorspace = like.color.matrix
        cc.color_range = like.color.range
        if like.sample_aspect_ratio and like.sample_aspect_ratio != 1:
            cc.sample_aspect_ratio = like.sample_aspect_ratio
        if preset in ("h265", "hevc_nvenc") and self.path.endswith((".mp4", ".mov")):
            cc.codec_tag = "hvc1"  # what Apple players require for HEVC
        if like.rotation:
            stream.set_display_rotation(like.rotation)
        stream.thread_type = "AUTO"
        return stream

    def _add_audio_stream(self, codec: str) -> av.AudioStream:
        assert self._audio is not None
        stream = self._container.add_stream(codec, rate=self._audio.rate)
        stream.layout = {1: "mono", 2: "stereo"}.get(self._audio.channels,
                                                    f"{self._audio.channels}c")
        if codec == "aac":
            stream.bit_rate = 128_000 * min(self._audio.channels, 2)
        fmt = {"aac": "fltp", "pcm_s16le": "s16", "pcm_s24le": "s32"}[codec]
        self._resampler = av.AudioResampler(format=fmt, layout=stream.layout,
                                            rate=self._audio.rate)
        return stream

    def write(self, frame: Frame) -> None:
        """Encode one frame; its ``pts`` (stream time base, the source's first frame 0; a
        trimmed export's ``first`` frame becomes 0) places it."""
        planes, pix_fmt = frame.planes, frame.pix_fmt
        w, h = frame.width, frame.height
        if self._rot:
            planes = tuple(np.ascontiguousarray(np.rot90(p, -self._rot)) for p in planes)
            pix_fmt = turned_format(pix_fmt, self._rot)
            if self._rot % 2:
                w, h = h, w
        av_frame = av_from_planes(planes, pix_fmt, w, h)
        av_frame.colorspace = frame.color.matrix
        av_frame.color_range = frame.color.range
        av_frame.color_primaries = frame.color.primaries
        av_frame.color_trc = frame.color.transfer
        if pix_fmt != self.settings.pix_fmt:
            matrix = frame.color.effective_matrix(frame.height)
            rng = frame.color.effective_range(pix_fmt)
            av_frame = av_frame.reformat(format=self.settings.pix_fmt, src_colorspace=matrix,
                                         dst_colorspace=matrix, src_color_range=rng,
                                         dst_color_range=rng)
        av_frame.pts = frame.pts - self._pts0
        av_frame.time_base = self.like.time_base
        self._end_time = max(self._end_time,
                             frame.time - self._t0 + self._frame_duration(frame))
        try:
            for packet in self._video.encode(av_frame):
                self._container.mux(packet)
            # Audio follows the video frame by frame: the muxer interleaves, and it never
            # runs past the last frame.
            self._pump_audio(self._end_time)
        except (av.FFmpegError, OSError) as exc:
            self.abort()
            raise _write_error(exc, self.path) from exc

    def _frame_duration(self, frame: Frame) -> float:
        if self._durations is not None and frame.index < self._durations.size:
            return float(self._durations[frame.index])
        return 1.0 / float(self.like.frame_rate or 25)

    def _pump_audio(self, until: float) -> None:
        if self._astream is None or self._audio is None:
            return
        target = int(round(until * self._audio.rate))
        while self._audio_written < target:
            n = min(_AUDIO_BLOCK, target - self._audio_written)
            block = np.ascontiguousarray(self._audio.read(n).T, dtype=np.float32)
            af = av.AudioFrame.from_ndarray(block, format="fltp", layout=self._astream.layout)
            af.sample_rate = self._audio.rate
            af.pts = self._audio_written
            af.time_base = Fraction(1, self._audio.rate)
            self._audio_written += n
            for converted in self._resampler.resample(af):
                for packet in self._astream.encode(converted):
                    self._container.mux(packet)

    def close(self) -> None:
        """Flush, finish the audio to the video's end, and move the file into place."""
        if self._closed:
            return
        renaming = False
        try:
            for packet in self._video.encode(None):
                self._container.mux(packet)
            if self._astream is not None:
                self._pump_audio(self._end_time)
                for converted in self._resampler.resample(None):
                    for packet in self._astream.encode(converted):
                        self._container.mux(packet)
                for packet in self._astream.encode(None):
                    self._container.mux(packet)
            self._container.close()
            renaming = True
            os.replace(self.temp_path, self.path)
        except BaseException as exc:
            # Whatever stopped it (encoder, refused rename, Ctrl+C, SIGTERM), the temporary
            # file goes, finished or not, and the target stays as it was.
            self.abort()
            if renaming and isinstance(exc, OSError):
                raise RedubError(f"cannot put the finished file in place ({exc.strerror or exc}"
                                 "): is it read-only or open in another program? Nothing was "
                                 "saved", self.path) from exc
            if isinstance(exc, (av.FFmpegError, OSError)):
                raise _write_error(exc, self.path) from exc
            raise
        self._closed = True

    def abort(self) -> None:
        """Stop and delete the partial output; the target path is left as it was."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.close()
        except (av.FFmpegError, OSError):
            pass  # the container is being thrown away; its own error is not the news
        self._discard()

    def _discard(self) -> None:
        try:
            os.remove(self.temp_path)
        except OSError:
            pass  # already gone, or not removable: the error that brought us here is the news

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _timecode_at(like: VideoStreamInfo, seconds: float) -> str:
    """The source timecode of the frame ``seconds`` after ``like``'s first (drop-frame kept)."""
    if not seconds:
        return like.start_timecode
    return format_timecode(seconds, like.frame_rate, ";" in like.start_timecode,
                           like.clock.start_frame)


def _write_error(exc: Exception, path: str) -> RedubError:
    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC:
        return RedubError("disk full while writing; nothing was saved", path)
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return RedubError("cannot write here (permission denied)", path)
    text = getattr(exc, "strerror", None) or str(exc)
    return RedubError(f"writing failed ({text}); nothing was saved", path)
