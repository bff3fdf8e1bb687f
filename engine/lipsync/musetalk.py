"""The MuseTalk generator: the official v1.5 (or v1.0) networks, as ONNX, redraw the lower face.

Per frame, as MuseTalk's inference does:

1. Crop box from the frame's 68 landmarks (whole pixels, as MuseTalk casts them): the nose
   (point 29) to the lowest point below it, mirrored above it; the landmarks' width. v1.5
   reaches 10 px further down (its ``extra_margin``), so the chin is inside the crop. A
   degenerate box falls back to the face detector's.
2. The crop resized to 256x256 (Lanczos) goes to the VAE encoder twice: with its lower half
   zeroed (where to draw) and whole (who, in which light); the two latents side by side
   (8 channels) go to the UNet with the frame's window of Whisper hidden states
   (``engine.audio.whisper``: placed by the frame's time in the dub), once, at timestep 0.
   With the ``liveportrait`` stabilizer the 256x256 crop first has its mouth closed by
   LivePortrait, and both pictures come from it: the whole crop is the generator's reference
   too, and an open mouth there would bias the drawn one toward the original's.
3. The VAE decoder's picture, rounded to 8 bits, is resized (bilinear) back to the crop box.

MuseTalk then pastes with a face-parsing mask; here the pipeline's own lower-face mask and
multi-band blend composite the crop, so only masked pixels change.

Frames are batched on a fixed grid of the edited frames with an own reader, as the Wav2Lip
backend does (``engine.lipsync.wav2lip``): results do not depend on which render thread asks
first, and no batch runs twice while it is kept.
"""
from __future__ import annotations


import cv2
import numpy as np

from engine.audio.whisper import ENCODER_STEPS, WhisperFeatures
from engine.errors import RedubError, UsageError
from engine.lipsync.backend import Generated, SyncContext
from engine.lipsync.batches import BatchGrid, default_batch
from engine.media.frame import Frame
from engine.media.reader import VideoReader
from engine.models.manifest import get_entry
from engine.models.session import CPU, ModelSession, providers as provider_order, session_for
from engine.models.store import model_path, model_state
from engine.stabilize.liveportrait import LivePortrait, LivePortraitStabilizer

SIZE = 256  # the VAE's picture side; latents are SIZE / 8
EXTRA_MARGIN = {"v15": 10, "v10": 0}  # pixels added under the chin (v1.5's extra_margin)
# Frames per model run. With onnxruntime's CPU arena off (engine/models/session.py), memory
# follows the batch: the full-size fp32 networks peak at 6.7 GB at batch 8 and 9.4 GB at 16,
# at the same frames per second (2 cores); a GPU wants large batches.
CPU_BATCH, GPU_BATCH = 8, 16
WHISPER, VAE_ENCODER, VAE_DECODER = ("musetalk_whisper_encoder", "musetalk_vae_encoder",
                                     "musetalk_vae_decoder")


def crop_boxes(landmarks: np.ndarray, face_boxes: np.ndarray, width: int, height: int,
               margin: int = EXTRA_MARGIN["v15"]) -> np.ndarray:
    """MuseTalk's crop box per frame, int64 (N, 4) (x0, y0, x1, y1), exclusive ends.

    ``landmarks`` (N, 68, 2) frame pixels are cast to int32 as MuseTalk does (toward zero);
    ``face_boxes`` (N, 4) are used where the landmark box is empty or starts left of the
    frame. ``margin`` pixels are added under the chin. Boxes are clipped to the frame (where
    MuseTalk's array slicing clips them).
    """
    lm = np.asarray(landmarks).astype(np.int32)
    half = lm[:, 29, 1]
    x0, x1 = lm[:, :, 0].min(1), lm[:, :, 0].max(1)
    y1 = lm[:, :, 1].max(1)
    y0 = np.maximum(0, half - (y1 - half))
    boxes = np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)
    bad = (y1 - y0 <= 0) | (x1 - x0 <= 0) | (x0 < 0)
    boxes[bad] = np.asarray(face_boxes)[bad].astype(np.int64)
    boxes[:, 3] += margin
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    return boxes


def crop_face(crop: np.ndarray) -> np.ndarray:
    """The crop box's pixels (``frame[y0:y1, x0:x1]``, RGB uint8) resized to 256x256 with
    Lanczos, as MuseTalk resizes its (BGR) crops: the filter treats channels alike."""
    return cv2.resize(crop, (SIZE, SIZE), interpolation=cv2.INTER_LANCZOS4)


