"""The lip-sync job: source video and dub in, re-synced frames streamed out to the writer.

Stages: face analysis (cached) -> audio features -> generator preparation (motion model and
plan) -> per frame: generation -> restoration (``engine.restore``: "none" or a face model
inside the mouth mask) -> mask and multi-band blending inside the crop. Frames outside the
ranges, or without the target face, pass through untouched; inside the crop only masked pixels
change, outside it none do.

:func:`prepare_sync` does the whole-job work once and returns a :class:`SyncSession`, which
renders any frame on demand (the editor's preview after a mask edit) with the manual
corrections of ``engine.maskedit``; :func:`sync` streams an export through it.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

from engine.audio import AudioFeatures, features_from_samples
from engine.audio.mel import SAMPLE_RATE
from engine.audio.source import source_features
from engine.audio.vad import SOUND_DBFS
from engine.blend import match_mean, pyramid_blend
from engine.errors import RedubError, UsageError
from engine.face import geometry as geo
from engine.face.analysis import FaceAnalysis, NoFaceError, Target, analyze_range
from engine.face.refine import refine_landmarks
from engine.face_parsing import FaceParser, mask_extent
from engine.lipsync.backend import Generated, SyncContext, create_generator
from engine.lipsync.musetalk import crop_boxes as musetalk_boxes
from engine.lipsync.retrieval import even_box
from engine.mask import (MaskSettings, chin_cover, face_scale, frame_mask, landmark_mask,
                         landmark_polygon)
from engine.maskedit import KEEP_FADE, NO_EDITS, Corrections, FrameEdits, keep_fade
from engine.media.audio import read_mono
from engine.media.frame import Frame
from engine.media.probe import probe
from engine.mouth_parsing import MouthParser, mouth_mask
from engine.models.manifest import backend_models
from engine.progress import CancelToken, ProgressFn, no_progress
from engine.render import ExportSettings, RenderResult, render
from engine.restore.backend import NoRestorer, Restorer, create_restorer

PreviewFn = Callable[[Frame], None]
CROP_CACHE = 64  # generated crops a session keeps (a 1080p face's is about 0.5 MB)
# Footage the speaker's mouth is learnt from by default, around the edits: enough mouth
# shapes and speech for the motion model, and a short range in a long clip is not analysed
# whole.
LEARN_SECONDS = 30.0


@dataclass(frozen=True)
class SyncSettings:
    backend: str = "retrieval"
    stabilizer: str = "geometric"  # face crops for the neural generators (STABILIZERS)
    restorer: str = "none"
    restore_strength: float = 0.8  # 0..1: how much of the restored mouth replaces the generated
    restore_fidelity: float = 0.7  # 0..1: CodeFormer's weight (1: closest to the generated mouth)
    # Footage to learn from (default: learn_range, LEARN_SECONDS around the edits).
    train_range: tuple[float, float] | None = None
    openness_gain: float = 1.0
    audio_offset_ms: float = 0.0  # positive: the mouth follows the dub later
    mask: MaskSettings = field(default_factory=lambda: MaskSettings(dilation=-0.06,
                                                                    feather=0.12))
    color_match: bool = True
    target: Target | None = None
    face_backend: str = "dlib"

    def __post_init__(self) -> None:
        # Checked where settings are made, before any model is fetched or frame decoded.
        for label, value in (("restore strength", self.restore_strength),
                             ("restore fidelity", self.restore_fidelity)):
            if not 0.0 <= value <= 1.0:
                raise UsageError(f"{label} {value} is outside 0..1")
        if not self.openness_gain >= 0.0:
            raise UsageError(f"openness gain {self.openness_gain} is negative")


def required_models(settings: SyncSettings) -> list[str]:
    """Manifest ids of the models ``settings``' backends run (fetched before a job starts)."""
    neural = backend_models("generator", settings.backend)
    models = [*neural, *backend_models("restorer", settings.restorer)]
    if neural:  # neural generators take their face crops from the stabilizer
        models += backend_models("stabilizer", settings.stabilizer)
    if settings.mask.kind == "parsing":
        models += backend_models("parser", "bisenet")
    if settings.mask.kind == "mouth":
        models += backend_models("parser", "parsenet")
    return list(dict.fromkeys(models))


