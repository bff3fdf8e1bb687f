"""Face masks from 68-point landmarks, and user overrides that follow the head."""
from __future__ import annotations

import numpy as np
import pytest

from engine.errors import UsageError
from engine.mask import (MaskOverride, MaskSettings, face_scale, frame_mask, landmark_mask,
                         polygon_mask)


def canonical_face() -> np.ndarray:
    """A frontal 68-point face (iBUG 300-W order) in inter-ocular units, eyes' midpoint at 0.

    Built from simple curves fitted by eye to the mean of a landmarker's output on the shared
    clips: jaw from ear to ear with the chin 1.8 below the eyes, nose base 0.7 below, mouth
    centred 1.13 below, lips slightly apart.
    """
    pts = np.zeros((68, 2))
    t = np.linspace(np.pi, 0, 17)
    c, s = np.cos(t), np.sin(t)
    pts[0:17] = np.c_[1.2 * np.sign(c) * np.abs(c) ** 0.8, 0.05 + 1.82 * s ** 1.3]
    u = np.linspace(0, 1, 5)
    pts[17:22] = np.c_[-0.95 + 0.77 * u, -0.25 - 0.2 * np.sin(0.9 * np.pi * u)]
    pts[22:27] = pts[21:16:-1] * [-1, 1]
    pts[27:31] = np.c_[np.zeros(4), np.linspace(-0.05, 0.5, 4)]
    pts[31:36] = np.c_[np.linspace(-0.21, 0.21, 5), [0.66, 0.7, 0.73, 0.7, 0.66]]
    a = np.array([np.pi, 2 * np.pi / 3, np.pi / 3, 0, -np.pi / 3, -2 * np.pi / 3])
    eye = np.c_[0.19 * np.cos(a), -0.07 * np.sin(a)]
    pts[36:42] = eye + [-0.5, 0]
    pts[42:48] = eye + [0.5, 0]
    a = np.pi - np.arange(12) * np.pi / 6  # outer lips: left corner, over the top, back under
    pts[48:60] = np.c_[0.4 * np.cos(a), -np.sin(a) * np.where(np.sin(a) > 0, 0.16, 0.2)]
    pts[48:60] += [0, 1.13]
    a = np.pi - np.arange(8) * np.pi / 4
    pts[60:68] = np.c_[0.31 * np.cos(a), -0.04 * np.sin(a)] + [0, 1.13]
    return pts


def posed(scale: float, angle: float, eyes_at: tuple[float, float]):
    """Landmarks (frame pixels), ``to_face`` and a square even-aligned crop box of a face.

    The canonical face here is :func:`canonical_face`'s frame (any similarity would do).
    """
    rad = np.deg2rad(angle)
    lin = scale * np.array([[np.cos(rad), -np.sin(rad)], [np.sin(rad), np.cos(rad)]])
    pose = np.hstack([lin, np.array(eyes_at, float)[:, None]])  # face -> frame
    landmarks = canonical_face() @ lin.T + pose[:, 2]
    inv = np.linalg.inv(lin)
    to_face = np.hstack([inv, -(inv @ pose[:, 2])[:, None]])
    cx, cy = landmarks[[8, 27]].mean(0)
    half = int(round(1.6 * scale))
    x0, y0 = int(cx - half) // 2 * 2, int(cy - half) // 2 * 2
    return landmarks, to_face, (x0, y0, x0 + 2 * half, y0 + 2 * half)


POSES = [(60.0, 0.0, (200.0, 150.0)), (90.0, 15.0, (400.5, 300.25)),
         (35.0, -25.0, (120.3, 90.7)), (120.0, 180.0, (600.0, 500.0))]


def to_frame(to_face: np.ndarray, point) -> np.ndarray:
    """A canonical face point in frame pixels."""
    return np.linalg.solve(to_face[:, :2], np.asarray(point, float) - to_face[:, 2])


def at(mask: np.ndarray, box, point) -> float:
    """Mask value at the pixel nearest a frame point."""
    x, y = np.rint(np.asarray(point) - box[:2]).astype(int)
    return float(mask[y, x])


@pytest.mark.parametrize("pose", POSES)
def test_lower_face_covers_mouth_and_chin_not_eyes(pose):
    lm, _, box = posed(*pose)
    mask = landmark_mask(lm, box)
    assert mask.shape == (box[3] - box[1], box[2] - box[0]) and mask.dtype == np.float32
    assert mask.min() == 0 and mask.max() == 1
    chin = lm[57] + 0.7 * (lm[8] - lm[57])
    cheeks = [lm[48] + 0.5 * (lm[4] - lm[48]), lm[54] + 0.5 * (lm[12] - lm[54])]
    for point in [lm[48:68].mean(0), lm[48], lm[54], lm[51], lm[57], chin, *cheeks]:
        assert at(mask, box, point) == 1
    for point in [*lm[17:31], *lm[36:48]]:  # brows, nose bridge, eyes
        assert at(mask, box, point) == 0


@pytest.mark.parametrize("pose", POSES)
def test_lips_mask_covers_lips_only_and_lies_inside_lower_face(pose):
    lm, _, box = posed(*pose)
    lips = landmark_mask(lm, box, MaskSettings(kind="lips"))
    lower = landmark_mask(lm, box)
    assert ((lips > 0) <= (lower > 0)).all()
    for point in [*lm[48:68], lm[48:68].mean(0)]:
        assert at(lips, box, point) == 1
    for point in [lm[8], lm[33], *lm[36:48]]:  # chin, nose base, eyes
        assert at(lips, box, point) == 0
    assert lips.sum() < 0.5 * lower.sum()


