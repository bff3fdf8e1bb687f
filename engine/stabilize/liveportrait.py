"""Mouth neutralisation with LivePortrait: each face re-rendered with its lips closed.

LivePortrait (KwaiVGI, MIT) describes a face by 21 implicit 3D keypoints; its generator warps
the face's appearance features from one set of keypoints to another. Closing the mouth is a
keypoint edit: the lip retargeting network, given the face's own keypoints, its lip-open ratio
and the ratio wanted, returns the keypoint offsets that make that mouth; the stitching network
then corrects the edited keypoints so the re-rendered face joins its surroundings.

The ONNX files are FaceFusion's conversions (facefusion-assets ``models-3.0.0``), fed as
FaceFusion's face editor feeds them:

- the face aligned to the FFHQ five-point template at 512x512 with its five keypoints spread
  1.5 times about the nose tip (more of the head in the square), edge pixels repeated, then
  area-halved to 256x256, RGB in [0, 1], (B, 3, 256, 256), for the feature and motion extractors;
- ``feature_extractor``: ``input`` -> the appearance feature volume (B, 32, 16, 64, 64);
- ``motion_extractor``: ``input`` -> pitch, yaw, roll (degrees in FaceFusion's file; 66-bin
  logits in the official network, turned into degrees here), scale (B, 1), translation (B, 3),
  expression (B, 21, 3), canonical keypoints (B, 21, 3), by position;
- ``lip_retargeter``: ``input`` (B, 65): the face's keypoints (63) then its lip-open ratio and
  the wanted one -> keypoint offsets (B, 63);
- ``stitcher``: ``source`` the edited keypoints, ``target`` the face's own (B, 21, 3) -> the
  edited keypoints stitched (FaceFusion's file applies the official network's (B, 65) offsets
  itself, as :func:`stitch` does);
- ``generator``: ``feature_volume``, ``source`` the keypoints to render, ``target`` the face's
  own -> the face, RGB in [0, 1], (B, 3, 512, 512).

The keypoint maths between the networks is here, as pure functions. The re-rendered face goes
back into the given picture inside a feathered hull of its 68 landmarks, so nothing outside the
face changes.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from engine.face import geometry as geo
from engine.face.analysis import FaceAnalysis
from engine.face.pixels import warp
from engine.media.frame import Frame
from engine.models.session import ModelSession, session_for
from engine.models.store import model_path
from engine.restore.align import ffhq_matrix, from_aligned, to_aligned
from engine.stabilize.backend import FaceCrop, Framing
from engine.stabilize.geometric import GeometricStabilizer

MODELS = {role: f"live_portrait_{role}" for role in
          ("feature_extractor", "motion_extractor", "lip_retargeter", "stitcher", "generator")}
ALIGN_SIZE = 512  # the aligned face; the generator renders at this size
INPUT_SIZE = 256  # the extractors' input: the aligned face area-halved
SPREAD = 1.5  # FaceFusion's face editor spreads the five keypoints about the nose tip
KEYPOINTS = 21
_BATCH = 8
_FEATHER = 0.25  # the paste mask's inner feather, in eye distances


# --- keypoint maths (pure; LivePortrait's conventions) ------------------------------------

def bins_to_degrees(logits: np.ndarray) -> np.ndarray:
    """Head angles in degrees from the official motion extractor's 66 bins of 3 degrees.

    ``logits`` (N, 66) -> (N,): the softmax expectation of the bin index, times 3, minus 97.5
    (the bins cover -99..99 degrees).
    """
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return (p @ np.arange(z.shape[1], dtype=np.float64)) * 3.0 - 97.5


def headpose_matrix(pitch: np.ndarray, yaw: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Head rotations (N, 3, 3) from angles in degrees (each (N,) or scalar).

    R = Rz(roll) @ Ry(yaw) @ Rx(pitch), each a right-handed rotation by the angle about its
    axis; keypoints (row vectors) turn as ``kp @ R.T``.
    """
    p, y, r = (np.radians(np.atleast_1d(np.asarray(a, np.float64)).ravel())
               for a in (pitch, yaw, roll))
    n = len(p)
    rx, ry, rz = (np.zeros((n, 3, 3)) for _ in range(3))
    rx[:, 0, 0] = 1
    rx[:, 1, 1], rx[:, 1, 2], rx[:, 2, 1], rx[:, 2, 2] = np.cos(p), -np.sin(p), np.sin(p), np.cos(p)
    ry[:, 1, 1] = 1
    ry[:, 0, 0], ry[:, 0, 2], ry[:, 2, 0], ry[:, 2, 2] = np.cos(y), np.sin(y), -np.sin(y), np.cos(y)
    rz[:, 2, 2] = 1
    rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1] = np.cos(r), -np.sin(r), np.sin(r), np.cos(r)
    return rz @ ry @ rx