class SyncSession:
    """A prepared lip-sync job: face analysis, audio features and the generator's plan, once.

    :meth:`render_frame` re-syncs one frame on demand (the editor's playhead after an edit) and
    :func:`sync` streams a whole export through it. :meth:`set_corrections` swaps the manual
    corrections and says which frames they change; a change of the motion curves re-plans.
    Frames outside the ranges, without the face, or inside a keep-original span pass through.
    """

    def __init__(self, video: str, dub: str, dub_offset: float,
                 ranges: list[tuple[float, float]], settings: SyncSettings,
                 corrections: Corrections, notes: list[str]) -> None:
        self.video, self.dub, self.dub_offset = video, dub, dub_offset
        self.ranges, self.settings, self.notes = ranges, settings, notes
        self.dub_note: str | None = None  # the one note on the dub's length, if any (in notes)
        self.duration = 0.0  # the clip's, in seconds (prepare_sync sets it)
        self.corrections = corrections
        self.analysis: FaceAnalysis | None = None  # None: no face, the picture passes through
        self.edit: np.ndarray | None = None  # bool per analysed frame: re-sync it
        self.unplaced: np.ndarray | None = None  # bool per analysed frame: see unplaced_frames
        self._generator = None
        self._restorer: Restorer = NoRestorer()  # prepare_sync sets the chosen one
        self._parser: FaceParser | None = None  # the "parsing" mask's model
        self._mouth: MouthParser | None = None  # the "mouth" mask's
        self._inputs: _AudioInputs | None = None
        # Share of the source kept per analysed frame next to frames left as they are, so the
        # new mouth fades out and in rather than popping.
        self._eased: np.ndarray = np.zeros(0)
        # Generated crops of recent frames (box, crop): edits on a frame (a vertex dragged
        # about) re-blend its crop instead of generating it again.
        self._crops: OrderedDict[int, tuple[tuple[int, int, int, int], Generated]] = OrderedDict()
        self._masks: OrderedDict[tuple, np.ndarray] = OrderedDict()  # parsing masks, likewise
        # Mouth parsings by frame, with the generated crop they were parsed in.
        self._mouths: OrderedDict[int, tuple[Generated, np.ndarray | None]] = OrderedDict()
        self._lock = threading.Lock()

    # -- frames --------------------------------------------------------------------------
    def edits(self, index: int) -> bool:
        """Whether clip frame ``index`` is re-synced (inside a range, with the face)."""
        a = self.analysis
        if a is None or self._generator is None or not a.start <= index < a.stop:
            return False
        k = index - a.start
        return bool(self.edit[k] and a.found[k])

    def edited_frames(self) -> np.ndarray:
        """Clip frame indices this session re-syncs."""
        if self.analysis is None or self._generator is None:
            return np.zeros(0, np.int64)
        return np.flatnonzero(self.edit & self.analysis.found) + self.analysis.start

    def unplaced_frames(self) -> np.ndarray:
        """Clip frame indices inside the ranges, with the face found, that keep their own
        mouth because the face could not be placed there (the editor marks them, to be fixed
        with a keep-original span or the mask tools)."""
        if self.analysis is None or self.unplaced is None:
            return np.zeros(0, np.int64)
        return np.flatnonzero(self.unplaced & self.analysis.found) + self.analysis.start

    def render_frame(self, frame: Frame) -> Frame:
        """``frame`` re-synced (or as it is, where nothing is edited). Thread-safe."""
        if not self.edits(frame.index):
            return frame
        a, k = self.analysis, frame.index - self.analysis.start
        fixes = self.corrections.at(frame.index, lambda: _auto_outline(a, k, self.settings))
        if self._eased[k] > fixes.keep:
            fixes = replace(fixes, keep=float(self._eased[k]))
        if fixes.keep >= 1.0:
            return frame
        settings = replace(self.settings, mask=fixes.mask_settings(self.settings.mask))
        face = None if self._parser is None else tuple(int(v) for v in musetalk_boxes(
            a.landmarks[k][None], a.boxes[k][None], frame.width, frame.height)[0])
        box = _grow(_region(a.landmarks[k], a.crop_boxes[k], frame, settings, face), fixes, a,
                    k, frame, settings)
        # An edited outline stands in for the parsing mask, as for a landmark mask.
        base = None if face is None or fixes.outline is not None \
            else self._parsed(frame, face, box)
        gen = self._generated(frame, k, box)
        if self._mouth is not None and fixes.outline is None:
            base = self._mouth_mask(frame, gen, k, settings)
        return _blend(frame, gen, a, k, settings, fixes, base)

    def _parsed(self, frame: Frame, face: tuple[int, int, int, int],
                box: tuple[int, int, int, int]) -> np.ndarray:
        """The face-parsing mask of ``frame`` in ``box``, kept with the generated crops."""
        key = (frame.index, box)
        with self._lock:
            cached = self._masks.get(key)
            if cached is not None:
                return cached
        mask = self._parser.mask(frame, face, box)
        with self._lock:
            self._masks[key] = mask
            while len(self._masks) > CROP_CACHE:
                self._masks.popitem(last=False)
        return mask

    def _mouth_mask(self, frame: Frame, gen: Generated, k: int,
                    settings: SyncSettings) -> np.ndarray:
        """The mouth mask of ``frame`` with ``gen`` in it; the parsing is kept while ``gen``
        is the frame's crop, so edits re-apply only dilation, feather and overrides."""
        x0, y0, x1, _ = (int(round(v)) for v in self.analysis.crop_boxes[k])
        crop = (x0, y0, x1, y0 + x1 - x0)
        with self._lock:
            cached = self._mouths.get(frame.index)
        if cached is None or cached[0] is not gen:
            cached = (gen, self._mouth.distance(frame, gen, crop))
            with self._lock:
                self._mouths[frame.index] = cached
                while len(self._mouths) > CROP_CACHE:
                    self._mouths.popitem(last=False)
        return mouth_mask(cached[1], self.analysis.landmarks[k], crop, gen.box, settings.mask)

    def _generated(self, frame: Frame, k: int, box: tuple[int, int, int, int]) -> Generated:
        with self._lock:
            cached = self._crops.get(frame.index)
            if cached is not None and cached[0] == box:
                self._crops.move_to_end(frame.index)
                return cached[1]
        gen = self._restorer.restore(frame, self._generator.generate(frame, k, box),
                                     self.analysis.frame(frame.index))
        with self._lock:
            self._crops[frame.index] = (box, gen)
            while len(self._crops) > CROP_CACHE:
                self._crops.popitem(last=False)
        return gen

    # -- corrections ---------------------------------------------------------------------
    def set_corrections(self, corrections: Corrections) -> np.ndarray:
        """Use ``corrections`` from now on; returns the clip frames whose picture changes."""
        old, self.corrections = self.corrections, corrections.copy()
        frames = self.edited_frames()
        if not frames.size:
            return frames
        changed = set(old.changed_frames(self.corrections, frames).tolist())
        if old.curves != self.corrections.curves:
            changed |= set(self._replan().tolist())
        return np.array(sorted(changed), dtype=np.int64)

    def _replan(self) -> np.ndarray:
        """Re-plan the generator for the current curves; the frames whose plan changed."""
        before = getattr(self._generator, "plan", None)
        self._generator.prepare(self._context(self._inputs, self._note))
        after = getattr(self._generator, "plan", None)
        frames = self.edited_frames()
        if before is not None and after is not None:
            k = frames - self.analysis.start
            frames = frames[before[k] != after[k]]
        with self._lock:
            for index in frames.tolist():
                self._crops.pop(index, None)
        return frames

    def _context(self, inputs: _AudioInputs, warn: Callable[[str], None]) -> SyncContext:
        a, curves, s = self.analysis, self.corrections.curves, self.settings
        indices = np.arange(a.start, a.stop)
        offset_ms = curves.audio_offset_ms.values(indices, s.audio_offset_ms)
        # Where in the dub each frame listens: its time, less the dub's placement and offset.
        dub_times = a.times - self.dub_offset - offset_ms / 1000.0
        return SyncContext(video=self.video, analysis=a, source_audio=inputs.source,
                           dub_audio=features_from_samples(inputs.dub_samples, dub_times),
                           edit=self.edit, train=inputs.train, fps=a.fps,
                           openness_gain=curves.openness_gain.values(indices, s.openness_gain),
                           dub_times=dub_times, dub_samples=inputs.dub_samples,
                           stabilizer=s.stabilizer, warn=warn)

    def _note(self, note: str) -> None:
        if note not in self.notes:  # a re-plan says again what the first plan said
            self.notes.append(note)

    def close(self) -> None:
        if self._generator is not None:
            self._generator.close()
            self._generator = None
        self._restorer.close()
        if self._parser is not None:
            self._parser.close()
            self._parser = None
        if self._mouth is not None:
            self._mouth.close()
            self._mouth = None
        self._crops.clear()
        self._masks.clear()
        self._mouths.clear()

    def __enter__(self) -> SyncSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class _AudioInputs:
    source: AudioFeatures  # the clip's own sound at the analysed frames
    dub_samples: np.ndarray  # the dub, 16 kHz mono
    train: np.ndarray  # bool per analysed frame: footage to learn from


