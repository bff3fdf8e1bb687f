"""What a media file holds: its streams, their timing, geometry and colour."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from fractions import Fraction

import av
import numpy as np

from engine.errors import RedubError
from engine.media.container import decode_error, open_input
from engine.media.frame import UNSPECIFIED, ColorInfo, native_format
from engine.media.index import FrameIndex, scan_index
from engine.timecode import Clock


# ITU-T H.273 code points, as FFmpeg numbers them.
_PRIMARIES = {1: "bt709", 2: "unspecified", 4: "bt470m", 5: "bt470bg", 6: "smpte170m",
              7: "smpte240m", 8: "film", 9: "bt2020", 10: "smpte428", 11: "smpte431",
              12: "smpte432", 22: "ebu3213"}
_TRANSFER = {1: "bt709", 2: "unspecified", 4: "gamma22", 5: "gamma28", 6: "smpte170m",
             7: "smpte240m", 8: "linear", 11: "iec61966-2-4", 13: "srgb", 14: "bt2020-10",
             15: "bt2020-12", 16: "pq", 17: "smpte428", 18: "hlg"}
_MATRIX = {0: "rgb", 1: "bt709", 2: "unspecified", 4: "fcc", 5: "bt470bg", 6: "smpte170m",
           7: "smpte240m", 8: "ycgco", 9: "bt2020nc", 10: "bt2020c", 14: "ictcp"}
_RANGE = {0: "unspecified", 1: "limited", 2: "full"}


@dataclass(frozen=True)
class VideoStreamInfo:
    index: int
    codec: str
    profile: str | None
    width: int  # as displayed: rotation applied
    height: int
    coded_width: int  # as stored in the file
    coded_height: int
    pix_fmt: str  # the decoder's output format
    bit_depth: int
    chroma: str  # "4:2:0", "4:2:2", "4:4:4", "rgb", "gray"
    frame_rate: Fraction  # average over the stream
    variable_frame_rate: bool
    time_base: Fraction
    frame_count: int
    duration: float  # seconds from the first frame's start to the last frame's end
    start_time: float  # seconds: the first frame's timestamp in the container
    rotation: int  # counter-clockwise degrees to display upright (0, 90, 180, 270)
    sample_aspect_ratio: Fraction
    color: ColorInfo
    bit_rate: int | None
    truncated: bool = False  # the file declares more video than it holds
    start_timecode: str | None = None  # source timecode of the first frame (HH:MM:SS:FF)
    reel_name: str | None = None  # the tape or card it came from, as NLEs relink by
    index_data: FrameIndex | None = field(default=None, repr=False, compare=False)

    @property
    def clock(self) -> Clock:
        """How positions typed by the user map to this stream's frames."""
        times = self.index_data.times if self.index_data is not None else None
        return Clock(self.frame_rate, times, self.duration, self.start_timecode)

    @property
    def color_names(self) -> dict[str, str]:
        def name(table: dict[int, str], code: int) -> str:
            return table.get(code, str(code))

        return {"primaries": name(_PRIMARIES, self.color.primaries),
                "transfer": name(_TRANSFER, self.color.transfer),
                "matrix": name(_MATRIX, self.color.matrix),
                "range": name(_RANGE, self.color.range)}


@dataclass(frozen=True)
class AudioStreamInfo:
    index: int
    codec: str
    rate: int
    channels: int
    layout: str
    sample_format: str
    duration: float | None
    start_time: float  # seconds, in the container's clock (compare with the video's start)


@dataclass(frozen=True)
class MediaInfo:
    path: str
    container: str
    size: int
    duration: float
    video: list[VideoStreamInfo]
    audio: list[AudioStreamInfo]

    def to_dict(self) -> dict:
        def clean(value):
            if isinstance(value, Fraction):
                return f"{value.numerator}/{value.denominator}"
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items() if k != "index_data"}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        out = clean(asdict(self))
        for stream, info in zip(out["video"], self.video):
            stream["frame_rate_float"] = float(info.frame_rate)
            stream["color_names"] = info.color_names
        return out


