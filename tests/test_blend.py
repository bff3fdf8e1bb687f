"""Blending a generated crop into the original: untouched pixels exact, no seams."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.blend import alpha_blend, match_colors, match_mean, pyramid_blend, pyramid_levels
from engine.mask import MaskOverride, frame_mask, polygon_mask
from engine.media.reader import VideoReader
from tests.conftest import shared_clip
from tests.test_mask import canonical_face, posed

SIZES = [(256, 256), (255, 257), (37, 53), (5, 7), (300, 64)]


def textured(shape: tuple[int, int], seed: int, blur: float = 1.5) -> np.ndarray:
    """A natural-looking RGB crop: blurred noise over a smooth shading."""
    rng = np.random.default_rng(seed)
    h, w = shape
    noise = cv2.GaussianBlur(rng.normal(0, 40, (h, w, 3)).astype(np.float32), (0, 0), blur)
    shade = np.linspace(60, 190, w, dtype=np.float32)[None, :, None] * [1.0, 0.8, 0.7]
    return np.clip(noise + shade, 0, 255).astype(np.uint8)


def disk_mask(shape: tuple[int, int], radius: float, feather: float) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    h, w = shape
    poly = np.c_[(w - 1) / 2 + radius * np.cos(t), (h - 1) / 2 + radius * np.sin(t)]
    return polygon_mask(poly, shape, 0.0, feather)


@pytest.mark.parametrize("shape", SIZES)
@pytest.mark.parametrize("blend", [pyramid_blend, alpha_blend])
def test_unmasked_pixels_are_bit_identical(shape, blend):
    orig, gen = textured(shape, 1), textured(shape, 2)
    mask = disk_mask(shape, 0.35 * min(shape), 0.1 * min(shape))
    mask[: shape[0] // 3, : shape[1] // 3] = 0
    out = blend(orig, gen, mask)
    assert out.shape == orig.shape and out.dtype == np.uint8
    zero = mask == 0
    assert zero.any() and (mask > 0).any()
    np.testing.assert_array_equal(out[zero], orig[zero])
    assert not np.array_equal(out, orig)


@pytest.mark.parametrize("levels", range(1, 7))
def test_any_level_count_keeps_unmasked_pixels(levels):
    orig, gen = textured((131, 97), 3), textured((131, 97), 4)
    mask = disk_mask((131, 97), 40, 6)
    out = pyramid_blend(orig, gen, mask, levels=levels)
    np.testing.assert_array_equal(out[mask == 0], orig[mask == 0])


def test_level_count_follows_the_crop_size():
    assert [pyramid_levels((s, s)) for s in (8, 40, 128, 256, 300, 512, 4096)] == [1, 1, 3, 4, 4,
                                                                                  5, 6]
    assert pyramid_levels((512, 200, 3)) == 3


def test_inside_the_mask_comes_from_the_generated_crop():
    shape = (256, 256)
    orig, gen = textured(shape, 5, blur=4), textured(shape, 6, blur=4)
    mask = disk_mask(shape, 100, 12)
    core = disk_mask(shape, 100 - 40, 0) == 1  # 40 px in from the edge
    out = pyramid_blend(orig, gen, mask)
    err = np.abs(out.astype(int) - gen)[core]
    assert err.max() <= 2 and err.mean() < 0.5
    full = mask == 1
    np.testing.assert_array_equal(alpha_blend(orig, gen, mask)[full], gen[full])


@pytest.mark.parametrize("feather", [4.0, 8.0, 16.0])
def test_no_seam_on_a_brightness_step(feather):
    # Generated brighter than the original everywhere: the change must fade in, not step.
    shape = (256, 256)
    orig = np.full(shape + (3,), 80, np.uint8)
    gen = np.full(shape + (3,), 170, np.uint8)
    mask = disk_mask(shape, 80, feather)
    row = {}
    for blend in (alpha_blend, pyramid_blend):
        profile = blend(orig, gen, mask)[128, :, 0].astype(float)
        slope, bend = np.abs(np.diff(profile)).max(), np.abs(np.diff(profile, 2)).max()
        row[blend.__name__] = slope, bend
        assert profile[128] == 170 and profile[0] == 80
        assert (np.diff(profile[:128]) >= 0).all()
    (slope_a, bend_a), (slope_p, bend_p) = row["alpha_blend"], row["pyramid_blend"]
    assert slope_p < 0.75 * slope_a and bend_p <= bend_a


def test_match_colors_removes_a_cast_measured_around_the_mask():
    shape = (200, 220)
    orig = textured(shape, 7)
    cast = np.clip(orig * np.array([1.12, 0.92, 0.85]) + [8, 0, -6], 0, 255).astype(np.uint8)
    mask = disk_mask(shape, 60, 10)
    fixed = match_colors(cast, orig, mask)
    assert fixed.dtype == np.uint8 and fixed.shape == orig.shape
    before = np.abs(cast.astype(int) - orig).mean(axis=(0, 1))
    after = np.abs(fixed.astype(int) - orig).mean(axis=(0, 1))
    assert (after < 0.25 * before).all()
    # Around the mask's edge the two now agree in Lab, channel by channel.
    band = (mask > 0) & (mask < 1)
    lab = [cv2.cvtColor(img.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)[band] for img in
           (fixed, orig)]
    np.testing.assert_allclose(lab[0].mean(0), lab[1].mean(0), atol=1.0)
    np.testing.assert_allclose(lab[0].std(0), lab[1].std(0), rtol=0.1)
    # No ring to measure: nothing to go on, so nothing changes.
    np.testing.assert_array_equal(match_colors(cast, orig, np.zeros(shape, np.float32)), cast)


def test_bad_shapes_are_rejected():
    orig = textured((20, 20), 1)
    with pytest.raises(ValueError):
        pyramid_blend(orig, orig[:-1], np.ones((20, 20), np.float32))
    with pytest.raises(ValueError):
        alpha_blend(orig, orig, np.ones((20, 21), np.float32))


def test_real_frames_written_back_change_only_under_the_mask():
    # Frame 66's mouth (open) into frame 60 (closed) of a real clip, a hand excluded over one
    # mouth corner; the face is placed by hand where a landmarker finds it in frame 60.
    with VideoReader(shared_clip("hdtf_aoc_512.mp4")) as reader:
        target, source = reader.frame(60), reader.frame(66)
    lm, to_face, box = posed(119.0, 0.0, (289.0, 224.0))
    x0, y0 = box[:2]
    x1, y1 = min(box[2], target.width), min(box[3], target.height)
    box = (x0, y0, x1, y1)
    hand = MaskOverride(canonical_face()[48] + 0.18 * np.array([(-1, -1), (1, -1), (1, 1),
                                                                (-1, 1)]))
    mask = frame_mask(lm, box, to_face, overrides=[hand])
    orig = target.rgb()[y0:y1, x0:x1]
    gen = match_colors(source.rgb()[y0:y1, x0:x1], orig, mask)
    edited = target.with_region(x0, y0, pyramid_blend(orig, gen, mask), mask)
    untouched = np.ones((target.height, target.width), bool)
    untouched[y0:y1, x0:x1] = mask == 0
    luma_before, luma_after = target.planes[0], edited.planes[0]
    np.testing.assert_array_equal(luma_after[untouched], luma_before[untouched])
    hand_px = polygon_mask(hand.in_crop(to_face, box), mask.shape, 0.0, 0.0) > 0
    assert (mask[hand_px] == 0).all() and hand_px.sum() > 500
    mouth = np.abs(luma_after.astype(int) - luma_before)[y0:y1, x0:x1][mask == 1]
    assert mouth.mean() > 5  # the open mouth did arrive


def test_match_mean_removes_a_lighting_shift_measured_in_the_soft_edge():
    rng = np.random.default_rng(3)
    original = rng.integers(60, 190, (64, 64, 3), dtype=np.uint8)
    generated = np.clip(original.astype(int) + (12, -8, 5), 0, 255).astype(np.uint8)
    mask = np.zeros((64, 64), np.float32)
    mask[16:48, 16:48] = 1.0
    mask[12:16, 12:52] = mask[48:52, 12:52] = 0.5
    mask[12:52, 12:16] = mask[12:52, 48:52] = 0.5
    fixed = match_mean(generated, original, mask)
    assert np.abs(fixed.astype(int) - original.astype(int)).max() <= 1
