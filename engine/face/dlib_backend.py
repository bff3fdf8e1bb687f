"""The embedded, offline CPU backend: dlib's HOG face detector and 68-point shape predictor.

dlib comes from the ``dlib-bin`` wheel; the shape predictor's model file ships in the
``face-recognition-models`` package. That package's ``__init__`` imports ``pkg_resources``
(gone from modern setuptools), so its files are located through :mod:`importlib.resources`
on a module object built from its spec without running its code.

Both work on grey pictures, so the tracker can hand them the decoder's luma plane and skip RGB
conversion of whole frames.
"""
from __future__ import annotations

import importlib.resources
import importlib.util
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from engine.errors import RedubError
from engine.face import geometry as geo
from engine.face.detect import Detections

_MODELS_PACKAGE = "face_recognition_models"
_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"

# The HOG detector scans an 80x80 window; the box it reports is about that size.
_HOG_WINDOW = 80
# Verification looks at the box at about this size: large enough for the window, small enough
# to be quick.
_VERIFY_SIDE = 88
# How far the face HOG finds may sit from the landmarks' own face box: shift in box sides, and
# size ratio. HOG's box lies on an 8-pixel grid at the verify size, and well-placed landmarks
# on the shared clips are within 0.1 and sizes 0.9-1.2. Beyond that the points have stayed
# behind a face that moved, or around it too large (below 0.85 their centres are off by 5% of
# the face, median, against 1.3%): the predictor hardly leaves the box it starts from.
_VERIFY_SHIFT = 0.15
_VERIFY_SIZE = (0.85, 1.25)
# Shift of the extra box placements whose predictions are averaged, in box sides.
_JITTER = 0.06
# Landmarks come out as whole pixels; working at about this box size keeps that rounding under
# half a percent of the face.
_LANDMARK_SIDE = 180


def _dlib():
    try:
        import dlib
    except ImportError as exc:
        raise RedubError("the embedded face backend needs dlib: pip install dlib-bin") from exc
    return dlib


@lru_cache(maxsize=None)
def model_path(filename: str) -> str:
    """Path of a model file shipped in ``face-recognition-models``."""
    spec = importlib.util.find_spec(_MODELS_PACKAGE)
    if spec is None:
        raise RedubError("the embedded face models are missing: "
                         "pip install face-recognition-models")
    package = importlib.util.module_from_spec(spec)  # not executed: no pkg_resources needed
    resource = importlib.resources.files(package) / "models" / filename
    if not resource.is_file():
        raise RedubError(f"model file {filename} missing from {_MODELS_PACKAGE}", str(resource))
    return str(resource)


def _check_installed() -> None:
    """Fail before any decoding when dlib or the model is missing; loading waits for use."""
    _dlib()
    model_path(_PREDICTOR_FILE)


def preload() -> None:
    """Load the detector and the 68-point model now rather than on first use.

    dlib's loader holds the interpreter lock for about 0.4 s; an interactive program calls this
    while it starts, so the load never freezes its event loop in the middle of a job.
    """
    _check_installed()
    _hog()
    _predictor()


@lru_cache(maxsize=None)
def _hog():
    return _dlib().get_frontal_face_detector()


@lru_cache(maxsize=None)
def _predictor():
    return _dlib().shape_predictor(model_path(_PREDICTOR_FILE))


def _to_unit(raw: np.ndarray) -> np.ndarray:
    """HOG margins (0 at the decision threshold, about 3 for a clear face) to [0, 1]."""
    return 1.0 / (1.0 + np.exp(-2.0 * np.asarray(raw, dtype=np.float64)))