def test_feather_is_monotone_and_has_the_set_width():
    lm, _, box = posed(80.0, 0.0, (300.0, 200.0))
    mask = landmark_mask(lm, box, MaskSettings(dilation=0.05, feather=0.2))
    i0, j0 = np.rint(lm[48:68].mean(0)[::-1] - box[1::-1]).astype(int)
    # Whole-pixel walks from the mouth's centre in eight directions: never rising.
    for di, dj in [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)]:
        n = min(i0 if di < 0 else mask.shape[0] - 1 - i0 if di else 10**9,
                j0 if dj < 0 else mask.shape[1] - 1 - j0 if dj else 10**9)
        profile = mask[i0 + di * np.arange(n), j0 + dj * np.arange(n)]
        assert profile[0] == 1 and profile[-1] == 0 and (np.diff(profile) <= 0).all()
    # Straight down through the chin the walk crosses the edge along its normal.
    down = mask[i0:, j0]
    ramp = np.count_nonzero((down > 0) & (down < 1))
    assert ramp == pytest.approx(0.2 * face_scale(lm), abs=1.5)


def test_mask_scales_with_the_face_and_follows_the_box():
    lm, _, box = posed(50.0, 0.0, (200.0, 150.0))
    big, _, big_box = posed(100.0, 0.0, (400.0, 300.0))
    assert landmark_mask(big, big_box).sum() == pytest.approx(4 * landmark_mask(lm, box).sum(),
                                                              rel=0.02)
    # The same face seen in a box moved by (6, -4) gives the same mask, moved.
    moved = (box[0] + 6, box[1] - 4, box[2] + 6, box[3] - 4)
    a, b = landmark_mask(lm, box), landmark_mask(lm, moved)
    np.testing.assert_allclose(b[4:, :-6], a[:-4, 6:], atol=1e-5)


def test_subpixel_motion_moves_the_edge_smoothly():
    # A rasterised outline would jump by whole pixels; the exact distance moves with the face.
    lm, _, box = posed(70.0, 5.0, (250.0, 180.0))
    feather = 0.15 * face_scale(lm)
    a = landmark_mask(lm, box)
    b = landmark_mask(lm + [0.1, 0.0], box)
    change = np.abs(b - a).max()
    assert 0 < change <= 0.1 * 1.5 / feather + 1e-4  # smoothstep's steepest slope is 1.5 / width


def test_edge_is_zero_on_the_crop_border():
    lm, to_face, box = posed(60.0, 0.0, (200.0, 150.0))
    tight = (box[0] + 40, box[1] + 60, box[2] - 40, box[3] - 10)  # cuts through the jaw
    mask = frame_mask(lm, tight, to_face)
    assert mask[0].max() == mask[-1].max() == mask[:, 0].max() == mask[:, -1].max() == 0
    assert mask.max() == 1


def _square(centre, half):
    return np.asarray(centre) + half * np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)])


def test_override_drawn_on_one_frame_follows_the_head():
    lm_a, face_a, box_a = posed(60.0, 0.0, (200.0, 150.0))
    # Drawn in frame A's pixels around the right mouth corner ...
    drawn = MaskOverride.from_frame(_square(lm_a[54], 8.0), face_a, "replace")
    for pose in POSES[1:]:
        lm_b, face_b, box_b = posed(*pose)
        mask = frame_mask(lm_b, box_b, face_b, overrides=[drawn])
        # ... lands on frame B's right mouth corner, at frame B's size.
        ys, xs = np.nonzero(mask)
        centroid = np.average(np.c_[xs, ys], axis=0, weights=mask[ys, xs]) + box_b[:2]
        assert np.linalg.norm(centroid - lm_b[54]) < 0.5
        assert at(mask, box_b, lm_b[54]) == 1 and at(mask, box_b, lm_b[48]) == 0
        area = (mask == 1).sum()
        assert area == pytest.approx((16.0 * pose[0] / 60.0) ** 2, rel=0.25)


def test_exclude_keeps_the_drawn_region_whole():
    lm, to_face, box = posed(80.0, 12.0, (300.0, 220.0))
    hand = MaskOverride(_square(canonical_face()[57], 0.2))  # exclude is the default mode
    base = frame_mask(lm, box, to_face)
    mask = frame_mask(lm, box, to_face, overrides=[hand])
    poly = hand.in_crop(to_face, box)
    inside = polygon_mask(poly, mask.shape, 0.0, 0.0) > 0
    assert inside.sum() > 100
    assert (mask[inside] == 0).all()
    assert base[inside].min() == 1  # it was in the mask before
    far = polygon_mask(poly, mask.shape, 0.15 * face_scale(lm) + 1, 0.0) == 0
    np.testing.assert_array_equal(mask[far], base[far])


def test_add_and_replace():
    lm, to_face, box = posed(60.0, 0.0, (200.0, 150.0))
    forehead = _square((0.0, -0.4), 0.12)
    added = frame_mask(lm, box, to_face, overrides=[MaskOverride(forehead, "add")])
    replaced = frame_mask(lm, box, to_face, overrides=[MaskOverride(forehead, "replace")])
    top = to_frame(to_face, (0.0, -0.4))
    mouth = lm[48:68].mean(0)
    assert at(added, box, top) == 1 and at(added, box, mouth) == 1
    assert at(replaced, box, top) == 1 and at(replaced, box, mouth) == 0


def test_bad_settings_are_usage_errors():
    with pytest.raises(UsageError):
        MaskSettings(kind="eyes")
    with pytest.raises(UsageError):
        MaskSettings(feather=-1)
    with pytest.raises(UsageError):
        MaskOverride(np.zeros((2, 2)))
    with pytest.raises(UsageError):
        MaskOverride(_square((0, 0), 1), "invert")
