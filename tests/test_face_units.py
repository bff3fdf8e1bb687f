"""Face analysis building blocks on synthetic data: geometry, smoothing, pose, cuts, gaps."""
from __future__ import annotations

import numpy as np
import pytest

from engine.errors import UsageError
from engine.face import geometry as geo
from engine.face.analysis import AnalysisSettings, Flag, Target, describe
from engine.face.cuts import CutDetector
from engine.face.detect import create_detector, detection_scales, nms
from engine.face.landmark import create_landmarker
from engine.face.pixels import warp
from engine.face.pose import head_pose
from engine.face.smooth import one_euro, smooth

RATE = 25.0


def face(scale: float = 200.0, x: float = 100.0, y: float = 80.0, turn: float = 0.0) -> np.ndarray:
    """The canonical face placed in an image: ``scale`` pixels per canonical unit."""
    c, s = np.cos(turn), np.sin(turn)
    return geo.TEMPLATE_68 @ (scale * np.array([[c, s], [-s, c]])) + (x, y)


def test_similarity_fit_recovers_transform_and_inverts():
    points = face(180.0, 40.0, 60.0, turn=0.3)
    m = geo.to_canonical(points)
    assert np.allclose(geo.apply(m, points), geo.TEMPLATE_68, atol=1e-9)
    assert np.isclose(geo.scale_of(m), 1 / 180.0)
    back = geo.apply(geo.invert(m), geo.TEMPLATE_68)
    assert np.allclose(back, points, atol=1e-9)
    # Batched over frames, too.
    batch = np.stack([points, points + 5])
    assert geo.to_canonical(batch).shape == (2, 2, 3)


def test_template_five_points_match_alignment_template():
    assert np.abs(geo.five_points(geo.TEMPLATE_68) - geo.TEMPLATE_5).max() < 0.02
    mirrored = geo.TEMPLATE_68[geo.MIRROR] * (-1, 1) + (1, 0)
    assert np.abs(mirrored - geo.TEMPLATE_68).max() < 1e-9


def test_face_box_is_convention_free_and_iou():
    points = face(100.0, 10.0, 20.0)
    from_points = geo.face_box(geo.to_canonical(points))
    from_keypoints = geo.face_box(geo.five_to_canonical(geo.five_points(points)))
    assert geo.iou(from_points, from_keypoints)[0, 0] > 0.9
    assert geo.iou([0, 0, 10, 10], [[5, 0, 15, 10], [20, 20, 30, 30]]).round(3).tolist() == \
        [[0.333, 0.0]]


def test_one_euro_zero_phase_has_no_lag_at_constant_speed():
    t = np.arange(100)
    ramp = (3.0 * t)[:, None, None]
    forward = one_euro(ramp, RATE, 1.0, 0.0)
    assert forward[50, 0, 0] < ramp[50, 0, 0] - 3  # one direction alone trails
    both = smooth(ramp, RATE, 1.0, 0.0)
    assert np.abs(both - ramp)[20:80].max() < 0.1  # start-up transients only


def test_smoothing_removes_jitter_but_follows_steps():
    rng = np.random.default_rng(1)
    still = rng.normal(0, 1.0, (200, 1, 2))
    out = smooth(still, RATE, 1.0, 0.01)
    assert np.abs(np.diff(out, axis=0)).mean() < 0.2 * np.abs(np.diff(still, axis=0)).mean()
    step = np.where(np.arange(100) < 50, 0.0, 100.0)[:, None, None]
    out = smooth(step, RATE, 1.0, 0.01)
    assert out[45, 0, 0] < 10 and out[55, 0, 0] > 90  # fast moves pass nearly untouched


def test_pose_signs():
    frontal = face(200, 200, 150)
    turned = frontal.copy()
    turned[27:36, 0] += 15  # nose towards the image's right
    raised = frontal.copy()
    raised[27:36, 1] -= 12  # nose nearer the eyes: chin up
    tilted = face(200, 200, 150, turn=np.radians(15))
    yaw, pitch, roll = head_pose(np.stack([frontal, turned, raised, tilted]), 600, 600).T
    assert abs(yaw[0]) < 3 and abs(pitch[0]) < 3 and abs(roll[0]) < 3
    assert yaw[1] > 10
    assert pitch[2] > 5
    assert 10 < roll[3] < 20
    mirrored = turned[geo.MIRROR] * (-1, 1) + (600, 0)
    assert head_pose(mirrored[None], 600, 600)[0, 0] == pytest.approx(-yaw[1], abs=1)
    assert np.isnan(head_pose(np.full((1, 68, 2), np.nan), 600, 600)).all()


def test_cut_detector_fires_on_cuts_only():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 255, (90, 160), np.uint8)
    b = 255 - a
    cuts = CutDetector()
    seq = [np.clip(a.astype(int) + k, 0, 255).astype(np.uint8) for k in range(10)] + [b] * 5
    flags = [cuts.update(x) for x in seq]
    assert flags == [False] * 10 + [True] + [False] * 4


