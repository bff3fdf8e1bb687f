"""Analyse a clip range once: a steady, per-frame description of the target face, cached.

:func:`analyze_range` tracks every face (:mod:`engine.face.track`), picks the target
(:mod:`engine.face.target`), fills short gaps, smooths and derives per frame: landmarks, box,
five keypoints, the similarity transform to the canonical face, head pose, a square crop box
and flags. Frames where the target is not found are flagged and carry NaN geometry, so later
stages pass them through untouched.

Smoothing separates the head's rigid motion (position, size, in-plane angle) from the shape of
the face (expression): the first is smoothed per frame as a whole, so the face never wobbles,
the second lightly, so speech keeps its mouth shapes. Both use the zero-lag One-Euro filter.

Results are cached in ``cache_dir()/faces`` under a hash of the file's identity (path, size,
modification time), the frame range, the target and every backend and setting, written
atomically; a second request loads the file instead of decoding anything.
"""
from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from engine.errors import RedubError, UsageError
from engine.face import geometry as geo
from engine.face.detect import create_detector, smallest_face
from engine.face.landmark import create_landmarker
from engine.face.pixels import Picture
from engine.face.pose import head_pose
from engine.face.smooth import smooth
from engine.face.target import target_track
from engine.face.track import FaceTracker, TrackSettings
from engine.media.reader import VideoReader
from engine.paths import cache_dir
from engine.progress import CancelToken, ProgressFn, no_progress
from engine.timecode import Clock, parse_time

# Bump when results for the same inputs and settings would change.
ANALYSIS_VERSION = 2


class NoFaceError(RedubError):
    """The analysed range holds no face (or none near the picked point)."""


class Flag(enum.IntFlag):
    NOT_FOUND = 1  # the target is not on this frame: pass it through untouched
    INTERPOLATED = 2  # filled in across a short gap in tracking
    TINY = 4  # face smaller than AnalysisSettings.tiny_face pixels
    PROFILE = 8  # head turned beyond AnalysisSettings.profile_yaw
    LOW_CONFIDENCE = 16  # landmarks kept although their score is low
    SHOT_START = 32  # a cut: a new shot starts on this frame


@dataclass(frozen=True)
class Target:
    """The face nearest (x, y), in upright frame pixels, on the frame shown at ``time`` s."""

    x: float
    y: float
    time: float

    @staticmethod
    def parse(text: str, fps: Clock | float | None) -> Target:
        """``X,Y@TIME``, TIME in any form :func:`engine.timecode.parse_time` accepts."""
        m = re.match(r"^\s*([-+]?[\d.]+)\s*,\s*([-+]?[\d.]+)\s*@\s*(\S+)\s*$", text)
        if not m:
            raise UsageError(f"bad target '{text}': use X,Y@TIME, e.g. 320,180@2.5")
        try:
            x, y = float(m.group(1)), float(m.group(2))
        except ValueError:
            raise UsageError(f"bad target '{text}': X and Y must be numbers") from None
        return Target(x, y, parse_time(m.group(3), fps))


@dataclass(frozen=True)
class AnalysisSettings:
    track: TrackSettings = field(default_factory=TrackSettings)
    max_gap: int = 5  # missing frames inside a shot filled in by interpolation
    # Rigid head motion: position in face sizes, log size and angle (One-Euro, Hz and Hz/(1/s)).
    head_cutoff: float = 0.7
    head_beta: float = 3.0
    # Face shape in canonical units (expression): lighter, so speech keeps its shapes.
    shape_cutoff: float = 2.0
    shape_beta: float = 20.0
    crop_scale: float = 1.4  # crop side in canonical units (eye centres are 0.33 apart)
    crop_cutoff: float = 0.3  # the crop box moves even more calmly than the face
    tiny_face: float = 64.0  # face box side (pixels) under which a face is flagged tiny
    profile_yaw: float = 45.0  # degrees

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FaceFrame:
    """The target face on one frame (geometry NaN when :attr:`found` is False)."""

    index: int  # frame index in the clip
    time: float
    flags: Flag
    score: float
    box: np.ndarray  # (4,) x0, y0, x1, y1 around the landmarks
    landmarks: np.ndarray  # (68, 2)
    keypoints: np.ndarray  # (5, 2) eye centres, nose tip, mouth corners
    transform: np.ndarray  # (2, 3) image -> canonical face (unit square, geometry module)
    pose: np.ndarray  # (3,) yaw, pitch, roll in degrees (pose module)
    crop_box: np.ndarray  # (4,) square x0, y0, x1, y1 inside the frame

    @property
    def found(self) -> bool:
        return not self.flags & Flag.NOT_FOUND


