"""Where every frame of a video stream is: presentation timestamps and keyframes.

Built by demuxing packets (no decoding), so it is cheap even for long files. Frame-accurate access
needs it: a frame is addressed by its presentation timestamp, which handles variable frame rate
and B-frame reordering, and a seek starts at the last keyframe at or before the wanted frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from fractions import Fraction

import av
import numpy as np

from engine.errors import RedubError


@dataclass(frozen=True)
class FrameIndex:
    pts: np.ndarray  # int64, presentation timestamps of all frames, ascending
    key_pts: np.ndarray  # int64, presentation timestamps of keyframes, ascending
    key_dts: np.ndarray  # int64, decode timestamps of the same keyframes (seek targets)
    time_base: Fraction
    # Packets in the stream that are not frames of its timeline: samples an edit list skips
    # (cuts made without re-encoding), empty AVI chunks. The container still counts them.
    skipped: int = 0

    @property
    def frame_count(self) -> int:
        return int(self.pts.size)

    @property
    def start_pts(self) -> int:
        return int(self.pts[0])

    @cached_property
    def times(self) -> np.ndarray:
        """Seconds of each frame on the clip timeline (first frame at 0); read-only.

        Computed once: the reader looks a frame's time up for every frame it decodes.
        """
        times = (self.pts - self.pts[0]).astype(np.float64) * float(self.time_base)
        times.setflags(write=False)
        return times

    def index_of_pts(self, pts: int) -> int | None:
        i = int(np.searchsorted(self.pts, pts))
        return i if i < self.pts.size and self.pts[i] == pts else None

    def index_at(self, t: float) -> int:
        """Frame on screen at ``t`` seconds: the last one starting at or before it."""
        ticks = self.start_pts + t / float(self.time_base)
        # A hair of tolerance: a time printed from a frame's own timestamp must map back to it.
        i = int(np.searchsorted(self.pts, ticks + 1e-6, side="right")) - 1
        return min(max(i, 0), self.frame_count - 1)

    def keyframe_for(self, i: int) -> int:
        """Position in ``key_pts`` of the keyframe to start decoding from for frame ``i``."""
        k = int(np.searchsorted(self.key_pts, self.pts[i], side="right")) - 1
        return max(k, 0)

    @cached_property
    def durations(self) -> np.ndarray:
        """Seconds each frame is shown (the last one repeats the one before); read-only."""
        if self.pts.size < 2:
            d = np.zeros(self.pts.size)
        else:
            d = np.diff(self.pts).astype(np.float64) * float(self.time_base)
            d = np.append(d, d[-1])
        d.setflags(write=False)
        return d


def scan_index(container: av.container.InputContainer, stream: av.VideoStream,
               path: str) -> FrameIndex:
    """Demux ``stream`` from the start and record its frames' timestamps."""
    pts_list: list[int] = []
    key_pts: list[int] = []
    key_dts: list[int] = []
    skipped = 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:
                skipped += 1
                continue
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None:
                raise RedubError("video packets carry no timestamps; cannot index frames", path)
            pts_list.append(ts)
            if packet.is_keyframe:
                key_pts.append(ts)
                key_dts.append(packet.dts if packet.dts is not None else ts)
    except av.FFmpegError as exc:
        if not pts_list:
            raise RedubError(f"cannot read video packets ({exc})", path) from exc
        # A damaged tail: index what is readable, decoding will report the damage.
    if not pts_list:
        raise RedubError("video stream holds no frames", path)
    pts = np.unique(np.asarray(pts_list, dtype=np.int64))
    order = np.argsort(np.asarray(key_pts, dtype=np.int64), kind="stable")
    kp = np.asarray(key_pts, dtype=np.int64)[order]
    kd = np.asarray(key_dts, dtype=np.int64)[order]
    if kp.size == 0 or kp[0] > pts[0]:
        # No keyframe flagged before the first frame (some raw streams): the stream start is one.
        kp = np.insert(kp, 0, pts[0])
        kd = np.insert(kd, 0, pts[0])
    return FrameIndex(pts=pts, key_pts=kp, key_dts=kd, time_base=Fraction(stream.time_base),
                      skipped=skipped)