def prepare_sync(video: str | os.PathLike, dub: str | os.PathLike, *, dub_offset: float = 0.0,
                 ranges: Sequence[tuple[float, float]] = (),
                 settings: SyncSettings = SyncSettings(),
                 corrections: Corrections | None = None, progress: ProgressFn = no_progress,
                 cancel: CancelToken | None = None) -> SyncSession:
    """Analyse, read the audio and plan the re-sync of ``ranges`` (default: the whole clip)."""
    video, dub = os.fspath(video), os.fspath(dub)
    # Before the analysis: a missing model is reported at once, not minutes into the job.
    restorer = create_restorer(settings.restorer, strength=settings.restore_strength,
                               fidelity=settings.restore_fidelity, mask=settings.mask)
    info = probe(video)
    if not info.video:
        raise RedubError("has no video stream (audio only?)", video)
    duration = info.video[0].duration
    edit_ranges = list(ranges) or [(0.0, duration)]
    session = SyncSession(video, dub, dub_offset, edit_ranges, settings,
                          corrections.copy() if corrections else Corrections(), [])
    session._restorer, session.duration = restorer, duration
    if settings.mask.kind == "parsing":
        session._parser = FaceParser()
    if settings.mask.kind == "mouth":
        session._mouth = MouthParser()
    notes = session.notes
    # The analysis covers the edits and the footage to learn from.
    learn = settings.train_range or learn_range(edit_ranges, duration)
    try:
        analysis = analyze_range(video, *analysis_span(edit_ranges, settings, duration),
                                 target=settings.target, backend=settings.face_backend,
                                 progress=progress, cancel=cancel)
    except NoFaceError as exc:
        notes.append(f"{exc.problem}: the picture passes through unchanged")
        return session
    # Landmarks that slipped off a turning or blurred face, carried over from good frames.
    placement = refine_landmarks(video, analysis, progress=progress, cancel=cancel)
    analysis = placement.analysis
    times = analysis.times
    edit = np.zeros(len(analysis), bool)
    for start, end in edit_ranges:
        edit |= (times >= start - 1e-6) & (times < end - 1e-6)
    train = (times >= learn[0] - 1e-6) & (times < learn[1] - 1e-6)
    if not (edit & analysis.found).any():
        notes.append("no face in the edited ranges: the picture passes through unchanged")
    # Frames the repair could not place either: neither re-synced nor lent.
    slipped = placement.unplaced
    if (slipped & edit).any():
        n = int((slipped & edit).sum())
        notes.append(f"{n} frame{'s keep' if n > 1 else ' keeps'} their own mouth: the face "
                     "could not be followed there to place a new one")
    session.unplaced = slipped & edit  # before edit drops them: SyncSession.unplaced_frames
    edit, train = edit & ~slipped, train & ~slipped
    session._eased = _ease_out(slipped)
    session.analysis, session.edit = analysis, edit

    progress("audio", 0, 2)
    inputs = _AudioInputs(source_features(video, times, info),
                          read_mono(dub, SAMPLE_RATE), train)
    session._inputs = inputs
    generator = create_generator(settings.backend)
    dub_seconds = len(inputs.dub_samples) / SAMPLE_RATE
    session.dub_note = _dub_length_note(dub_offset, dub_offset + dub_seconds, edit_ranges,
                                        duration)
    if session.dub_note:
        notes.append(session.dub_note)
    ctx = session._context(inputs, session._note)
    # Edited frames the dub plays over (the length note speaks for the others).
    heard = edit & (ctx.dub_times >= 0.0) & (ctx.dub_times < dub_seconds)
    if heard.any() and not ctx.dub_audio.vad[heard].any():
        if np.median(ctx.dub_audio.level_db[heard]) > SOUND_DBFS:
            notes.append("the dub holds sound but no speech in the edited ranges (music or "
                         "noise?): the mouth stays closed")
            # The neural generators would mouth along to it: they hear silence instead.
            inputs = replace(inputs, dub_samples=np.zeros_like(inputs.dub_samples))
            session._inputs = inputs
            ctx = session._context(inputs, session._note)
        else:
            notes.append("the dub is silent in the edited ranges: the mouth stays closed")
    progress("audio", 2, 2)
    try:
        progress("plan", 0, 1)
        if (edit & analysis.found).any():
            generator.prepare(ctx)
            session._generator = generator
        progress("plan", 1, 1)
    except BaseException:
        generator.close()
        raise
    if session._generator is None:
        generator.close()
    return session