def _predict(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    dlib = _dlib()
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    shape = _predictor()(image, dlib.rectangle(x0, y0, x1, y1))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def _predict_averaged(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Mean of predictions from the box and the box shifted by _JITTER each way.

    A regression-tree cascade keeps some memory of where its box started; averaging over
    placements removes most of it, which halves frame-to-frame jitter and stops fast, blurred
    frames from pulling the points towards a badly placed box.
    """
    d = _JITTER * (box[2] - box[0])
    shifts = np.array([(0, 0), (d, 0), (-d, 0), (0, d), (0, -d)])
    return np.mean([_predict(image, box + np.tile(s, 2)) for s in shifts], axis=0)


def _region(image: np.ndarray, box: np.ndarray, margin: float,
            side: float) -> tuple[np.ndarray, float, np.ndarray]:
    """The box grown by ``margin`` cut out and resized so the box is ``side`` pixels.

    Returns the patch, its scale and the patch origin in image pixels.
    """
    h, w = image.shape[:2]
    bw = max(box[2] - box[0], box[3] - box[1], 1.0)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = bw * (1 + margin) / 2
    x0, y0 = int(max(0, np.floor(cx - half))), int(max(0, np.floor(cy - half)))
    x1, y1 = int(min(w, np.ceil(cx + half))), int(min(h, np.ceil(cy + half)))
    patch = image[y0:y1, x0:x1]
    scale = side / bw
    if patch.size and abs(scale - 1) > 0.1:
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        patch = cv2.resize(patch, None, fx=scale, fy=scale, interpolation=interp)
    else:
        scale = 1.0
    return np.ascontiguousarray(patch), scale, np.array([x0, y0], dtype=np.float64)


def _face_box(points: np.ndarray) -> np.ndarray:
    """The square box a frontal detector draws around a face with these 68 landmarks."""
    to_canon = geo.to_canonical(np.asarray(points, dtype=np.float64))
    cx, cy, side = geo.FACE_BOX
    centre = geo.apply(geo.invert(to_canon), np.array([[cx, cy]]))[0]
    half = side / geo.scale_of(to_canon) / 2
    return np.concatenate([centre - half, centre + half])


class HogDetector:
    """dlib's frontal HOG detector (five sub-detectors, frontal to half-profile).

    Keypoints come from the 68-point predictor run on each box, since HOG gives none.
    """

    name = "dlib"
    color = False
    min_face = _HOG_WINDOW
    work_size = 320

    def __init__(self, threshold: float = 0.0) -> None:
        self.threshold = float(threshold)
        _check_installed()

    def settings(self) -> dict[str, Any]:
        return {"threshold": self.threshold}

    def detect(self, image: np.ndarray) -> Detections:
        image = np.ascontiguousarray(image)
        rects, raw, _ = _hog().run(image, 0, self.threshold)
        if not rects:
            return Detections.empty()
        boxes = np.array([(r.left(), r.top(), r.right(), r.bottom()) for r in rects],
                         dtype=np.float32)
        kps = np.stack([geo.five_points(_predict(image, b)) for b in boxes]).astype(np.float32)
        return Detections(boxes, kps, _to_unit(raw).astype(np.float32))


class ShapePredictor68:
    """dlib's 68-point regression-tree shape predictor (iBUG 300-W).

    The predictor always returns a plausible face shape, even on a blank picture, so the score
    comes from the HOG detector run on the box alone: a face that fits the box scores high.
    """

    name = "dlib"
    color = False

    def __init__(self) -> None:
        _check_installed()

    def settings(self) -> dict[str, Any]:
        return {}

    def landmarks(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = np.ascontiguousarray(image)
        points = np.zeros((len(boxes), 68, 2), np.float32)
        scores = np.zeros(len(boxes), np.float32)
        for k, box in enumerate(np.asarray(boxes, dtype=np.float64)):
            side = max(box[2] - box[0], box[3] - box[1])
            if 0.8 * _LANDMARK_SIDE <= side <= 1.5 * _LANDMARK_SIDE:
                points[k] = _predict_averaged(image, box)
            else:
                patch, scale, origin = _region(image, box, 0.3, _LANDMARK_SIDE)
                local = (box.reshape(2, 2) - origin) * scale
                points[k] = _predict_averaged(patch, local.ravel()) / scale + origin
            scores[k] = self._verify(image, _face_box(points[k]))
        return points, scores

    def _verify(self, image: np.ndarray, box: np.ndarray) -> float:
        """HOG's confidence in a face on ``box``: 0 when it finds none there."""
        patch, scale, origin = _region(image, box, 0.35, _VERIFY_SIDE)
        if min(patch.shape[:2]) < _HOG_WINDOW or float(patch.std()) < 2.0:
            return 0.0  # off the picture or featureless (a black frame)
        rects, raw, _ = _hog().run(patch, 0, -1.0)
        best = -np.inf
        local = (box.reshape(2, 2) - origin) * scale
        centre, side = local.mean(0), local[1, 0] - local[0, 0]
        for r, s in zip(rects, raw):
            c = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
            size = r.width() / side
            if (np.abs(c - centre).max() < _VERIFY_SHIFT * side
                    and _VERIFY_SIZE[0] < size < _VERIFY_SIZE[1]):
                best = max(best, s)
        return float(_to_unit(best)) if np.isfinite(best) else 0.0
