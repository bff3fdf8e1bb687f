"""Pictures for analysis: grey straight from the decoder's luma plane, RGB only when asked.

Converting every frame to RGB costs more than tracking a face on it, and the embedded backend
works on grey anyway; luma is grey up to the matrix's small weighting differences.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from engine.media.frame import Frame

_RANGE_LIMITED = 1
# Studio-swing luma (16-235) stretched to full range, as RGB conversion would.
_EXPAND_8 = np.clip((np.arange(256) - 16) * 255.0 / 219.0 + 0.5, 0, 255).astype(np.uint8)
# Crops sample the image at 1/32 pixel, OpenCV's fixed-point remap resolution.
_SUBPIXEL_BITS = 5


def gray(frame: Frame) -> np.ndarray:
    """Full-range 8-bit grey (H, W) of an upright frame."""
    luma = frame.planes[0]
    planar_yuv = frame.pix_fmt.startswith(("yuv", "nv", "gray"))
    if planar_yuv and luma.ndim == 2 and luma.shape == (frame.height, frame.width):
        limited = frame.color.effective_range(frame.pix_fmt) == _RANGE_LIMITED
        if luma.dtype == np.uint8:
            return cv2.LUT(luma, _EXPAND_8) if limited else luma
        if not frame.pix_fmt.startswith("p0"):  # LSB-aligned high bit depth
            shift = frame.bit_depth - 8
            if limited:
                lo, span = 16 << shift, 219 << shift
                out = (luma.astype(np.float32) - lo) * (255.0 / span)
                return np.clip(out + 0.5, 0, 255).astype(np.uint8)
            return (luma >> shift).astype(np.uint8)
    return cv2.cvtColor(frame.rgb(), cv2.COLOR_RGB2GRAY)


class Picture:
    """One frame's pixels for analysis; each form is computed on first use, then kept."""

    def __init__(self, frame: Frame) -> None:
        self.frame = frame
        self._gray: np.ndarray | None = None

    def gray(self) -> np.ndarray:
        if self._gray is None:
            self._gray = gray(self.frame)
        return self._gray

    def get(self, color: bool) -> np.ndarray:
        """RGB (H, W, 3) when ``color``, else grey (H, W)."""
        return self.frame.rgb() if color else self.gray()


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` x ``size`` picture that affine ``matrix`` (image -> crop) maps the image to.

    Outside the image is black. Strong reductions first shrink the needed region with area
    averaging, so crops of faces far larger than the crop do not alias.

    Sampling is bilinear in integer arithmetic (positions in 1/32 pixel, halves rounded up), so
    the crop is the same on every OpenCV build and CPU. ``cv2.warpAffine`` does not promise
    that: OpenCV 5.1 hands it to IPP, which rounds some half-way values the other way, and the
    landmarker's output on a fast-moving face can hinge on one such pixel.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    factor = int(1.0 / scale) if scale < 0.5 else 1
    if factor > 1:
        inverse = cv2.invertAffineTransform(matrix)
        corners = np.array([(0, 0, 1), (size, 0, 1), (size, size, 1), (0, size, 1)], float)
        region = corners @ inverse.T
        h, w = image.shape[:2]
        x0, y0 = (max(0, int(np.floor(v)) - factor) for v in region.min(0))
        x1, y1 = (int(np.ceil(v)) + factor for v in region.max(0))
        x1, y1 = min(w, x1), min(h, y1)
        if x1 - x0 >= factor and y1 - y0 >= factor:
            part = image[y0:y1, x0:x1]
            small = cv2.resize(part, ((x1 - x0) // factor, (y1 - y0) // factor),
                               interpolation=cv2.INTER_AREA)
            # Pixel (u, v) of the reduced region covers source pixels factor*u .. factor*u+f-1.
            sx, sy = (x1 - x0) / small.shape[1], (y1 - y0) / small.shape[0]
            to_small = np.array([[sx, 0, x0 + (sx - 1) / 2], [0, sy, y0 + (sy - 1) / 2]])
            matrix = np.hstack([matrix[:, :2] @ to_small[:, :2],
                                (matrix[:, :2] @ to_small[:, 2] + matrix[:, 2])[:, None]])
            image = small
    whole, fraction = _fixed_point_maps(cv2.invertAffineTransform(matrix), size)
    return cv2.remap(image, whole, fraction, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=0)


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    return u, v


def _fixed_point_maps(inverse: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap``'s fixed-point maps of crop pixels to image positions through ``inverse``:
    whole pixels (int16 x, y) and the 1/32 fractions (uint16, y * 32 + x)."""
    u, v = _grid(size)
    limit = 32767 << _SUBPIXEL_BITS  # int16 whole pixels
    at = [np.clip(np.rint((inverse[k, 0] * u + inverse[k, 1] * v + inverse[k, 2])
                          * (1 << _SUBPIXEL_BITS)), -limit, limit).astype(np.int32)
          for k in (0, 1)]
    mask = (1 << _SUBPIXEL_BITS) - 1
    whole = np.dstack([a >> _SUBPIXEL_BITS for a in at]).astype(np.int16)
    fraction = ((at[1] & mask) << _SUBPIXEL_BITS | (at[0] & mask)).astype(np.uint16)
    return whole, fraction