def vae_inputs(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The VAE encoder's two pictures of (B, 256, 256, 3) RGB uint8 ``faces``: float32
    (B, 3, 256, 256) in [-1, 1], the first with its lower half (rows 128..) zeroed before
    normalising (so it reads -1 there), as MuseTalk's ``preprocess_img`` makes them."""
    full = (np.asarray(faces, np.float64) / 255.0).astype(np.float32).transpose(0, 3, 1, 2)
    masked = full.copy()
    masked[:, :, SIZE // 2:] = 0.0
    return (masked - 0.5) / 0.5, (full - 0.5) / 0.5


def face_pixels(images: np.ndarray) -> np.ndarray:
    """The VAE decoder's (B, 3, 256, 256) pictures in [0, 1] as RGB uint8 (B, 256, 256, 3),
    rounded half to even as MuseTalk's ``decode_latents`` rounds."""
    scaled = np.asarray(images, np.float32).transpose(0, 2, 3, 1) * np.float32(255.0)
    return np.round(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


class MuseTalkGenerator:
    name = "musetalk"

    def __init__(self, version: str = "v15", batch: int | None = None,
                 providers: list[str] | None = None, cache_bytes: int = 64 << 20) -> None:
        if version not in EXTRA_MARGIN:
            raise UsageError(f"unknown MuseTalk version '{version}' (known: v15, v10)")
        if batch is None:
            batch = default_batch(providers, CPU_BATCH, GPU_BATCH)
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.version = version
        self.batch = batch
        self.providers = providers
        self.cache_bytes = cache_bytes
        self.sessions: dict[str, ModelSession] = {}
        self._reader: VideoReader | None = None
        self._analysis = None
        self._features: WhisperFeatures | None = None
        self._neutraliser: LivePortrait | None = None
        self._dub: np.ndarray | None = None  # the samples _features encodes
        # Faces per analysed frame (crop box, RGB at the box's size).
        self._grid: BatchGrid[tuple[tuple[int, int, int, int], np.ndarray]] = \
            BatchGrid(self._run)

    def prepare(self, ctx: SyncContext) -> None:
        if ctx.dub_samples is None:
            raise RedubError("MuseTalk needs the dub's samples in the lip-sync context", ctx.video)
        self.open(ctx)
        # MuseTalk crops its own faces; the liveportrait stabilizer's mouth closing applies.
        if ctx.stabilizer != LivePortraitStabilizer.name:
            self._neutraliser = None
        elif self._neutraliser is None:
            self._neutraliser = LivePortrait(self.providers)
        a = ctx.analysis
        targets = np.flatnonzero(ctx.edit & a.found)
        with self._grid.lock:
            self._analysis = a
            self._times = np.asarray(a.times if ctx.dub_times is None else ctx.dub_times,
                                     np.float64)
            self._boxes = crop_boxes(a.landmarks, a.boxes, a.width, a.height,
                                     EXTRA_MARGIN[self.version])
            self.listen(ctx.dub_samples, self._times[targets])
            self._grid.reset(targets, self.batch, a.start, a.source)
        if self._reader is None:
            self._reader = VideoReader(ctx.video, cache_bytes=self.cache_bytes)

    def generate(self, frame: Frame, k: int, box: tuple[int, int, int, int]) -> Generated:
        (fx0, fy0, fx1, fy1), face = self._grid.get(k)
        x0, y0, x1, y1 = box
        image = np.array(frame.rgb_region(x0, y0, x1, y1))
        # The face where MuseTalk's crop box lies; region pixels outside it keep the frame's.
        ix0, iy0, ix1, iy1 = max(x0, fx0), max(y0, fy0), min(x1, fx1), min(y1, fy1)
        if ix1 > ix0 and iy1 > iy0:
            image[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = face[iy0 - fy0:iy1 - fy0,
                                                               ix0 - fx0:ix1 - fx0]
        return Generated(box=box, image=image, landmarks=self._analysis.landmarks[k])

    def open(self, ctx: SyncContext) -> None:
        """Open the four networks' sessions (once; GPU fallbacks go to ``ctx.warn``)."""
        models = (WHISPER, VAE_ENCODER, VAE_DECODER, f"musetalk_unet_{self.version}")
        for model in models:
            if model not in self.sessions:
                self.sessions[model] = self._session(model, ctx)

    def listen(self, samples: np.ndarray, times: np.ndarray) -> None:
        """Hear ``samples`` (the dub, 16 kHz mono) and encode the Whisper segments that dub
        ``times`` (seconds) fall in. A re-plan (new curves) keeps the encoded dub when the dub
        is the same."""
        same = self._dub is not None and (self._dub is samples
                                          or np.array_equal(self._dub, samples))
        if self._features is None or not same:
            self._features = WhisperFeatures(samples, self._encode, batch=self.batch)
            self._dub = samples
        self._features.load(times)

    def draw(self, faces: np.ndarray, times: np.ndarray) -> np.ndarray:
        """MuseTalk's 256x256 faces (B, 256, 256, 3) RGB uint8 redrawn for the dub at
        ``times`` (seconds into the dub, one per face; :meth:`listen` first)."""
        masked, full = vae_inputs(faces)
        s = self.sessions
        n = len(faces)
        latents = s[VAE_ENCODER].run_batched({"image": np.concatenate([masked, full])},
                                             self.batch)[0]
        unet = s[f"musetalk_unet_{self.version}"].run_batched({
            "latents": np.concatenate([latents[:n], latents[n:]], axis=1),
            "audio": self._features.windows(times),
        }, self.batch)[0]
        return face_pixels(s[VAE_DECODER].run_batched({"latents": unet}, self.batch)[0])

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._grid.clear()
        self._features = self._dub = self._neutraliser = None

    def _session(self, model: str, ctx: SyncContext) -> ModelSession:
        """The model's session: its fp16 file on a GPU when that is installed, else fp32."""
        chosen = model
        if provider_order(self.providers)[0][0] != CPU:
            try:
                if model_state(get_entry(f"{model}_fp16")) != "missing":
                    chosen = f"{model}_fp16"
            except UsageError:  # the manifest has no fp16 file of this model
                pass
        session = session_for(model_path(chosen), f"MuseTalk model '{chosen}'", self.providers)
        if session.fallback:
            ctx.warn(session.fallback)
        return session

    def _encode(self, mels: np.ndarray) -> np.ndarray:
        session = self.sessions[WHISPER]
        hidden = session.run_batched({"input_features": mels}, self.batch)[0]
        if hidden.ndim != 4 or hidden.shape[:2] != (len(mels), ENCODER_STEPS):
            raise RedubError(f"the Whisper encoder gave hidden states of shape {hidden.shape}, "
                             f"not (B, {ENCODER_STEPS}, L, D)", session.path)
        return hidden

    def _run(self, chunk: np.ndarray) -> dict[int, tuple[tuple[int, int, int, int], np.ndarray]]:
        start = self._analysis.start
        boxes = [tuple(int(v) for v in self._boxes[j]) for j in chunk]
        # An empty box (a face off the frame's edge) runs on black and pastes nothing.
        faces = np.stack([
            crop_face(self._reader.frame(start + int(j)).rgb_region(*box))
            if box[2] > box[0] and box[3] > box[1] else np.zeros((SIZE, SIZE, 3), np.uint8)
            for j, box in zip(chunk, boxes)])
        if self._neutraliser is not None:
            faces = self._neutralised(faces, chunk, boxes)
        images = self.draw(faces, self._times[chunk])
        out = {}
        for j, box, image in zip(chunk, boxes, images):
            w, h = box[2] - box[0], box[3] - box[1]
            face = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR) if w and h \
                else np.zeros((max(h, 0), max(w, 0), 3), np.uint8)
            out[int(j)] = (box, face)
        return out

    def _neutralised(self, faces: np.ndarray, chunk: np.ndarray,
                     boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
        """``faces`` (this batch's own array) with their mouths closed by LivePortrait (black
        ones, faces off the frame, stay black)."""
        drawn = [i for i, b in enumerate(boxes) if b[2] > b[0] and b[3] > b[1]]
        if not drawn:
            return faces
        landmarks = []
        for i in drawn:
            x0, y0, x1, y1 = boxes[i]
            scale = np.array([SIZE / (x1 - x0), SIZE / (y1 - y0)])
            # The resize maps pixel centres x -> scale * x + (scale - 1) / 2.
            lm = self._analysis.landmarks[chunk[i]] - (x0, y0)
            landmarks.append(lm * scale + (scale - 1) / 2)
        faces[drawn] = self._neutraliser.neutralise(faces[drawn], np.stack(landmarks))
        return faces


def musetalk_v10(**options: object) -> MuseTalkGenerator:
    """MuseTalk 1.0: the first release's UNet, crops without the margin under the chin."""
    generator = MuseTalkGenerator(version="v10", **options)
    generator.name = "musetalk_v10"
    return generator
