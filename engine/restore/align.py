"""FFHQ alignment: the square face crop that GFPGAN, GPEN and CodeFormer are trained on.

Those models see faces aligned as in FFHQ: a similarity transform puts the five keypoints (eye
centres, nose tip, mouth corners) as close as it can to fixed positions in the square. The
positions below are the public 512-pixel template; other sizes scale it.

Warps in both directions shrink the picture a lot as often as not (a 200-pixel face in the
frame, a 512-pixel crop), and bilinear sampling alone would alias; so a picture to be shrunk
by more than 1.5 times is first reduced with area averaging, then warped.
"""
from __future__ import annotations

import cv2
import numpy as np

from engine.face import geometry as geo

Box = tuple[int, int, int, int]

# Eye centres, nose tip, mouth corners (image left first) of an FFHQ-aligned 512x512 face.
FFHQ_512 = np.array([(192.98138, 239.94708), (318.90277, 240.1936), (256.63416, 314.01935),
                     (201.26117, 371.41043), (313.08905, 371.15118)])
_MAX_SHRINK = 1.5


def ffhq_matrix(keypoints: np.ndarray, size: int) -> np.ndarray:
    """Frame pixels -> pixels of the ``size`` x ``size`` aligned crop (2, 3), from five
    keypoints (5, 2) in frame pixels (least squares)."""
    return geo.fit_similarity(keypoints, FFHQ_512 * (size / 512.0))


def sampled_box(matrix: np.ndarray, size: int, width: int, height: int) -> Box:
    """The frame pixels an aligned crop of ``size`` reads, with a pixel for interpolation,
    inside a ``width`` x ``height`` frame."""
    corners = np.array([(0, 0), (size, 0), (size, size), (0, size)], np.float64) - 0.5
    pts = geo.apply(geo.invert(matrix), corners)
    x0, y0 = np.floor(pts.min(0)).astype(int) - 1
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 2
    return int(max(x0, 0)), int(max(y0, 0)), int(min(x1, width)), int(min(y1, height))


def to_aligned(picture: np.ndarray, origin: tuple[int, int], matrix: np.ndarray,
               size: int) -> np.ndarray:
    """The aligned crop (size, size, C) from ``picture``, the frame's pixels from ``origin``
    on; beyond the picture's edge, its edge pixels repeat (a face at the frame's border)."""
    m = _shifted(matrix, origin)
    return _warp(picture, m, (size, size), cv2.BORDER_REPLICATE)


def from_aligned(aligned: np.ndarray, matrix: np.ndarray, box: Box) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """``aligned`` (float32, size x size x 3) put back over the frame ``box``: the picture
    (h, w, 3) and its coverage (h, w), 1 where the aligned square reaches, 0 beyond it."""
    x0, y0, x1, y1 = box
    m = geo.invert(np.asarray(matrix, np.float64))  # aligned -> frame pixels
    m[:, 2] -= (x0, y0)
    h, w = aligned.shape[:2]
    rgba = np.dstack([aligned.astype(np.float32), np.ones((h, w), np.float32)])
    back = _warp(rgba, m, (x1 - x0, y1 - y0), cv2.BORDER_CONSTANT)
    return back[..., :3], back[..., 3]


def _shifted(matrix: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
    """``matrix`` for a picture whose pixel (0, 0) is frame pixel ``origin``."""
    m = np.array(matrix, np.float64)
    m[:, 2] += m[:, :2] @ np.asarray(origin, np.float64)
    return m


def _warp(src: np.ndarray, m: np.ndarray, dsize: tuple[int, int], border: int) -> np.ndarray:
    """``cv2.warpAffine`` (``m``: src -> dst pixels), area-reducing ``src`` first where the
    map shrinks it by more than ``_MAX_SHRINK``."""
    scale = float(geo.scale_of(m))
    if scale * _MAX_SHRINK < 1.0:
        h, w = src.shape[:2]
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        src = cv2.resize(src, (sw, sh), interpolation=cv2.INTER_AREA)
        fx, fy = sw / w, sh / h
        # Reduced pixel x' sits at source pixel (x' + 0.5) / fx - 0.5.
        m = np.array(m, np.float64)
        m[:, 2] += m[:, 0] * (0.5 / fx - 0.5) + m[:, 1] * (0.5 / fy - 0.5)
        m[:, 0] /= fx
        m[:, 1] /= fy
    return cv2.warpAffine(src, m, dsize, flags=cv2.INTER_LINEAR, borderMode=border,
                          borderValue=0)
