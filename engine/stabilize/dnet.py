"""The D-Net stabilizer: Video ReTalking's expression neutraliser on the head-following crop.

Video ReTalking's D-Net re-renders a face crop with another expression: given the 256x256 face
(RGB in [-1, 1]) and, per frame k, a window of 3D face coefficients of the frames around it
(:func:`semantic_window`: expression 64, angles 3, translation 3, crop 3), it warps the face to
the expression in the window. The official inference writes a fixed template into every
expression row (``expression.mat``'s ``expression_center``, or ``expression_mouth`` for a
smile), so the face comes back with that expression and its own pose: a reference whose mouth
says nothing. The two templates travel in the ONNX file's metadata.

The crop is framed as the official FFHQ-style crop (:func:`ffhq_framing`), but the official
fixes the first frame's box for the whole clip; here it follows the head through the analysis's
smoothed transforms, as the geometric stabilizer's crops do, so a moving head stays framed. The
coefficients come from :func:`engine.face.face3d.clip_coefficients` on those same crops, once
per clip. The neutral face is then resampled into whatever framing the generator asks for; any
part of that crop the D-Net crop does not reach is the geometric crop's.
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Sequence

import numpy as np

from engine.errors import RedubError, UsageError
from engine.face import face3d
from engine.face import geometry as geo
from engine.face.analysis import FaceAnalysis
from engine.face.pixels import warp
from engine.media.frame import Frame
from engine.models.manifest import get_entry
from engine.models.session import ModelSession, session_for
from engine.models.store import model_path
from engine.stabilize.backend import FaceCrop, Framing
from engine.stabilize.geometric import GeometricStabilizer

MODEL_ID = "retalking_dnet"
SIZE = 256
EXPRESSIONS = {"center": "expression_center", "mouth": "expression_mouth"}
# The official inference's window: frames k-13 .. k+12 (``range(k - 13, k + 13)``), clamped.
RADIUS, WINDOW = 13, 26
# Columns of a clip_coefficients row (Deep3DFaceRecon's 257, then align_img's 5).
EXPRESSION, ANGLES, TRANSLATION, CROP = (slice(80, 144), slice(224, 227), slice(254, 257),
                                         slice(259, 262))
CROP_SCALE = 259
SEMANTICS = 73  # expression 64 + angles 3 + translation 3 + crop 3
ALPHA = 0.3  # find_crop_norm_ratio's weight of the expression against the angles
_BATCH = 8


def ffhq_framing(landmarks: np.ndarray, size: int) -> Framing:
    """The FFHQ crop of 68 ``landmarks`` (canonical units) as the official ``align_face``
    draws it: centred at the eyes' midpoint plus a tenth of the way to the mouth, side twice
    the larger of twice the eye-to-eye and 1.8 times the eye-to-mouth distance."""
    lm = np.asarray(landmarks, np.float64)
    left, right = lm[36:42].mean(0), lm[42:48].mean(0)
    eyes = (left + right) / 2
    to_mouth = (lm[48] + lm[54]) / 2 - eyes
    half = max(2.0 * np.hypot(*(right - left)), 1.8 * np.hypot(*to_mouth))
    centre = eyes + 0.1 * to_mouth
    return Framing(centre=(float(centre[0]), float(centre[1])), side=float(2 * half), size=size)


FRAMING = ffhq_framing(geo.TEMPLATE_68, SIZE)


def window_indices(k: int, count: int) -> np.ndarray:
    """The frames of frame ``k``'s window, ``k - 13`` to ``k + 12``, clamped to
    ``0 .. count - 1`` (the official ``obtain_seq_index``)."""
    return np.clip(np.arange(k - RADIUS, k - RADIUS + WINDOW), 0, count - 1)


def crop_norm_ratio(source: np.ndarray, coeffs: np.ndarray) -> np.float32:
    """The official ``find_crop_norm_ratio``: the ``source`` row's crop scale over that of the
    row of ``coeffs`` (N, 262) most like it (0.3 x mean |expression difference| + 0.7 x mean
    |angle difference|, the first on a tie)."""
    source = np.asarray(source, np.float32)
    coeffs = np.asarray(coeffs, np.float32)
    exp = np.mean(np.abs(coeffs[:, EXPRESSION] - source[EXPRESSION]), 1)
    angle = np.mean(np.abs(coeffs[:, ANGLES] - source[ANGLES]), 1)
    nearest = int(np.argmin(ALPHA * exp + (1 - ALPHA) * angle))
    return source[CROP_SCALE] / coeffs[nearest, CROP_SCALE]


def semantic_window(coeffs: np.ndarray, k: int, ratio: float,
                    expression: np.ndarray) -> np.ndarray:
    """D-Net's ``coeffs`` input for frame ``k`` (73, 26) float32: the window's
    expression, angles, translation and crop columns (the official ``transform_semantic``, the
    crop scale times ``ratio``), frames along the last axis, with the template ``expression``
    (64,) in rows 0..63 of every frame, as the inference overwrites them."""
    rows = np.asarray(coeffs, np.float32)[window_indices(k, len(coeffs))]
    crop = rows[:, CROP].copy()
    crop[:, 0] *= np.float32(ratio)
    window = np.concatenate([rows[:, EXPRESSION], rows[:, ANGLES], rows[:, TRANSLATION], crop],
                            1).T
    window[:64] = np.asarray(expression, np.float32)[:, None]
    return np.ascontiguousarray(window)


class DNetStabilizer:
    """The face re-rendered by D-Net with a template expression (``center``: neutral, closed
    mouth; ``mouth``: the official smile template), framed as asked."""

    name = "dnet"

    def __init__(self, expression: str = "center", providers: list[str] | None = None) -> None:
        if expression not in EXPRESSIONS:
            raise UsageError(f"unknown D-Net expression '{expression}' "
                             f"(known: {', '.join(EXPRESSIONS)})")
        self.expression = expression
        self.providers = providers
        self.session: ModelSession | None = None
        self._geometric = GeometricStabilizer()
        self._analysis: FaceAnalysis | None = None
        self._coeffs: np.ndarray | None = None

    def prepare(self, analysis: FaceAnalysis) -> None:
        self.session = session_for(model_path(MODEL_ID), f"D-Net stabilizer '{MODEL_ID}'",
                                   self.providers)
        self._image, self._coeff_input = _inputs(self.session)
        self._template = _template(self.session, EXPRESSIONS[self.expression])
        self._geometric.prepare(analysis)
        self._analysis = analysis
        self._coeffs = face3d.clip_coefficients(analysis.source, analysis, FRAMING,
                                                self.providers)

    def crops(self, frames: Sequence[Frame], indices: Sequence[int],
              framing: Framing) -> list[FaceCrop]:
        raw = self._geometric.crops(frames, indices, FRAMING)
        # As the official trans_image: x / 255, then (x - 0.5) / 0.5, in float32.
        pictures = np.stack([c.image for c in raw]).transpose(0, 3, 1, 2).astype(np.float32)
        pictures = (pictures / np.float32(255) - np.float32(0.5)) / np.float32(0.5)
        windows = np.stack([self.window(int(k)) for k in indices])
        out = self.session.run_batched({self._image: pictures, self._coeff_input: windows},
                                       _BATCH)[0]
        # As the official: clamped, then (x + 1) / 2 * 255 truncated to 8 bits.
        neutral = np.ascontiguousarray(
            ((np.clip(out, -1, 1) + 1) / 2.0 * 255).astype(np.uint8).transpose(0, 2, 3, 1))
        return [self._reframed(face, frame, int(k), framing)
                for face, frame, k in zip(neutral, frames, indices)]

    def window(self, k: int) -> np.ndarray:
        """D-Net's coefficient window for analysed frame ``k`` (73, 26): the frame is its
        own source (the official non one-shot mode), with the chosen template expression."""
        ratio = crop_norm_ratio(self._coeffs[k], self._coeffs)
        return semantic_window(self._coeffs, k, ratio, self._template)

    def close(self) -> None:
        self._geometric.close()
        self._analysis = self._coeffs = None

    def _reframed(self, face: np.ndarray, frame: Frame, k: int, framing: Framing) -> FaceCrop:
        """The neutral ``face`` (D-Net crop pixels) resampled into ``framing``; the geometric
        crop where the D-Net crop does not reach."""
        inner, outside = _between(framing)
        image = warp(face, inner, framing.size)
        if outside.any():
            plain = self._geometric.crops([frame], [k], framing)[0].image
            image[outside] = plain[outside]
        return FaceCrop(image=image, transform=framing.matrix(self._analysis.transforms[k]))


@lru_cache(maxsize=8)
def _between(framing: Framing) -> tuple[np.ndarray, np.ndarray]:
    """D-Net crop pixels -> ``framing``'s crop pixels (both crops share the face's transform,
    so this is one scale and shift for every frame), and the crop's pixels whose centres fall
    outside the D-Net crop's outer pixel centres (read there, they would fade to black)."""
    inner = framing.matrix(geo.invert(FRAMING.matrix(np.eye(2, 3))))
    back = geo.invert(inner)
    v, u = np.mgrid[0:framing.size, 0:framing.size].astype(np.float64)
    x = back[0, 0] * u + back[0, 1] * v + back[0, 2]
    y = back[1, 0] * u + back[1, 1] * v + back[1, 2]
    outside = (x < 0) | (y < 0) | (x > SIZE - 1) | (y > SIZE - 1)
    return inner, outside


