"""The Video ReTalking generator: LNet draws the mouth for the dub, ENet sharpens it to 384x384.

Per edited frame, as the official inference feeds its ``model(mel, img_batch, reference)``:

- the original face crop (Wav2Lip's face box, which LNet and ENet were trained on, at 384x384)
  with rows 192.. zeroed: where to draw, in which pose and light;
- the reference: the same frame's face from the chosen stabilizer (``dnet``: re-rendered with a
  neutral expression, as the original does, so the reference's mouth says nothing), enhanced by
  GPEN-BFR-512 as the official "Reference Enhancement" step does: the face aligned to the FFHQ
  template from the frame's five keypoints, restored, put back over the reference;
- the frame's 80x16 Wav2Lip mel window of the dub.

The six channels are BGR in [0, 1] as in the original; the output (BGR, clamped) goes back
into the frame through the crop's inverse transform, and the pipeline's mask and blend
composite it. The reference is cropped wider than the face box first, so GPEN sees the whole
face it was trained on rather than edges repeated past the box.

Frames are batched on a fixed grid of the edited frames with an own reader, as the Wav2Lip
backend does (``engine.lipsync.wav2lip``).
"""
from __future__ import annotations

import cv2
import numpy as np

from engine.errors import RedubError
from engine.face import geometry as geo
from engine.face.pixels import warp
from engine.lipsync.backend import Generated, SyncContext, paste_crop
from engine.lipsync.batches import BatchGrid, default_batch
from engine.lipsync.wav2lip import FRAMING as WAV2LIP_FRAMING
from engine.media.frame import Frame
from engine.media.reader import VideoReader
from engine.models.manifest import get_entry
from engine.models.session import ModelSession, session_for
from engine.models.store import model_path
from engine.restore.align import ffhq_matrix, from_aligned, to_aligned
from engine.restore.gpen import GPENRestorer
from engine.stabilize.backend import FaceCrop, Framing, Stabilizer, create_stabilizer
from engine.stabilize.geometric import GeometricStabilizer

MODEL_ID = "retalking_enet"
SIZE = 384  # ENet's face side; rows SIZE // 2 .. are blanked in the original crop
FRAMING = WAV2LIP_FRAMING.with_size(SIZE)
# Frames per run: the official LNet_batch_size (16) on a GPU; 8 on a CPU, where ENet gains
# nothing from batching but D-Net (which runs on the same frames) is 1.4x faster at 8 than at 1.
CPU_BATCH, GPU_BATCH = 8, 16


def wide_framing(aligned_size: int) -> Framing:
    """A square in canonical units holding :data:`FRAMING` and the FFHQ-aligned square of the
    template face, sampled so that square is about ``aligned_size`` pixels across."""
    to_aligned_face = ffhq_matrix(geo.five_points(geo.TEMPLATE_68), aligned_size)
    corners = geo.apply(geo.invert(to_aligned_face),
                        np.array([(0, 0), (aligned_size, 0), (aligned_size, aligned_size),
                                  (0, aligned_size)], np.float64))
    half = FRAMING.side / 2
    lo = np.minimum(corners.min(0), np.array(FRAMING.centre) - half)
    hi = np.maximum(corners.max(0), np.array(FRAMING.centre) + half)
    side = float((hi - lo).max())
    centre = (lo + hi) / 2
    return Framing(centre=(float(centre[0]), float(centre[1])), side=side,
                   size=int(np.ceil(side * geo.scale_of(to_aligned_face) / 2) * 2))


