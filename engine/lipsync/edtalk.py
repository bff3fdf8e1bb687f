"""The EDTalk generator: FaceFusion's public ``edtalk_256`` ONNX re-draws the face from the dub.

EDTalk (Tan et al., 2024; Apache-2.0) re-renders the whole face with the mouth the audio asks
for. The public ONNX file is FaceFusion's conversion, fed as FaceFusion's lip syncer feeds it:

- ``target``: the face aligned to the FFHQ five-point template at 512x512 (the analysis's
  smoothed keypoints, edge pixels repeated past the frame), area-halved to 256x256, RGB in
  [0, 1], (B, 3, 256, 256);
- ``source``: a 16-step window of the Wav2Lip log-mel, (B, 1, 80, 16). FaceFusion computes an
  approximation of that mel and takes the window ending at the frame; we feed the mel EDTalk
  was trained on (``engine.audio.mel``, as the Wav2Lip backend does) and EDTalk's own window,
  starting two 25 fps frames before the frame (centred on it), placed by each frame's
  timestamp in the dub;
- ``weight``: the strength of the lip motion, (1,) float32, FaceFusion's default 0.5;
- output 0: the face, RGB in [0, 1], (B, 3, 256, 256), put back through the inverse alignment.

The model's picture covers the whole aligned square; the pipeline's mask and multi-band blend
keep only the mouth region of it. Frames are batched on a fixed grid of the edited frames with
an own reader, as in ``wav2lip.py``; a model file whose batch axis is fixed at 1 runs frame by
frame.
"""
from __future__ import annotations


import cv2
import numpy as np

from engine.audio.windows import mel_windows
from engine.errors import RedubError
from engine.face import geometry as geo
from engine.lipsync.backend import Generated, SyncContext
from engine.lipsync.batches import BatchGrid
from engine.media.frame import Frame
from engine.media.reader import VideoReader
from engine.models.manifest import ModelEntry, get_entry
from engine.models.session import ModelSession, session_for
from engine.models.store import model_path
from engine.restore.align import ffhq_matrix, from_aligned, sampled_box, to_aligned
from engine.stabilize.liveportrait import LivePortrait, LivePortraitStabilizer

MODEL_ID = "edtalk_256"
ALIGN_SIZE = 512  # FaceFusion aligns at 512, then resizes to the model's size
WINDOW_LEAD = 2 / 25  # s: EDTalk's inference starts frame i's window at frame i - 2 (25 fps)
DEFAULT_WEIGHT = 0.5  # FaceFusion's default lip-syncer weight


