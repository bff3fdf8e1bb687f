"""The face-parsing blend mask: MuseTalk v1.5's "jaw" mask from a BiSeNet parsing of the face.

Unlike the landmark masks it follows the skin the network sees: the jaw line where it really
is, the nose left out. Built as MuseTalk's inference builds it (``blending.get_image`` with
``mode="jaw"``):

1. a square crop around MuseTalk's face box (``engine.lipsync.musetalk.crop_boxes``), 1.5
   times its larger side (:func:`crop_box`), black outside the frame, resized to 512x512 the way Pillow's bilinear
   resize does (with its antialiasing when shrinking), parsed into 19 CelebAMask-HQ classes;
2. :func:`jaw_mask`: the skin grown by a cone-shaped kernel (mostly upwards, a narrow tongue
   down over the jaw line), thinned sideways on the cheeks, the nose taken out, the lips and
   mouth put in;
3. back to the crop's size (Pillow's default bicubic), kept inside the face box and below the
   crop's middle row, blurred by a Gaussian a twentieth of the crop wide.

The resizes are Pillow's fixed-point arithmetic redone in numpy (Pillow is not a dependency),
so the mask matches the reference's to the byte.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from engine.media.frame import Frame
from engine.models.session import session_for
from engine.models.store import model_path

MODEL_ID = "face_parsing_bisenet"
SIZE = 512  # the network's input side
EXPAND = 1.5  # crop side over the face box's larger side
UPPER_BOUNDARY = 0.5  # the mask is cut above this fraction of the crop's height
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
# CelebAMask-HQ classes of the face-parsing model.
SKIN, NOSE = 1, 10
MOUTH = (11, 12, 13)  # inside of the mouth, upper lip, lower lip
# Columns further than this from the middle are cheeks (at 512 px): 90 as every v1.5 entry
# point passes it (inference.py's --left/right_cheek_width), not FaceParsing's default 80.
CHEEK_WIDTH = 90

Box = tuple[int, int, int, int]


def _cone_kernel(cone: int = 21, tail: int = 12) -> np.ndarray:
    """The jaw dilation kernel: a widening cone in the lower half of its top part, then a band
    as wide as the cone's base. Its anchor is the centre, so (at the default sizes) a skin
    pixel spreads 16 rows up and 10 columns to each side, and 6 rows down in a narrowing
    point: the mask climbs over the cheeks and reaches a little below the jaw line."""
    side = cone + tail
    centre = side // 2
    kernel = np.zeros((side, side), np.uint8)
    for row in range(cone // 2, cone):
        half = row - cone // 2
        kernel[row, centre - half:centre + half + 1] = 1
    base = int(kernel[cone - 1].sum()) // 2
    kernel[cone:, max(centre - base, 0):centre + base + 1] = 1
    return kernel


_KERNEL = _cone_kernel()
_CHEEK_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (35, 3))
_CHEEKS = np.zeros(SIZE, bool)
_CHEEKS[:SIZE // 2 - CHEEK_WIDTH + 1] = True  # both ends inclusive, as cv2.rectangle draws
_CHEEKS[SIZE // 2 + CHEEK_WIDTH:] = True


def crop_box(face: Box) -> tuple[Box, int]:
    """The square parsing crop around ``face`` and its half side (``blending.get_crop_box``)."""
    x0, y0, x1, y1 = face
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    s = int(max(x1 - x0, y1 - y0) // 2 * EXPAND)
    return (cx - s, cy - s, cx + s, cy + s), s


def mask_extent(face: Box) -> Box:
    """The frame rectangle outside which the mask of ``face`` is 0 (for the blend region)."""
    (cx0, cy0, cx1, _), s = crop_box(face)
    reach = _blur_size(2 * s) // 2 + 1
    return (face[0] - reach, cy0 + int(2 * s * UPPER_BOUNDARY) - reach, face[2] + reach,
            face[3] + reach)


def jaw_mask(labels: np.ndarray) -> np.ndarray:
    """MuseTalk's "jaw" mode on a (512, 512) class map: uint8, 255 inside, 0 outside.

    The skin dilated by the cone kernel; on the cheeks that is eroded sideways (twice by a
    35x3 ellipse) so the mask stays off the face's sides; nose pixels are dropped and lips and
    mouth added whatever the dilation reached.
    """
    skin = np.where(labels == SKIN, np.uint8(255), np.uint8(0))
    grown = cv2.dilate(skin, _KERNEL, iterations=1)
    thinned = cv2.erode(grown, _CHEEK_KERNEL, iterations=2)
    region = np.where(_CHEEKS[None, :], thinned, grown)
    keep = ((region == 255) & (labels != NOSE)) | np.isin(labels, MOUTH)
    return np.where(keep, np.uint8(255), np.uint8(0))


def blend_mask(labels: np.ndarray, face: Box, box: Box) -> np.ndarray:
    """The float32 blend mask in the crop ``box`` (frame pixels) from the parsing ``labels``
    (512x512) of the crop around ``face``."""
    (cx0, cy0, _, _), s = crop_box(face)
    side = 2 * s
    full = pil_resize(jaw_mask(labels), side, side, "bicubic")
    kept = np.zeros_like(full)
    fx0, fy0, fx1, fy1 = face[0] - cx0, face[1] - cy0, face[2] - cx0, face[3] - cy0
    top = max(fy0, int(side * UPPER_BOUNDARY), 0)
    kept[top:max(fy1, top), max(fx0, 0):max(fx1, 0)] = full[top:max(fy1, top),
                                                             max(fx0, 0):max(fx1, 0)]
    size = _blur_size(side)
    soft = cv2.GaussianBlur(kept, (size, size), 0)
    out = np.zeros((box[3] - box[1], box[2] - box[0]), np.float32)
    _paste(out, soft.astype(np.float32) / 255.0, cx0 - box[0], cy0 - box[1])
    return out


class FaceParser:
    """The face-parsing model and the blend mask built from its parsing."""

    def __init__(self, providers: list[str] | None = None) -> None:
        self.session = session_for(model_path(MODEL_ID), "face parser", providers)
        self._input = self.session.inputs[0].name

    def labels(self, images: np.ndarray) -> np.ndarray:
        """Class maps (B, 512, 512) uint8 of RGB uint8 images (B, 512, 512, 3)."""
        x = (images.astype(np.float32) / 255.0 - MEAN) / STD
        logits = self.session.run({self._input: x.transpose(0, 3, 1, 2)})[0]
        return logits.argmax(axis=1).astype(np.uint8)

    def mask(self, frame: Frame, face: Box, box: Box) -> np.ndarray:
        """The float32 blend mask in ``box`` of ``frame``, whose MuseTalk face box is ``face``."""
        return self.mask_from(frame.rgb_region, frame.width, frame.height, face, box)

    def mask_from(self, region: Callable[[int, int, int, int], np.ndarray], width: int,
                  height: int, face: Box, box: Box) -> np.ndarray:
        """:meth:`mask` on a picture given by ``region(x0, y0, x1, y1)`` (RGB uint8 of a box
        inside the ``width`` x ``height`` frame)."""
        crop, s = crop_box(face)
        if s < 1:
            return np.zeros((box[3] - box[1], box[2] - box[0]), np.float32)
        picture = np.zeros((2 * s, 2 * s, 3), np.uint8)  # black beyond the frame, as PIL crops
        x0, y0 = max(crop[0], 0), max(crop[1], 0)
        x1, y1 = min(crop[2], width), min(crop[3], height)
        if x1 > x0 and y1 > y0:
            picture[y0 - crop[1]:y1 - crop[1], x0 - crop[0]:x1 - crop[0]] = region(x0, y0, x1, y1)
        labels = self.labels(pil_resize(picture, SIZE, SIZE, "bilinear")[None])[0]
        return blend_mask(labels, face, box)

    def close(self) -> None:
        self.session = None


def _blur_size(side: int) -> int:
    return int(0.05 * side // 2 * 2) + 1


def _paste(dst: np.ndarray, src: np.ndarray, x: int, y: int) -> None:
    """``src`` written into ``dst`` with its corner at ``(x, y)``, clipped to ``dst``."""
    h, w = dst.shape[:2]
    ax, ay = max(x, 0), max(y, 0)
    bx, by = min(x + src.shape[1], w), min(y + src.shape[0], h)
    if bx > ax and by > ay:
        dst[ay:by, ax:bx] = src[ay - y:by - y, ax - x:bx - x]


# -- Pillow's resize ----------------------------------------------------------------------------
_PRECISION = 22  # Pillow's fixed-point bits for 8-bit images (32 - 8 - 2)


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    return np.where(x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1,
                    np.where(x < 2.0, (((x - 5) * x + 8) * x - 4) * a, 0.0))


_FILTERS = {"bilinear": (_bilinear, 1.0), "bicubic": (_bicubic, 2.0)}


def _coefficients(size_in: int, size_out: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's per-output taps: (size_out, taps) input indices and fixed-point weights (0 on
    taps past the edge)."""
    fn, support = _FILTERS[kind]
    scale = size_in / size_out
    filter_scale = max(scale, 1.0)
    support *= filter_scale
    taps = int(np.ceil(support)) * 2 + 1
    centre = (np.arange(size_out) + 0.5) * scale
    # Pillow rounds with a C cast (towards zero), then clamps.
    lo = np.clip(np.trunc(centre - support + 0.5).astype(np.int64), 0, None)
    hi = np.minimum(np.trunc(centre + support + 0.5).astype(np.int64), size_in)
    index = lo[:, None] + np.arange(taps)[None, :]
    valid = index < hi[:, None]
    weight = np.where(valid, fn((index - centre[:, None] + 0.5) / filter_scale), 0.0)
    total = np.zeros(size_out)
    for t in range(taps):  # summed in tap order, as Pillow does
        total += weight[:, t]
    weight = np.where(total[:, None] != 0, weight / np.where(total == 0, 1, total)[:, None],
                      weight)
    fixed = np.trunc(weight * (1 << _PRECISION) + np.where(weight < 0, -0.5, 0.5))
    return np.minimum(index, size_in - 1), fixed.astype(np.int64)


def _resample_rows(image: np.ndarray, size_out: int, kind: str) -> np.ndarray:
    """One Pillow pass along axis 0 of a uint8 array."""
    index, weight = _coefficients(image.shape[0], size_out, kind)
    shape = (size_out,) + (1,) * (image.ndim - 1)
    acc = np.full((size_out,) + image.shape[1:], 1 << (_PRECISION - 1), np.int64)
    for t in range(index.shape[1]):
        acc += image[index[:, t]].astype(np.int64) * weight[:, t].reshape(shape)
    return np.clip(acc >> _PRECISION, 0, 255).astype(np.uint8)


def pil_resize(image: np.ndarray, width: int, height: int, kind: str) -> np.ndarray:
    """``PIL.Image.resize((width, height), BILINEAR or BICUBIC)`` of a uint8 (H, W[, C]) image:
    horizontal pass first, rounded to 8 bits between passes, as Pillow does."""
    out = image
    if out.shape[1] != width:
        out = np.swapaxes(_resample_rows(np.swapaxes(out, 0, 1), width, kind), 0, 1)
    if out.shape[0] != height:
        out = _resample_rows(out, height, kind)
    return np.ascontiguousarray(out)
