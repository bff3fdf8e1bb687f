"""Stand-ins for re-synced shots: the source's frames over a shot's range and handles, with a
bright box over the mouth on the shot's own frames (so a render shows which media an NLE
picked), lossless (FFV1), carrying the source timecode of their first frame as the batch's
trimmed export does."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import opentimelineio as otio

from engine.media.probe import probe
from engine.timeline.batch import ShotResult
from engine.timeline.shots import Shot


def mouth_box(height: int, width: int) -> tuple[slice, slice]:
    """Where the stand-in draws its box: the lower middle of the picture."""
    return slice(int(height * 0.65), int(height * 0.8)), slice(width // 3, 2 * width // 3)


def resynced(shot: Shot, folder: Path, status: str = "done") -> ShotResult:
    """A result for ``shot`` whose output holds media frames [source_in - handles,
    source_out + handles) clamped to the media, the box on [source_in, source_out)."""
    video = probe(shot.media).video[0]
    first = max(0, shot.source_in - shot.handles)
    stop = min(video.frame_count, shot.source_out + shot.handles)
    rate = Fraction(video.frame_rate)
    out = Path(folder) / f"{shot.index:02d}_{shot.name}.mkv"
    with av.open(str(shot.media)) as inp, av.open(str(out), "w") as dst:
        if video.start_timecode:
            start = otio.opentime.from_timecode(video.start_timecode, float(rate))
            dst.metadata["timecode"] = otio.opentime.to_timecode(
                start + otio.opentime.RationalTime(first, float(rate)), float(rate))
        stream = dst.add_stream("ffv1", rate=rate)
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        rows, cols = mouth_box(video.height, video.width)
        written = 0
        for i, frame in enumerate(inp.decode(video=0)):
            if i >= stop:
                break
            if i < first:
                continue
            planes = frame.reformat(format="yuv420p").to_ndarray()
            if shot.source_in <= i < shot.source_out:
                planes[rows, cols] = 235
            picture = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            picture.pts, picture.time_base = written, 1 / rate
            dst.mux(stream.encode(picture))
            written += 1
        dst.mux(stream.encode())
    return ShotResult(shot, status, out, written)
