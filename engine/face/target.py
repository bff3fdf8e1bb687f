"""Which face is the target: one chain of tracks through the range, one face per frame.

The target is the largest face (by median size, among faces seen long enough to matter), or
the face nearest a point the user picked on some frame. A track ends at a cut or when its face
is lost; the chain then continues with the next track that starts nearest to where the target
was last seen and at a similar size, forwards and backwards from the chosen track.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.face import geometry as geo
from engine.face.track import TrackRecord, TrackSet

# Tracks shorter than this share of the longest are not candidates for "largest face".
_MIN_SHARE = 0.25
# A track this close in time to the first possible continuation may be preferred to it.
_LINK_WINDOW_S = 1.0
# Within one shot, a continuation that moved more than this many face sizes (more when it
# was lost for longer: per second missing, once more) is another face.
_SAME_SHOT_REACH = 1.0


@dataclass
class TargetTrack:
    """Raw per-frame data of the target over the range (NaN landmarks where not found)."""

    landmarks: np.ndarray  # (N, 68, 2) float64
    scores: np.ndarray  # (N,)
    detected: np.ndarray  # (N,) bool

    @property
    def found(self) -> np.ndarray:
        return np.isfinite(self.landmarks[:, 0, 0])


def _sizes(track: TrackRecord) -> np.ndarray:
    return 1.0 / geo.scale_of(geo.to_canonical(track.landmarks.astype(np.float64)))


def _centre(points: np.ndarray) -> np.ndarray:
    return geo.apply(geo.invert(geo.to_canonical(points)), np.array([[0.5, 0.6]]))[0]


def anchor_track(tracks: list[TrackRecord], focus: tuple[int, float, float] | None,
                 fps: float) -> TrackRecord | None:
    """The track the target starts from: nearest the picked point, else the largest face."""
    if not tracks:
        return None
    if focus is not None:
        frame, x, y = focus
        window = max(1, int(round(fps / 2)))
        best, best_dist = None, np.inf
        for track in tracks:
            # The frame itself, or the nearest frame within half a second that has the track.
            k = int(np.clip(frame, track.start, track.stop - 1))
            if abs(k - frame) > window:
                continue
            points = track.landmarks[k - track.start].astype(np.float64)
            box = geo.face_box(geo.to_canonical(points))
            inside = box[0] <= x <= box[2] and box[1] <= y <= box[3]
            dist = np.hypot(*(_centre(points) - (x, y))) / (box[2] - box[0])
            dist += abs(k - frame) / fps - (10.0 if inside else 0.0)
            if dist < best_dist:
                best, best_dist = track, dist
        return best
    longest = max(len(t) for t in tracks)
    candidates = [t for t in tracks if len(t) >= _MIN_SHARE * longest] or tracks
    return max(candidates, key=lambda t: float(np.median(_sizes(t))))


def _mismatch(last: np.ndarray, first: np.ndarray) -> float:
    """How far (in face sizes) and how much resized a face is between two landmark sets."""
    size_last = 1.0 / geo.scale_of(geo.to_canonical(last))
    size_first = 1.0 / geo.scale_of(geo.to_canonical(first))
    distance = np.hypot(*(_centre(last) - _centre(first))) / size_last
    return float(distance + abs(np.log(size_first / size_last)))


def chain(tracks: TrackSet, anchor: TrackRecord, fps: float) -> list[TrackRecord]:
    """The anchor and its continuations forwards and backwards in time, in time order.

    Within a shot a continuation must start near where the target was last seen: a face
    elsewhere in the same picture is someone else. After a cut the nearest face is taken.
    """
    window = int(round(_LINK_WINDOW_S * fps))
    result = [anchor]
    for forwards in (True, False):
        current = anchor
        while True:
            costs = []
            for t in tracks.tracks:
                if not (t.start >= current.stop if forwards else t.stop <= current.start):
                    continue
                before, after = (current, t) if forwards else (t, current)
                gap = after.start - before.stop
                mismatch = _mismatch(before.landmarks[-1].astype(np.float64),
                                     after.landmarks[0].astype(np.float64))
                same_shot = not tracks.cuts[before.stop:after.start + 1].any()
                if not same_shot or mismatch <= _SAME_SHOT_REACH * (1 + gap / fps):
                    costs.append((t, mismatch + gap / fps, gap))
            # Among the continuations that come soonest, the one that fits best.
            soonest = min((gap for _, _, gap in costs), default=0)
            near = [(t, cost) for t, cost, gap in costs if gap <= soonest + window]
            best = min(near, key=lambda tc: tc[1])[0] if near else None
            if best is None:
                break
            current = best
            if forwards:
                result.append(best)
            else:
                result.insert(0, best)
    return result


def target_track(tracks: TrackSet, focus: tuple[int, float, float] | None,
                 fps: float) -> TargetTrack:
    """Per-frame raw data of the target face (all NaN when no face was found at all)."""
    n = tracks.frame_count
    landmarks = np.full((n, 68, 2), np.nan)
    scores = np.zeros(n)
    detected = np.zeros(n, bool)
    anchor = anchor_track(tracks.tracks, focus, fps)
    if anchor is not None:
        for track in chain(tracks, anchor, fps):
            span = slice(track.start, track.stop)
            landmarks[span] = track.landmarks
            scores[span] = track.scores
            detected[span] = track.detected
    return TargetTrack(landmarks, scores, detected)
