"""Landmarks that stay on the face through turns, blur and fast moves: slips found and repaired.

On motion-blurred or turning faces dlib's landmarks can slip in a plausible shape that no
geometric test catches: mostly the jaw line swells off the face (the far cheek out over the
background, the chin down onto the collar), on heavy blur the eyes and mouth too. A mouth pasted
on such landmarks smears skin over the background or draws a second jaw.

The slip test asks what the paste needs: do the points that place the new mouth (eyes and nose)
and the points that bound it (jaw, chin, mouth) move with the picture? Dense optical flow on the
face crop (DIS) carries each frame's raw landmarks onto the next frame; where they disagree with
that frame's own by more than dlib's jitter, one of the two has slipped, and both are suspect.
So are frames the tracker lost for a moment (the analysis only drew a straight line across).
Suspect frames close together form one stretch (a slip drifts in steadily between the frames that
give it away), and each stretch is bridged from the good frames on either side: their landmarks
are carried through the stretch by the flow, forwards and backwards, each chain's drift spread
along it so both meet the far anchor, and the two blended. Jaw points take the motion of the skin
just inside the jaw line, where the flow does not mix face and background, plus the extra swing
the head's rigid turn gives the silhouette. The repaired raw landmarks are then described again
exactly as the analysis does (smoothing, transforms, pose, crop), so the slipped frames no longer
pull on their neighbours either.

A stretch stays unplaced (its frames keep their own mouth) only where the bridge cannot be
trusted: the two chains disagree, a chain lost the face (its drift is too large), or it has a
good frame on one side only and is too long to carry blind. A slip that creeps in without any
frame-to-frame jump and holds (a long three-quarter view whose far cheek dlib draws too wide) is
not seen.

Results are cached beside the face analysis, keyed by its cache file and its landmarks.
"""
from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass, fields, replace
from pathlib import Path

import cv2
import numpy as np

from engine.face import geometry as geo
from engine.face.analysis import AnalysisSettings, FaceAnalysis, Flag, cache_file, describe
from engine.face.pixels import gray, warp
from engine.face.track import TrackSettings
from engine.media.frame import Frame
from engine.media.reader import VideoReader
from engine.progress import CancelToken, ProgressFn, no_progress

VERSION = 1  # of the cached repairs

# Point groups the slip test compares, and the disagreement (inter-ocular distances) between a
# frame's own points and its neighbour's carried onto it above which the pair is suspect.
# Well-placed frames of the shared clips stay under about 0.04 (jaw), 0.012 (eyes and nose) and
# 0.02 (mouth) in 98% of frame pairs; slipped ones reach 0.1-0.25.
_JAW = np.arange(2, 15)  # the jaw line the mask and the warp follow, chin included
_PLACE = np.arange(27, 48)  # nose and eyes: the canonical transform that places the mouth
_MOUTH = np.arange(48, 68)
_LIMITS = ((_JAW, 0.06), (_PLACE, 0.025), (_MOUTH, 0.035))
_INWARD = 0.2  # jaw points move with the skin this far towards the nose tip
_MERGE = 8  # suspect frames with at most this many frames between them are one stretch
_ONE_SIDED = 6  # longest stretch carried from one side only (a shot's first or last frames)
_DRIFT = 0.35  # a chain whose end misses the far anchor by more has lost the face
_DISAGREE = 0.12  # most the drift-corrected chains may differ on any group, in IOD
_CROP = 160  # pixels of the face crop the flow is computed on


@dataclass(frozen=True)
class Placement:
    """A face analysis with slipped landmarks repaired, and the frames no repair could place."""

    analysis: FaceAnalysis
    repaired: np.ndarray  # bool per analysed frame: landmarks carried from good neighbours
    unplaced: np.ndarray  # bool per analysed frame: the face is there but cannot be placed


def refine_landmarks(video: str | os.PathLike, analysis: FaceAnalysis, *,
                     progress: ProgressFn = no_progress,
                     cancel: CancelToken | None = None) -> Placement:
    """Find frames whose landmarks slipped off the face and carry good ones over them.

    One forward decoding pass over the analysed frames (luma only, a small face crop each)
    finds the slips and bridges them. Cached beside the analysis.
    """
    video = os.fspath(video)
    raw = analysis.raw_landmarks.astype(np.float64)
    # Keyed by the analysis's cache file and by what the repair reads from it.
    digest = hashlib.sha256(raw.tobytes() + analysis.flags.tobytes()).hexdigest()[:16]
    entry = cache_file(analysis).with_suffix(f".placement{VERSION}.{digest}.npz")
    cached = _load(entry, len(analysis))
    if cached is None:
        cached = _repair(video, analysis, raw, progress, cancel)
        temp = entry.with_name(f"{entry.stem}.{uuid.uuid4().hex}.tmp.npz")
        np.savez(temp, landmarks=cached[0], repaired=cached[1], unplaced=cached[2])
        os.replace(temp, entry)
    fixed, repaired, unplaced = cached
    if not repaired.any():
        return Placement(analysis, repaired, unplaced)
    return Placement(_describe_again(analysis, fixed), repaired, unplaced)