class EDTalkGenerator:
    name = "edtalk"

    def __init__(self, batch: int = 8, weight: float = DEFAULT_WEIGHT,
                 providers: list[str] | None = None, cache_bytes: int = 64 << 20) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"EDTalk weight {weight} is outside 0..1")
        self.batch = batch
        self.weight = weight
        self.providers = providers
        self.cache_bytes = cache_bytes
        self.session: ModelSession | None = None
        self._reader: VideoReader | None = None
        self._analysis = None
        self._neutraliser: LivePortrait | None = None
        # The model's face (RGB uint8) per analysed frame and its frame-to-face matrix.
        self._grid: BatchGrid[tuple[np.ndarray, np.ndarray]] = BatchGrid(self._run)

    def prepare(self, ctx: SyncContext) -> None:
        entry = get_entry(MODEL_ID)
        self.session = session_for(model_path(MODEL_ID), f"lip generator '{MODEL_ID}'",
                                   self.providers)
        self._names, self._size = _inputs(self.session, entry)
        if self.session.fallback:
            ctx.warn(self.session.fallback)
        target = next(t for t in self.session.inputs if t.name == self._names["target"])
        self._step = 1 if target.shape and target.shape[0] == 1 else self.batch
        self._analysis = ctx.analysis
        # EDTalk aligns its own faces; the liveportrait stabilizer's mouth closing still applies.
        self._neutraliser = (LivePortrait(self.providers)
                             if ctx.stabilizer == LivePortraitStabilizer.name else None)
        times = ctx.analysis.times if ctx.dub_times is None else ctx.dub_times
        self._windows = mel_windows(ctx.dub_audio.mel, np.asarray(times) - WINDOW_LEAD)
        if self._reader is None:
            self._reader = VideoReader(ctx.video, cache_bytes=self.cache_bytes)
        with self._grid.lock:  # a re-plan: new windows, so no stale faces
            self._grid.reset(np.flatnonzero(ctx.edit & ctx.analysis.found), self.batch,
                             ctx.analysis.start, ctx.analysis.source)

    def generate(self, frame: Frame, k: int, box: tuple[int, int, int, int]) -> Generated:
        face, matrix = self._grid.get(k)
        x0, y0, x1, y1 = box
        picture, cover = from_aligned(face.astype(np.float32), matrix, box)
        original = frame.rgb_region(x0, y0, x1, y1).astype(np.float32)
        # Box pixels the aligned square does not reach keep the frame's.
        mixed = original + (picture - original) * cover[..., None]
        image = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
        return Generated(box=box, image=image, landmarks=self._analysis.landmarks[k])

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._neutraliser is not None:
            self._neutraliser.close()
            self._neutraliser = None
        self._grid.clear()

    def _run(self, chunk: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        a = self._analysis
        faces, matrices, landmarks = [], [], []
        for j in chunk.tolist():
            frame = self._reader.frame(a.start + j)
            matrix = ffhq_matrix(a.keypoints[j], ALIGN_SIZE)
            x0, y0, x1, y1 = sampled_box(matrix, ALIGN_SIZE, frame.width, frame.height)
            faces.append(to_aligned(frame.rgb_region(x0, y0, x1, y1), (x0, y0), matrix,
                                    ALIGN_SIZE))
            landmarks.append(geo.apply(matrix, a.landmarks[j][None])[0])
            # The resize maps pixel centres x -> scale * x + (scale - 1) / 2.
            scale = self._size / ALIGN_SIZE
            matrix = matrix * scale
            matrix[:, 2] += (scale - 1) / 2
            matrices.append(matrix)
        if self._neutraliser is not None:
            faces = self._neutraliser.neutralise(np.stack(faces), np.stack(landmarks))
        faces = [cv2.resize(face, (self._size, self._size), interpolation=cv2.INTER_AREA)
                 for face in faces]
        target = np.stack(faces).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        source = self._windows[chunk][:, None]
        weight = np.array([self.weight], np.float32)
        outs = [self.session.run({self._names["source"]: source[i:i + self._step],
                                  self._names["target"]: target[i:i + self._step],
                                  self._names["weight"]: weight})[0]
                for i in range(0, len(chunk), self._step)]
        out = np.concatenate(outs).transpose(0, 2, 3, 1)
        images = np.clip(np.rint(np.clip(out, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)
        return {int(j): (img, m) for j, img, m in zip(chunk, images, matrices)}


def _inputs(session: ModelSession, entry: ModelEntry) -> tuple[dict[str, str], int]:
    """The model's source, target and weight input names and its face size, from the manifest's
    contract (inputs without a name match the model's by position)."""
    names: dict[str, str] = {}
    size = 0
    for index, spec in enumerate(entry.contract.inputs):
        name = spec.name or session.inputs[index].name
        if tuple(spec.shape[-2:]) == (80, 16):
            names["source"] = name
        elif len(spec.shape) == 4 and spec.shape[1] == 3 and isinstance(spec.shape[-1], int):
            names["target"], size = name, spec.shape[-1]
        elif len(spec.shape) == 1:
            names["weight"] = name
    if len(names) != 3:
        raise RedubError(f"the manifest's contract for '{entry.id}' has no (B,1,80,16) mel, "
                         "(B,3,S,S) face and (1,) weight input", session.path)
    return names, size
