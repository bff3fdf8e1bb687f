"""SieveSync's face alignment: an FFHQ-style quad from the eye and mouth corners, the 512x512
aligned face, and the way back into the frame.

The quad is the FFHQ dataset's (and sieve-community/sievesync's ``get_transform_params``):
from the eye centres and the mouth corners, a square centred a tenth of the way from the eyes
to the mouth, turned with the face, of half-side max(2.5 x eye distance, 2 x eye-to-mouth).
The square maps onto 512x512 by a similarity (its sides are equal and perpendicular, so the
public code's perspective transform is one too); a similarity also lets the restorer's
anti-aliased warps (``engine.restore.align``) do both directions.

Steadiness: the quad is taken from the analysis's landmarks, which are already smoothed
forward and backward (rigid head motion and expression apart: no jitter, no lag). That is
enough: on the stillest second of ``hdtf_aoc_512.mp4`` the aligned eyes and nose move 0.41 px
per frame (optical flow); smoothing the quad once more (forward-backward One-Euro on its centre
and side) measured worse, 0.46 there and 1.38 against 1.07 px per frame over the moving clip,
because it takes out real head motion the quad should follow.

Back into the frame: the inverse warp, a feathered mask on the landmarks' convex hull (the
aligned square holds background the generator never meant), and each channel's histogram
matched to the source's inside the hull (cumulative-distribution matching in numpy;
``engine.blend.match_colors`` only matches Lab mean and spread, which leaves a generated face's
shifted contrast curve in place).
"""
from __future__ import annotations

import cv2
import numpy as np

from engine.errors import RedubError
from engine.face import geometry as geo
from engine.mask import face_scale
from engine.restore.align import from_aligned, sampled_box, to_aligned

SIZE = 512  # the aligned face's side
MAX_FACELESS = 0.4  # share of a range's frames without a face above which SieveSync refuses
# 68-point indices: eye corners (outer, inner) per eye, mouth corners. MediaPipe's 33/133,
# 362/263 and 61/291 in the public code.
LEFT_EYE, RIGHT_EYE, MOUTH = (36, 39), (42, 45), (48, 54)
HULL_FEATHER = 0.04  # the hull mask's soft edge, in face scales (inter-ocular-based size)

Box = tuple[int, int, int, int]