_ARRAYS = ("times", "flags", "scores", "boxes", "landmarks", "raw_landmarks", "keypoints",
           "transforms", "poses", "crop_boxes")


@dataclass(eq=False)
class FaceAnalysis:
    """Per-frame target-face data for frames ``start .. stop - 1`` of ``source``."""

    source: str
    start: int
    stop: int
    width: int
    height: int
    fps: float
    config: dict[str, Any]  # backends, settings and target, as used for the cache key
    times: np.ndarray  # (N,) seconds
    flags: np.ndarray  # (N,) uint8 of Flag
    scores: np.ndarray  # (N,)
    boxes: np.ndarray  # (N, 4)
    landmarks: np.ndarray  # (N, 68, 2) smoothed
    raw_landmarks: np.ndarray  # (N, 68, 2) as tracked, before gap filling and smoothing
    keypoints: np.ndarray  # (N, 5, 2)
    transforms: np.ndarray  # (N, 2, 3)
    poses: np.ndarray  # (N, 3)
    crop_boxes: np.ndarray  # (N, 4)

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def found(self) -> np.ndarray:
        return (self.flags & Flag.NOT_FOUND) == 0

    def frame(self, index: int) -> FaceFrame:
        """The target face on clip frame ``index`` (within the analysed range)."""
        if not self.start <= index < self.stop:
            raise IndexError(f"frame {index} outside the analysed range "
                             f"{self.start}..{self.stop - 1}")
        k = index - self.start
        return FaceFrame(index, float(self.times[k]), Flag(int(self.flags[k])),
                         float(self.scores[k]), self.boxes[k], self.landmarks[k],
                         self.keypoints[k], self.transforms[k], self.poses[k],
                         self.crop_boxes[k])

    def __iter__(self) -> Iterator[FaceFrame]:
        return (self.frame(i) for i in range(self.start, self.stop))

    def save(self, path: str | os.PathLike) -> None:
        """Write to ``path`` (.npz) atomically: a temporary file renamed into place."""
        path = os.fspath(path)
        meta = {"source": self.source, "start": self.start, "stop": self.stop,
                "width": self.width, "height": self.height, "fps": self.fps,
                "config": self.config}
        folder, name = os.path.split(path)
        temp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.part")
        try:
            with open(temp, "wb") as f:
                np.savez(f, meta=np.array(json.dumps(meta)),
                         **{k: getattr(self, k) for k in _ARRAYS})
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path)
        except OSError as exc:
            try:
                os.remove(temp)
            except OSError:
                pass
            raise RedubError(f"cannot save the face analysis ({exc.strerror or exc})",
                             path) from exc

    @staticmethod
    def load(path: str | os.PathLike) -> FaceAnalysis:
        with np.load(os.fspath(path), allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            return FaceAnalysis(**meta, **{k: data[k] for k in _ARRAYS})


def analyze_range(path: str | os.PathLike, start: float | None = None,
                  end: float | None = None, *, target: Target | None = None,
                  backend: str = "dlib", landmarker: str = "dlib",
                  backend_options: dict[str, Any] | None = None,
                  landmarker_options: dict[str, Any] | None = None,
                  settings: AnalysisSettings | None = None, use_cache: bool = True,
                  progress: ProgressFn = no_progress,
                  cancel: CancelToken | None = None) -> FaceAnalysis:
    """Analyse the target face on frames shown from ``start`` to before ``end`` (seconds).

    ``backend`` names the detector and ``landmarker`` the landmarker (see their registries);
    the options go to their constructors (e.g. ``{"model": PATH}``). Raises
    :class:`RedubError` when no face is found anywhere in the range.
    """
    settings = settings or AnalysisSettings()
    path = os.fspath(path)
    with VideoReader(path) as reader:
        info = reader.info
        fps = float(info.frame_rate) if info.frame_rate else 25.0
        first, stop = _frame_range(reader, start, end, path)
        focus = _focus(reader, target, first, stop, path)
        detector = create_detector(backend, **(backend_options or {}))
        marker = create_landmarker(landmarker, **(landmarker_options or {}))
        config = {"version": ANALYSIS_VERSION, "detector": [detector.name, detector.settings()],
                  "landmarker": [marker.name, marker.settings()],
                  "settings": settings.to_dict(),
                  "target": list(focus) if focus else None}
        entry = _cache_entry(path, first, stop, config)
        if use_cache and entry.is_file():
            try:
                return FaceAnalysis.load(entry)
            except (OSError, ValueError, KeyError, TypeError):
                pass  # damaged or from an older layout: analyse again and replace it

        tracker = FaceTracker(detector, marker, settings.track, fps, focus)
        total = stop - first
        for frame in reader.frames(first, stop):
            if cancel is not None:
                cancel.check()
            tracker.step(frame.index - first, Picture(frame))
            progress("faces", frame.index - first + 1, total)
        tracks = tracker.finish()
        times = np.array(reader.times[first:stop], dtype=np.float64)

    raw = target_track(tracks, focus, fps)
    if not raw.found.any():
        span = f"{times[0]:.2f}-{times[-1] + 1 / fps:.2f} s"
        if focus is not None:
            raise NoFaceError(f"no face found near {target.x:g},{target.y:g} at "
                             f"{target.time:g} s", path)
        smallest = smallest_face(detector, info.width, info.height, settings.track.min_face)
        raise NoFaceError(f"no face found in {span} (faces smaller than about {smallest} "
                         f"pixels are not searched for)", path)
    result = describe(raw.landmarks, raw.scores, raw.detected, tracks.cuts, times,
                      info.width, info.height, fps, settings)
    analysis = FaceAnalysis(source=os.path.abspath(path), start=first, stop=stop,
                            width=info.width, height=info.height, fps=fps, config=config,
                            **result)
    if use_cache:
        analysis.save(entry)
    return analysis


def cache_file(analysis: FaceAnalysis) -> Path:
    """Where :func:`analyze_range` caches ``analysis``."""
    return _cache_entry(analysis.source, analysis.start, analysis.stop, analysis.config)


def describe(raw: np.ndarray, scores: np.ndarray, detected: np.ndarray, cuts: np.ndarray,
             times: np.ndarray, width: int, height: int, fps: float,
             settings: AnalysisSettings) -> dict[str, np.ndarray]:
    """Per-frame arrays of :class:`FaceAnalysis` from the raw target landmarks (NaN: missing)."""
    n = len(raw)
    flags = np.zeros(n, np.uint8)
    flags[cuts] |= np.uint8(Flag.SHOT_START)
    landmarks = raw.copy()
    filled = _fill_gaps(landmarks, cuts, settings.max_gap)
    flags[filled] |= np.uint8(Flag.INTERPOLATED)
    found = np.isfinite(landmarks[:, 0, 0])
    flags[~found] |= np.uint8(Flag.NOT_FOUND)
    weak = found & ~filled & ~detected & (scores < settings.track.keep_score)
    flags[weak] |= np.uint8(Flag.LOW_CONFIDENCE)

    crop = np.full((n, 4), np.nan)
    for run in _runs(found, cuts):
        landmarks[run] = _smooth_run(landmarks[run], fps, settings)
        crop[run] = _crop_run(landmarks[run], fps, width, height, settings)
    transforms = np.full((n, 2, 3), np.nan)
    transforms[found] = geo.to_canonical(landmarks[found])
    poses = head_pose(landmarks, width, height)
    face_px = np.full(n, np.nan)
    face_px[found] = geo.FACE_BOX[2] / geo.scale_of(transforms[found])
    flags[face_px < settings.tiny_face] |= np.uint8(Flag.TINY)
    flags[np.abs(poses[:, 0]) > settings.profile_yaw] |= np.uint8(Flag.PROFILE)
    boxes = np.concatenate([landmarks.min(1), landmarks.max(1)], 1)
    return {"times": times, "flags": flags,
            "scores": np.where(found, scores, 0).astype(np.float32),
            "boxes": boxes.astype(np.float32), "landmarks": landmarks.astype(np.float32),
            "raw_landmarks": raw.astype(np.float32),
            "keypoints": geo.five_points(landmarks).astype(np.float32),
            "transforms": transforms.astype(np.float32), "poses": poses.astype(np.float32),
            "crop_boxes": crop.astype(np.float32)}


def _fill_gaps(landmarks: np.ndarray, cuts: np.ndarray, max_gap: int) -> np.ndarray:
    """Interpolate, in place, gaps of up to ``max_gap`` frames inside a shot; which were filled."""
    found = np.isfinite(landmarks[:, 0, 0])
    filled = np.zeros(len(found), bool)
    idx = np.flatnonzero(found)
    for a, b in zip(idx[:-1], idx[1:]):
        gap = b - a - 1
        if 0 < gap <= max_gap and not cuts[a + 1:b + 1].any():
            w = (np.arange(1, gap + 1) / (gap + 1))[:, None, None]
            landmarks[a + 1:b] = (1 - w) * landmarks[a] + w * landmarks[b]
            filled[a + 1:b] = True
    return filled


def _runs(found: np.ndarray, cuts: np.ndarray) -> list[slice]:
    """Maximal stretches of found frames that do not cross a cut."""
    runs, begin = [], None
    for i, ok in enumerate(found):
        if begin is not None and (not ok or cuts[i]):
            runs.append(slice(begin, i))
            begin = None
        if ok and begin is None:
            begin = i
    if begin is not None:
        runs.append(slice(begin, len(found)))
    return runs


def _smooth_run(points: np.ndarray, fps: float, s: AnalysisSettings) -> np.ndarray:
    """Smoothed landmarks of one continuous stretch: rigid motion and shape separately."""
    to_canon = geo.to_canonical(points)
    from_canon = geo.invert(to_canon)
    shape = geo.apply(to_canon, points)  # the face with head motion taken out
    scale = geo.scale_of(from_canon)
    unit = float(np.median(scale))
    centre = geo.apply(from_canon, np.array([[0.5, 0.6]]))[:, 0]
    angle = np.unwrap(np.arctan2(from_canon[:, 1, 0], from_canon[:, 0, 0]))
    head = np.stack([centre[:, 0] / unit, centre[:, 1] / unit, np.log(scale), angle], 1)
    head = smooth(head[:, :, None], fps, s.head_cutoff, s.head_beta)[:, :, 0]
    shape = smooth(shape, fps, s.shape_cutoff, s.shape_beta)
    scale, angle = np.exp(head[:, 2]), head[:, 3]
    lin = np.stack([np.stack([scale * np.cos(angle), -scale * np.sin(angle)], -1),
                    np.stack([scale * np.sin(angle), scale * np.cos(angle)], -1)], -2)
    offset = head[:, :2] * unit - lin @ np.array([0.5, 0.6])
    return np.einsum("tij,tkj->tki", lin, shape) + offset[:, None, :]


def _crop_run(points: np.ndarray, fps: float, width: int, height: int,
              s: AnalysisSettings) -> np.ndarray:
    """Square crop boxes around the face, smoothed further, inside the frame."""
    from_canon = geo.invert(geo.to_canonical(points))
    cx, cy, _ = geo.FACE_BOX
    centre = geo.apply(from_canon, np.array([[cx, cy]]))[:, 0]
    side = s.crop_scale * geo.scale_of(from_canon)
    unit = float(np.median(side))
    track = np.stack([centre[:, 0] / unit, centre[:, 1] / unit, np.log(side)], 1)
    track = smooth(track[:, :, None], fps, s.crop_cutoff, s.head_beta)[:, :, 0]
    side = np.minimum(np.exp(track[:, 2]), min(width, height))
    x0 = np.clip(track[:, 0] * unit - side / 2, 0, width - side)
    y0 = np.clip(track[:, 1] * unit - side / 2, 0, height - side)
    return np.stack([x0, y0, x0 + side, y0 + side], 1)


def _frame_range(reader: VideoReader, start: float | None, end: float | None,
                 path: str) -> tuple[int, int]:
    first = 0 if start is None else reader.index_at(start)
    stop = (reader.frame_count if end is None
            else int(np.searchsorted(reader.times, end - 1e-9, "left")))
    if start is not None and start > float(reader.info.duration):
        raise UsageError(f"range starts at {start:g} s, after the clip's end "
                         f"({float(reader.info.duration):.2f} s)", path)
    if stop <= first:
        raise UsageError("the range holds no frame", path)
    return first, stop


def _focus(reader: VideoReader, target: Target | None, first: int, stop: int,
           path: str) -> tuple[int, float, float] | None:
    if target is None:
        return None
    i = reader.index_at(target.time)
    if not first <= i < stop:
        raise UsageError(f"target time {target.time:g} s is outside the analysed range", path)
    if not (0 <= target.x < reader.info.width and 0 <= target.y < reader.info.height):
        raise UsageError(f"target point {target.x:g},{target.y:g} is outside the "
                         f"{reader.info.width}x{reader.info.height} frame", path)
    return i - first, float(target.x), float(target.y)


def _cache_entry(path: str, first: int, stop: int, config: dict[str, Any]) -> Path:
    st = os.stat(path)
    key = json.dumps({"file": [os.path.abspath(path), st.st_size, st.st_mtime_ns],
                      "range": [first, stop], **config}, sort_keys=True, default=str)
    folder = cache_dir() / "faces"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".npz")
