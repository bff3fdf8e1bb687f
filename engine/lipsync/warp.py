"""Move a donor frame's lower face onto a target frame.

A similarity (through the canonical face both frames were fitted to) puts the donor's head on
the target's; a smooth local warp (a thin-plate spline) then bends the donor's jaw line and nose
onto the target's, so the edges of the pasted region meet the target's own face, while the
mouth keeps the donor's shape, which is the point of choosing that donor.
"""
from __future__ import annotations

import cv2
import numpy as np

from engine.face import geometry as geo
from engine.mask import CHIN_JAW, CHIN_WEIGHT, face_down, face_scale
from engine.media.frame import Frame, FramePart

# Points that take the target's position: the jaw line, nose and eyes. The mask ends at the
# target's jaw line, so a donor chin left lower than the target's would show below it as a
# second jaw. The mouth keeps the donor's shape.
ANCHORED = np.r_[0:17, 27:48]
# Chin points (engine.mask.CHIN_JAW, weighted by CHIN_WEIGHT: the chin itself, not the jaw's
# sides) left where the donor has them when that is higher than the target's (a closed mouth
# lent to an open jaw): pinned there, the skin between lip and chin would be stretched down to
# the target's chin and the shadow under the lower lip smeared along it. The blend then covers
# the target's own chin with the donor's neck (engine.mask.chin_cover). A chin rises at most
# CHIN_RISE face sizes (the rest of the way it is stretched): further up, a donor with its
# collar or its head pitched closer to the chin brings a dark band under the chin with it.
CHIN_RISE = 0.07
_GRID = 24  # the dense warp is solved on a coarse grid and interpolated


def donor_to_target(donor_transform: np.ndarray, target_transform: np.ndarray) -> np.ndarray:
    """2x3 affine taking donor-frame pixels to target-frame pixels via the canonical face."""
    inv_t = geo.invert(target_transform)
    lin = inv_t[:, :2] @ donor_transform[:, :2]
    return np.column_stack([lin, inv_t[:, :2] @ donor_transform[:, 2] + inv_t[:, 2]])


def warp_lower_face(donor: Frame | FramePart, donor_landmarks: np.ndarray,
                    donor_transform: np.ndarray, target_landmarks: np.ndarray,
                    target_transform: np.ndarray,
                    box: tuple[int, int, int, int],
                    face_box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The donor's face drawn into the target's ``box``, and its landmarks there (68, 2).

    ``donor`` is the donor frame, or the part of it that was kept (only the pixels the box
    maps to are converted to RGB); landmarks are in each frame's pixels. The local warp fades
    to nothing at the edge of ``face_box`` (the whole face crop), which must hold ``box``:
    solving it on the small box alone would fold the picture near its edges.
    """
    x0, y0, x1, y1 = box
    a = donor_to_target(donor_transform, target_transform)
    aligned = geo.apply(a, donor_landmarks)
    dest = aligned.copy()
    dest[ANCHORED] = target_landmarks[ANCHORED]
    down = face_down(target_transform)
    limit = CHIN_RISE * face_scale(target_landmarks)
    rise = np.clip((target_landmarks[CHIN_JAW] - aligned[CHIN_JAW]) @ down, 0.0, limit)
    dest[CHIN_JAW] -= (CHIN_WEIGHT * rise)[:, None] * down
    # Backward displacement (output point -> aligned donor point), zero on the crop's border.
    border = _border_points(face_box)
    ctrl = np.vstack([dest, border])
    disp = np.vstack([aligned - dest, np.zeros_like(border)])
    grid_x = np.linspace(x0, x1 - 1, _GRID)
    grid_y = np.linspace(y0, y1 - 1, _GRID)
    gx, gy = np.meshgrid(grid_x, grid_y)
    field = _thin_plate(ctrl, disp, np.column_stack([gx.ravel(), gy.ravel()]))
    w, h = x1 - x0, y1 - y0
    dx = cv2.resize(field[:, 0].reshape(_GRID, _GRID).astype(np.float32), (w, h),
                    interpolation=cv2.INTER_LINEAR)
    dy = cv2.resize(field[:, 1].reshape(_GRID, _GRID).astype(np.float32), (w, h),
                    interpolation=cv2.INTER_LINEAR)
    px, py = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    qx, qy = px + dx, py + dy
    inv = geo.invert(a)
    map_x = (inv[0, 0] * qx + inv[0, 1] * qy + inv[0, 2]).astype(np.float32)
    map_y = (inv[1, 0] * qx + inv[1, 1] * qy + inv[1, 2]).astype(np.float32)
    # Read only the donor pixels the maps reach (plus one for bilinear interpolation).
    dx0 = int(np.clip(np.floor(map_x.min()), 0, donor.width - 1))
    dy0 = int(np.clip(np.floor(map_y.min()), 0, donor.height - 1))
    dx1 = int(np.clip(np.ceil(map_x.max()) + 2, dx0 + 1, donor.width))
    dy1 = int(np.clip(np.ceil(map_y.max()) + 2, dy0 + 1, donor.height))
    source = donor.rgb_region(dx0, dy0, dx1, dy1)
    crop = cv2.remap(source, map_x - dx0, map_y - dy0, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)
    return crop, dest


def _border_points(box: tuple[int, int, int, int], per_side: int = 6) -> np.ndarray:
    x0, y0, x1, y1 = box
    t = np.linspace(0, 1, per_side, endpoint=False)
    xs, ys = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
    return np.vstack([np.column_stack([xs, np.full_like(xs, y0)]),
                      np.column_stack([np.full_like(ys, x1), ys]),
                      np.column_stack([x1 - t * (x1 - x0), np.full_like(xs, y1)]),
                      np.column_stack([np.full_like(ys, x0), y1 - t * (y1 - y0)])])


def _thin_plate(ctrl: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Thin-plate spline interpolation of ``values`` given at ``ctrl``, evaluated ``at``.

    The smoothest (least bending) field through the control values: between and beyond the
    landmarks it neither rings nor folds, where an interpolating Gaussian with a kernel much
    wider than the landmark spacing does (its weights blow up and swirl the chin and neck into
    a second jaw line). Coordinates are normalised so the system's conditioning does not depend
    on the frame's size; the small ridge term lets coincident points (a closed mouth's inner
    lips) share a value.
    """
    centre = ctrl.mean(0)
    size = max(float(np.abs(ctrl - centre).max()), 1e-9)
    p, q = (ctrl - centre) / size, (at - centre) / size

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return 0.5 * d2 * np.log(np.maximum(d2, 1e-12))  # r^2 log r

    n = len(p)
    affine = np.column_stack([np.ones(n), p])
    system = np.zeros((n + 3, n + 3))
    system[:n, :n] = kernel(p, p) + 1e-6 * np.eye(n)
    system[:n, n:], system[n:, :n] = affine, affine.T
    coef = np.linalg.solve(system, np.vstack([values, np.zeros((3, values.shape[1]))]))
    return kernel(q, p) @ coef[:n] + np.column_stack([np.ones(len(q)), q]) @ coef[n:]