def learn_range(ranges: Sequence[tuple[float, float]], duration: float) -> tuple[float, float]:
    """The default footage to learn from: LEARN_SECONDS of the clip centred on the edited
    ``ranges`` (all of their span when it is longer), the whole clip when that is shorter."""
    start, end = min(r[0] for r in ranges), max(r[1] for r in ranges)
    length = max(LEARN_SECONDS, end - start)
    if duration <= length:
        return 0.0, duration
    first = min(max(0.0, (start + end - length) / 2), duration - length)
    return first, first + length


def analysis_span(ranges: Sequence[tuple[float, float]], settings: SyncSettings,
                  duration: float) -> tuple[float, float]:
    """The seconds a job analyses: its edited ``ranges`` and the footage it learns from."""
    learn = settings.train_range or learn_range(ranges, duration)
    return (max(min([r[0] for r in ranges] + [learn[0]]), 0.0),
            min(max([r[1] for r in ranges] + [learn[1]]), duration))


def precompute(video: str | os.PathLike, *, ranges: Sequence[tuple[float, float]] = (),
               settings: SyncSettings = SyncSettings(), progress: ProgressFn = no_progress,
               cancel: CancelToken | None = None) -> bool:
    """What :func:`prepare_sync` caches on disk, done ahead: the face analysis, its landmark
    repair and the clip's own sound, so jobs on the same footage (a shot in several languages)
    load them. False when there is no face (nothing is cached then)."""
    video = os.fspath(video)
    info = probe(video)
    if not info.video:
        raise RedubError("has no video stream (audio only?)", video)
    duration = info.video[0].duration
    try:
        analysis = analyze_range(video, *analysis_span(list(ranges) or [(0.0, duration)],
                                                       settings, duration),
                                 target=settings.target, backend=settings.face_backend,
                                 progress=progress, cancel=cancel)
    except NoFaceError:
        return False
    times = refine_landmarks(video, analysis, progress=progress, cancel=cancel).analysis.times
    progress("audio", 0, 1)
    source_features(video, times, info)
    progress("audio", 1, 1)
    return True


