"""Follow every face through a frame range: detect rarely, carry each face with its landmarks.

Detection runs on the first frame, after a shot cut, when a tracked face's landmark score drops,
and every couple of seconds to pick up faces that walk in. In between, each face is carried:
its previous landmarks (moved on by its last motion) give a similarity transform that cuts an
upright, fixed-size crop of the face, and the landmarker runs on that crop only. Work per frame
therefore does not grow with the frame size, and rolled heads reach the landmarker upright.

Detections are matched to tracks by the overlap of their canonical face boxes (derived from
keypoints and landmarks alike), so detectors with different box conventions behave the same.
The result is raw, unsmoothed tracks; choosing the target and smoothing happen later.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from engine.face import geometry as geo
from engine.face.cuts import CutDetector
from engine.face.detect import Detections, Detector, detect_multiscale, detection_scales
from engine.face.landmark import Landmarker
from engine.face.pixels import Picture, warp


@dataclass(frozen=True)
class TrackSettings:
    min_face: int = 40  # smallest face (source pixels, box side) searched for
    max_faces: int = 4  # faces followed at once (the largest, plus a picked one)
    keep_score: float = 0.5  # below this landmark score a detection must confirm the face
    lose_score: float = 0.2  # below this, unconfirmed, the face counts as lost
    redetect_seconds: float = 2.0  # coarse detection while tracking, for new faces
    search_every: int = 5  # frames between full searches while nothing is tracked
    match_iou: float = 0.3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The landmark crop: this many pixels square, the canonical face box filling 1/_CROP_MARGIN.
CROP_SIZE = 288
_CROP_MARGIN = 1.6
# Re-run the landmarker when its result moved this far from the crop it was given (canonical
# units, relative scale, radians): the face moved faster than the prediction.
_REFINE_SHIFT, _REFINE_SCALE, _REFINE_TURN = 0.06, 0.06, 0.08
# ... and whenever the face moves more than this per frame (canonical units): then the guess can
# be off by about as much, and the landmarker only goes part of the way from where it starts.
_MOVING = 0.02


@dataclass
class TrackRecord:
    """One face followed over consecutive frames ``start .. start + len - 1`` of the range."""

    start: int
    landmarks: np.ndarray  # (L, 68, 2) float32, image pixels
    scores: np.ndarray  # (L,) landmark (or confirming detection) score
    detected: np.ndarray  # (L,) bool: a detection confirmed the face on this frame

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def stop(self) -> int:
        return self.start + len(self)


@dataclass
class TrackSet:
    frame_count: int
    cuts: np.ndarray  # (frame_count,) bool: a new shot starts here
    tracks: list[TrackRecord]


@dataclass
class _Live:
    start: int
    points: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    detected: list[bool] = field(default_factory=list)

    def record(self) -> TrackRecord:
        return TrackRecord(self.start, np.array(self.points, np.float32),
                           np.array(self.scores, np.float32), np.array(self.detected, bool))

    def predicted(self) -> np.ndarray:
        """Last landmarks moved on by the last frame-to-frame motion of the stable points."""
        last = self.points[-1]
        if len(self.points) < 2:
            return last
        step = last[geo.STABLE].mean(0) - self.points[-2][geo.STABLE].mean(0)
        return last + step


class FaceTracker:
    """Feed frames in order with :meth:`step`; :meth:`finish` returns every face's track."""

    def __init__(self, detector: Detector, landmarker: Landmarker, settings: TrackSettings,
                 fps: float, focus: tuple[int, float, float] | None = None) -> None:
        self.detector = detector
        self.landmarker = landmarker
        self.settings = settings
        self.redetect_every = max(1, int(round(settings.redetect_seconds * fps)))
        self.focus = focus  # (frame, x, y): make sure the face nearest (x, y) is followed
        self._cuts = CutDetector()
        self._live: list[_Live] = []
        self._done: list[TrackRecord] = []
        self._cut_flags: list[bool] = []
        self._last_detect = -10**9
        self._lost_since = 0

    # -- per frame -----------------------------------------------------------------------
    def step(self, i: int, picture: Picture) -> None:
        """Frame ``i`` of the range; frames come consecutively from 0."""
        cut = self._cuts.update(picture.gray()) and i > 0
        self._cut_flags.append(cut)
        if cut:
            self._close_all()

        carried = [self._carry(picture.get(self.landmarker.color), t.predicted(), t.points[-1])
                   for t in self._live]
        focus_here = self.focus is not None and self.focus[0] == i
        if i == 0 or cut or focus_here:
            # A picked face may be small: then every face must be followed from the start.
            mode = "all" if self.focus is not None else "search"
        elif not self._live:
            full = (i - self._lost_since) % self.settings.search_every == 0
            mode = "search" if full else "coarse"
        elif any(score < self.settings.keep_score for _, score in carried):
            mode = "near"  # confirm or correct the doubtful faces where they were
        elif i - self._last_detect >= self.redetect_every:
            mode = "coarse"
        else:
            mode = None
        dets = Detections.empty()
        if mode is not None:
            self._last_detect = i
            image = picture.get(self.detector.color)
            if mode == "near":
                doubtful = [t.points[-1] for t, (_, score) in zip(self._live, carried)
                            if score < self.settings.keep_score]
                dets = self._near(image, doubtful)
            else:
                dets = self._search(image, all_levels=mode == "all", coarse_only=mode == "coarse")
        self._update(i, picture, carried, dets, focus_here)

    def finish(self) -> TrackSet:
        self._close_all()
        return TrackSet(len(self._cut_flags), np.array(self._cut_flags, bool),
                        sorted(self._done, key=lambda t: t.start))

    # -- detection -----------------------------------------------------------------------
    def _search(self, image: np.ndarray, *, all_levels: bool = False,
                coarse_only: bool = False) -> Detections:
        h, w = image.shape[:2]
        scales = detection_scales(self.detector, w, h, self.settings.min_face)
        if coarse_only:
            scales = scales[:1]
        return detect_multiscale(self.detector, image, scales, all_levels=all_levels)

    def _near(self, image: np.ndarray, faces: list[np.ndarray]) -> Detections:
        """Detect in a window around each given face, at the detector's working size."""
        h, w = image.shape[:2]
        found = []
        for points in faces:
            x0, y0, x1, y1 = geo.face_box(geo.to_canonical(points), 2.5)
            x0, y0 = int(max(0, x0)), int(max(0, y0))
            x1, y1 = int(min(w, x1)), int(min(h, y1))
            if x1 - x0 < 8 or y1 - y0 < 8:
                continue
            window = image[y0:y1, x0:x1]
            scale = min(2.0, self.detector.work_size / max(x1 - x0, y1 - y0))
            dets = detect_multiscale(self.detector, window, [scale])
            found.append(Detections(dets.boxes + [x0, y0, x0, y0],
                                    dets.keypoints + [x0, y0], dets.scores))
        return Detections.concat(found)

    # -- landmarks -----------------------------------------------------------------------
    def _landmark(self, image: np.ndarray, to_canon: np.ndarray) -> tuple[np.ndarray, float]:
        """Landmarks of the face that ``to_canon`` maps onto the canonical face, and score."""
        if not np.isfinite(to_canon).all():  # a collapsed shape: nothing left to follow
            return np.full((68, 2), np.nan), 0.0
        cx, cy, side = geo.FACE_BOX
        k = CROP_SIZE / (side * _CROP_MARGIN)
        to_crop = np.array([[k, 0, CROP_SIZE / 2 - k * cx], [0, k, CROP_SIZE / 2 - k * cy]])
        matrix = to_crop[:, :2] @ to_canon[:, :2]
        full = np.hstack([matrix, (to_crop[:, :2] @ to_canon[:, 2] + to_crop[:, 2])[:, None]])
        crop = warp(image, full, CROP_SIZE)
        half = k * side / 2
        box = np.array([[CROP_SIZE / 2 - half, CROP_SIZE / 2 - half,
                         CROP_SIZE / 2 + half, CROP_SIZE / 2 + half]])
        points, scores = self.landmarker.landmarks(crop, box)
        return geo.apply(geo.invert(full), points[0].astype(np.float64)), float(scores[0])

    def _carry(self, image: np.ndarray, guess: np.ndarray,
               last: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """Landmarks from a guess of where the face is, run again from their own result when
        the guess may be off: after a detection (``last`` None), while the face moves (``last``:
        its previous landmarks) or when the first run moved far."""
        start = geo.to_canonical(guess)
        points, score = self._landmark(image, start)
        found = geo.to_canonical(points)
        if not (np.isfinite(found).all() and np.isfinite(start).all()):
            return points, 0.0
        step = 0.0 if last is None else float(
            np.linalg.norm((guess - last)[geo.STABLE].mean(0)) * geo.scale_of(start))
        # Where the found face's canonical centre lands in the guess's frame of reference.
        moved = geo.apply(start, geo.apply(geo.invert(found), np.array([[0.5, 0.6]])))[0]
        ratio = geo.scale_of(found) / geo.scale_of(start)
        turn = np.arctan2(found[1, 0], found[0, 0]) - np.arctan2(start[1, 0], start[0, 0])
        if (last is None or step > _MOVING or np.abs(moved - (0.5, 0.6)).max() > _REFINE_SHIFT
                or abs(np.log(ratio)) > _REFINE_SCALE
                or abs((turn + np.pi) % (2 * np.pi) - np.pi) > _REFINE_TURN):
            points, score = self._landmark(image, found)
        return points, score

    def _from_detection(self, image: np.ndarray, keypoints: np.ndarray) -> tuple[np.ndarray, float]:
        return self._carry(image, geo.apply(geo.invert(geo.five_to_canonical(keypoints)),
                                            geo.TEMPLATE_68))

    # -- bookkeeping ---------------------------------------------------------------------
    def _update(self, i: int, picture: Picture, carried: list[tuple[np.ndarray, float]],
                dets: Detections, focus_here: bool) -> None:
        s = self.settings
        image = picture.get(self.landmarker.color) if len(dets) else None
        det_boxes = (geo.face_box(geo.five_to_canonical(dets.keypoints.astype(np.float64)))
                     if len(dets) else np.zeros((0, 4)))
        track_boxes = (geo.face_box(geo.to_canonical(np.array([p for p, _ in carried])))
                       if carried else np.zeros((0, 4)))
        matched = _match(geo.iou(track_boxes, det_boxes), s.match_iou)

        survivors: list[_Live] = []
        for k, (track, (points, score)) in enumerate(zip(self._live, carried)):
            confirmed = k in matched
            if score < s.keep_score and confirmed:
                d = matched[k]
                again, again_score = self._from_detection(image, dets.keypoints[d])
                if again_score >= score:
                    points, score = again, again_score
                score = max(score, float(dets.scores[d]))
            if score < s.lose_score or not np.isfinite(points).all():
                self._done.append(track.record())
                continue
            track.points.append(points)
            track.scores.append(score)
            track.detected.append(confirmed)
            survivors.append(track)
        self._live = survivors

        used = set(matched.values())
        fresh = [d for d in np.argsort(-_areas(det_boxes)) if d not in used]
        picked = _nearest(det_boxes, self.focus[1:]) if focus_here and len(dets) else None
        had_faces = bool(carried)
        for d in fresh:
            if len(self._live) >= s.max_faces and d != picked:
                continue
            points, score = self._from_detection(image, dets.keypoints[d])
            score = max(score, float(dets.scores[d]))
            if not np.isfinite(points).all() or self._duplicate(points):
                continue
            track = _Live(i, [points], [score], [True])
            self._live.append(track)
        if had_faces and not self._live:
            self._lost_since = i + 1  # search fully at once, then every few frames

    def _duplicate(self, points: np.ndarray) -> bool:
        if not self._live:
            return False
        box = geo.face_box(geo.to_canonical(points))
        others = geo.face_box(geo.to_canonical(np.array([t.points[-1] for t in self._live])))
        return bool((geo.iou(box, others) > 0.5).any())

    def _close_all(self) -> None:
        self._done.extend(t.record() for t in self._live)
        self._live = []


def _areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) if len(boxes) else np.zeros(0)


def _nearest(boxes: np.ndarray, point: tuple[float, float]) -> int:
    """Index of the box containing ``point``, or else the one whose centre is nearest."""
    x, y = point
    inside = (boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (y <= boxes[:, 3])
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    dist = np.hypot(centres[:, 0] - x, centres[:, 1] - y)
    return int(np.argmin(np.where(inside, dist - 1e9, dist)))


def _match(overlap: np.ndarray, threshold: float) -> dict[int, int]:
    """Greedy one-to-one matching of rows to columns by overlap above ``threshold``."""
    pairs: dict[int, int] = {}
    if overlap.size == 0:
        return pairs
    work = overlap.copy()
    while True:
        r, c = np.unravel_index(np.argmax(work), work.shape)
        if work[r, c] <= threshold:
            return pairs
        pairs[int(r)] = int(c)
        work[r, :] = -1
        work[:, c] = -1