def _inputs(session: ModelSession) -> tuple[str, str]:
    """The picture and coefficient input names (unnamed contract inputs match by position)."""
    entry = get_entry(MODEL_ID)
    image = coeffs = None
    for index, spec in enumerate(entry.contract.inputs):
        name = spec.name or session.inputs[index].name
        if len(spec.shape) == 4:
            image = name
        elif len(spec.shape) == 3 and spec.shape[1] == SEMANTICS:
            coeffs = name
    if image is None or coeffs is None:
        raise RedubError(f"the manifest's contract for '{MODEL_ID}' has no (B,3,256,256) face "
                         f"and (B,{SEMANTICS},T) coefficient input", session.path)
    return image, coeffs


def _template(session: ModelSession, key: str) -> np.ndarray:
    """The 64 expression coefficients stored as JSON in the model's metadata ``key``."""
    meta = session.session.get_modelmeta().custom_metadata_map
    try:
        values = np.array(json.loads(meta[key]), dtype=np.float32)
    except (KeyError, ValueError, TypeError) as exc:
        raise RedubError(f"the D-Net model has no readable '{key}' expression template",
                         session.path) from exc
    if values.shape != (64,):
        raise RedubError(f"the D-Net model's '{key}' holds {values.size} numbers, not 64",
                         session.path)
    return values
