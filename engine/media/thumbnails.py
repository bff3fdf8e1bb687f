"""Small pictures for a timeline strip, decoded from keyframes only where that is enough."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import av
import numpy as np

from engine.errors import RedubError
from engine.media.container import decode_error, open_input
from engine.media.frame import ColorInfo, native_format, to_rgb
from engine.media.probe import VideoStreamInfo, probe


@dataclass(frozen=True)
class Thumbnail:
    time: float  # the time asked for (seconds on the clip timeline)
    shown_time: float  # the time of the frame actually shown (a keyframe unless exact)
    image: np.ndarray  # RGB uint8 (height, width, 3), upright


def thumbnails(path: str | os.PathLike, times: Sequence[float], height: int = 72, *,
               exact: bool = False, info: VideoStreamInfo | None = None) -> Iterator[Thumbnail]:
    """One thumbnail per time, in the order given (sort times for speed).

    By default each shows the keyframe at or before its time, decoding nothing else, which is
    what a strip of dozens of pictures needs; ``exact`` decodes up to the very frame.
    """
    path = os.fspath(path)
    if info is None:
        media = probe(path)
        if not media.video:
            raise RedubError("has no video stream (audio only?)", path)
        info = media.video[0]
    index = info.index_data
    width = max(2, int(round(height * info.width / info.height * float(info.sample_aspect_ratio))))
    rot = info.rotation // 90
    scaled = (height, width) if rot % 2 == 0 else (width, height)
    with open_input(path) as container:
        stream = container.streams[info.index]
        stream.thread_type = "AUTO"
        if not exact:
            # Keyframes decode on their own, so the decoder can skip everything else.
            stream.codec_context.skip_frame = "NONKEY"
        color: ColorInfo = info.color
        decoded: Iterator[av.VideoFrame] | None = None
        at_key, frame = -1, None
        for t in times:
            target = index.index_at(t)
            k = index.keyframe_for(target)
            want_pts = int(index.pts[target] if exact else index.key_pts[k])
            # Sorted times inside one GOP continue decoding instead of seeking again.
            if frame is None or frame.pts != want_pts:
                if decoded is None or k != at_key or frame.pts is None or want_pts < frame.pts:
                    container.seek(int(index.key_dts[k]), stream=stream, backward=True)
                    decoded, at_key = _decode(container, stream, path), k
                frame = _first_at_or_after(decoded, want_pts, path)
            small = frame.reformat(width=scaled[1], height=scaled[0],
                                   format=native_format(frame.format.name),
                                   interpolation="AREA")
            rgb = to_rgb(small, color, small.format.name, info.height)
            if rot:
                rgb = np.ascontiguousarray(np.rot90(rgb, rot))
            shown = (float((frame.pts - index.start_pts) * index.time_base)
                     if frame.pts is not None else t)
            yield Thumbnail(time=t, shown_time=shown, image=rgb)


def _decode(container: av.container.InputContainer, stream: av.VideoStream,
            path: str) -> Iterator[av.VideoFrame]:
    try:
        for packet in container.demux(stream):
            yield from packet.decode()
    except av.FFmpegError as exc:
        raise decode_error(exc, path, "a thumbnail") from exc


def _first_at_or_after(decoded: Iterator[av.VideoFrame], pts: int, path: str) -> av.VideoFrame:
    last = None
    for frame in decoded:
        last = frame
        if frame.pts is not None and frame.pts >= pts:
            return frame
    if last is None:
        raise RedubError("no frame could be decoded for a thumbnail", path)
    return last
