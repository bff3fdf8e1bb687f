"""The restorer stage: a backend chosen by name retouches each generated crop.

It runs between generation and blending, only on frames the pipeline edits: it gets the frame,
the generator's crop (``Generated``: the mouth-region box, its picture and the new mouth's
landmarks) and the target face on that frame, and returns a crop of the same box. A restorer
may change the crop only inside the mouth-region mask, so the rest of the face keeps the
source's identity. Adding a backend means adding a module and one entry in the
manifest's ``backends`` (``resources/models.json``).
"""
from __future__ import annotations

from typing import Protocol

from engine.face.analysis import FaceFrame
from engine.face.registry import resolve
from engine.models.manifest import backends
from engine.lipsync.backend import Generated
from engine.media.frame import Frame

# name -> "module:factory", from the backends section of resources/models.json
RESTORERS: dict[str, str] = backends("restorer")


class Restorer(Protocol):
    name: str

    def restore(self, frame: Frame, gen: Generated, face: FaceFrame) -> Generated:
        """``gen`` retouched inside the mouth region; ``face`` is the target on ``frame``."""

    def close(self) -> None:
        """Release sessions."""


class NoRestorer:
    """The default: the generated crop as it is."""

    name = "none"

    def __init__(self, **options: object) -> None:
        pass  # strength, mask and fidelity mean nothing without a model

    def restore(self, frame: Frame, gen: Generated, face: FaceFrame) -> Generated:
        return gen

    def close(self) -> None:
        pass


def create_restorer(name: str, **options: object) -> Restorer:
    """The restorer ``name`` with ``options`` (``strength``, ``mask``, ``fidelity``,
    ``providers``: see :class:`engine.restore.onnx_restorer.OnnxRestorer`)."""
    return resolve(RESTORERS, name, "restorer")(**options)
