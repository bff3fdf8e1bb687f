"""The Wav2Lip generator: the public 96x96 model (ONNX) draws the lower face for each frame.

Per frame the stabilizer gives the pose-normalised face crop at 96x96; the model sees it twice,
as the crop with its lower half blanked (where to draw, in which pose) and whole as the
reference (who, in which light), six channels of BGR in [0, 1] as the original inference and
the public ONNX conversions feed it, with the frame's 80x16 mel window of the dub. The
reference is the same frame, as in the original inference: its pose and lighting match the
masked half exactly, so the drawn lower face joins the upper face without a seam (a fixed
reference frame would carry another pose and another light into every frame).

Frames are requested one by one in clip order (two at a time, from the render threads); the
generator reads ahead with its own reader and runs the model on batches of consecutive edited
frames, keeping the outputs of the last few batches only. The output goes back into the frame
through the crop's inverse transform; the pipeline then applies the lower-face mask and
multi-band blending.
"""
from __future__ import annotations

import numpy as np

from engine.errors import RedubError
from engine.lipsync.backend import Generated, SyncContext, paste_crop
from engine.lipsync.batches import BatchGrid
from engine.media.frame import Frame
from engine.media.reader import VideoReader
from engine.models.manifest import ModelEntry, get_entry
from engine.models.session import ModelSession, session_for
from engine.models.store import model_path
from engine.stabilize.backend import Framing, Stabilizer, create_stabilizer

# Wav2Lip's face box: brows to below the chin, the nose tip on the middle row (the lower half,
# which the model redraws, starts there), in canonical face units (engine.face.geometry).
FRAMING = Framing(centre=(0.5, 0.66), side=0.88, size=96)


class Wav2LipGenerator:
    name = "wav2lip"

    def __init__(self, model: str = "wav2lip_96", batch: int = 16,
                 providers: list[str] | None = None, cache_bytes: int = 64 << 20) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.model_id = model
        self.batch = batch
        self.providers = providers
        self.cache_bytes = cache_bytes
        self.session: ModelSession | None = None
        self._stabilizer: Stabilizer | None = None
        self._reader: VideoReader | None = None
        self._analysis = None
        # The model's face (RGB uint8) per analysed frame and its frame-to-crop matrix.
        self._grid: BatchGrid[tuple[np.ndarray, np.ndarray]] = BatchGrid(self._run)

    def prepare(self, ctx: SyncContext) -> None:
        entry = get_entry(self.model_id)
        if entry.stage != "generator":
            raise RedubError(f"model '{self.model_id}' is a {entry.stage}, not a lip generator")
        self.session = session_for(model_path(self.model_id), f"lip generator '{self.model_id}'",
                                   self.providers)
        self._mel_input, self._face_input, self._size = _inputs(self.session, entry)
        if self.session.fallback:
            ctx.warn(self.session.fallback)
        self._framing = FRAMING.with_size(self._size)
        self._analysis = ctx.analysis
        self._windows = ctx.dub_audio.windows
        with self._grid.lock:
            self._grid.reset(np.flatnonzero(ctx.edit & ctx.analysis.found), self.batch,
                             ctx.analysis.start, ctx.analysis.source)
        self._stabilizer = create_stabilizer(ctx.stabilizer)
        self._stabilizer.prepare(ctx.analysis)
        self._reader = VideoReader(ctx.video, cache_bytes=self.cache_bytes)

    def generate(self, frame: Frame, k: int, box: tuple[int, int, int, int]) -> Generated:
        face, matrix = self._grid.get(k)
        return Generated(box=box, image=paste_crop(frame, box, face, matrix),
                         landmarks=self._analysis.landmarks[k])

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._stabilizer is not None:
            self._stabilizer.close()
            self._stabilizer = None
        self._grid.clear()

    def _run(self, chunk: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        start = self._analysis.start
        frames = [self._reader.frame(start + int(j)) for j in chunk]
        crops = self._stabilizer.crops(frames, [int(j) for j in chunk], self._framing)
        faces = np.stack([c.image[:, :, ::-1] for c in crops])  # RGB -> BGR
        masked = faces.copy()
        masked[:, self._size // 2:] = 0
        target = np.concatenate([masked, faces], axis=3).transpose(0, 3, 1, 2)
        out = self.session.run_batched({
            self._mel_input: self._windows[chunk][:, None],
            self._face_input: target.astype(np.float32) / 255.0,
        }, self.batch)[0]
        images = (np.clip(out.transpose(0, 2, 3, 1), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return {int(j): (np.ascontiguousarray(img[:, :, ::-1]), crop.transform)
                for j, img, crop in zip(chunk, images, crops)}


def wav2lip_gan(**options: object) -> Wav2LipGenerator:
    """The same generator on the GAN-trained weights (sharper, slightly less exact sync)."""
    generator = Wav2LipGenerator(model="wav2lip_gan_96", **options)
    generator.name = "wav2lip_gan"
    return generator


def _inputs(session: ModelSession, entry: ModelEntry) -> tuple[str, str, int]:
    """The mel and face input names and the face size, read from the manifest's contract.

    Contract inputs without a name match the model's by position.
    """
    mel = face = None
    size = 0
    for index, spec in enumerate(entry.contract.inputs):
        name = spec.name or session.inputs[index].name
        if tuple(spec.shape[-2:]) == (80, 16):
            mel = name
        elif len(spec.shape) == 4 and spec.shape[1] == 6 and isinstance(spec.shape[-1], int):
            face, size = name, spec.shape[-1]
    if mel is None or face is None:
        raise RedubError(f"the manifest's contract for '{entry.id}' has no (B,1,80,16) mel and "
                         "(B,6,S,S) face input", session.path)
    return mel, face, size
