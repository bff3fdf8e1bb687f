"""Blending a generated face crop into the original crop under a soft mask.

All functions take and return 8-bit RGB crops (h, w, 3) of the same shape, with a float mask
(h, w) in [0, 1] such as :func:`engine.mask.frame_mask` gives. Pixels where the mask is exactly 0
come back bit-identical to the original, so ``Frame.with_region(x, y, crop, mask)`` leaves them
untouched in the native planes too.
"""
from __future__ import annotations

import cv2
import numpy as np

# Crops are blended down to pyramid levels of about this many pixels: coarser bands would carry
# colour from beyond the mask's reach into the mouth and wash out what the model drew.
_COARSEST_SIDE = 16
_MAX_LEVELS = 6
# Colour statistics from fewer ring pixels than this are noise.
_MIN_RING_PIXELS = 64


def pyramid_levels(shape: tuple[int, ...]) -> int:
    """Number of band-pass levels for a crop of this shape (4 for 256x256)."""
    side = min(shape[:2])
    return int(np.clip(np.floor(np.log2(max(side, 1) / _COARSEST_SIDE)), 1, _MAX_LEVELS))


def pyramid_blend(original: np.ndarray, generated: np.ndarray, mask: np.ndarray,
                  levels: int | None = None) -> np.ndarray:
    """Multi-band (Laplacian pyramid) blend of ``generated`` into ``original`` under ``mask``.

    Each frequency band is mixed with the mask blurred to that band's scale, so coarse
    differences (shading, colour) fade over a wide zone and fine detail over a narrow one: no
    seam line. The bands' blurred masks reach past the mask's support, and simply cutting the
    change off there leaves a step steeper than plain alpha's; so the band-blended change is
    multiplied by the mask itself, which takes it smoothly to 0 at the support's edge. The
    transition thus sits a little further in than alpha's (about a third of the change where
    the mask is 0.5), and a hard mask keeps a hard edge: nothing may change outside it.
    ``levels`` defaults to :func:`pyramid_levels`.
    """
    _check(original, generated, mask)
    m = np.ascontiguousarray(mask, dtype=np.float32)
    base = original.astype(np.float32)
    n = pyramid_levels(m.shape) if levels is None else levels
    if n < 0:
        raise ValueError(f"negative pyramid level count {n}")
    # Blending the difference (linear, same result) keeps the unmasked pixels' arithmetic exact.
    diffs = [cv2.subtract(generated, original, dtype=cv2.CV_32F)]
    masks = [m]
    for _ in range(n):
        diffs.append(cv2.pyrDown(diffs[-1]))
        masks.append(cv2.pyrDown(masks[-1]))
    change = diffs[n] * masks[n][..., None]
    for lv in range(n - 1, -1, -1):
        size = diffs[lv].shape[1::-1]
        band = diffs[lv] - cv2.pyrUp(diffs[lv + 1], dstsize=size)
        change = cv2.pyrUp(change, dstsize=size) + band * masks[lv][..., None]
    return _finish(original, base + change * m[..., None], m)


def alpha_blend(original: np.ndarray, generated: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Plain per-pixel mix: the cheap fallback (and the preview while scrubbing)."""
    _check(original, generated, mask)
    m = np.asarray(mask, dtype=np.float32)[..., None]
    diff = cv2.subtract(generated, original, dtype=cv2.CV_32F)
    return _finish(original, original.astype(np.float32) + diff * m, m[..., 0])


def match_colors(generated: np.ndarray, original: np.ndarray, mask: np.ndarray,
                 ring: float | None = None) -> np.ndarray:
    """``generated`` recoloured so its Lab mean and spread match ``original`` around the mask.

    Statistics come from a ring of ``ring`` pixels (default 5% of the crop's side) on either
    side of the mask's half-way contour: skin both crops should agree on, away from the mouth
    the model redraws. Returned unchanged when the ring is too small to measure.
    """
    _check(original, generated, mask)
    width = ring if ring is not None else max(2.0, 0.05 * min(mask.shape))
    inside = (np.asarray(mask) >= 0.5).astype(np.uint8)
    # Distance to the other side of the half-way contour, for pixels on either side of it.
    to_edge = np.where(inside, cv2.distanceTransform(inside, cv2.DIST_L2, 3),
                       cv2.distanceTransform(1 - inside, cv2.DIST_L2, 3))
    sel = (to_edge <= width).astype(np.uint8)
    if np.count_nonzero(sel) < _MIN_RING_PIXELS:
        return generated.copy()
    gen = cv2.cvtColor(generated.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    ref = cv2.cvtColor(original.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    mu_g, sd_g = (v.ravel().astype(np.float32) for v in cv2.meanStdDev(gen, mask=sel))
    mu_o, sd_o = (v.ravel().astype(np.float32) for v in cv2.meanStdDev(ref, mask=sel))
    # Bounded gain: a flat ring (a shadow, a beard) must not blow up the mouth's contrast.
    gain = np.clip(sd_o / np.maximum(sd_g, 1e-3), 0.5, 2.0).astype(np.float32)
    recoloured = (gen - mu_g) * gain + mu_o
    rgb = cv2.cvtColor(recoloured.astype(np.float32), cv2.COLOR_Lab2RGB) * 255
    return cv2.add(rgb, 0.0, dtype=cv2.CV_8U)


def match_mean(generated: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``generated`` shifted so its mean colour matches ``original`` in the mask's soft edge.

    A lighting shift only, for generated crops that are real footage of the same face (their
    contrast is already right): the soft edge is where both pictures show the same skin and
    where a difference would show as a seam. Much cheaper than :func:`match_colors`.
    """
    _check(original, generated, mask)
    edge = ((mask > 0.02) & (mask < 0.98)).astype(np.uint8)
    if np.count_nonzero(edge) < _MIN_RING_PIXELS:
        return generated.copy()
    shift = (np.array(cv2.mean(original, mask=edge)[:3], np.float32)
             - np.array(cv2.mean(generated, mask=edge)[:3], np.float32))
    return cv2.add(generated.astype(np.float32), (*map(float, shift), 0.0), dtype=cv2.CV_8U)


def _finish(original: np.ndarray, blended: np.ndarray, mask: np.ndarray) -> np.ndarray:
    # Saturating round-to-nearest in one pass (numpy's clip/rint/astype takes ten times longer).
    out = cv2.add(blended, 0.0, dtype=cv2.CV_8U)
    # Guaranteed, not merely approximate: untouched pixels stay bit-identical.
    cv2.copyTo(original, (mask <= 0).astype(np.uint8), out)
    return out


def _check(original: np.ndarray, generated: np.ndarray, mask: np.ndarray) -> None:
    if original.ndim != 3 or original.shape[2] != 3 or original.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit RGB crop, got {original.dtype} {original.shape}")
    if generated.shape != original.shape or generated.dtype != np.uint8:
        raise ValueError(f"generated crop {generated.dtype} {generated.shape} does not match "
                         f"the original {original.shape}")
    if mask.shape != original.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match the crop {original.shape[:2]}")
