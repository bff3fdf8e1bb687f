"""The offline default generator: the speaker's own mouth, retrieved from the footage.

The clip already holds the speaker's mouth in many shapes, and its original sound says which
sound goes with which shape. This backend learns that mapping (``motion.py``), predicts the
mouth-shape trajectory for the dub, picks source frames that match it with smooth transitions
(``select.py``), and warps each chosen frame's lower face onto the target frame (``warp.py``).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from engine.errors import RedubError
from engine.face import geometry as geo
from engine.face.analysis import Flag
from engine.lipsync.backend import Generated, SyncContext
from engine.lipsync.motion import (MIN_SPEECH_SECONDS, MIN_TRAIN_SECONDS, MotionModel,
                                   MotionSettings, audio_features)
from engine.lipsync.select import SelectSettings, select_frames
from engine.lipsync.shape import ShapeSpace, canonical
from engine.lipsync.warp import warp_lower_face
from engine.mask import face_scale, landmark_polygon
from engine.media.frame import Frame, FramePart
from engine.media.reader import VideoReader

_UNUSABLE = Flag.NOT_FOUND | Flag.PROFILE | Flag.INTERPOLATED
_STEADY_SPEED = 0.12  # inter-ocular distances per frame a donor's face may move
# Openness range (5th-95th percentile, in inter-ocular distances) under which the footage has
# hardly any mouth shapes to lend: 0.005 on talk_s18, 0.15-0.37 on the other shared clips.
_MIN_OPEN_RANGE = 0.04


class RetrievalGenerator:
    name = "retrieval"

    def __init__(self, select: SelectSettings = SelectSettings(), smooth_frames: float = 1.0,
                 cache_bytes: int = 192 << 20) -> None:
        self.select_settings = select
        self.smooth_frames = smooth_frames
        self.cache_bytes = cache_bytes
        self._donors: VideoReader | None = None
        self.plan: np.ndarray | None = None  # analysed-frame index of the donor per frame
        self._analysis = None
        self._parts: dict[int, FramePart] = {}  # donors' lower faces by analysed frame

    def prepare(self, ctx: SyncContext) -> None:
        a = ctx.analysis
        usable = ((a.flags & _UNUSABLE) == 0) & _steady(a.landmarks, ctx.train)
        train = np.flatnonzero(ctx.train & usable)
        if train.size == 0:
            raise RedubError("no usable footage of the face to learn the mouth from "
                             "(choose another training range)", ctx.video)
        canon = canonical(a.landmarks, a.transforms)
        space = ShapeSpace.fit(canon[train])
        codes = np.zeros((len(a), space.dims))
        found = np.flatnonzero(a.found)
        codes[found] = space.encode(canon[found])
        reach = np.percentile(codes[train, 0], [5, 95]) if train.size else np.zeros(2)
        if reach[1] - reach[0] < _MIN_OPEN_RANGE:
            ctx.warn("the speaker's mouth barely moves in the footage, so there is hardly another "
                     "mouth to lend and the result stays close to the source: a neural backend "
                     "(--backend wav2lip) draws new mouths")
        x_src = audio_features(ctx.source_audio, a.times)
        settings = MotionSettings(openness_gain=ctx.openness_gain,
                                  smooth_frames=self.smooth_frames)
        speech = float(ctx.source_audio.vad[train].sum()) / ctx.fps
        if train.size < MIN_TRAIN_SECONDS * ctx.fps:
            ctx.warn(f"only {train.size / ctx.fps:.1f} s of usable footage to learn this "
                     "speaker's mouth from: using the generic mapping")
            model = MotionModel.generic_for(codes[train], x_src.shape[1])
        elif speech < MIN_SPEECH_SECONDS:
            heard = "no speech" if speech == 0 else f"only {speech:.1f} s of speech"
            ctx.warn(f"{heard} in the clip's own sound to learn this speaker's mouth from: "
                     "using the generic mapping")
            model = MotionModel.generic_for(codes[train], x_src.shape[1])
        else:
            model = MotionModel.fit(x_src[train], codes[train], settings)
        x_dub = audio_features(ctx.dub_audio, a.times if ctx.dub_times is None else ctx.dub_times)
        gain = np.broadcast_to(np.asarray(ctx.openness_gain, np.float64), (len(a),))
        targets = np.flatnonzero(ctx.edit & a.found)
        self.plan = np.full(len(a), -1, dtype=np.int64)
        if targets.size == 0:
            return
        # Predict over whole stretches of edited frames so smoothing never spans a gap.
        for run in _runs(targets):
            predicted = model.predict(x_dub[run], ctx.dub_audio.vad[run],
                                      replace(settings, openness_gain=gain[run]))
            chosen = select_frames(predicted, a.poses[run], codes[train], a.poses[train],
                                   train, space.scale, self.select_settings)
            self.plan[run] = train[chosen]
        self._analysis = a
        if self._donors is None:  # a re-plan keeps the reader and the donors it holds
            self._donors = VideoReader(ctx.video, cache_bytes=self.cache_bytes, threads=1)
        donors, uses = np.unique(self.plan[self.plan >= 0], return_counts=True)
        self._prefetch(donors, uses)

    def _prefetch(self, donors: np.ndarray, uses: np.ndarray) -> None:
        """Decode the chosen donors in one forward pass and keep the part of each that the
        warp reads (a few percent of a 2-megapixel frame), the most used first, as many as
        ``cache_bytes`` holds.

        Fetched one by one they cost a seek to the keyframe before each jump in the plan (tens
        of decodes per output frame on long-GOP footage); one threaded forward pass is far
        cheaper, unless the donors are few and spread over a long clip.
        """
        a, info = self._analysis, self._donors.info
        per_pixel = 3 * (2 if info.bit_depth > 8 else 1) + 3  # native samples and RGB view
        kept, wanted, budget = {}, {}, self.cache_bytes
        for k in donors[np.argsort(-uses, kind="stable")].tolist():
            part = self._parts.get(k)  # a re-plan keeps the parts it still uses
            box = None if part is not None else _reach(a.landmarks[k])
            budget -= part.nbytes if part is not None else \
                (box[2] - box[0]) * (box[3] - box[1]) * per_pixel
            if budget < 0:
                break
            if part is not None:
                kept[k] = part
            else:
                wanted[a.start + k] = box
        self._parts = kept
        if not wanted:
            return
        lo, hi = min(wanted), max(wanted) + 1
        if hi - lo > 16 * len(wanted):
            return
        reader = self._donors
        with VideoReader(reader.path) as sequential:
            for frame in sequential.frames(lo, hi):
                box = wanted.get(frame.index)
                if box is not None:
                    x0, y0, x1, y1 = (int(v) for v in box)
                    self._parts[frame.index - a.start] = frame.part(
                        x0, y0, x1, y1, whole=lambda i=frame.index: reader.frame(i))

    def generate(self, frame: Frame, k: int, box: tuple[int, int, int, int]) -> Generated:
        a = self._analysis
        d = int(self.plan[k])
        donor = self._parts.get(d) or self._donors.frame(a.start + d)
        face_box = even_box(a.crop_boxes[k], frame.width, frame.height)
        crop, landmarks = warp_lower_face(donor, a.landmarks[d], a.transforms[d],
                                          a.landmarks[k], a.transforms[k], box, face_box)
        return Generated(box=box, image=crop, landmarks=landmarks)

    def close(self) -> None:
        self._parts = {}
        if self._donors is not None:
            self._donors.close()
            self._donors = None


def _steady(landmarks: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Frames still enough to lend their mouth: a fast-moving head is motion-blurred and its
    landmarks are unreliable (the jaw line slips off the face), which pastes a misplaced chin.

    Speed is the mean motion of the eyes, brows, nose and jaw to either neighbouring frame, in
    inter-ocular distances; the fastest frames are dropped: those above 0.12 per frame, but
    never more than the fastest 30% of the training footage, so fidgety speakers keep donors.
    """
    rigid = landmarks[:, :48]
    iod = geo.interocular(landmarks)
    step = np.zeros(len(landmarks))
    if len(landmarks) > 1:
        step[1:] = np.linalg.norm(np.diff(rigid, axis=0), axis=2).mean(1) / np.maximum(iod[1:],
                                                                                       1e-9)
        step[0] = step[1]
    speed = np.maximum(step, np.r_[step[1:], step[-1:]])
    speed = np.nan_to_num(speed, nan=np.inf)
    finite = train & np.isfinite(speed)
    limit = max(_STEADY_SPEED, float(np.percentile(speed[finite], 70)) if finite.any() else 0.0)
    return speed <= limit


def _reach(landmarks: np.ndarray) -> np.ndarray:
    """The donor pixels a warp reads: the lower face with room for the mask's soft edge and
    the target's box around it (``pipeline._region``); a read past it decodes the frame."""
    poly = landmark_polygon(landmarks, "lower_face")
    pad = 0.75 * face_scale(landmarks)
    return np.concatenate([np.floor(poly.min(0) - pad), np.ceil(poly.max(0) + pad)])


def even_box(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer crop box on even coordinates (whole 4:2:0 chroma samples) inside the frame."""
    x0, y0 = (int(np.floor(v / 2)) * 2 for v in box[:2])
    x1, y1 = (int(np.ceil(v / 2)) * 2 for v in box[2:])
    return max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)


def _runs(indices: np.ndarray) -> list[np.ndarray]:
    """Split sorted indices into runs of consecutive values."""
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    return np.split(indices, breaks)