def sync(video: str | os.PathLike, dub: str | os.PathLike, export: ExportSettings, *,
         dub_offset: float = 0.0, ranges: Sequence[tuple[float, float]] = (),
         settings: SyncSettings = SyncSettings(), progress: ProgressFn = no_progress,
         cancel: CancelToken | None = None, preview: PreviewFn | None = None,
         corrections: Corrections | None = None,
         range_settings: Sequence[SyncSettings] | None = None,
         prepared: Callable[[SyncSession], None] | None = None) -> RenderResult:
    """Re-sync the speaker's mouth to ``dub`` inside ``ranges`` (default: the whole clip).

    ``range_settings`` (one per range) gives each range its own settings (backend, restorer,
    mask, motion...); ranges sharing settings are prepared together, in one session.
    ``prepared`` sees each session before the export starts (e.g. its unplaced frames).
    """
    groups = _groups(list(ranges), settings, range_settings)
    sessions: list[SyncSession] = []
    try:
        for group_settings, group_ranges in groups:
            sessions.append(prepare_sync(video, dub, dub_offset=dub_offset, ranges=group_ranges,
                                         settings=group_settings, corrections=corrections,
                                         progress=progress, cancel=cancel))
            if prepared is not None:
                prepared(sessions[-1])
        active = [x for x in sessions if x.edited_frames().size]
        all_ranges = [r for x in sessions for r in x.ranges]

        def edit(frame: Frame) -> Frame:
            for session in active:
                if session.edits(frame.index):
                    return session.render_frame(frame)
            return frame

        # With mouths to re-sync, the note on the dub's length is this job's (render's would
        # speak of the sound alone); one note over all ranges, whatever their settings.
        result = render(video, export, dub=dub, dub_offset=dub_offset, ranges=all_ranges,
                        edit=edit if active else None, on_frame=preview, progress=progress,
                        cancel=cancel, dub_note=not active)
        notes = [n for x in sessions for n in x.notes if n != x.dub_note]
        if active:
            dub_end = dub_offset + len(active[0]._inputs.dub_samples) / SAMPLE_RATE
            notes.append(_dub_length_note(dub_offset, dub_end, all_ranges, active[0].duration,
                                          export.audio_mode if ranges else "all"))
    finally:
        for session in sessions:
            session.close()
    result.notes[:0] = list(dict.fromkeys(n for n in notes if n))
    return result


