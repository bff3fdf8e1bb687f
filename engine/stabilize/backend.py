"""The stabilizer stage: steady, pose-normalised square face crops for the neural stages.

A generator that works on a fixed-size face picture (Wav2Lip's 96x96) asks the stabilizer for
the crop of each frame it edits. The crop is framed in canonical face coordinates
(:mod:`engine.face.geometry`) through the smoothed image-to-canonical transform of the face
analysis, so the face sits upright at the same place and size on every frame; the 2x3
transform from frame pixels to crop pixels comes with it, to put the generated picture back.
Backends are chosen by name from ``STABILIZERS`` (``geometric`` is the default; ``neural``
also runs the manifest's expression-neutraliser model on the crop).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from engine.face.analysis import FaceAnalysis
from engine.face.registry import resolve
from engine.models.manifest import backends
from engine.media.frame import Frame

# name -> "module:factory", from the backends section of resources/models.json
STABILIZERS: dict[str, str] = backends("stabilizer")


@dataclass(frozen=True)
class Framing:
    """A square crop: its centre and side in canonical face units, and its size in pixels."""

    centre: tuple[float, float]
    side: float
    size: int

    def matrix(self, to_canonical: np.ndarray) -> np.ndarray:
        """Frame pixels -> crop pixels, composed with an image-to-canonical transform (2, 3)."""
        k = self.size / self.side
        origin = np.array(self.centre) - self.side / 2
        m = np.asarray(to_canonical, dtype=np.float64) * k
        m[:, 2] -= origin * k
        return m

    def with_size(self, size: int) -> Framing:
        return Framing(self.centre, self.side, size)


@dataclass(frozen=True)
class FaceCrop:
    image: np.ndarray  # RGB uint8 (size, size, 3)
    transform: np.ndarray  # (2, 3) float64: frame pixels -> crop pixels


class Stabilizer(Protocol):
    name: str

    def prepare(self, analysis: FaceAnalysis) -> None:
        """Whole-job work (load a model); ``analysis`` covers the frames asked for later."""

    def crops(self, frames: Sequence[Frame], indices: Sequence[int],
              framing: Framing) -> list[FaceCrop]:
        """The crop of each frame (analysed frame ``indices[i]``, face found), in one batch."""

    def close(self) -> None:
        """Release sessions."""


def create_stabilizer(name: str, **options: object) -> Stabilizer:
    return resolve(STABILIZERS, name, "stabilizer")(**options)
