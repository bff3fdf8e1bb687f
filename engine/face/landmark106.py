"""106-point landmarks in InsightFace's ``2d106det`` contract, mapped to the 68-point layout.

Contract: input ``[1, 3, 192, 192]``, RGB, a square crop centred on the face box with sides
1.5 times the box's longer side (pixel values as they are: the model normalises inside);
output ``(1, 212)``: 106 (x, y) pairs in [-1, 1] across the crop.

The model has no confidence output. The score is how well the points fit the canonical face
(a regressor pushed off a face returns a scattered shape) times whether the crop has any
texture at all (a black frame has none); it cannot tell a face from a face-like pattern, so
the tracker's periodic detections remain the safeguard.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from engine.errors import RedubError, UsageError
from engine.models.session import load_session
from engine.face import geometry as geo
from engine.face.pixels import warp

# 2d106det index of each 68-point landmark: jaw (17), brows (5 + 5), nose bridge (4) and base
# (5), eyes (6 + 6), outer lip (12), inner lip (8).
MAP_106_TO_68 = np.array([
    1, 10, 12, 14, 16, 3, 5, 7, 0, 23, 21, 19, 32, 30, 28, 26, 17,
    43, 48, 49, 51, 50, 102, 103, 104, 105, 101,
    72, 73, 74, 86, 78, 79, 80, 85, 84,
    35, 41, 42, 39, 37, 36, 89, 95, 96, 93, 91, 90,
    52, 64, 63, 71, 67, 68, 61, 58, 59, 53, 56, 55,
    65, 66, 62, 70, 69, 57, 60, 54,
])

_SIZE = 192
_ENLARGE = 1.5
_FIT_SCALE = 0.05  # canonical units of RMS misfit at which the score falls to 1/e


class Landmark106:
    name = "2d106"
    color = True

    def __init__(self, model: str | os.PathLike | None = None, input_mean: float = 0.0,
                 input_std: float = 1.0, providers: list[str] | None = None) -> None:
        if model is None:
            raise UsageError("the 2d106 landmarker needs a model file (on the command line: "
                             "--landmarker-model PATH)")
        self.model = os.fspath(model)
        self.input_mean = float(input_mean)
        self.input_std = float(input_std)
        self._session = load_session(self.model, "landmark model", providers)
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != [3, _SIZE, _SIZE] or \
                outputs[0].shape[-1] != 212:
            raise RedubError("not a 2d106det landmark model (expected input [1, 3, 192, 192] "
                             "and output (1, 212))", self.model)
        self._input = inputs[0].name
        self._one_at_a_time = inputs[0].shape[0] == 1  # a fixed batch of one

    def settings(self) -> dict[str, Any]:
        st = os.stat(self.model)
        return {"model": os.path.abspath(self.model), "size": st.st_size,
                "mtime_ns": st.st_mtime_ns, "mean": self.input_mean, "std": self.input_std}

    def landmarks(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if not len(boxes):
            return np.zeros((0, 68, 2), np.float32), np.zeros(0, np.float32)
        crops, inverses = [], []
        for x0, y0, x1, y1 in boxes:
            scale = _SIZE / (max(x1 - x0, y1 - y0) * _ENLARGE)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            m = np.array([[scale, 0, _SIZE / 2 - scale * cx], [0, scale, _SIZE / 2 - scale * cy]])
            crops.append(warp(image, m, _SIZE))
            inverses.append(geo.invert(m))
        batch = (np.stack(crops).astype(np.float32) - self.input_mean) / self.input_std
        batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        if self._one_at_a_time:
            out = np.concatenate([self._session.run(None, {self._input: b[None]})[0]
                                  for b in batch])
        else:
            out = self._session.run(None, {self._input: batch})[0]
        points = (out.reshape(len(boxes), 106, 2)[:, MAP_106_TO_68] + 1.0) * (_SIZE / 2)
        points = geo.apply(np.stack(inverses), points.astype(np.float64))
        texture = np.array([float(c.std()) > 2.0 for c in crops])
        return points.astype(np.float32), (_fit_score(points) * texture).astype(np.float32)


def _fit_score(points: np.ndarray) -> np.ndarray:
    """exp(-(misfit / scale)^2) of each face against the canonical 68-point face."""
    with np.errstate(invalid="ignore", divide="ignore"):  # collapsed shapes score 0
        to_canon = geo.fit_similarity(points, geo.TEMPLATE_68)
        residual = geo.apply(to_canon, points) - geo.TEMPLATE_68
        rms = np.sqrt((residual ** 2).sum(-1).mean(-1))
    return np.where(np.isfinite(rms), np.exp(-(rms / _FIT_SCALE) ** 2), 0.0)
