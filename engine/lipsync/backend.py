"""The generator stage: a backend chosen by name draws the new lower face for each frame.

A backend is prepared once for a job (it sees the face analysis, the source and dub audio and
the frames to edit) and then asked, frame by frame in clip order, for a crop: the picture of
the crop box with the new mouth and the landmarks of that mouth (for the mask). Adding a
backend means adding a module and one entry in the manifest's ``backends``
(``resources/models.json``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import cv2
import numpy as np

from engine.audio import AudioFeatures
from engine.face.analysis import FaceAnalysis
from engine.face.registry import resolve
from engine.models.manifest import backends
from engine.media.frame import Frame

# name -> "module:factory", from the backends section of resources/models.json
GENERATORS: dict[str, str] = backends("generator")


@dataclass
class SyncContext:
    """Everything a generator may use, for the frames being edited."""

    video: str
    analysis: FaceAnalysis  # the target face on every frame of the analysed span
    source_audio: AudioFeatures  # the clip's own sound, at the analysed frames
    dub_audio: AudioFeatures  # the dub, at the analysed frames (placed by its offset)
    edit: np.ndarray  # bool per analysed frame: re-sync it
    train: np.ndarray  # bool per analysed frame: footage the generator may learn from
    fps: float
    openness_gain: float | np.ndarray = 1.0  # one value, or one per analysed frame (a curve)
    # Seconds into the dub each analysed frame hears (its placement and offset applied);
    # None: the frame times. The dub features are already taken at these times.
    dub_times: np.ndarray | None = None
    # The dub itself, 16 kHz mono (n,) or (n, 1), for generators with their own audio features.
    dub_samples: np.ndarray | None = None
    stabilizer: str = "geometric"  # where neural generators get their face crops (STABILIZERS)
    warn: Callable[[str], None] = field(default=lambda message: None)


@dataclass(frozen=True)
class Generated:
    box: tuple[int, int, int, int]  # crop box in frame pixels (x0, y0, x1, y1), exclusive ends
    image: np.ndarray  # RGB uint8 crop with the new lower face
    landmarks: np.ndarray  # (68, 2) frame pixels: where the new mouth and chin are drawn


class Generator(Protocol):
    name: str

    def prepare(self, ctx: SyncContext) -> None:
        """Whole-job work: learn, predict, plan.

        May be called again with a new context (the editor re-plans after a curve edit): the
        new plan replaces the old, and readers or sessions already open are kept.
        """

    def generate(self, frame: Frame, k: int, box: tuple[int, int, int, int]) -> Generated:
        """The picture of ``box`` in ``frame`` (analysed frame ``k``) with the new mouth."""

    def close(self) -> None:
        """Release readers and sessions."""


def paste_crop(frame: Frame, box: tuple[int, int, int, int], crop: np.ndarray,
               matrix: np.ndarray) -> np.ndarray:
    """The RGB picture of ``box`` in ``frame`` with ``crop`` (RGB uint8, made through the
    frame-to-crop ``matrix``) warped back over it; box pixels the crop does not cover keep the
    frame's."""
    x0, y0, x1, y1 = box
    back = cv2.invertAffineTransform(matrix)
    back[:, 2] -= (x0, y0)
    image = np.array(frame.rgb_region(x0, y0, x1, y1))
    cv2.warpAffine(crop, back, (x1 - x0, y1 - y0), dst=image, flags=cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_TRANSPARENT)
    return image


def create_generator(name: str, **options: object) -> Generator:
    return resolve(GENERATORS, name, "lip-sync backend")(**options)