def _load(entry: Path, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    if not entry.exists():
        return None
    try:
        with np.load(entry) as data:
            result = data["landmarks"], data["repaired"], data["unplaced"]
    except (OSError, ValueError, KeyError):
        return None  # damaged: computed again and rewritten
    return result if all(len(x) == n for x in result) else None


def _repair(video: str, analysis: FaceAnalysis, raw: np.ndarray, progress: ProgressFn,
            cancel: CancelToken | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw landmarks with the slipped stretches bridged; which were; which could not be.

    One forward pass: each frame's face crop is compared with the previous one's as it is
    decoded, and crops are held only while a stretch of suspect frames is open, until it is
    bridged (so memory does not grow with the clip, and no stretch is decoded twice).
    """
    n = len(analysis)
    present = analysis.found
    # Frames the tracker lost for a moment hold the analysis's straight-line guess: no
    # landmarks of their own, so they are bridged like slipped ones.
    usable = present & np.isfinite(raw).all((1, 2))
    cut = (analysis.flags & Flag.SHOT_START) != 0
    # linked[k]: frames k - 1 and k are one continuous view of the face (the flow may join them)
    linked = np.zeros(n, bool)
    linked[1:] = present[1:] & present[:-1] & ~cut[1:]
    iod = geo.interocular(analysis.landmarks.astype(np.float64))
    fixed = raw.copy()
    repaired, unplaced = np.zeros(n, bool), np.zeros(n, bool)
    if not linked.any():
        return fixed, repaired, unplaced
    flow = _Flow()
    jump = np.zeros(n)  # disagreement of frame k - 1's landmarks carried onto k with k's own
    held: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # face crops still needed
    run: list[int] = []  # the open stretch of suspect frames: first, last

    def close() -> None:
        first, last = run
        a0 = first - 1 if linked[first] else None
        a1 = last + 1 if last + 1 < n and linked[last + 1] else None
        span = np.arange(first, last + 1)
        trusted = np.zeros(len(span), bool)
        sides = (a0 is not None) + (a1 is not None)
        if sides == 2 or sides == 1 and len(span) <= _ONE_SIDED:
            carried, trusted = flow.bridge(raw, held, first, last, a0, a1, iod)
            fixed[span[trusted]] = carried[trusted]
        repaired[span], unplaced[span] = trusted, ~trusted
        run.clear()

    def settle(j: int) -> None:
        """Frame j's suspicion is final (it needed the next frame's comparison)."""
        suspect = present[j] and (not usable[j] or jump[j] > 1.0
                                  or (j + 1 < n and jump[j + 1] > 1.0))
        if run and (not linked[j] or j - run[1] > _MERGE + 1):
            close()  # no later suspect can join it
        if suspect:
            if run:
                run[1] = j
            else:
                run.extend([j, j])

    linked_frames = np.flatnonzero(linked)
    first_frame, last_frame = int(linked_frames[0]) - 1, int(linked_frames[-1])
    a = analysis
    with VideoReader(video) as reader:
        for frame in reader.frames(a.start + first_frame, a.start + last_frame + 1):
            if cancel is not None:
                cancel.check()
            k = frame.index - a.start
            if present[k]:
                held[k] = _crop(frame, a.crop_boxes[k])
                if linked[k] and usable[k] and usable[k - 1]:
                    jump[k] = _disagreement(flow.carry(raw[k - 1], held[k - 1], held[k]),
                                            raw[k], iod[k])
            if k > first_frame:
                settle(k - 1)
            keep = run[0] - 1 if run else k - 1
            for old in [i for i in held if i < keep]:
                del held[old]
            progress("placement", k - first_frame + 1, last_frame - first_frame + 1)
    settle(last_frame)
    if run:
        close()
    return fixed, repaired, unplaced


def _crop(frame: Frame, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frame's face crop (grey, _CROP square, from the analysis's square crop box) and
    its image-to-crop affine."""
    x0, y0, x1, _ = box
    s = _CROP / max(float(x1 - x0), 1.0)
    to_crop = np.array([[s, 0.0, -s * x0], [0.0, s, -s * y0]])
    return warp(gray(frame), to_crop, _CROP), to_crop


class _Flow:
    """Dense optical flow between face crops, and landmarks carried by it."""

    def __init__(self) -> None:
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def carry(self, points: np.ndarray, a: tuple[np.ndarray, np.ndarray],
              b: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """Points of crop ``a``'s frame moved by the flow onto crop ``b``'s frame."""
        flow = self._dis.calc(a[0], b[0], None)
        q = geo.apply(a[1], points)
        at = q.copy()
        # The jaw line is the face's silhouette: sample the skin just inside it.
        at[:17] += _INWARD * (q[30] - q[:17])
        grid = at.astype(np.float32)[None]
        d = np.column_stack([cv2.remap(flow[..., c], grid[..., 0], grid[..., 1],
                                       cv2.INTER_LINEAR)[0] for c in (0, 1)])
        # The head's rigid motion turns the silhouette further than the skin inside it: add
        # the difference (a tilt would otherwise pull the jaw line in).
        rigid = geo.fit_similarity(at, at + d)[:, :2] - np.eye(2)
        d[:17] += (q[:17] - at[:17]) @ rigid.T
        return geo.apply(geo.invert(b[1]), q + d)

    def bridge(self, raw: np.ndarray, crops: dict[int, tuple[np.ndarray, np.ndarray]],
               first: int, last: int, a0: int | None, a1: int | None,
               iod: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks of frames ``first .. last`` carried from the good frames ``a0`` (before)
        and ``a1`` (after; either may be None: from the other side only), and whether each
        can be trusted."""
        lo = a0 if a0 is not None else first
        hi = a1 if a1 is not None else last
        span = range(first, last + 1)
        forward, backward = {}, {}
        if a0 is not None:
            forward[a0] = raw[a0]
            for k in range(a0 + 1, hi + 1):
                forward[k] = self.carry(forward[k - 1], crops[k - 1], crops[k])
        if a1 is not None:
            backward[a1] = raw[a1]
            for k in range(a1 - 1, lo - 1, -1):
                backward[k] = self.carry(backward[k + 1], crops[k + 1], crops[k])
        if a0 is None or a1 is None:
            chain = forward or backward
            return np.array([chain[k] for k in span]), np.ones(len(span), bool)
        # Each chain's miss at the far anchor, spread linearly along it.
        miss_f, miss_b = raw[a1] - forward[a1], raw[a0] - backward[a0]
        lost = max(_drift(miss_f, iod[a1]), _drift(miss_b, iod[a0])) > _DRIFT
        out, trusted = [], []
        for k in span:
            w = (k - a0) / (a1 - a0)
            f = forward[k] + w * miss_f
            b = backward[k] + (1 - w) * miss_b
            out.append((1 - w) * f + w * b)
            trusted.append(not lost and _disagreement(f, b, iod[k], limits=False) <= _DISAGREE)
        return np.array(out), np.array(trusted)


def _disagreement(a: np.ndarray, b: np.ndarray, iod: float, limits: bool = True) -> float:
    """Largest mean distance between two landmark sets over the groups, in IOD (relative to
    each group's limit when ``limits``)."""
    d = np.linalg.norm(a - b, axis=1) / max(float(iod), 1e-9)
    return max(float(d[group].mean()) / (limit if limits else 1.0) for group, limit in _LIMITS)


def _drift(miss: np.ndarray, iod: float) -> float:
    return float(np.linalg.norm(miss[np.r_[_JAW, _PLACE, _MOUTH]], axis=1).mean()) / max(
        float(iod), 1e-9)


def _describe_again(analysis: FaceAnalysis, raw: np.ndarray) -> FaceAnalysis:
    """``analysis`` with every per-frame description derived afresh from repaired raw
    landmarks, by the analysis's own rules and settings."""
    settings = _settings(analysis)
    flags = analysis.flags
    cut = (flags & Flag.SHOT_START) != 0
    # A weak landmark score the analysis kept was not confirmed by a detection.
    confirmed = (flags & Flag.LOW_CONFIDENCE) == 0
    arrays = describe(raw, analysis.scores, confirmed, cut, analysis.times, analysis.width,
                      analysis.height, analysis.fps, settings)
    arrays["raw_landmarks"] = analysis.raw_landmarks  # as tracked: the repairs are ours
    return replace(analysis, **arrays)


def _settings(analysis: FaceAnalysis) -> AnalysisSettings:
    stored = dict(analysis.config.get("settings") or {})
    known = {f.name for f in fields(AnalysisSettings)}
    if "track" in stored:
        stored["track"] = TrackSettings(**stored["track"])
    return AnalysisSettings(**{k: v for k, v in stored.items() if k in known})
