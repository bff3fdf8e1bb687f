"""The SieveSync generator: sieve-community/sievesync's pipeline, on Redub's own stages.

Per edited frame:

1. The face aligned to 512x512 by the FFHQ-style quad from the eye and mouth corners of the
   analysis's smoothed landmarks (``engine.face.face_quad``).
2. Optionally the aligned face re-rendered with its lips closed by LivePortrait
   (``engine.stabilize.liveportrait``), so MuseTalk is not biased by the original mouth.
3. MuseTalk (``engine.lipsync.musetalk``'s networks) on the aligned face, hearing the dub
   denoised (``engine.audio.denoise``; the exported sound is the dub as delivered).
4. CodeFormer at fidelity 1 on the whole aligned face (FFHQ-aligned from its five points by the
   restorer's own code), mixed in at the public code's strength for the clip's face size.
5. Back into the pipeline's box: inverse warp, face-hull mask, histograms matched to the
   source; the pipeline's masks, corrections and multi-band blend do the rest.

SieveSync frames its own faces: the ``stabilizer`` setting does not apply. A range where over
40% of the frames have no face is refused, as the public code refuses it; frames without a
face pass through (the pipeline never asks for them).
"""
from __future__ import annotations

import cv2
import numpy as np

from engine.audio.denoise import denoise
from engine.errors import RedubError
from engine.face import face_quad as fq
from engine.face import geometry as geo
from engine.lipsync.backend import Generated, SyncContext
from engine.lipsync.batches import BatchGrid
from engine.lipsync.musetalk import EXTRA_MARGIN, MuseTalkGenerator, crop_boxes, crop_face
from engine.media.frame import Frame
from engine.media.reader import VideoReader
from engine.restore.align import ffhq_matrix, from_aligned, to_aligned
from engine.restore.codeformer import CodeFormerRestorer

# CodeFormer's mix by the face's mean hull area in percent of the frame (the public code's
# compute_ideal_blend): 0.75 up to 2%, 0.6 from 10%, linear between. Small faces gain most
# from restoration; a large face's own detail would be overdrawn.
BLEND_AREA = (2.0, 10.0)
BLEND_STRENGTH = (0.75, 0.6)


def restore_strength(area_percent: float) -> float:
    """CodeFormer's mix for faces of ``area_percent`` (hull area, % of the frame)."""
    return float(np.interp(area_percent, BLEND_AREA, BLEND_STRENGTH))