def test_gaps_inside_a_shot_are_interpolated_and_cuts_split():
    n = 40
    raw = np.repeat(face(150, 100, 100)[None], n, 0) + np.arange(n)[:, None, None] * (2.0, 0)
    raw[10:13] = np.nan  # a short gap inside a shot: filled
    raw[20:30] = np.nan  # a long gap: passed through
    raw[33:35] = np.nan  # short, but a cut lies in it
    cuts = np.zeros(n, bool)
    cuts[34] = True
    out = describe(raw, np.ones(n), np.ones(n, bool), cuts, np.arange(n) / RATE, 640, 360,
                   RATE, AnalysisSettings())
    flags = out["flags"]
    assert all(flags[10:13] & Flag.INTERPOLATED) and not any(flags[10:13] & Flag.NOT_FOUND)
    assert np.abs(out["landmarks"][11] - (raw[9] + raw[13]) / 2).max() < 1.0
    assert all(flags[20:30] & Flag.NOT_FOUND) and np.isnan(out["landmarks"][20:30]).all()
    assert all(flags[33:35] & Flag.NOT_FOUND) and flags[34] & Flag.SHOT_START
    assert not any(flags[:10] & Flag.NOT_FOUND)
    crop = out["crop_boxes"][~np.isnan(out["crop_boxes"][:, 0])]
    assert np.allclose(crop[:, 2] - crop[:, 0], crop[:, 3] - crop[:, 1])  # square
    assert (crop[:, :2] >= -1e-3).all() and (crop[:, 2] <= 640 + 1e-3).all() and \
        (crop[:, 3] <= 360 + 1e-3).all()


def test_flags_tiny_and_profile():
    n = 10
    small = np.repeat(face(40, 50, 50)[None], n, 0)  # face box about 30 px
    out = describe(small, np.ones(n), np.ones(n, bool), np.zeros(n, bool), np.arange(n) / RATE,
                   320, 240, RATE, AnalysisSettings())
    assert all(out["flags"] & Flag.TINY)
    profile = np.repeat(face(200, 100, 50)[None], n, 0)
    profile[:, 27:36, 0] += 60
    out = describe(profile, np.ones(n), np.ones(n, bool), np.zeros(n, bool),
                   np.arange(n) / RATE, 640, 480, RATE, AnalysisSettings())
    assert all(out["flags"] & Flag.PROFILE)


def test_target_parsing():
    assert Target.parse("320,180@2.5", 25) == Target(320.0, 180.0, 2.5)
    assert Target.parse("10.5, 20 @ 50f", 25) == Target(10.5, 20.0, 2.0)
    for bad in ("320x180@2", "320,180", "a,b@1"):
        with pytest.raises(UsageError):
            Target.parse(bad, 25)


def test_registries_name_the_choices():
    with pytest.raises(UsageError, match="dlib"):
        create_detector("nope")
    with pytest.raises(UsageError, match="2d106"):
        create_landmarker("nope")


def test_nms_and_detection_scales():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), 0.4).tolist() == [0, 2]

    class Fake:
        min_face, work_size = 80, 320

    assert detection_scales(Fake, 1920, 1080, 40) == [1 / 6, 1 / 3, 2 / 3, 4 / 3, 2.0]
    assert detection_scales(Fake, 320, 240, 80) == [1.0]
    assert detection_scales(Fake, 7680, 4320, 40)[-1] == pytest.approx(0.5)  # pixels capped


def _integer_bilinear(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The crop ``warp`` must give: positions rounded to 1/32 pixel, weights in 32nds, halves
    rounded up, black outside the image."""
    inverse = geo.invert(np.asarray(matrix, np.float64))
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    at = [np.rint((inverse[k, 0] * u + inverse[k, 1] * v + inverse[k, 2]) * 32).astype(np.int64)
          for k in (0, 1)]
    x, y = (a >> 5 for a in at)
    fx, fy = (a & 31 for a in at)
    h, w = image.shape[:2]
    padded = np.zeros((h + 2, w + 2) + image.shape[2:], np.int64)
    padded[1:-1, 1:-1] = image

    def pixel(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return padded[np.clip(yy + 1, 0, h + 1), np.clip(xx + 1, 0, w + 1)]

    if image.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    total = (pixel(y, x) * (32 - fx) * (32 - fy) + pixel(y, x + 1) * fx * (32 - fy)
             + pixel(y + 1, x) * (32 - fx) * fy + pixel(y + 1, x + 1) * fx * fy)
    return ((total + 512) >> 10).astype(np.uint8)


def test_crop_warp_is_exact_integer_bilinear():
    # The tracker's crops must not depend on the OpenCV build: on a fast-moving face one pixel
    # rounded the other way changes the landmarks, and warpAffine changed exactly that in
    # OpenCV 5.1 (IPP rounds some half-way values down). A change in cv2.remap's fixed-point
    # path fails here.
    rng = np.random.default_rng(7)
    grey = rng.integers(0, 256, (90, 120), dtype=np.uint8)
    for image in (grey, rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)):
        for scale, turn, shift in [(1.0, 0.0, (0.5, 0.25)), (1.37, 0.3, (-20.3, 5.7)),
                                   (0.6, -1.1, (40.1, 60.9)), (2.2, 2.5, (150.0, -30.0))]:
            c, s = scale * np.cos(turn), scale * np.sin(turn)
            matrix = np.array([[c, -s, shift[0]], [s, c, shift[1]]])
            assert np.array_equal(warp(image, matrix, 64), _integer_bilinear(image, matrix, 64))
    # Half-way between two levels rounds up, and nothing outside the picture leaks in.
    stripes = np.tile(np.array([10, 11], np.uint8), (8, 8))
    crop = warp(stripes, np.array([[1.0, 0.0, -0.5], [0.0, 1.0, 0.0]]), 16)
    assert (crop[:8, :15] == 11).all() and (crop[8:] == 0).all()
