"""The neural stabilizer: the geometric crop through the manifest's expression neutraliser.

The model in the ``stabilizer`` slot (a D-Net-style expression neutraliser or a lip-retargeting
network; none is distributed, users import one) takes the pose-normalised face crop, RGB
(B, 3, S, S) in the contract's value range, and returns the same face with a neutral, closed
mouth. Generators then see no trace of the original mouth in their reference picture. The crop
keeps the geometric crop's transform: the model changes expression, not framing.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from engine.errors import RedubError
from engine.face.analysis import FaceAnalysis
from engine.media.frame import Frame
from engine.models.manifest import ModelEntry, TensorSpec, get_entry
from engine.models.session import ModelSession, session_for
from engine.models.store import model_path
from engine.stabilize.backend import FaceCrop, Framing
from engine.stabilize.geometric import GeometricStabilizer

DEFAULT_MODEL = "expression_neutralizer"
_BATCH = 8


class NeuralStabilizer:
    name = "neural"

    def __init__(self, model: str = DEFAULT_MODEL, providers: list[str] | None = None) -> None:
        self.model_id = model
        self.providers = providers
        self.session: ModelSession | None = None
        self._geometric = GeometricStabilizer()

    def prepare(self, analysis: FaceAnalysis) -> None:
        entry = get_entry(self.model_id)
        if entry.stage != "stabilizer":
            raise RedubError(f"model '{self.model_id}' is a {entry.stage}, not a stabilizer")
        self.session = session_for(model_path(self.model_id), f"stabilizer '{self.model_id}'",
                                   self.providers)
        self._input, self._in_spec, self._out_spec = _contract(self.session, entry)
        self._size = int(self._in_spec.shape[-1])
        self._geometric.prepare(analysis)

    def crops(self, frames: Sequence[Frame], indices: Sequence[int],
              framing: Framing) -> list[FaceCrop]:
        # Framed as asked, sampled at the model's size.
        raw = self._geometric.crops(frames, indices, framing.with_size(self._size))
        pictures = np.stack([c.image for c in raw]).transpose(0, 3, 1, 2)
        out = self.session.run_batched({self._input: _to_range(pictures, self._in_spec)},
                                       _BATCH)[0]
        neutral = _from_range(out, self._out_spec).transpose(0, 2, 3, 1)
        return [FaceCrop(image=_resize(image, framing.size),
                         transform=_rescaled(crop.transform, framing.size / self._size))
                for image, crop in zip(neutral, raw)]

    def close(self) -> None:
        self._geometric.close()


def _contract(session: ModelSession, entry: ModelEntry) -> tuple[str, TensorSpec, TensorSpec]:
    spec, out = entry.contract.inputs[0], entry.contract.outputs[0]
    square = len(spec.shape) == 4 and spec.shape[1] == 3 and isinstance(spec.shape[-1], int) \
        and spec.shape[-1] == spec.shape[-2]
    if len(entry.contract.inputs) != 1 or not square:
        raise RedubError(f"the manifest's contract for '{entry.id}' is not one (B,3,S,S) face "
                         "input", session.path)
    return spec.name or session.inputs[0].name, spec, out


def _to_range(pictures: np.ndarray, spec: TensorSpec) -> np.ndarray:
    lo, hi = spec.range or (0.0, 1.0)
    return (lo + pictures.astype(np.float32) * ((hi - lo) / 255.0)).astype(np.float32)


def _from_range(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    lo, hi = spec.range or (0.0, 1.0)
    unit = np.clip((values - lo) / (hi - lo), 0.0, 1.0)
    return (unit * 255.0 + 0.5).astype(np.uint8)


def _rescaled(matrix: np.ndarray, factor: float) -> np.ndarray:
    """A frame-to-crop matrix for the crop resized by ``factor`` (pixel centres kept aligned,
    as ``cv2.resize`` maps them)."""
    out = matrix * factor
    out[:, 2] += 0.5 * factor - 0.5
    return out


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size:
        return np.ascontiguousarray(image)
    shrink = image.shape[0] > size
    return cv2.resize(image, (size, size),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