def probe(path: str | os.PathLike) -> MediaInfo:
    """Inspect ``path``; counts frames exactly (packet scan) and decodes one frame per video stream.

    Results are remembered per file identity (path, size, modification time): a job opens the
    same clip from several stages, and the packet scan of a long clip is not free.
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError:
        return _probe(path)  # reports the problem as opening does
    return _probe_identified(path, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=32)
def _probe_identified(path: str, size: int, mtime_ns: int) -> MediaInfo:
    return _probe(path)


def _probe(path: str) -> MediaInfo:
    container = open_input(path)
    try:
        timecode, reel = _start_timecode(container), _reel_name(container)
        video = [_probe_video(path, s, timecode, reel) for s in container.streams.video
                 if not _is_cover_art(s)]
        audio = [_probe_audio(s) for s in container.streams.audio]
        if not video and not audio:
            raise RedubError("holds no video or audio stream", path)
        duration = float(container.duration / av.time_base) if container.duration else max(
            [v.duration for v in video] + [a.duration or 0.0 for a in audio])
        return MediaInfo(path=path, container=container.format.name, size=os.path.getsize(path),
                         duration=duration, video=video, audio=audio)
    finally:
        container.close()


def _is_cover_art(stream: av.VideoStream) -> bool:
    # Attached pictures (album art in audio files) are single images, not a video track.
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _start_timecode(container: av.container.InputContainer) -> str | None:
    """The source timecode of the first frame: a QuickTime/MP4 'tmcd' track (FFmpeg shows it
    on the track and the video stream), or the container's tag (MXF, Matroska)."""
    return _tag(container, "timecode")


def _reel_name(container: av.container.InputContainer) -> str | None:
    """The reel (tape) name: QuickTime keeps it on the timecode track, MXF on the video
    stream, Matroska as a tag."""
    return _tag(container, "reel_name")


def _tag(container: av.container.InputContainer, name: str) -> str | None:
    """A tag of the video or data streams, else of the container; Matroska's come upper-cased."""
    for meta in [*(s.metadata for s in [*container.streams.video, *container.streams.data]),
                 container.metadata]:
        for key, value in meta.items():
            if key.lower() == name and value:
                return value
    return None


def _probe_video(path: str, stream: av.VideoStream, timecode: str | None,
                 reel: str | None) -> VideoStreamInfo:
    cc = stream.codec_context
    if cc is None or cc.codec is None:
        raise RedubError("unsupported video codec (no decoder for this stream's format)", path)
    # Fresh containers: a packet scan to the end leaves a container unfit for decoding.
    with open_input(path) as container:
        index = scan_index(container, container.streams[stream.index], path)
    with open_input(path) as container:
        first = _first_frame(container, container.streams[stream.index], path)
    fmt = av.VideoFormat(native_format(first.format.name))
    rotation = int(round((first.rotation or 0) / 90.0)) % 4 * 90
    w, h = first.width, first.height
    tb = Fraction(stream.time_base)
    vfr = _is_variable(index)
    count = index.frame_count
    rate = Fraction(stream.average_rate or 0)
    if count > 1:
        # Checked against the frames themselves: the container's average also counts samples
        # an edit list skips, so a cut from the middle of a clip would report a wrong rate.
        step = Fraction(int(np.median(np.diff(index.pts)))) * tb
        if vfr:
            span = Fraction(int(index.pts[-1] - index.pts[0])) * tb
            rate = (Fraction(count - 1) / span).limit_denominator(1001)
        elif not rate or abs(1 / rate - step) > 1.5 * tb:
            rate = (1 / step).limit_denominator(1001)
    duration = float(index.times[-1] + index.durations[-1])
    return VideoStreamInfo(
        index=stream.index, codec=cc.name, profile=cc.profile,
        width=h if rotation in (90, 270) else w, height=w if rotation in (90, 270) else h,
        coded_width=w, coded_height=h, pix_fmt=first.format.name,
        bit_depth=max(c.bits for c in fmt.components), chroma=_chroma(fmt),
        frame_rate=rate or Fraction(25), variable_frame_rate=vfr, time_base=tb,
        frame_count=count, duration=duration,
        start_time=float(index.pts[0] * tb), rotation=rotation,
        sample_aspect_ratio=Fraction(stream.sample_aspect_ratio or 1),
        color=_color(cc, first),
        bit_rate=cc.bit_rate or None, index_data=index, start_timecode=timecode, reel_name=reel,
        truncated=_is_truncated(stream, index, duration))


