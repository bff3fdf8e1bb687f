"""The default stabilizer: the face resampled through the analysis's smoothed transform.

The face analysis already separates the head's rigid motion from expression and smooths it
without lag, so composing its image-to-canonical transform with the crop's framing gives a crop
in which the head neither moves, turns in the picture plane nor changes size, while the mouth
keeps every shape it makes. Only the part of the frame the crop covers is converted to RGB.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from engine.face.analysis import FaceAnalysis
from engine.face.pixels import warp
from engine.lipsync.retrieval import even_box
from engine.media.frame import Frame
from engine.stabilize.backend import FaceCrop, Framing

_MARGIN = 4  # pixels around the crop's footprint, for the resampling filters


class GeometricStabilizer:
    name = "geometric"

    def __init__(self) -> None:
        self._analysis: FaceAnalysis | None = None

    def prepare(self, analysis: FaceAnalysis) -> None:
        self._analysis = analysis

    def crops(self, frames: Sequence[Frame], indices: Sequence[int],
              framing: Framing) -> list[FaceCrop]:
        return [self._crop(f, k, framing) for f, k in zip(frames, indices)]

    def close(self) -> None:
        self._analysis = None

    def _crop(self, frame: Frame, k: int, framing: Framing) -> FaceCrop:
        matrix = framing.matrix(self._analysis.transforms[k])
        x0, y0, x1, y1 = footprint(matrix, framing.size, frame.width, frame.height)
        region = frame.rgb_region(x0, y0, x1, y1)
        local = matrix.copy()
        local[:, 2] += local[:, :2] @ np.array([x0, y0], np.float64)
        return FaceCrop(image=warp(region, local, framing.size), transform=matrix)


def footprint(matrix: np.ndarray, size: int, width: int,
              height: int) -> tuple[int, int, int, int]:
    """The frame box (even coordinates, inside the frame) that a ``size`` crop samples from."""
    inverse = np.linalg.inv(np.vstack([matrix, (0, 0, 1)]))[:2]
    corners = np.array([(0, 0, 1), (size, 0, 1), (size, size, 1), (0, size, 1)], np.float64)
    points = corners @ inverse.T
    box = np.concatenate([points.min(0) - _MARGIN, points.max(0) + _MARGIN])
    return even_box(box, width, height)
