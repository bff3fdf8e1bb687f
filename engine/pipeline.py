"""The lip-sync job: source video and dub in, re-synced frames streamed out to the writer.

Stages: face analysis (cached) -> audio features -> generator preparation (motion model and
plan) -> per frame: generation -> restoration (a slot: "none" for now) -> mask and multi-band
blending inside the crop. Frames outside the ranges, or without the target face, pass through
untouched; inside the crop only masked pixels change, outside it none do.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from engine.audio import features_from_samples
from engine.audio.mel import SAMPLE_RATE
from engine.blend import match_mean, pyramid_blend
from engine.errors import RedubError, UsageError
from engine.face.analysis import NoFaceError, Target, analyze_range
from engine.lipsync.backend import SyncContext, create_generator
from engine.lipsync.retrieval import even_box
from engine.mask import MaskSettings, face_scale, frame_mask, landmark_mask, landmark_polygon
from engine.media.audio import read_audio
from engine.media.frame import Frame
from engine.media.probe import probe
from engine.progress import CancelToken, ProgressFn, no_progress
from engine.render import ExportSettings, RenderResult, render

PreviewFn = Callable[[Frame], None]
RESTORERS = ("none",)


@dataclass(frozen=True)
class SyncSettings:
    backend: str = "retrieval"
    restorer: str = "none"
    train_range: tuple[float, float] | None = None  # footage to learn from (default: all)
    openness_gain: float = 1.0
    audio_offset_ms: float = 0.0  # positive: the mouth follows the dub later
    mask: MaskSettings = field(default_factory=lambda: MaskSettings(dilation=-0.06,
                                                                    feather=0.12))
    color_match: bool = True
    target: Target | None = None
    face_backend: str = "dlib"


def sync(video: str | os.PathLike, dub: str | os.PathLike, export: ExportSettings, *,
         dub_offset: float = 0.0, ranges: Sequence[tuple[float, float]] = (),
         settings: SyncSettings = SyncSettings(), progress: ProgressFn = no_progress,
         cancel: CancelToken | None = None, preview: PreviewFn | None = None) -> RenderResult:
    """Re-sync the speaker's mouth to ``dub`` inside ``ranges`` (default: the whole clip)."""
    video, dub = os.fspath(video), os.fspath(dub)
    if settings.restorer not in RESTORERS:
        raise UsageError(f"unknown restorer '{settings.restorer}': choose one of "
                         f"{', '.join(RESTORERS)}")
    info = probe(video)
    if not info.video:
        raise RedubError("has no video stream (audio only?)", video)
    duration = info.video[0].duration
    edit_ranges = list(ranges) or [(0.0, duration)]
    # The analysis covers the edits and the footage to learn from (the whole clip by default).
    learn = settings.train_range or (0.0, duration)
    span = [min([r[0] for r in edit_ranges] + [learn[0]]),
            max([r[1] for r in edit_ranges] + [learn[1]])]
    notes: list[str] = []
    try:
        analysis = analyze_range(video, max(span[0], 0.0), min(span[1], duration),
                                 target=settings.target, backend=settings.face_backend,
                                 progress=progress, cancel=cancel)
    except NoFaceError as exc:
        result = render(video, export, dub=dub, dub_offset=dub_offset, ranges=edit_ranges,
                        progress=progress, cancel=cancel)
        result.notes.insert(0, f"{exc.problem}: the picture passes through unchanged")
        return result
    times = analysis.times
    edit = np.zeros(len(analysis), bool)
    for start, end in edit_ranges:
        edit |= (times >= start - 1e-6) & (times < end - 1e-6)
    train = (times >= learn[0] - 1e-6) & (times < learn[1] - 1e-6)
    if not (edit & analysis.found).any():
        notes.append("no face in the edited ranges: the picture passes through unchanged")

    progress("audio", 0, 2)
    source = _source_features(video, times, info)
    dub_audio = read_audio(dub, rate=SAMPLE_RATE, channels=1)
    dub_feats = features_from_samples(dub_audio.samples, times,
                                      offset_ms=dub_offset * 1000 + settings.audio_offset_ms)
    _note_dub_length(dub_audio.duration + dub_offset, edit_ranges, notes)
    if not dub_feats.vad[edit].any():
        notes.append("the dub is silent in the edited ranges: the mouth stays closed")
    progress("audio", 2, 2)

    generator = create_generator(settings.backend)
    ctx = SyncContext(video=video, analysis=analysis, source_audio=source, dub_audio=dub_feats,
                      edit=edit, train=train, fps=analysis.fps,
                      openness_gain=settings.openness_gain, warn=notes.append)
    try:
        progress("plan", 0, 1)
        if (edit & analysis.found).any():
            generator.prepare(ctx)
        progress("plan", 1, 1)

        def edit_frame(frame: Frame) -> Frame:
            k = frame.index - analysis.start
            if not (0 <= k < len(analysis)) or not edit[k] or not analysis.found[k]:
                return frame
            box = _region(analysis.landmarks[k], analysis.crop_boxes[k], frame, settings)
            return _blend(frame, generator.generate(frame, k, box), analysis, k, settings)

        result = render(video, export, dub=dub, dub_offset=dub_offset, ranges=edit_ranges,
                        edit=edit_frame, on_frame=preview, progress=progress, cancel=cancel)
    finally:
        generator.close()
    result.notes[:0] = notes
    return result


