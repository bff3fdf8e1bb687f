"""Face restorers in the public ONNX contract: an FFHQ-aligned (1,3,S,S) RGB crop in [-1, 1]
in, the restored crop in the same form out, and optionally scalar inputs such as CodeFormer's
fidelity weight.

Per frame the restorer sees the face as it will be composited (the generated mouth laid over
the frame inside the mouth mask), aligns it to the FFHQ template from the target's five
keypoints, runs the model, and warps the result back over the generated crop's box only. It is
mixed into the generated crop at ``strength`` inside the mouth mask (the target's and the new
mouth's lower-face masks): eyes, brows and skin texture elsewhere stay the source's, which
these models would otherwise redraw with their own idea of a face. The pipeline's blend then
applies the same mask again, so nothing outside it can change.

A backend is a subclass naming its manifest entry; the manifest's contract says which input is
the picture and which are scalars.
"""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from engine.errors import RedubError, UsageError
from engine.face.analysis import FaceFrame
from engine.lipsync.backend import Generated
from engine.mask import MaskSettings, landmark_mask
from engine.media.frame import Frame
from engine.models.manifest import MANIFEST_PATH, ModelEntry, get_entry
from engine.models.session import ModelSession, session_for
from engine.models.store import model_path
from engine.restore.align import ffhq_matrix, from_aligned, sampled_box, to_aligned

_TEMPLATE_SIZE = 512  # the crop side of models that leave it free


class OnnxRestorer:
    """A restorer backed by the manifest's model ``model_id`` (set by subclasses).

    ``strength`` (0..1): how much of the restored picture replaces the generated one inside the
    mask (0: none, and the model is not run). ``fidelity`` (0..1) feeds the model's scalar
    inputs where its contract has any (CodeFormer: 0 restores more, 1 stays closer to the
    input). ``mask``: the pipeline's mask settings. ``providers``: see
    :func:`engine.models.session.providers`.
    """

    name = ""
    model_id = ""

    def __init__(self, *, strength: float = 0.8, fidelity: float = 0.7,
                 mask: MaskSettings = MaskSettings(),
                 providers: list[str] | None = None) -> None:
        for label, value in (("strength", strength), ("fidelity", fidelity)):
            if not 0.0 <= value <= 1.0:
                raise UsageError(f"restore {label} {value} is outside 0..1")
        self.strength = float(strength)
        self.mask = mask
        entry = get_entry(self.model_id)
        self.session: ModelSession | None = session_for(
            model_path(self.model_id), f"restorer '{self.model_id}'", providers)
        self._image, self._size, self._scalars = _inputs(self.session, entry, fidelity)
        self._output = _output_index(self.session, entry)

    def restore(self, frame: Frame, gen: Generated, face: FaceFrame) -> Generated:
        if self.strength <= 0.0:
            return gen
        x0, y0, x1, y1 = gen.box
        mask = np.maximum(landmark_mask(face.landmarks, gen.box, self.mask),
                          landmark_mask(gen.landmarks, gen.box, self.mask))
        if not mask.any():
            return gen
        size = self._size
        matrix = ffhq_matrix(face.keypoints, size)
        sx0, sy0, sx1, sy1 = sampled_box(matrix, size, frame.width, frame.height)
        picture = frame.rgb_region(sx0, sy0, sx1, sy1).astype(np.float32)
        # The generated mouth over the frame, as the blend will show it.
        ix0, iy0, ix1, iy1 = max(x0, sx0), max(y0, sy0), min(x1, sx1), min(y1, sy1)
        if ix1 > ix0 and iy1 > iy0:
            inner = picture[iy0 - sy0:iy1 - sy0, ix0 - sx0:ix1 - sx0]
            alpha = mask[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0, None]
            inner += alpha * (gen.image[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] - inner)
        restored = self.run_aligned(to_aligned(picture, (sx0, sy0), matrix, size))
        back, coverage = from_aligned(restored, matrix, gen.box)
        weight = (np.float32(self.strength) * mask * coverage)[..., None]
        source = gen.image.astype(np.float32)
        # Where the weight is 0 the crop comes back bit-identical (exact float arithmetic).
        image = cv2.add(source + weight * (back - source), 0.0, dtype=cv2.CV_8U)
        return replace(gen, image=image)

    @property
    def size(self) -> int:
        """The side S of the FFHQ-aligned crops the model takes."""
        return self._size

    def run_aligned(self, aligned: np.ndarray) -> np.ndarray:
        """The model on one FFHQ-aligned crop (S, S, 3) RGB float32 in 0..255: the restored
        crop, float32 in 0..255."""
        tensor = (aligned.transpose(2, 0, 1)[None] / np.float32(127.5) - 1).astype(np.float32)
        out = self.session.run({self._image: tensor, **self._scalars})[self._output]
        return (np.clip(out[0], -1.0, 1.0).transpose(1, 2, 0) + 1) * np.float32(127.5)

    def close(self) -> None:
        self.session = None  # the session cache keeps it for the next job


def _inputs(session: ModelSession, entry: ModelEntry,
            fidelity: float) -> tuple[str, int, dict[str, np.ndarray]]:
    """The picture input's name, the crop side S, and the scalar inputs filled with
    ``fidelity``, read from the manifest's contract (unnamed inputs match by position)."""
    by_name = {t.name: t for t in session.inputs}
    image, size, scalars = None, _TEMPLATE_SIZE, {}
    for index, spec in enumerate(entry.contract.inputs):
        tensor = session.inputs[index] if spec.name is None else by_name[spec.name]
        if len(spec.shape) == 4:
            image = tensor.name
            side = tensor.shape[-1]
            size = side if isinstance(side, int) else _TEMPLATE_SIZE
        else:
            shape = [d if isinstance(d, int) else 1 for d in spec.shape]
            scalars[tensor.name] = np.full(shape, fidelity, dtype=spec.dtype)
    if image is None:
        raise RedubError(f"the contract of '{entry.id}' has no (1,3,S,S) picture input",
                         MANIFEST_PATH)
    return image, size, scalars


def _output_index(session: ModelSession, entry: ModelEntry) -> int:
    spec = entry.contract.outputs[0]
    if spec.name is None:
        return 0
    return [t.name for t in session.outputs].index(spec.name)