class RetalkingGenerator:
    name = "retalking"

    def __init__(self, batch: int | None = None, providers: list[str] | None = None,
                 cache_bytes: int = 64 << 20) -> None:
        if batch is None:
            batch = default_batch(providers, CPU_BATCH, GPU_BATCH)
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.batch = batch
        self.providers = providers
        self.cache_bytes = cache_bytes
        self.session: ModelSession | None = None
        self._enhancer: GPENRestorer | None = None
        self._original = GeometricStabilizer()
        self._reference: Stabilizer | None = None
        self._reader: VideoReader | None = None
        self._analysis = None
        # ENet's face (RGB uint8) per analysed frame and its frame-to-crop matrix.
        self._grid: BatchGrid[tuple[np.ndarray, np.ndarray]] = BatchGrid(self._run)

    def prepare(self, ctx: SyncContext) -> None:
        if self.session is None:
            self.session = session_for(model_path(MODEL_ID), f"lip generator '{MODEL_ID}'",
                                       self.providers)
            self._audio_input, self._face_input = _inputs(self.session)
            self._enhancer = GPENRestorer(providers=self.providers)
            self._wide = wide_framing(self._enhancer.size)
        for session in (self.session, self._enhancer.session):
            if session.fallback:
                ctx.warn(session.fallback)
        with self._grid.lock:
            # A re-plan on the same analysis keeps the stabilizer (D-Net's coefficients).
            same = self._reference is not None and self._analysis is ctx.analysis \
                and self._reference.name == ctx.stabilizer
            if not same:
                self._close_reference()
                self._original.prepare(ctx.analysis)
                if ctx.stabilizer == GeometricStabilizer.name:
                    self._reference = self._original
                else:
                    self._reference = create_stabilizer(ctx.stabilizer, providers=self.providers)
                    self._reference.prepare(ctx.analysis)
            self._analysis = ctx.analysis
            self._windows = ctx.dub_audio.windows
            self._grid.reset(np.flatnonzero(ctx.edit & ctx.analysis.found), self.batch,
                             ctx.analysis.start, ctx.analysis.source)
        if self._reader is None:
            self._reader = VideoReader(ctx.video, cache_bytes=self.cache_bytes)

    def generate(self, frame: Frame, k: int, box: tuple[int, int, int, int]) -> Generated:
        face, matrix = self._grid.get(k)
        return Generated(box=box, image=paste_crop(frame, box, face, matrix),
                         landmarks=self._analysis.landmarks[k])

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._close_reference()
        if self._enhancer is not None:
            self._enhancer.close()
            self._enhancer = None
        self.session = None
        self._grid.clear()

    def _close_reference(self) -> None:
        if self._reference is not None and self._reference is not self._original:
            self._reference.close()
        self._original.close()
        self._reference = None

    def _run(self, chunk: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        ks = [int(j) for j in chunk]
        frames = [self._reader.frame(self._analysis.start + k) for k in ks]
        originals = self._original.crops(frames, ks, FRAMING)
        references = self._reference.crops(frames, ks, self._wide)
        refs = np.stack([self.enhanced(c, k) for c, k in zip(references, ks)])
        masked = np.stack([c.image for c in originals])[..., ::-1].copy()  # RGB -> BGR
        masked[:, SIZE // 2:] = 0
        face = np.concatenate([masked, refs[..., ::-1]], axis=3).transpose(0, 3, 1, 2)
        out = self.session.run_batched({
            self._audio_input: self._windows[chunk][:, None],
            self._face_input: face.astype(np.float32) / np.float32(255),
        }, self.batch)[0]
        # Truncated to 8 bits, as the official inference casts its prediction.
        images = (np.clip(out, 0.0, 1.0).transpose(0, 2, 3, 1) * 255.0).astype(np.uint8)
        return {k: (np.ascontiguousarray(img[:, :, ::-1]), crop.transform)
                for k, img, crop in zip(ks, images, originals)}

    def enhanced(self, wide: FaceCrop, k: int) -> np.ndarray:
        """The reference of analysed frame ``k`` at :data:`FRAMING` (RGB uint8) from its
        ``wide`` crop, with GPEN's restoration of the FFHQ-aligned face laid over it where the
        aligned square reaches."""
        size = self._enhancer.size
        keypoints = self._analysis.keypoints[k]
        restored = self._enhancer.run_aligned(to_aligned(
            wide.image.astype(np.float32), (0, 0),
            ffhq_matrix(geo.apply(wide.transform, keypoints), size), size))
        # Wide crop pixels -> FRAMING's: one scale and shift (both follow the face's transform).
        inner = FRAMING.matrix(geo.invert(self._wide.matrix(np.eye(2, 3))))
        base = warp(wide.image, inner, SIZE).astype(np.float32)
        # The same alignment, fitted on the keypoints in FRAMING's pixels (the least-squares fit
        # commutes with the similarity between the crops).
        to_face = ffhq_matrix(geo.apply(FRAMING.matrix(self._analysis.transforms[k]),
                                        keypoints), size)
        back, cover = from_aligned(restored, to_face, (0, 0, SIZE, SIZE))
        return cv2.add(base + cover[..., None] * (back - base), 0.0, dtype=cv2.CV_8U)


def _inputs(session: ModelSession) -> tuple[str, str]:
    """The mel and face input names, read from the manifest's contract (unnamed inputs match
    by position)."""
    mel = face = None
    for index, spec in enumerate(get_entry(MODEL_ID).contract.inputs):
        name = spec.name or session.inputs[index].name
        if tuple(spec.shape[-2:]) == (80, 16):
            mel = name
        elif len(spec.shape) == 4 and spec.shape[1] == 6:
            face = name
    if mel is None or face is None:
        raise RedubError(f"the manifest's contract for '{MODEL_ID}' has no (B,1,80,16) mel and "
                         "(B,6,384,384) face input", session.path)
    return mel, face
