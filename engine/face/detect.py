"""Face detection: the interface every detector backend implements, and its registry.

A detector takes one picture and returns boxes, five keypoints and scores. Backends are named;
:data:`DETECTORS` maps each name to ``"module:factory"`` so only the chosen backend's libraries
are imported. Adding a backend means adding one module and one entry in the manifest's
``backends`` (``resources/models.json``).

:func:`detect_multiscale` runs any detector on a downscaled copy first and goes finer (up to
2x upsampling) only when nothing was found or small faces are wanted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from engine.face.registry import resolve
from engine.models.manifest import backends

# name -> "module:factory", from the backends section of resources/models.json
DETECTORS: dict[str, str] = backends("detector")


@dataclass(frozen=True)
class Detections:
    """Faces found in one picture, in its pixel coordinates.

    ``boxes`` (N, 4) x0, y0, x1, y1; ``keypoints`` (N, 5, 2) left eye, right eye, nose tip,
    left and right mouth corner; ``scores`` (N,) in [0, 1].
    """

    boxes: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32),
                          np.zeros(0, np.float32))

    def __len__(self) -> int:
        return len(self.scores)

    def scaled(self, factor: float) -> Detections:
        """The same faces in a picture ``factor`` times larger."""
        return Detections(self.boxes * factor, self.keypoints * factor, self.scores)

    def take(self, which: np.ndarray | list[int]) -> Detections:
        return Detections(self.boxes[which], self.keypoints[which], self.scores[which])

    @staticmethod
    def concat(parts: list[Detections]) -> Detections:
        if not parts:
            return Detections.empty()
        return Detections(np.concatenate([p.boxes for p in parts]),
                          np.concatenate([p.keypoints for p in parts]),
                          np.concatenate([p.scores for p in parts]))


class Detector(Protocol):
    name: str
    color: bool  # True: takes RGB (H, W, 3); False: takes grey (H, W)
    min_face: int  # smallest face (box side, pixels) it finds reliably at 1:1
    work_size: int  # long side of the picture it is fastest and surest on

    def settings(self) -> dict[str, Any]:
        """Everything that changes its results (for cache keys)."""

    def detect(self, image: np.ndarray) -> Detections:
        """Faces in ``image`` (uint8 grey or RGB as :attr:`color` says), any size."""


def detector_names() -> list[str]:
    return sorted(DETECTORS)


def create_detector(name: str, **options: Any) -> Detector:
    """The detector registered as ``name``, built with ``options`` (e.g. ``model=PATH``)."""
    return resolve(DETECTORS, name, "face detector")(**options)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best first."""
    boxes = np.asarray(boxes, dtype=np.float64)
    order = np.argsort(-np.asarray(scores), kind="stable")
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        lo = np.maximum(boxes[i, :2], boxes[rest, :2])
        hi = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
        overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[overlap <= threshold]
    return np.array(keep, dtype=np.int64)


# The finest detection level is kept to about a UHD frame's worth of pixels (HOG there takes
# half a second), so on larger pictures the smallest face found grows with the picture.
_MAX_DETECT_PIXELS = 3840 * 2160


def detection_scales(detector: Detector, width: int, height: int, min_face: int) -> list[float]:
    """Scale factors to try, coarse to fine.

    The first brings the picture down to the detector's working size; each next one doubles,
    until faces of ``min_face`` source pixels reach the detector's own minimum (at most 2x up,
    and at most about a UHD frame's pixels).
    """
    long_side = max(width, height)
    scale = min(1.0, detector.work_size / long_side)
    largest = min(2.0, (_MAX_DETECT_PIXELS / (width * height)) ** 0.5)
    finest = min(largest, max(scale, detector.min_face / max(min_face, 1)))
    scales = [scale]
    while scales[-1] < finest * 0.99:
        scales.append(min(scales[-1] * 2, finest))
    return scales


def smallest_face(detector: Detector, width: int, height: int, min_face: int) -> int:
    """Box side (source pixels) of the smallest face :func:`detection_scales` can find."""
    finest = detection_scales(detector, width, height, min_face)[-1]
    return int(round(detector.min_face / finest))


def detect_multiscale(detector: Detector, image: np.ndarray, scales: list[float], *,
                      all_levels: bool = False) -> Detections:
    """Detect at each scale in turn; stop at the first that finds a face unless ``all_levels``.

    Coarse levels find large faces cheaply; finer ones add small faces. With ``all_levels`` the
    results of every level are merged (a face found twice keeps its best-scored box).
    """
    found: list[Detections] = []
    for scale in scales:
        if abs(scale - 1.0) < 1e-3:
            picture = image
        else:
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            picture = cv2.resize(image, None, fx=scale, fy=scale, interpolation=interp)
        dets = detector.detect(picture)
        if len(dets):
            found.append(dets.scaled(1.0 / scale))
            if not all_levels:
                break
    merged = Detections.concat(found)
    if len(found) > 1:
        merged = merged.take(nms(merged.boxes, merged.scores, 0.4))
    return merged