def _groups(ranges: list[tuple[float, float]], settings: SyncSettings,
            range_settings: Sequence[SyncSettings] | None
            ) -> list[tuple[SyncSettings, list[tuple[float, float]]]]:
    """Ranges gathered by their settings, in first-seen order; overlaps are refused."""
    if range_settings is None or not ranges:
        return [(settings, ranges)]
    if len(range_settings) != len(ranges):
        raise UsageError(f"{len(range_settings)} range settings for {len(ranges)} ranges")
    spans = sorted(ranges)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        if start < end:
            raise UsageError(f"ranges overlap at {start:.3f} s: each frame needs one setting")
    groups: dict[SyncSettings, list[tuple[float, float]]] = {}
    for span, chosen in zip(ranges, range_settings):
        groups.setdefault(chosen, []).append(span)
    return list(groups.items())


def _region(landmarks: np.ndarray, crop_box: np.ndarray, frame: Frame,
            settings: SyncSettings,
            face: tuple[int, int, int, int] | None = None) -> tuple[int, int, int, int]:
    """The part of the face crop an edit can touch: the mask's outline with room to move
    (with ``face``, MuseTalk's face box, the parsing mask's extent too).

    Working on this box rather than the whole face crop saves most of the per-frame cost.
    """
    # A parsed new mouth may open down towards the chin, past the target's lips.
    kind = "lower_face" if settings.mask.kind == "mouth" else settings.mask.kind
    poly = landmark_polygon(landmarks, kind)
    if face is not None:
        poly = np.concatenate([poly, np.reshape(mask_extent(face), (2, 2))])
    # Room for the soft edge, and for a chin that drops lower than the original's.
    pad = (max(settings.mask.dilation, 0.0) + settings.mask.feather + 0.3) * face_scale(landmarks)
    lo = np.maximum(poly.min(0) - pad, crop_box[:2])
    hi = np.minimum(poly.max(0) + pad, crop_box[2:])
    return even_box(np.concatenate([lo, hi]), frame.width, frame.height)


