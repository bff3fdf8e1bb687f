"""A low-dimensional description of lips and jaw, in the pose-normalised face frame.

Component 0 is openness (inner-lip gap over inter-ocular distance), measured directly so it
means the same on every clip; the rest is a PCA of the clip's own lip and jaw landmarks with
openness regressed out, so the components describe width, rounding and jaw shape.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.face import geometry as geo

MOUTH = np.arange(48, 68)
JAW = np.arange(3, 14)
SHAPE_POINTS = np.concatenate([JAW, MOUTH])
_INNER_TOP, _INNER_BOTTOM = [61, 62, 63], [67, 66, 65]


def canonical(landmarks: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    """Landmarks (N, 68, 2) mapped by per-frame 2x3 transforms into the canonical face."""
    return np.einsum("nij,nkj->nki", transforms[:, :, :2], landmarks) + transforms[:, None, :, 2]


def openness(landmarks: np.ndarray) -> np.ndarray:
    """Mean inner-lip gap over inter-ocular distance, (N, 68, 2) -> (N,); any frame of reference."""
    eyes = geo.interocular(landmarks)
    gap = np.linalg.norm(landmarks[:, _INNER_TOP] - landmarks[:, _INNER_BOTTOM], axis=2).mean(1)
    return gap / np.maximum(eyes, 1e-9)


@dataclass(frozen=True)
class ShapeSpace:
    """Openness plus ``k`` PCA components of canonical lip/jaw points, fitted on one clip."""

    mean: np.ndarray  # (P*2,) mean canonical lip/jaw coordinates
    open_direction: np.ndarray  # (P*2,) coordinate change per unit of openness
    basis: np.ndarray  # (k, P*2) orthonormal, orthogonal to what openness explains
    scale: np.ndarray  # (k+1,) spread of each component, to weigh distances evenly
    mean_open: float

    @staticmethod
    def fit(canon: np.ndarray, k: int = 4) -> ShapeSpace:
        """Fit on canonical landmarks (N, 68, 2) of frames where the face was found."""
        x = canon[:, SHAPE_POINTS].reshape(len(canon), -1)
        o = openness(canon)
        mean, mean_open = x.mean(0), float(o.mean())
        xc, oc = x - mean, o - mean_open
        direction = xc.T @ oc / max(float(oc @ oc), 1e-12)
        residual = xc - np.outer(oc, direction)
        _, _, vt = np.linalg.svd(residual, full_matrices=False)
        basis = vt[: min(k, vt.shape[0])]
        coords = residual @ basis.T
        scale = np.concatenate([[o.std()], coords.std(0)])
        return ShapeSpace(mean, direction, basis, np.maximum(scale, 1e-6), mean_open)

    @property
    def dims(self) -> int:
        return 1 + self.basis.shape[0]

    def encode(self, canon: np.ndarray) -> np.ndarray:
        """(N, 68, 2) canonical landmarks -> (N, dims): openness first, then PCA coordinates."""
        x = canon[:, SHAPE_POINTS].reshape(len(canon), -1) - self.mean
        o = openness(canon)
        residual = x - np.outer(o - self.mean_open, self.open_direction)
        return np.column_stack([o, residual @ self.basis.T])

    def decode(self, code: np.ndarray) -> np.ndarray:
        """(N, dims) -> canonical lip/jaw points (N, P, 2) in ``SHAPE_POINTS`` order."""
        x = (self.mean + np.outer(code[:, 0] - self.mean_open, self.open_direction)
             + code[:, 1:] @ self.basis)
        return x.reshape(len(code), -1, 2)
