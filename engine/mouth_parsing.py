"""The mouth blend mask (mask kind ``mouth``): Video ReTalking's mouth region, by GPEN's ParseNet.

Video ReTalking takes its mouth from a face parsing of the face with the new mouth in it: the
classes mouth, upper lip and lower lip of GPEN's ParseNet (``face_parsing_parsenet``, 19
CelebAMask-HQ classes; 512x512 RGB in [-1, 1], as GPEN's ``FaceParse.process`` feeds it).
Here, per frame:

1. the frame's square face crop (the analysis's crop box, the one the generators draw in)
   with the generated picture pasted in, resized to 512x512 and parsed;
2. the mouth classes as a signed distance in frame pixels (distance transforms at 512,
   resampled linearly to the frame: the edge moves smoothly, not a pixel step at a time),
   kept with the generated crop;
3. united with the target's own lips outline (an old mouth opened wider than the new one must
   not show beside it), grown by ``MOUTH_MARGIN`` plus the dilation and feathered, both
   scaled to the face, as the landmark masks are; 0 outside the crop box.

Where the parser finds no mouth (a hand over it, a profile) the lips outline alone remains.
"""
from __future__ import annotations

import cv2
import numpy as np

from engine.face_parsing import _paste
from engine.lipsync.backend import Generated
from engine.mask import (MOUTH_MARGIN, MaskSettings, _ramp, face_scale, landmark_polygon,
                         polygon_mask)
from engine.media.frame import Frame
from engine.models.session import session_for
from engine.models.store import model_path

MODEL_ID = "face_parsing_parsenet"
SIZE = 512  # the network's input side
MOUTH = (10, 11, 12)  # ParseNet's mouth, upper lip, lower lip

Box = tuple[int, int, int, int]


def mouth_distance(labels: np.ndarray, crop: Box, box: Box) -> np.ndarray | None:
    """Signed distance (float32, frame pixels, negative inside) from each pixel of ``box`` to
    the mouth classes of ``labels``, the (512, 512) parsing of the square ``crop``; +inf
    outside the crop. None where the parsing holds no mouth."""
    mouth = np.isin(labels, MOUTH).astype(np.uint8)
    if not mouth.any():
        return None
    # The edge lies half a pixel beyond the last pixel of either side.
    outside = cv2.distanceTransform(1 - mouth, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    inside = cv2.distanceTransform(mouth, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    sd = np.where(mouth > 0, 0.5 - inside, outside - 0.5).astype(np.float32)
    unit = (crop[2] - crop[0]) / SIZE  # frame pixels per parsing pixel
    # Pixel centres of the box on the parsing's grid (centres at i + 0.5 on both).
    xs = ((np.arange(box[0], box[2]) - crop[0] + 0.5) / unit - 0.5).astype(np.float32)
    ys = ((np.arange(box[1], box[3]) - crop[1] + 0.5) / unit - 0.5).astype(np.float32)
    out = cv2.remap(sd, *np.meshgrid(xs, ys), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE) * np.float32(unit)
    out[:, (xs < -0.5) | (xs > SIZE - 0.5)] = np.inf
    out[(ys < -0.5) | (ys > SIZE - 0.5)] = np.inf
    return out


def mouth_mask(distance: np.ndarray | None, landmarks: np.ndarray, crop: Box, box: Box,
               settings: MaskSettings) -> np.ndarray:
    """The float32 blend mask in ``box``: the parsed mouth (``distance``, from
    :func:`mouth_distance`; None: none found) united with the lips of ``landmarks``, grown
    and feathered as ``settings`` say, 0 outside ``crop``."""
    scale = face_scale(landmarks)
    grow, feather = (MOUTH_MARGIN + settings.dilation) * scale, settings.feather * scale
    shape = (box[3] - box[1], box[2] - box[0])
    mask = polygon_mask(landmark_polygon(landmarks, "mouth") - box[:2], shape, grow, feather,
                        coarse=True)
    if distance is not None:
        np.maximum(mask, _ramp(grow - distance, feather), out=mask)
    inside = np.zeros(shape, np.float32)
    _paste(inside, np.ones((crop[3] - crop[1], crop[2] - crop[0]), np.float32),
           crop[0] - box[0], crop[1] - box[1])
    return mask * inside


class MouthParser:
    """ParseNet and the mouth it finds in a face crop with the generated picture in it."""

    def __init__(self, providers: list[str] | None = None) -> None:
        self.session = session_for(model_path(MODEL_ID), "mouth parser", providers)
        self._input = self.session.inputs[0].name

    def labels(self, images: np.ndarray) -> np.ndarray:
        """Class maps (B, 512, 512) uint8 of RGB uint8 images (B, 512, 512, 3)."""
        x = images.astype(np.float32) * np.float32(2 / 255) - np.float32(1)
        logits = self.session.run({self._input: x.transpose(0, 3, 1, 2)})[0]
        return logits.argmax(axis=1).astype(np.uint8)

    def distance(self, frame: Frame, gen: Generated, crop: Box) -> np.ndarray | None:
        """:func:`mouth_distance` in ``gen.box`` of the parsing of ``crop`` (a square in
        frame pixels) of ``frame`` with ``gen``'s picture pasted in."""
        side = crop[2] - crop[0]
        picture = np.zeros((side, side, 3), np.uint8)  # black beyond the frame
        x0, y0 = max(crop[0], 0), max(crop[1], 0)
        x1, y1 = min(crop[2], frame.width), min(crop[3], frame.height)
        if x1 > x0 and y1 > y0:
            picture[y0 - crop[1]:y1 - crop[1], x0 - crop[0]:x1 - crop[0]] = \
                frame.rgb_region(x0, y0, x1, y1)
        _paste(picture, gen.image, gen.box[0] - crop[0], gen.box[1] - crop[1])
        small = cv2.resize(picture, (SIZE, SIZE),
                           interpolation=cv2.INTER_AREA if side > SIZE else cv2.INTER_LINEAR)
        return mouth_distance(self.labels(small[None])[0], crop, gen.box)

    def close(self) -> None:
        self.session = None