class SieveSyncGenerator:
    name = "sievesync"

    def __init__(self, neutralise: bool = True, batch: int | None = None,
                 providers: list[str] | None = None, cache_bytes: int = 64 << 20) -> None:
        self.neutralise = neutralise  # off: MuseTalk sees the original mouth (tests, benches)
        self.providers = providers
        self.cache_bytes = cache_bytes
        self._musetalk = MuseTalkGenerator(batch=batch, providers=providers)
        self.batch = self._musetalk.batch
        self._restorer: CodeFormerRestorer | None = None
        self._liveportrait = None
        self._reader: VideoReader | None = None
        self._dub: np.ndarray | None = None  # the samples _denoised was made from
        self._denoised: np.ndarray | None = None
        self.strength = BLEND_STRENGTH[0]
        # Per analysed frame: frame -> aligned matrix and the finished 512x512 face.
        self._grid: BatchGrid[tuple[np.ndarray, np.ndarray]] = BatchGrid(self._run)

    def prepare(self, ctx: SyncContext) -> None:
        if ctx.dub_samples is None:
            raise RedubError("SieveSync needs the dub's samples in the lip-sync context",
                             ctx.video)
        a = ctx.analysis
        fq.refuse_faceless(a.found[ctx.edit], ctx.video)
        self._musetalk.open(ctx)
        if self._restorer is None:
            self._restorer = CodeFormerRestorer(strength=1.0, fidelity=1.0,
                                                providers=self.providers)
            if self._restorer.session.fallback:
                ctx.warn(self._restorer.session.fallback)
        if self.neutralise and self._liveportrait is None:
            from engine.stabilize.liveportrait import LivePortrait

            self._liveportrait = LivePortrait(providers=self.providers)
        targets = np.flatnonzero(ctx.edit & a.found)
        quads = np.tile(np.array([(0, 0), (0, 1), (1, 1), (1, 0)], float), (len(a), 1, 1))
        quads[a.found] = fq.quads(a.landmarks[a.found])
        with self._grid.lock:
            self._analysis = a
            self._times = np.asarray(a.times if ctx.dub_times is None else ctx.dub_times,
                                     np.float64)
            self._matrices = fq.quad_matrix(quads)
            self.strength = restore_strength(
                fq.face_area_percent(a.landmarks[targets], a.width, a.height))
            # A re-plan (new curves) keeps the denoised dub when the dub is the same.
            if self._dub is None or not (self._dub is ctx.dub_samples
                                         or np.array_equal(self._dub, ctx.dub_samples)):
                self._denoised = denoise(ctx.dub_samples)
                self._dub = ctx.dub_samples
            self._musetalk.listen(self._denoised, self._times[targets])
            self._grid.reset(targets, self.batch, a.start, a.source)
        if self._reader is None:
            self._reader = VideoReader(ctx.video, cache_bytes=self.cache_bytes)

    def generate(self, frame: Frame, k: int, box: tuple[int, int, int, int]) -> Generated:
        matrix, face = self._grid.get(k)
        source = np.array(frame.rgb_region(*box))
        landmarks = self._analysis.landmarks[k]
        image = fq.unalign(face, matrix, source, box, landmarks)
        return Generated(box=box, image=image, landmarks=landmarks)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._grid.clear()
        self._musetalk.close()
        if self._restorer is not None:
            self._restorer.close()
            self._restorer = None
        if self._liveportrait is not None:
            self._liveportrait.close()
            self._liveportrait = None
        self._dub = self._denoised = None

    # -- the stages, on a batch of analysed frames -------------------------------------------
    def _run(self, chunk: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        a = self._analysis
        matrices = self._matrices[chunk]
        faces = np.stack([self._aligned(a.start + int(j), m) for j, m in zip(chunk, matrices)])
        landmarks = fq.aligned_landmarks(matrices, a.landmarks[chunk])
        if self._liveportrait is not None:
            faces = self._liveportrait.neutralise(faces, landmarks)
        drawn = self._lipsync(faces, landmarks, self._times[chunk])
        return {int(j): (m, self._restore(face, lm))
                for j, m, face, lm in zip(chunk, matrices, drawn, landmarks)}

    def _aligned(self, index: int, matrix: np.ndarray) -> np.ndarray:
        frame = self._reader.frame(index)
        x0, y0, x1, y1 = fq.aligned_box(matrix, frame.width, frame.height)
        return fq.align(frame.rgb_region(x0, y0, x1, y1), (x0, y0), matrix)

    def _lipsync(self, faces: np.ndarray, landmarks: np.ndarray,
                 times: np.ndarray) -> np.ndarray:
        """MuseTalk on the aligned faces: its crop box from the aligned landmarks, the drawn
        256x256 face resized back into it."""
        size = fq.SIZE
        bounds = np.concatenate([landmarks.min(1), landmarks.max(1)], 1)
        boxes = crop_boxes(landmarks, bounds, size, size, EXTRA_MARGIN[self._musetalk.version])
        crops = np.stack([crop_face(face[y0:y1, x0:x1]) if x1 > x0 and y1 > y0
                          else np.zeros((256, 256, 3), np.uint8)
                          for face, (x0, y0, x1, y1) in zip(faces, boxes)])
        drawn = self._musetalk.draw(crops, times)
        out = faces.copy()
        for face, image, (x0, y0, x1, y1) in zip(out, drawn, boxes):
            if x1 > x0 and y1 > y0:
                face[y0:y1, x0:x1] = cv2.resize(image, (int(x1 - x0), int(y1 - y0)),
                                                interpolation=cv2.INTER_LINEAR)
        return out

    def _restore(self, face: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """CodeFormer on the aligned face, through the FFHQ template, mixed in at the face
        size's strength where its square reaches."""
        size = self._restorer.size
        matrix = ffhq_matrix(geo.five_points(landmarks), size)
        source = face.astype(np.float32)
        restored = self._restorer.run_aligned(to_aligned(source, (0, 0), matrix, size))
        back, coverage = from_aligned(restored, matrix, (0, 0, fq.SIZE, fq.SIZE))
        weight = (np.float32(self.strength) * coverage)[..., None]
        return cv2.add(source + weight * (back - source), 0.0, dtype=cv2.CV_8U)