def quads(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ-style quad of each face, (N, 4, 2) frame pixels from (N, 68, 2) landmarks:
    corners top-left, bottom-left, bottom-right, top-right of the aligned picture."""
    lm = np.asarray(landmarks, np.float64)
    left = lm[:, LEFT_EYE].mean(1)
    right = lm[:, RIGHT_EYE].mean(1)
    eye_avg = (left + right) / 2
    eye_to_eye = right - left
    eye_to_mouth = lm[:, MOUTH].mean(1) - eye_avg
    # eye_to_eye plus the eye-to-mouth vector turned a quarter to the image's right.
    x = eye_to_eye + np.stack([eye_to_mouth[:, 1], -eye_to_mouth[:, 0]], 1)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x *= np.maximum(np.linalg.norm(eye_to_eye, axis=1) * 2.5,
                    np.linalg.norm(eye_to_mouth, axis=1) * 2.0)[:, None]
    y = np.stack([-x[:, 1], x[:, 0]], 1)
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y], 1)


def quad_matrix(quad: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Frame pixels -> aligned pixels, (..., 2, 3) for quads (..., 4, 2): the corners onto
    (0, 0), (0, size-1), (size-1, size-1), (size-1, 0) as the public code maps them."""
    q = np.asarray(quad, np.float64)
    u = q[..., 3, :] - q[..., 0, :]  # along the aligned picture's rows
    v = q[..., 1, :] - q[..., 0, :]  # down its columns
    rows = np.stack([u / (u ** 2).sum(-1, keepdims=True),
                     v / (v ** 2).sum(-1, keepdims=True)], -2) * (size - 1)
    shift = -np.einsum("...ij,...j->...i", rows, q[..., 0, :])
    return np.concatenate([rows, shift[..., None]], -1)


def align(picture: np.ndarray, origin: tuple[int, int], matrix: np.ndarray,
          size: int = SIZE) -> np.ndarray:
    """The aligned face (size, size, 3) uint8 from ``picture``, RGB frame pixels from
    ``origin`` on (the part :func:`aligned_box` names; edge pixels repeat beyond it)."""
    aligned = to_aligned(np.asarray(picture, np.float32), origin, matrix, size)
    return cv2.add(aligned, 0.0, dtype=cv2.CV_8U)


def aligned_box(matrix: np.ndarray, width: int, height: int, size: int = SIZE) -> Box:
    """The frame pixels the aligned face is made from, inside a ``width`` x ``height`` frame."""
    return sampled_box(matrix, size, width, height)


def hull_mask(landmarks: np.ndarray, box: Box) -> np.ndarray:
    """The landmarks' convex hull over ``box``, float32 (h, w) in [0, 1]: 1 inside, falling to
    0 at the hull's edge over a feather scaled to the face (nothing outside the hull)."""
    x0, y0, x1, y1 = box
    hull = cv2.convexHull(np.round((np.asarray(landmarks) - (x0, y0)) * 16).astype(np.int32))
    inside = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillConvexPoly(inside, hull, 1, cv2.LINE_8, 4)
    feather = max(HULL_FEATHER * face_scale(landmarks), 1.0)
    # Distance inside the hull, ramped to 1 over the feather (smoothstep: no kink to show).
    t = np.clip(cv2.distanceTransform(inside, cv2.DIST_L2, 5) / feather, 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def match_histograms(image: np.ndarray, reference: np.ndarray,
                     where: np.ndarray) -> np.ndarray:
    """``image`` (uint8 RGB) with each channel's values remapped so that, on the pixels
    ``where`` is true, their distribution matches ``reference``'s there; uint8. Returned
    unchanged when ``where`` selects nothing."""
    if not np.any(where):
        return image.copy()
    out = np.empty_like(image)
    levels = np.arange(256)
    for c in range(image.shape[2]):
        src = np.bincount(image[..., c][where], minlength=256)
        ref = np.bincount(reference[..., c][where], minlength=256)
        # Each level present in the image goes to the reference level at its mid-quantile
        # (levels present in both, so the maps are strictly increasing); levels absent from
        # the masked image (pixels in the mask's soft edge) are interpolated between them.
        src_levels, ref_levels = np.flatnonzero(src), np.flatnonzero(ref)
        src_q = (np.cumsum(src[src_levels]) - src[src_levels] / 2) / src.sum()
        ref_q = (np.cumsum(ref[ref_levels]) - ref[ref_levels] / 2) / ref.sum()
        mapped = np.interp(src_q, ref_q, ref_levels)
        lut = np.interp(levels, src_levels, mapped)
        out[..., c] = np.round(lut).astype(np.uint8)[image[..., c]]
    return out


def unalign(aligned: np.ndarray, matrix: np.ndarray, source: np.ndarray, box: Box,
            landmarks: np.ndarray) -> np.ndarray:
    """The aligned face (size, size, 3) put back over ``box`` of the frame: ``source`` is the
    frame's RGB of ``box``, ``landmarks`` (68, 2) the face in frame pixels. Inverse warp, face
    hull mask, histograms matched to the source inside the hull; pixels outside the hull (and
    where the aligned square does not reach) are ``source``'s exactly."""
    back, coverage = from_aligned(np.asarray(aligned, np.float32), matrix, box)
    mask = hull_mask(landmarks, box) * np.clip(coverage, 0.0, 1.0)
    back = cv2.add(back, 0.0, dtype=cv2.CV_8U)
    back = match_histograms(back, source, mask >= 0.5)
    m = mask[..., None]
    mixed = source.astype(np.float32) + m * (back.astype(np.float32) - source)
    out = cv2.add(mixed, 0.0, dtype=cv2.CV_8U)
    cv2.copyTo(source, (mask <= 0).astype(np.uint8), out)  # exact outside the mask
    return out


def refuse_faceless(found: np.ndarray, source: str) -> None:
    """One-line ``RedubError`` when more than 40% of a range's frames (``found``: bool per
    frame of the range) have no face, as the public code stops."""
    found = np.asarray(found, bool)
    missing = int((~found).sum())
    if len(found) and missing / len(found) > MAX_FACELESS:
        raise RedubError(f"SieveSync needs the face on most frames: {missing} of {len(found)} "
                         f"frames of the range have none (over {MAX_FACELESS:.0%})", source)


def face_area_percent(landmarks: np.ndarray, width: int, height: int) -> float:
    """The faces' mean convex-hull area as a percentage of the frame, as the public code
    measures a video's face size (``landmarks`` (N, 68, 2))."""
    if not len(landmarks):
        return 0.0
    areas = [cv2.contourArea(cv2.convexHull(np.asarray(lm, np.float32))) for lm in landmarks]
    return float(np.mean(areas)) / (width * height) * 100.0


def aligned_landmarks(matrix: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """``landmarks`` (..., 2) frame pixels in the aligned picture's pixels."""
    return geo.apply(matrix, landmarks)