def _blend(frame: Frame, gen, analysis, k: int, settings: SyncSettings,
           fixes: FrameEdits | None = None, base: np.ndarray | None = None) -> Frame:
    x0, y0, x1, y1 = gen.box
    original = frame.rgb_region(x0, y0, x1, y1)
    fixes = fixes or NO_EDITS
    # The generated mouth's outline joins the target's (a chin that drops lower), and so does
    # the neck under the target's chin where the generated chin is higher, unless the outline
    # was edited: that is the user's word on where the mouth may change. A parsing mask
    # (``base``) is the target's own, as MuseTalk blends.
    generated = cover = None
    if fixes.outline is None and base is None:
        cover = chin_cover(analysis.landmarks[k], gen.landmarks, analysis.transforms[k], gen.box,
                           settings.mask)
        generated = np.maximum(landmark_mask(gen.landmarks, gen.box, settings.mask), cover)
    mask = frame_mask(analysis.landmarks[k], gen.box, analysis.transforms[k], settings.mask,
                      fixes.overrides, outline=fixes.outline, union=generated, base=base)
    if fixes.keep > 0:
        mask *= np.float32(1.0 - fixes.keep)
    if settings.color_match:
        # Colour is matched on the soft edge where both pictures show the same skin: not on
        # the neck under a covered chin, where the target shows its chin or collar instead.
        edge = mask if cover is None else np.where(cover > 0, np.float32(1), mask)
        image = match_mean(gen.image, original, edge)
    else:
        image = gen.image
    blended = pyramid_blend(original, image, mask)
    return frame.with_region(x0, y0, blended, mask=mask)


def _grow(box: tuple[int, int, int, int], fixes: FrameEdits, analysis: FaceAnalysis, k: int,
          frame: Frame, settings: SyncSettings) -> tuple[int, int, int, int]:
    """``box`` widened to hold an edited outline and added strokes, inside the face crop."""
    reach = fixes.reach()
    if reach is None:
        return box
    corners = np.array([reach[0], [reach[1][0], reach[0][1]], reach[1],
                        [reach[0][0], reach[1][1]]])
    points = geo.apply(geo.invert(analysis.transforms[k]), corners)
    pad = (max(settings.mask.dilation, 0.0) + settings.mask.feather) \
        * face_scale(analysis.landmarks[k]) + 2
    crop = analysis.crop_boxes[k]
    lo = np.maximum(np.minimum(points.min(0) - pad, box[:2]), crop[:2])
    hi = np.minimum(np.maximum(points.max(0) + pad, box[2:]), crop[2:])
    return even_box(np.concatenate([lo, hi]), frame.width, frame.height)


def _auto_outline(analysis: FaceAnalysis, k: int, settings: SyncSettings) -> np.ndarray:
    """The automatic mask outline of analysed frame ``k``, in face coordinates."""
    return geo.apply(analysis.transforms[k],
                     landmark_polygon(analysis.landmarks[k], settings.mask.kind))


def _ease_out(skipped: np.ndarray) -> np.ndarray:
    """1 on ``skipped`` frames, falling to 0 over KEEP_FADE frames on either side."""
    weight = skipped.astype(np.float64)
    for d in range(1, KEEP_FADE + 1):
        near = np.zeros_like(skipped)
        near[d:] |= skipped[:-d]
        near[:-d] |= skipped[d:]
        weight = np.maximum(weight, near * keep_fade(d))
    return weight


def _dub_length_note(dub_start: float, dub_end: float, ranges: list[tuple[float, float]],
                     duration: float, audio_mode: str = "ranges") -> str | None:
    """The one note on where the dub [start, end) leaves the edited span (inside the clip's
    ``duration``) without sound, or runs past it (None: it covers the span): what the sound
    and the mouth do there."""
    first = max(min(start for start, _ in ranges), 0.0)
    last = min(max(end for _, end in ranges), duration)
    span = "the edited range" if len(ranges) == 1 else "the edited ranges"
    does = "does" if len(ranges) == 1 else "do"
    if dub_end <= first + 0.05 or dub_start >= last - 0.05:
        return (f"the dub ({max(dub_start, 0.0):.2f}-{dub_end:.2f} s) misses {span} "
                f"({first:.2f}-{last:.2f} s): silence there, the mouth stays closed")
    parts = []
    if dub_start > first + 0.05:
        parts.append(f"starts {dub_start - first:.2f} s after {span} {does} (silence and a "
                     "resting mouth before it)")
    if dub_end < last - 0.05:
        parts.append(f"ends {last - dub_end:.2f} s before {span} {does} (silence and a "
                     "resting mouth after it)")
    elif dub_end > last + 0.05:
        after = ("cut at the range end" if audio_mode == "ranges"
                 else "it plays on there, over the source's own mouth")
        parts.append(f"runs {dub_end - last:.2f} s past {span} ({after})")
    return "the dub " + " and ".join(parts) if parts else None