def transform_keypoints(canonical: np.ndarray, rotation: np.ndarray, expression: np.ndarray,
                        scale: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """The face's keypoints (N, 21, 3) from the motion extractor's outputs.

    ``canonical`` and ``expression`` (N, 21, 3), ``rotation`` (N, 3, 3) from
    :func:`headpose_matrix`, ``scale`` (N,) or (N, 1), ``translation`` (N, 3):
    ``scale * (canonical @ R.T + expression)`` shifted by the translation's x and y (its z is
    not used, as in LivePortrait's ``transform_keypoint``).
    """
    n = len(canonical)
    kp = np.asarray(canonical, np.float64) @ np.transpose(rotation, (0, 2, 1))
    kp = np.asarray(scale, np.float64).reshape(n, 1, 1) * (kp + expression)
    kp[..., :2] += np.asarray(translation, np.float64).reshape(n, 3)[:, None, :2]
    return kp


def motion_keypoints(motion: Sequence[np.ndarray]) -> np.ndarray:
    """The face's keypoints (N, 21, 3) from the motion extractor's seven outputs in order:
    pitch, yaw, roll (degrees, or (N, 66) bins), scale, translation, expression, canonical."""
    pitch, yaw, roll, scale, translation, expression, canonical = motion
    n = len(np.reshape(canonical, (-1, KEYPOINTS, 3)))
    rotation = headpose_matrix(*(_degrees(a, n) for a in (pitch, yaw, roll)))
    return transform_keypoints(np.reshape(canonical, (n, KEYPOINTS, 3)), rotation,
                               np.reshape(expression, (n, KEYPOINTS, 3)),
                               np.reshape(scale, (n,)), np.reshape(translation, (n, 3)))


def lip_ratio(landmarks68: np.ndarray) -> np.ndarray:
    """Lip-open ratio of 68-point landmarks (..., 68, 2) -> (...): the inner lips' gap
    (points 62 and 66) over the mouth's width (corners 48 and 54); 0 for a closed mouth.
    Units cancel: any pixels."""
    lm = np.asarray(landmarks68, np.float64)
    gap = np.linalg.norm(lm[..., 62, :] - lm[..., 66, :], axis=-1)
    width = np.linalg.norm(lm[..., 54, :] - lm[..., 48, :], axis=-1)
    return gap / (width + 1e-6)


def lip_retarget_input(keypoints: np.ndarray, ratio: np.ndarray, wanted: float) -> np.ndarray:
    """The lip retargeter's input (N, 65): the face's keypoints (N, 21, 3) flattened, its lip
    ratio (N,) and the wanted ratio, float32."""
    n = len(keypoints)
    return np.concatenate([np.reshape(keypoints, (n, -1)), np.reshape(ratio, (n, 1)),
                           np.full((n, 1), wanted)], axis=1).astype(np.float32)


def retarget_lip(driving: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Driving keypoints (N, 21, 3) with the lip retargeter's offsets (N, 63) added."""
    return np.asarray(driving, np.float64) + np.reshape(delta, (len(driving), KEYPOINTS, 3))


def stitch(driving: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Driving keypoints (N, 21, 3) corrected by the official stitching network's output
    (N, 65): its first 63 values move each keypoint, the last two shift all in x and y.
    FaceFusion's stitcher file does this inside; kept here as the reference maths (and for
    the official network's raw output)."""
    n = len(driving)
    delta = np.reshape(delta, (n, -1))
    out = np.asarray(driving, np.float64) + delta[:, :3 * KEYPOINTS].reshape(n, KEYPOINTS, 3)
    out[..., :2] += delta[:, None, 3 * KEYPOINTS:3 * KEYPOINTS + 2]
    return out


# --- the networks ---------------------------------------------------------------------------

class LivePortrait:
    """The five networks, loaded on construction (``ModelMissingError`` naming a missing file)."""

    def __init__(self, providers: list[str] | None = None) -> None:
        self.sessions: dict[str, ModelSession] = {}
        for role, model_id in MODELS.items():
            self.sessions[role] = session_for(model_path(model_id), f"LivePortrait {role} "
                                              f"'{model_id}'", providers)

    def neutralise(self, images: np.ndarray, landmarks: np.ndarray,
                   lip_ratio: float = 0.0) -> np.ndarray:
        """``images`` (N, H, W, 3) RGB uint8 face pictures with their 68-point ``landmarks``
        (N, 68, 2) in those pictures' pixels -> the pictures with each mouth re-rendered at
        ``lip_ratio`` (0: closed); pixels outside the face's landmark hull are kept."""
        images = np.asarray(images)
        landmarks = np.asarray(landmarks, np.float64)
        matrices = [ffhq_matrix(_spread(geo.five_points(lm)), ALIGN_SIZE) for lm in landmarks]
        faces = np.stack([cv2.resize(to_aligned(img, (0, 0), m, ALIGN_SIZE),
                                     (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)
                          for img, m in zip(images, matrices)])
        rendered = self.render(faces, _ratios(landmarks), lip_ratio)
        out = np.empty_like(images)
        h, w = images.shape[1:3]
        for i, (img, face, m, lm) in enumerate(zip(images, rendered, matrices, landmarks)):
            picture, cover = from_aligned(face, m, (0, 0, w, h))
            alpha = (cover * face_mask(lm, (h, w)))[..., None]
            mixed = img + (picture - img) * alpha
            out[i] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
        return out

    def render(self, faces: np.ndarray, ratios: np.ndarray, wanted: float) -> np.ndarray:
        """Aligned 256x256 faces (N, 256, 256, 3) RGB uint8 with their lip ratios (N,) ->
        the faces rendered at 512x512 with the wanted lip ratio, float32 RGB 0..255."""
        s = self.sessions
        pictures = faces.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        features = s["feature_extractor"].run_batched(
            {s["feature_extractor"].inputs[0].name: pictures}, _BATCH)[0]
        motion = s["motion_extractor"].run_batched(
            {s["motion_extractor"].inputs[0].name: pictures}, _BATCH)
        source = motion_keypoints(motion)
        delta = s["lip_retargeter"].run_batched(
            {s["lip_retargeter"].inputs[0].name: lip_retarget_input(source, ratios, wanted)},
            _BATCH)[0]
        driving = self.stitched(source, retarget_lip(source, delta))
        out = s["generator"].run_batched({"feature_volume": features,
                                          "source": driving.astype(np.float32),
                                          "target": source.astype(np.float32)}, _BATCH)[0]
        return np.clip(out, 0.0, 1.0).transpose(0, 2, 3, 1) * np.float32(255.0)

    def stitched(self, source: np.ndarray, driving: np.ndarray) -> np.ndarray:
        """``driving`` keypoints through the stitcher (FaceFusion's names: ``source`` the
        edited keypoints, ``target`` the face's own; the file applies :func:`stitch` itself)."""
        out = self.sessions["stitcher"].run_batched({"source": driving.astype(np.float32),
                                                     "target": source.astype(np.float32)},
                                                    _BATCH)[0]
        return np.reshape(out, (len(driving), KEYPOINTS, 3)).astype(np.float64)

    def close(self) -> None:
        self.sessions.clear()


def face_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Where the re-rendered face replaces the picture (float32 (H, W), 0..1): the hull of the
    68 landmarks, feathered inwards so it is exactly 0 outside the hull."""
    hull = cv2.convexHull(np.round(landmarks * 4).astype(np.int32))
    inside = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(inside, hull, 1, lineType=cv2.LINE_8, shift=2)
    depth = cv2.distanceTransform(inside, cv2.DIST_L2, 5)
    feather = max(_FEATHER * float(geo.interocular(landmarks)), 1.0)
    return np.clip(depth / feather, 0.0, 1.0).astype(np.float32)


def _spread(five: np.ndarray) -> np.ndarray:
    """The five keypoints spread ``SPREAD`` times about the nose tip."""
    return (five - five[2]) * SPREAD + five[2]


def _ratios(landmarks: np.ndarray) -> np.ndarray:
    """:func:`lip_ratio`, which ``neutralise``'s argument of that name hides there."""
    return lip_ratio(landmarks)


def _degrees(angle: np.ndarray, n: int) -> np.ndarray:
    """Angles (N,) in degrees from either motion extractor: degrees, or 66 bins of logits."""
    a = np.reshape(angle, (n, -1))
    return bins_to_degrees(a) if a.shape[1] == 66 else a[:, 0].astype(np.float64)


# --- the stabilizer ----------------------------------------------------------------------------

class LivePortraitStabilizer:
    """The geometric crop with its mouth closed by LivePortrait.

    The face is cropped wide enough for LivePortrait's framing (the requested crop may be
    tighter than the head) and neutralised at LivePortrait's resolution; the requested crop is
    the geometric one with that face laid in over the landmark hull, so its transform and
    every pixel outside the face are the geometric crop's.
    """

    name = "liveportrait"

    def __init__(self, lip_ratio: float = 0.0, providers: list[str] | None = None) -> None:
        self.lip_ratio = lip_ratio
        self.providers = providers
        self.model: LivePortrait | None = None
        self._geometric = GeometricStabilizer()
        self._analysis: FaceAnalysis | None = None

    def prepare(self, analysis: FaceAnalysis) -> None:
        self.model = LivePortrait(self.providers)
        self._analysis = analysis
        self._geometric.prepare(analysis)

    def crops(self, frames: Sequence[Frame], indices: Sequence[int],
              framing: Framing) -> list[FaceCrop]:
        wide = _wide_framing(framing)
        raw = self._geometric.crops(frames, indices, wide)
        plain = self._geometric.crops(frames, indices, framing)
        neutral = self.model.neutralise(np.stack([c.image for c in raw]),
                                        self._landmarks(raw, indices), self.lip_ratio)
        k = (framing.size / framing.side) / (wide.size / wide.side)
        shift = (np.array(wide.centre) - wide.side / 2 - np.array(framing.centre)
                 + framing.side / 2) * (framing.size / framing.side)
        inner = np.array([[k, 0.0, shift[0]], [0.0, k, shift[1]]])  # wide -> requested crop
        out = []
        # Outside the face the requested crop is the geometric one, sampled once, not twice.
        for image, crop, lm in zip(neutral, plain, self._landmarks(plain, indices)):
            alpha = face_mask(lm, (framing.size, framing.size))[..., None]
            mixed = crop.image + (warp(image, inner, framing.size) - crop.image) * alpha
            out.append(FaceCrop(image=np.clip(np.rint(mixed), 0, 255).astype(np.uint8),
                                transform=crop.transform))
        return out

    def _landmarks(self, crops: list[FaceCrop], indices: Sequence[int]) -> np.ndarray:
        """Each frame's landmarks in its crop's pixels."""
        return np.stack([geo.apply(c.transform, self._analysis.landmarks[k][None])[0]
                         for c, k in zip(crops, indices)])

    def close(self) -> None:
        self._geometric.close()
        if self.model is not None:
            self.model.close()
            self.model = None


def _wide_framing(framing: Framing) -> Framing:
    """A square in canonical units holding both ``framing`` and LivePortrait's aligned face,
    sampled at LivePortrait's resolution."""
    five = geo.five_points(geo.TEMPLATE_68)
    to_aligned_face = ffhq_matrix(_spread(five), ALIGN_SIZE)
    corners = geo.apply(geo.invert(to_aligned_face),
                        np.array([(0, 0), (ALIGN_SIZE, 0), (ALIGN_SIZE, ALIGN_SIZE),
                                  (0, ALIGN_SIZE)], np.float64)[None])[0]
    half = framing.side / 2
    lo = np.minimum(corners.min(0), np.array(framing.centre) - half)
    hi = np.maximum(corners.max(0), np.array(framing.centre) + half)
    side = float((hi - lo).max())
    aligned_side = float(np.ptp(corners[:, 0]))
    centre = (lo + hi) / 2
    return Framing(centre=(float(centre[0]), float(centre[1])), side=side,
                   size=int(np.ceil(ALIGN_SIZE * side / aligned_side / 2) * 2))
