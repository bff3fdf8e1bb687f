"""Facial landmarks: the interface every 68-point landmarker backend implements, and its registry.

A landmarker takes a picture and face boxes and returns 68 points per face (iBUG 300-W layout,
see :mod:`engine.face.geometry`) with a score in [0, 1] saying how surely the box holds a face
that fits those points; the tracker re-detects when the score drops. Boxes follow the frontal
detector convention of :data:`engine.face.geometry.FACE_BOX`. Backends with another point
layout map theirs to the 68 points.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from engine.face.registry import resolve
from engine.models.manifest import backends

# name -> "module:factory", from the backends section of resources/models.json
LANDMARKERS: dict[str, str] = backends("landmarker")


class Landmarker(Protocol):
    name: str
    color: bool  # True: takes RGB (H, W, 3); False: takes grey (H, W)

    def settings(self) -> dict[str, Any]:
        """Everything that changes its results (for cache keys)."""

    def landmarks(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points (N, 68, 2) float32 in image pixels and scores (N,) for boxes (N, 4)."""


def landmarker_names() -> list[str]:
    return sorted(LANDMARKERS)


def create_landmarker(name: str, **options: Any) -> Landmarker:
    """The landmarker registered as ``name``, built with ``options`` (e.g. ``model=PATH``)."""
    return resolve(LANDMARKERS, name, "landmarker")(**options)
