"""Shot-cut detection from tiny grey thumbnails of consecutive frames.

A cut changes most of the picture at once: the mean absolute difference between 32x32
thumbnails jumps far above its level inside the shot. On the shared clips, differences inside
shots stay under 21 (of 255, fast laughing head moves included) and cuts between them start
at 37. A missed cut is caught anyway by the tracker's falling confidence; a false one costs a
detection.
"""
from __future__ import annotations

from collections import deque

import cv2
import numpy as np

_SIDE = 32
_ABSOLUTE = 30.0  # a difference this large is a cut whatever came before
_RELATIVE = 5.0  # ... or this many times the recent level, if at least _FLOOR
_FLOOR = 20.0
_HISTORY = 8


def thumbnail(gray: np.ndarray) -> np.ndarray:
    """32x32 float thumbnail of a grey picture (strided first, so 4K costs like 720p)."""
    step = max(1, min(gray.shape[:2]) // (2 * _SIDE))
    return cv2.resize(gray[::step, ::step], (_SIDE, _SIDE),
                      interpolation=cv2.INTER_AREA).astype(np.float32)


class CutDetector:
    """Feed frames in order; :meth:`update` says whether a new shot starts at this frame."""

    def __init__(self) -> None:
        self._previous: np.ndarray | None = None
        self._recent: deque[float] = deque(maxlen=_HISTORY)

    def update(self, gray: np.ndarray) -> bool:
        thumb = thumbnail(gray)
        previous, self._previous = self._previous, thumb
        if previous is None:
            return False
        diff = float(np.abs(thumb - previous).mean())
        settled = len(self._recent) >= 3
        level = float(np.median(self._recent)) if settled else np.inf
        cut = diff > _ABSOLUTE or (diff > _FLOOR and diff > _RELATIVE * max(level, 1.0))
        if cut:
            self._recent.clear()
        else:
            self._recent.append(diff)
        return cut
