"""Does a frame's face geometry sit on the face? A photometric check of the landmarks.

On motion-blurred frames the landmarker can slip: the whole landmark set lands beside the face,
in a plausible shape, so no geometric test sees it. Pasting a mouth there smears the lower face
over the cheek or the background, and lending such a frame's mouth pastes a misplaced chin.

The check warps each frame's eyes-and-nose region into the canonical face through the frame's
own transform and compares it with the clip's typical (median) appearance there: on the shared
clips, well-placed frames score 0.77 to 0.99 (normalised cross-correlation), slipped ones 0.6
down to below 0.
"""
from __future__ import annotations

import os
import uuid

import cv2
import numpy as np

from engine.face.analysis import FaceAnalysis, cache_file
from engine.face.pixels import gray, warp
from engine.media.reader import VideoReader

ALIGNED = 0.7  # lowest score of a frame whose landmarks are trusted
VERSION = 1  # of the scores in the cache
_SIZE = 48  # pixels of the compared patch
# The patch in canonical face units: eyes, brows and nose, which do not move with speech.
_X0, _X1, _Y0, _Y1 = 0.05, 0.95, 0.1, 0.8


def alignment_scores(video: str, analysis: FaceAnalysis) -> np.ndarray:
    """Score (-1..1) of every analysed frame with the face found (NaN elsewhere), from one
    forward decoding pass on the luma plane; cached beside the face analysis."""
    entry = cache_file(analysis).with_suffix(f".alignment{VERSION}.npy")
    if entry.exists():
        try:
            scores = np.load(entry)
            if scores.shape == (len(analysis),):
                return scores
        except (OSError, ValueError):
            pass  # damaged: computed again and rewritten
    scores = _compute(video, analysis)
    temp = entry.with_name(f"{entry.stem}.{uuid.uuid4().hex}.tmp.npy")
    np.save(temp, scores)
    os.replace(temp, entry)
    return scores


def _compute(video: str, analysis: FaceAnalysis) -> np.ndarray:
    frames = np.flatnonzero(analysis.found)
    scores = np.full(len(analysis), np.nan)
    if len(frames) < 2:
        scores[frames] = 1.0  # nothing to compare with: trust it
        return scores
    to_patch = np.array([[_SIZE / (_X1 - _X0), 0, -_X0 * _SIZE / (_X1 - _X0)],
                         [0, _SIZE / (_Y1 - _Y0), -_Y0 * _SIZE / (_Y1 - _Y0)]])
    wanted = set(frames.tolist())
    patches = []
    with VideoReader(video) as reader:
        for frame in reader.frames(analysis.start + int(frames[0]),
                                   analysis.start + int(frames[-1]) + 1):
            k = frame.index - analysis.start
            if k not in wanted:
                continue
            t = analysis.transforms[k]
            matrix = np.hstack([to_patch[:, :2] @ t[:, :2],
                                (to_patch[:, :2] @ t[:, 2] + to_patch[:, 2])[:, None]])
            patch = warp(gray(frame), matrix, _SIZE).astype(np.float32)
            patches.append(cv2.GaussianBlur(patch, (0, 0), 1.0))
    stack = np.array(patches)
    # The median face is robust to the slipped minority it is meant to find.
    typical = np.median(stack, axis=0)
    scores[frames] = [_ncc(p, typical) for p in stack]
    return scores


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-9))