def _region(landmarks: np.ndarray, crop_box: np.ndarray, frame: Frame,
            settings: SyncSettings) -> tuple[int, int, int, int]:
    """The part of the face crop an edit can touch: the mask's outline with room to move.

    Working on this box rather than the whole face crop saves most of the per-frame cost.
    """
    poly = landmark_polygon(landmarks, settings.mask.kind)
    # Room for the soft edge, and for a chin that drops lower than the original's.
    pad = (max(settings.mask.dilation, 0.0) + settings.mask.feather + 0.3) * face_scale(landmarks)
    lo = np.maximum(poly.min(0) - pad, crop_box[:2])
    hi = np.minimum(poly.max(0) + pad, crop_box[2:])
    return even_box(np.concatenate([lo, hi]), frame.width, frame.height)


def _blend(frame: Frame, gen, analysis, k: int, settings: SyncSettings) -> Frame:
    x0, y0, x1, y1 = gen.box
    original = frame.rgb_region(x0, y0, x1, y1)
    mask = np.maximum(frame_mask(analysis.landmarks[k], gen.box, analysis.transforms[k],
                                 settings.mask),
                      landmark_mask(gen.landmarks, gen.box, settings.mask))
    image = match_mean(gen.image, original, mask) if settings.color_match else gen.image
    blended = pyramid_blend(original, image, mask)
    return frame.with_region(x0, y0, blended, mask=mask)


def _source_features(video: str, times: np.ndarray, info):
    """The clip's own sound at the analysed frames (silence when it has none)."""
    if not info.audio:
        samples = np.zeros(int((times[-1] + 1) * SAMPLE_RATE), np.float32)
    else:
        samples = read_audio(video, rate=SAMPLE_RATE, channels=1).samples
        # The audio track may start before or after the first frame.
        shift = info.audio[0].start_time - info.video[0].start_time
        if shift > 0:
            samples = np.concatenate([np.zeros((int(shift * SAMPLE_RATE), 1), np.float32),
                                      samples])
        elif shift < 0:
            samples = samples[int(-shift * SAMPLE_RATE):]
    return features_from_samples(samples, times)


def _note_dub_length(dub_end: float, ranges: list[tuple[float, float]],
                     notes: list[str]) -> None:
    last = max(end for _, end in ranges)
    if dub_end > last + 0.05:
        notes.append(f"the dub runs {dub_end - last:.2f} s past the edited range: "
                     "cut at the range end")
    elif dub_end < last - 0.05:
        notes.append(f"the dub ends {last - dub_end:.2f} s before the edited range does: "
                     "resting mouth after it")
