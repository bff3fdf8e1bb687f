"""The canonical face and the similarity transforms that map faces onto it.

Canonical coordinates put a frontal face in the unit square the way the widely used five-point
alignment template does (the 112-pixel ArcFace template divided by 112): eye centres at about
(0.34, 0.46) and (0.66, 0.46), nose tip (0.50, 0.64), mouth corners (0.37, 0.82) and
(0.63, 0.82). Downstream models that expect a different crop compose their own scale and offset
with :func:`fit_similarity`'s result.

Landmarks follow the 68-point iBUG 300-W layout (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47,
mouth 48-67); "left"/"right" below mean the image's left and right.
"""
from __future__ import annotations

import numpy as np

# Mean 68-point face in canonical coordinates, measured with the embedded landmarker on the
# shared talking-head clips and made left/right symmetric.
TEMPLATE_68 = np.array([
    (0.138, 0.475), (0.148, 0.571), (0.165, 0.665), (0.184, 0.758),
    (0.213, 0.846), (0.261, 0.924), (0.327, 0.990), (0.408, 1.040),
    (0.500, 1.057), (0.592, 1.040), (0.673, 0.990), (0.739, 0.924),
    (0.787, 0.846), (0.816, 0.758), (0.835, 0.665), (0.852, 0.571),
    (0.862, 0.475), (0.199, 0.389), (0.240, 0.337), (0.304, 0.316),
    (0.372, 0.323), (0.434, 0.353), (0.566, 0.353), (0.628, 0.323),
    (0.696, 0.316), (0.760, 0.337), (0.801, 0.389), (0.500, 0.445),
    (0.500, 0.510), (0.500, 0.574), (0.500, 0.639), (0.430, 0.683),
    (0.464, 0.693), (0.500, 0.703), (0.536, 0.693), (0.570, 0.683),
    (0.274, 0.466), (0.313, 0.440), (0.361, 0.441), (0.403, 0.472),
    (0.359, 0.483), (0.311, 0.484), (0.597, 0.472), (0.639, 0.441),
    (0.687, 0.440), (0.726, 0.466), (0.689, 0.484), (0.641, 0.483),
    (0.368, 0.821), (0.417, 0.786), (0.466, 0.767), (0.500, 0.775),
    (0.534, 0.767), (0.583, 0.786), (0.632, 0.821), (0.586, 0.874),
    (0.538, 0.898), (0.500, 0.903), (0.462, 0.898), (0.414, 0.874),
    (0.392, 0.822), (0.465, 0.803), (0.500, 0.805), (0.535, 0.803),
    (0.608, 0.822), (0.535, 0.841), (0.500, 0.846), (0.465, 0.841),
], dtype=np.float64)

# Five keypoints: left eye centre, right eye centre, nose tip, left and right mouth corner.
TEMPLATE_5 = np.array([(38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366),
                       (41.5493, 92.3655), (70.7299, 92.2041)]) / 112.0

# Points that move with the head but hardly with expression (nose and eyes): transforms fitted
# on them do not wobble when the mouth opens or the brows rise.
STABLE = np.arange(27, 48)

# Index of each point's mirror image (for flipping a face left to right).
MIRROR = np.array([16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 26, 25, 24, 23,
                   22, 21, 20, 19, 18, 17, 27, 28, 29, 30, 35, 34, 33, 32, 31, 45, 44, 43, 42,
                   47, 46, 39, 38, 37, 36, 41, 40, 54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56,
                   55, 64, 63, 62, 61, 60, 67, 66, 65])

# The square box, in canonical coordinates (centre x, centre y, side), that a frontal-face
# detector draws around a face: what 68-point landmarkers are trained to start from.
FACE_BOX = (0.5, 0.62, 0.76)


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """The five keypoints of 68-point landmarks (..., 68, 2) -> (..., 5, 2)."""
    return np.stack([landmarks[..., 36:42, :].mean(-2), landmarks[..., 42:48, :].mean(-2),
                     landmarks[..., 30, :], landmarks[..., 48, :], landmarks[..., 54, :]], -2)


def interocular(landmarks: np.ndarray) -> np.ndarray:
    """Distance between the eye centres of 68-point landmarks (..., 68, 2) -> (...)."""
    return np.linalg.norm(landmarks[..., 36:42, :].mean(-2) - landmarks[..., 42:48, :].mean(-2),
                          axis=-1)


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation, uniform scale and shift taking ``src`` onto ``dst``.

    ``src`` is (..., K, 2), ``dst`` (K, 2) or (..., K, 2); returns (..., 2, 3) affine matrices
    (``x' = M[:, :2] @ x + M[:, 2]``). Closed form, so it vectorises over frames.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    ms, md = src.mean(-2, keepdims=True), dst.mean(-2, keepdims=True)
    s, d = src - ms, dst - md
    norm = (s * s).sum((-1, -2))
    a = (s * d).sum((-1, -2)) / norm
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(-1) / norm
    m = np.empty(a.shape + (2, 3))
    m[..., 0, 0], m[..., 0, 1] = a, -b
    m[..., 1, 0], m[..., 1, 1] = b, a
    m[..., :, 2] = md[..., 0, :] - np.einsum("...ij,...j->...i", m[..., :, :2], ms[..., 0, :])
    return m


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of affine matrices (..., 2, 3)."""
    lin = np.linalg.inv(m[..., :, :2])
    out = np.empty_like(m, dtype=np.float64)
    out[..., :, :2] = lin
    out[..., :, 2] = -np.einsum("...ij,...j->...i", lin, m[..., :, 2])
    return out


def apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map points (..., K, 2) through affine matrices (..., 2, 3)."""
    return np.einsum("...ij,...kj->...ki", m[..., :, :2], points) + m[..., None, :, 2]


def scale_of(m: np.ndarray) -> np.ndarray:
    """Uniform scale of similarity matrices (..., 2, 3)."""
    return np.sqrt(np.abs(np.linalg.det(m[..., :, :2])))


def to_canonical(landmarks: np.ndarray) -> np.ndarray:
    """Image-to-canonical similarity fitted on the stable points of 68-point landmarks."""
    return fit_similarity(landmarks[..., STABLE, :], TEMPLATE_68[STABLE])


def five_to_canonical(keypoints: np.ndarray) -> np.ndarray:
    """Image-to-canonical similarity fitted on five keypoints (..., 5, 2)."""
    return fit_similarity(keypoints, TEMPLATE_5)


def face_box(to_canon: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Axis-aligned image box (..., 4) x0, y0, x1, y1 around the canonical face box.

    ``scale`` enlarges the canonical box about its centre. Used to compare faces found by
    different detectors, whose own boxes follow different conventions.
    """
    cx, cy, side = FACE_BOX
    h = side * scale / 2
    corners = np.array([(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)])
    pts = apply(invert(to_canon), corners)
    return np.concatenate([pts.min(-2), pts.max(-2)], -1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes a (N, 4) and b (M, 4) -> (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
