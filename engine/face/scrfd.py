"""SCRFD face detection (InsightFace model-zoo contract) through onnxruntime.

Contract: one input ``[1, 3, H, W]`` (H and W multiples of 32; a fixed size or dynamic), RGB
scaled as (x - 127.5) / 128; nine outputs, for strides 8, 16 and 32: scores (n, 1), box
distances (n, 4) and keypoint offsets (n, 10), where n = (H / s) * (W / s) * 2 (two anchors per
grid cell, cell by cell). Distances and offsets are in units of the stride, measured from the
cell's top-left corner.

The model is loaded by file path here; resolving model names, downloading and choosing
execution providers belong to the model runtime.
"""
from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

from engine.errors import RedubError, UsageError
from engine.models.session import load_session
from engine.face.detect import Detections, nms

_STRIDES = (8, 16, 32)
_ANCHORS = 2


class ScrfdDetector:
    name = "scrfd"
    color = True
    min_face = 16  # the stride-8 anchors' size
    work_size = 640

    def __init__(self, model: str | os.PathLike | None = None, threshold: float = 0.5,
                 nms_threshold: float = 0.4, providers: list[str] | None = None) -> None:
        if model is None:
            raise UsageError("the SCRFD detector needs a model file (on the command line: "
                             "--model PATH)")
        self.model = os.fspath(model)
        self.threshold = float(threshold)
        self.nms_threshold = float(nms_threshold)
        self._session = load_session(self.model, "SCRFD model", providers)
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or len(outputs) != 9:
            raise RedubError("not an SCRFD model with keypoints (expected 1 input and 9 "
                             f"outputs, found {len(inputs)} and {len(outputs)})", self.model)
        self._input = inputs[0].name
        h, w = inputs[0].shape[2:]
        self._fixed = (h, w) if isinstance(h, int) and isinstance(w, int) else None
        self._centres: dict[tuple[int, int, int], np.ndarray] = {}

    def settings(self) -> dict[str, Any]:
        st = os.stat(self.model)
        return {"model": os.path.abspath(self.model), "size": st.st_size,
                "mtime_ns": st.st_mtime_ns, "threshold": self.threshold,
                "nms": self.nms_threshold}

    def detect(self, image: np.ndarray) -> Detections:
        h, w = image.shape[:2]
        if self._fixed:
            height, width = self._fixed
            scale = min(height / h, width / w)
        else:
            scale = 1.0
            height, width = -(-h // 32) * 32, -(-w // 32) * 32
        sw, sh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
        picture = image if (sw, sh) == (w, h) else cv2.resize(image, (sw, sh))
        # Pad right and bottom to the network's size: coordinates need no shifting back.
        blob = np.zeros((1, 3, height, width), np.float32)
        blob[0, :, :sh, :sw] = (picture.transpose(2, 0, 1).astype(np.float32) - 127.5) / 128.0
        outputs = [o.reshape(-1, o.shape[-1]) for o in self._session.run(None, {self._input: blob})]
        boxes, kps, scores = self._decode(outputs, height, width)
        if not len(scores):
            return Detections.empty()
        keep = nms(boxes, scores, self.nms_threshold)
        return Detections((boxes[keep] / scale).astype(np.float32),
                          (kps[keep] / scale).astype(np.float32), scores[keep].astype(np.float32))

    def _decode(self, outputs: list[np.ndarray], height: int,
                width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        by_width: dict[int, list[np.ndarray]] = {1: [], 4: [], 10: []}
        for out in outputs:
            by_width.setdefault(out.shape[1], []).append(out)
        all_boxes, all_kps, all_scores = [], [], []
        for stride in _STRIDES:
            n = (height // stride) * (width // stride) * _ANCHORS
            try:
                score, dist, offs = (next(o for o in by_width[k] if o.shape[0] == n)
                                     for k in (1, 4, 10))
            except StopIteration:
                raise RedubError(f"SCRFD outputs do not match a {width}x{height} input at "
                                 f"stride {stride}", self.model) from None
            hit = np.flatnonzero(score[:, 0] >= self.threshold)
            if not hit.size:
                continue
            centres = self._anchor_centres(height, width, stride)[hit]
            d = dist[hit] * stride
            all_boxes.append(np.concatenate([centres - d[:, :2], centres + d[:, 2:]], 1))
            all_kps.append(centres[:, None, :] + offs[hit].reshape(-1, 5, 2) * stride)
            all_scores.append(score[hit, 0])
        if not all_scores:
            return np.zeros((0, 4)), np.zeros((0, 5, 2)), np.zeros(0)
        return np.concatenate(all_boxes), np.concatenate(all_kps), np.concatenate(all_scores)

    def _anchor_centres(self, height: int, width: int, stride: int) -> np.ndarray:
        key = (height, width, stride)
        if key not in self._centres:
            ys, xs = np.mgrid[: height // stride, : width // stride]
            cells = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32) * stride
            self._centres[key] = np.repeat(cells, _ANCHORS, axis=0)
        return self._centres[key]