def _is_truncated(stream: av.VideoStream, index: FrameIndex, duration: float) -> bool:
    """Whether the container promises video the file no longer holds (a cut-off copy).

    Judged by time where the stream declares its duration: sample counts include samples an
    edit list skips and empty AVI chunks (a repeated frame), which valid files have.
    """
    if stream.duration and stream.time_base:
        declared = float(stream.duration * stream.time_base)
        return declared - duration > 2 * float(index.durations[-1]) + 1e-3
    return bool(stream.frames) and stream.frames > index.frame_count + index.skipped


def _color(cc: av.VideoCodecContext, frame: av.VideoFrame) -> ColorInfo:
    """The stream's colour tags, taking the container's where it sets them.

    Some decoders (DNxHD) report their bitstream's fixed BT.709 on every frame, while the
    container (a mov 'colr' atom) carries what the picture really is.
    """
    def pick(stream_value: int, frame_value: int, unset: int) -> int:
        return int(stream_value) if int(stream_value) != unset else int(frame_value)

    return ColorInfo(primaries=pick(cc.color_primaries, frame.color_primaries, UNSPECIFIED),
                     transfer=pick(cc.color_trc, frame.color_trc, UNSPECIFIED),
                     matrix=pick(cc.colorspace, frame.colorspace, UNSPECIFIED),
                     range=pick(cc.color_range, frame.color_range, 0))


def _first_frame(container: av.container.InputContainer, stream: av.VideoStream,
                 path: str) -> av.VideoFrame:
    try:
        for frame in container.decode(stream):
            return frame
    except av.FFmpegError as exc:
        raise decode_error(exc, path, "the first video frame") from exc
    raise RedubError("no video frame could be decoded", path)


def _is_variable(index: FrameIndex) -> bool:
    if index.frame_count < 3:
        return False
    d = np.diff(index.pts)
    median = float(np.median(d))
    # Containers with coarse clocks (mkv: 1 ms) round constant rates by up to one tick.
    return bool(np.max(np.abs(d - median)) > max(1.5, 0.02 * median))


def _chroma(fmt: av.VideoFormat) -> str:
    if fmt.is_rgb:
        return "rgb"
    if len(fmt.components) < 3:
        return "gray"
    w, h = 64, 64
    cw, ch = fmt.chroma_width(w), fmt.chroma_height(h)
    return {(64, 64): "4:4:4", (32, 64): "4:2:2", (32, 32): "4:2:0", (16, 64): "4:1:1"}.get(
        (cw, ch), f"{w // cw}x{h // ch} subsampled")


def _probe_audio(stream: av.AudioStream) -> AudioStreamInfo:
    cc = stream.codec_context
    tb = stream.time_base
    duration = float(stream.duration * tb) if stream.duration and tb else None
    start = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
    return AudioStreamInfo(index=stream.index, codec=cc.name if cc else "unknown",
                           rate=int(cc.sample_rate or stream.rate or 0),
                           channels=int(cc.channels if cc else 0),
                           layout=cc.layout.name if cc and cc.layout else "unknown",
                           sample_format=cc.format.name if cc and cc.format else "unknown",
                           duration=duration, start_time=start)
