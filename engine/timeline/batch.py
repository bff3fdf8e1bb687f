"""Re-sync every shot of an editor's timeline, write the shots as new media and a timeline
pointing at them, with a report.

Each shot is the source's frames [source_in - handles, source_out + handles) (clamped to the
file), re-synced over the overlap only, written beside the others as
``<timeline stem>_<NNN>_<clip name>_redub.<ext>`` with the start timecode of its first frame,
the source's reel name, frame rate, colour and codec family, so an NLE relinks it by timecode.
A fingerprint sidecar (``<output>.redub.json``) lets a rerun skip shots whose output already
matches their inputs and settings. A shot that fails gets its line in the report and keeps its
original clip; the others go on.

Shots run as tasks of an executor (``engine.timeline.executors``: local worker processes, or a
Ray cluster), planned here first: a shot that is up to date or whose inputs are missing never
becomes a task. Several dub tracks are several languages: each gets its own shots (named with
the language: ``<stem>_<NNN>_<clip name>_<language>_redub.<ext>``), output timeline and report
(``<stem>_<language>_redub...``), but a shot's face analysis, landmark repair and source sound
are one task per distinct footage, span and analysis settings, run before every language's
render of it (``after``) and read by them from the on-disk caches.

A shot edited in the desktop has its own project (``projects=``, by shot index): its ranges
(cut to the overlap) with their settings and picked face, its manual corrections and its dub as
placed there replace the batch's, and are part of the fingerprint, so an edit re-renders that
shot alone.

Overrides file (``overrides=``): a JSON object keyed by shot index (as a string, "3") or clip
name, each value an object of settings applied on top of the defaults, the name's first and
then the index's::

    {"Interview A": {"backend": "wav2lip", "mask": {"kind": "lips"}},
     "3": {"openness_gain": 1.3, "audio_offset_ms": -40}}

Settings: backend, stabilizer, restorer, restore_strength, restore_fidelity, openness_gain,
audio_offset_ms, color_match, face_backend, and mask (kind, dilation, feather).
"""
from __future__ import annotations

import csv
import fnmatch
import glob
import hashlib
import io as text_io
import json
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import opentimelineio as otio

from engine.errors import Cancelled, RedubError, UsageError
from engine.face.analysis import NoFaceError
from engine.mask import MaskSettings
from engine.maskedit import Corrections
from engine.media.codecs import get_preset
from engine.media.probe import probe
from engine.models.manifest import backend_models
from engine.models.session import providers
from engine.pipeline import (SyncSession, SyncSettings, analysis_span, learn_range, precompute,
                             sync)
from engine.progress import CancelToken, ProgressFn, no_progress
from engine.project import Project, RangeSettings, write_atomic
from engine.render import ExportSettings
from engine.timeline import io
from engine.timeline.conform import conform
from engine.timeline.executors import Resources, Task, create_executor
from engine.timeline.shots import Shot, find_shots

VERSION = 1  # of the fingerprint: raise it when the same inputs would render differently
STATUSES = ("done", "skipped", "failed", "no-face")
REPORTS = ("csv", "json")
# Source codec -> the export preset of its family; others get H.264.
FAMILIES = {"h264": "h264", "hevc": "h265", "prores": "prores", "dnxhd": "dnxhr",
            "ffv1": "ffv1"}
_OVERRIDABLE = ("backend", "stabilizer", "restorer", "restore_strength", "restore_fidelity",
                "openness_gain", "audio_offset_ms", "color_match", "face_backend", "mask")


@dataclass
class ShotResult:
    shot: Shot
    status: str  # one of STATUSES
    output: Path | None  # the new media (done, skipped); None otherwise
    frames: int = 0  # frames in the new media
    notes: list[str] = field(default_factory=list)


@dataclass
class BatchResult:
    shots: list[ShotResult]
    timeline: Path  # the output timeline
    report: Path
    notes: list[str]  # about the timeline as a whole (shots refused, unused overrides)
    language: str | None = None  # the dub track, when the batch renders several

    @property
    def failed(self) -> list[ShotResult]:
        return [r for r in self.shots if r.status == "failed"]


@dataclass
class _Plan:
    """What a shot's sync is given: the batch's defaults, or what its project says."""

    dub: Path
    dub_offset: float  # seconds on the source's time where the dub file starts
    ranges: list[tuple[float, float]]  # seconds on the source's time, inside the overlap
    settings: list[SyncSettings]  # one per range
    corrections: Corrections


class _NoFace(Exception):
    """Raised from sync's ``prepared`` hook: nothing to re-sync, so nothing is written."""

    def __init__(self, notes: list[str]) -> None:
        super().__init__("no face")
        self.notes = notes


def run_batch(timeline: str | os.PathLike | otio.schema.Timeline,
              out_folder: str | os.PathLike, *, path: str | os.PathLike | None = None,
              settings: SyncSettings | None = None, overrides: str | os.PathLike | None = None,
              projects: Mapping[int, str | os.PathLike] | None = None,
              dub_track: str | Sequence[str] | None = None, handles: int = 0,
              fmt: str | None = None, report: str = "csv", export: dict[str, Any] | None = None,
              progress: ProgressFn = no_progress, cancel: CancelToken | None = None,
              on_shot: Callable[[ShotResult], None] | None = None, cluster: str | None = None,
              workers: int | None = None,
              ship_media: bool = False) -> BatchResult | list[BatchResult]:
    """Re-sync the shots of ``timeline`` (a file, or a timeline read from the file at
    ``path``, e.g. relinked in memory) into ``out_folder``, named after that file.

    ``dub_track``: the dub track's name (None: found as ``shots.py`` says), or several names
    and patterns ("Dub *"), one language each: then a list of results, one per language, each
    with its own timeline and report. ``projects``: shot index -> the shot's own project file
    (see the module's notes; one language only); they take precedence over ``overrides``.
    ``export``: ExportSettings fields for every shot (codec, quality, audio_mode; the codec
    defaults to the source's family). ``fmt``: the output timeline's format (default: the
    input's). ``on_shot`` gets each shot's result as it is known.

    Shots run as tasks of an executor (``engine.timeline.executors``): local worker processes
    (``workers``, default one per two cores), or a Ray cluster (``cluster``: "auto" or its
    address; ``ship_media`` sends the media through its object store, and each render then
    analyses its own copy). Progress: stage "batch"
    counts the shots of every language; each shot's own stages are reported as "shot K/N
    <stage>" ("<language> shot K/N <stage>" with several). Cancelling stops every task
    between frames; finished shots stay (and are skipped by a rerun), shots under way leave
    no file.
    """
    if isinstance(timeline, otio.schema.Timeline):
        if path is None:
            raise UsageError("a timeline object needs the path of the file it was read from")
        timeline_path = Path(path)
    else:
        timeline_path, timeline = Path(timeline), None
    out = Path(out_folder)
    if report not in REPORTS:
        raise UsageError(f"unknown report format '{report}': use csv or json")
    if handles < 0:
        raise UsageError(f"handles must be 0 or more frames, not {handles}")
    out_fmt = fmt or io.format_of(timeline_path)
    if out_fmt not in io.FORMATS:
        raise UsageError(f"unknown timeline format '{out_fmt}': use one of {', '.join(io.FORMATS)}")
    export = dict(export or {})
    unknown = set(export) - {"codec", "quality", "audio_mode"}
    if unknown:
        raise UsageError(f"unknown export option(s): {', '.join(sorted(unknown))}")
    if export.get("codec"):
        get_preset(export["codec"])  # an unknown codec is refused before any work
    base = settings or SyncSettings()
    table = read_overrides(overrides) if overrides is not None else {}
    if out.exists() and not out.is_dir():
        raise UsageError("output folder is a file", out)

    if timeline is None:
        timeline = io.read_timeline(timeline_path)
    languages = _languages(timeline, timeline_path, dub_track)
    several = len(languages) > 1
    projects = dict(projects or {})
    if several and projects:
        raise UsageError("a shot's project holds one dub: render it one language at a time")
    batches: list[_Language] = []
    for language in languages:
        shots, notes = find_shots(timeline, timeline_path, dub_track=language, handles=handles)
        notes = list(notes)
        if not shots:
            where = f"no shot to re-sync in dub track '{language}'" if several else \
                "no shot to re-sync"
            raise RedubError(where + " (" + ("; ".join(notes) or "no dub track and no dub "
                             "markers") + ")", timeline_path)
        used = {str(s.index) for s in shots} | {s.name for s in shots}
        notes += [f"override '{key}' matches no shot" for key in table if key not in used]
        notes += [f"project {os.fspath(p)} is for shot {i}, which the timeline does not have"
                  for i, p in projects.items() if str(i) not in used]
        batches.append(_Language(language if several else None, shots, notes))
    out.mkdir(parents=True, exist_ok=True)

    total = sum(len(b.shots) for b in batches)
    finished = 0
    lock = threading.Lock()

    def known(batch: _Language, k: int, result: ShotResult) -> None:
        nonlocal finished
        with lock:
            batch.results[k] = result
            finished += 1
            if on_shot is not None:
                on_shot(result)
            progress("batch", finished, total)

    progress("batch", 0, total)
    tasks: list[Task] = []
    labels: dict[str, str] = {}  # task key -> its progress prefix
    renders: dict[str, tuple[_Language, int, ShotJob]] = {}
    analyses: dict[tuple, str] = {}  # what a shot's analysis depends on -> its task's key
    for batch in batches:
        n = len(batch.shots)
        for k, shot in enumerate(batch.shots):
            if cancel is not None:
                cancel.check()
            label = f"{batch.language} shot {k + 1}/{n}" if several else f"shot {k + 1}/{n}"
            planned = _plan_shot(shot, out, timeline_path.stem, _settings_for(
                shot, base, table, overrides), projects.get(shot.index), export, batch.language)
            if isinstance(planned, ShotResult):
                known(batch, k, planned)
                continue
            after = []
            # Shipped media are copied for each task: a cache under a copy's path is never
            # found again, so each render analyses its own copy.
            for video, spans, chosen, span in [] if ship_media else _analyses(planned):
                what = (video, span, chosen.target, chosen.face_backend)
                if what not in analyses:
                    analyses[what] = f"analyse {len(analyses) + 1}"
                    labels[analyses[what]] = f"shot {k + 1}/{n}"
                    tasks.append(Task(analyses[what], analyse_shot, (video, spans, chosen),
                                      Resources(cpus=1.0), media=(video,)))
                after.append(analyses[what])
            key = f"render {len(renders) + 1}"
            labels[key], renders[key] = label, (batch, k, planned)
            tasks.append(Task(key, render_shot, (planned,), _resources(planned.plan),
                              after=tuple(dict.fromkeys(after)),
                              media=tuple(dict.fromkeys((str(shot.media),
                                                         str(planned.plan.dub))))))

    def task_progress(key: str, stage: str, done: int, total: int) -> None:
        progress(f"{labels[key]} {stage}", done, total)

    def task_done(key: str, result: Any) -> None:
        if key not in renders:
            return  # an analysis: its shots' renders read what it cached
        batch, k, job = renders[key]
        if not isinstance(result, ShotResult):
            problem = str(result) if isinstance(result, RedubError) else \
                f"{type(result).__name__}: {result}"
            result = ShotResult(job.shot, "failed", None, 0, [problem])
        known(batch, k, result)

    if tasks:
        executor = create_executor(cluster, workers, ship_media)
        try:
            executor.run(tasks, progress=task_progress, on_done=task_done, cancel=cancel)
        finally:
            executor.close()
            for _, _, job in renders.values():
                _remove_leftovers(job.target)

    results = []
    suffix = io.SUFFIXES[out_fmt]
    for batch in batches:
        tag = f"_{_tag(batch.language)}" if batch.language is not None else ""
        report_path = out / f"{timeline_path.stem}{tag}_redub_report.{report}"
        shots = [r for r in batch.results if r is not None]
        _write_report(report_path, shots, batch.notes, timeline, report)
        timeline_out = out / f"{timeline_path.stem}{tag}_redub{suffix}"
        conform(timeline, timeline_path, shots, timeline_out, out_fmt)
        results.append(BatchResult(shots=shots, timeline=timeline_out, report=report_path,
                                   notes=batch.notes, language=batch.language))
    return results if _many(dub_track) else results[0]


@dataclass
class _Language:
    """One language of the batch: its dub track's shots and their results as they come."""

    language: str | None  # the dub track's name; None when the batch has one language
    shots: list[Shot]
    notes: list[str]
    results: list[ShotResult | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.results = [None] * len(self.shots)


def _many(dub_track: str | Sequence[str] | None) -> bool:
    """Whether ``dub_track`` asks for a list of results: several names, or a pattern."""
    return dub_track is not None and (not isinstance(dub_track, str) or _is_pattern(dub_track))


def _is_pattern(name: str) -> bool:
    return any(c in name for c in "*?[")


def _languages(timeline: otio.schema.Timeline, timeline_path: Path,
               dub_track: str | Sequence[str] | None) -> list[str | None]:
    """The dub tracks the batch renders, patterns expanded in track order."""
    if dub_track is None:
        return [None]
    names = [dub_track] if isinstance(dub_track, str) else list(dub_track)
    tracks = [t.name for t in timeline.audio_tracks()]
    chosen: list[str] = []
    for name in names:
        if not _is_pattern(name):
            chosen.append(name)
            continue
        found = [t for t in tracks if fnmatch.fnmatchcase(t.casefold(), name.casefold())]
        if not found:
            listed = ", ".join(f"'{t}'" for t in tracks) or "none"
            raise UsageError(f"no audio track matches '{name}' (audio tracks: {listed})",
                             timeline_path)
        chosen += found
    chosen = list(dict.fromkeys(chosen))
    if not chosen:
        raise UsageError("no dub track given", timeline_path)
    tags = [_tag(name) for name in chosen]
    if len(chosen) > 1 and len(set(tags)) < len(tags):
        raise UsageError("dub tracks " + ", ".join(f"'{n}'" for n in chosen) + " give the "
                         "same file names: rename one", timeline_path)
    return chosen


def _tag(name: str) -> str:
    """A name as it goes into file names."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:48] or "dub"


def _resources(plan: _Plan) -> Resources:
    """One core per shot (the render's own threads gain little on a busy machine), and half a
    GPU where a neural stage runs on one: two shots share a GPU, one decoding and blending on
    the CPU while the other's networks run, and the networks' memory fits twice on any card
    these models need. Decided on the machine that plans the batch, which is expected to run
    the workers' onnxruntime build."""
    neural = any(backend_models("generator", s.backend) or backend_models("restorer", s.restorer)
                 for s in plan.settings)
    if not neural:
        return Resources(cpus=1.0)
    names = {name for name, _ in providers()}
    gpu = bool(names & {"TensorrtExecutionProvider", "CUDAExecutionProvider"})
    return Resources(cpus=1.0, gpus=0.5 if gpu else 0.0)


def _analyses(job: ShotJob) -> list[tuple[str, list[tuple[float, float]], SyncSettings,
                                          tuple[float, float]]]:
    """What the shot's sync will analyse, as ``sync`` groups its ranges: (video, ranges,
    settings, analysed span) per group of ranges sharing settings."""
    groups: dict[SyncSettings, list[tuple[float, float]]] = {}
    for span, chosen in zip(job.plan.ranges, job.plan.settings):
        groups.setdefault(chosen, []).append(span)
    video = str(job.shot.media)
    return [(video, spans, chosen, tuple(round(t, 6) for t in
                                         analysis_span(spans, chosen, job.duration)))
            for chosen, spans in groups.items()]


def _remove_leftovers(target: Path) -> None:
    """Temporary files of a render a worker did not finish (killed, or cancelled hard)."""
    for stray in target.parent.glob(f".{glob.escape(target.name)}.*"):
        stray.unlink(missing_ok=True)


def output_path(out: Path, stem: str, shot: Shot, ext: str, language: str | None = None) -> Path:
    """Where a shot's new media goes: ``<stem>_<NNN>_<clip name>_redub<ext>``, with the
    language after the clip's name when the batch has several."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", shot.name).strip("_")[:48] or "clip"
    tag = f"_{_tag(language)}" if language is not None else ""
    return out / f"{stem}_{shot.index:03d}_{name}{tag}_redub{ext}"


@dataclass(frozen=True)
class ShotJob:
    """One shot's render in one language as plain data, for a worker process or machine."""

    shot: Shot
    target: Path  # the new media
    options: ExportSettings
    plan: _Plan
    fingerprint: str
    project: str | None
    first: int  # the first source frame written
    duration: float  # of the media, seconds


def _plan_shot(shot: Shot, out: Path, stem: str, settings: SyncSettings,
               project: str | os.PathLike | None, export: dict[str, Any],
               language: str | None) -> ShotJob | ShotResult:
    """What rendering the shot takes, or its result already: skipped when its output is up to
    date, failed when its inputs are wrong."""
    try:
        if not Path(shot.media).is_file():
            raise RedubError(f"media of clip '{shot.name}' not found", shot.media)
        if project is None and not Path(shot.dub).is_file():
            raise RedubError(f"dub '{shot.dub_name}' not found", shot.dub)
        info = probe(shot.media)
        if not info.video:
            raise RedubError("has no video stream (audio only?)", shot.media)
        stream = info.video[0]
        count = stream.frame_count
        if not 0 <= shot.source_in < shot.source_out <= count:
            raise RedubError(f"clip '{shot.name}' uses frames {shot.source_in}-"
                             f"{shot.source_out} but the file has {count}", shot.media)
        first = max(0, shot.source_in - shot.handles)
        stop = min(count, shot.source_out + shot.handles)
        codec = export.get("codec") or FAMILIES.get(stream.codec, "h264")
        target = output_path(out, stem, shot, _extension(codec, shot.media), language)
        clock = stream.clock
        t_in = clock.frame_time(shot.source_in, f"{shot.source_in}f")
        t_out = clock.frame_time(shot.source_out, f"{shot.source_out}f")
        settings = replace(settings, train_range=learn_range(
            [(clock.frame_time(first, ""), clock.frame_time(stop, ""))], stream.duration))
        # Frame source_in hears the dub at dub_start.
        plan = (_Plan(Path(shot.dub), t_in - shot.dub_start, [(t_in, t_out)], [settings],
                      Corrections()) if project is None
                else _project_plan(Path(project), shot, settings, t_in, t_out))
        options = ExportSettings(output=str(target), codec=codec,
                                 quality=dict(export.get("quality") or {}),
                                 audio_mode=export.get("audio_mode", "ranges"),
                                 span=(first, stop))
        key = _fingerprint(shot, plan, options)
        previous = _read_sidecar(_sidecar(target))
        if (previous.get("fingerprint") == key and target.is_file()
                and target.stat().st_size == previous.get("size")):
            return ShotResult(shot, "skipped", target, int(previous.get("frames", stop - first)),
                              ["output is up to date"])
        return ShotJob(shot, target, options, plan, key,
                       None if project is None else os.fspath(project), first, stream.duration)
    except RedubError as exc:
        return ShotResult(shot, "failed", None, 0, [str(exc)])


def _sidecar(target: Path) -> Path:
    return Path(f"{target}.redub.json")


def analyse_shot(video: str, ranges: list[tuple[float, float]], settings: SyncSettings, *,
                 progress: ProgressFn, cancel: CancelToken,
                 media: Mapping[str, str]) -> bool:
    """A task: the shot's face analysis, landmark repair and source sound into the caches,
    once for every language's render of it. False where it found no face or failed: each
    render then meets the same and reports it."""
    try:
        return precompute(media.get(video, video), ranges=ranges, settings=settings,
                          progress=progress, cancel=cancel)
    except Cancelled:
        raise
    except RedubError:
        return False


def render_shot(job: ShotJob, *, progress: ProgressFn, cancel: CancelToken,
                media: Mapping[str, str]) -> ShotResult:
    """A task: render one shot in one language. A RedubError becomes a failed result, a
    faceless shot a no-face one; the sidecar is written once the media is in place."""
    shot, plan = job.shot, job.plan
    video = media.get(str(shot.media), str(shot.media))
    dub = media.get(str(plan.dub), str(plan.dub))
    sessions: list[SyncSession] = []

    def prepared(session: SyncSession) -> None:
        # One session per distinct setting: faceless when none of them re-syncs a frame.
        sessions.append(session)
        if (len(sessions) == len(set(plan.settings))
                and not any(s.edited_frames().size for s in sessions)):
            raise _NoFace([n for s in sessions for n in s.notes])

    try:
        result = sync(video, dub, job.options, dub_offset=plan.dub_offset,
                      ranges=plan.ranges, settings=plan.settings[0],
                      range_settings=plan.settings, corrections=plan.corrections,
                      progress=progress, cancel=cancel, prepared=prepared)
        target = job.target
        _write_json(_sidecar(target), {
            "version": VERSION, "fingerprint": job.fingerprint, "frames": result.frames,
            "size": target.stat().st_size, "media": str(shot.media), "dub": str(plan.dub),
            "project": job.project, "source_in": shot.source_in,
            "source_out": shot.source_out, "first": job.first})
    except NoFaceError as exc:
        return ShotResult(shot, "no-face", None, 0, [exc.problem])
    except _NoFace as exc:
        return ShotResult(shot, "no-face", None, 0, list(exc.notes) or ["no face to re-sync"])
    except Cancelled:
        raise
    except RedubError as exc:
        return ShotResult(shot, "failed", None, 0, [str(exc)])
    # A dub file running on past its clip is how timelines are cut: no news in a shot.
    notes = [n for n in result.notes if "past the edited range" not in n]
    return ShotResult(shot, "done", job.target, result.frames, notes)


def _project_plan(path: Path, shot: Shot, base: SyncSettings, t_in: float,
                  t_out: float) -> _Plan:
    """The shot as its project has it: ranges cut to the overlap [t_in, t_out), each with its
    settings on top of ``base``, the corrections, the dub and where it starts."""
    project = Project.load(path)
    media = project.media
    if os.path.abspath(media.path) != os.path.abspath(shot.media) and not media.matches(
            shot.media):
        raise RedubError(f"the project of shot {shot.index} is on other media "
                         f"({os.path.basename(media.path)})", path)
    if len(project.dubs) != 1:
        raise RedubError(f"the project of shot {shot.index} has {len(project.dubs)} dub "
                         "tracks: a render needs one", path)
    spans = [(max(r.start, t_in), min(r.end, t_out), r.settings) for r in project.ranges]
    spans = [(a, b, s) for a, b, s in spans if b > a + 1e-6]
    if not spans:
        raise RedubError(f"the project of shot {shot.index} has no range inside the shot", path)
    dub = project.dubs[0]
    if not dub.media.exists:
        raise RedubError(f"dub of shot {shot.index}'s project not found", dub.media.path)
    return _Plan(Path(dub.media.path), dub.offset, [(a, b) for a, b, _ in spans],
                 [_with_range_settings(base, s) for _, _, s in spans], project.corrections)


def _with_range_settings(base: SyncSettings, edited: RangeSettings) -> SyncSettings:
    """``base`` (the batch's settings for the shot) with what a project's range sets."""
    s = edited.to_sync_settings()
    return replace(base, backend=s.backend, stabilizer=s.stabilizer, restorer=s.restorer,
                   restore_strength=s.restore_strength, openness_gain=s.openness_gain,
                   audio_offset_ms=s.audio_offset_ms, mask=s.mask, target=s.target)


def _extension(codec: str, media: Path) -> str:
    """The source's container where the codec allows it, else the codec's own."""
    allowed = get_preset(codec).extensions
    ext = Path(media).suffix.lower()
    return ext if ext in allowed else allowed[0]


def _fingerprint(shot: Shot, plan: _Plan, export: ExportSettings) -> str:
    """sha256 of everything the shot's output depends on (not where it lies on the timeline).

    A project that says what the batch would have said (one range over the overlap, the dub
    where the timeline has it, no corrections) gives the same fingerprint."""
    def identity(path: Path) -> list:
        st = os.stat(path)
        return [os.path.abspath(path), st.st_size, st.st_mtime_ns]

    data = {"version": VERSION, "media": identity(shot.media), "dub": identity(plan.dub),
            "shot": [shot.rate, shot.source_in, shot.source_out, shot.handles],
            "dub_offset": plan.dub_offset, "ranges": plan.ranges,
            "settings": [asdict(s) for s in plan.settings],
            "corrections": plan.corrections.to_dict(),
            "export": [export.codec, export.quality, export.audio_mode, list(export.span or ())]}
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def read_overrides(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The overrides file, checked: every key names a setting with a value of its type."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the overrides file ({exc.strerror or exc})", path) from exc
    except ValueError as exc:
        raise UsageError(f"the overrides file is not valid JSON ({exc})", path) from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UsageError("the overrides file must map shot numbers or clip names to objects "
                         'of settings, e.g. {"3": {"openness_gain": 1.2}}', path)
    for key, values in data.items():
        overridden(SyncSettings(), values, path, key)  # refused now, before any work
    return data


def _settings_for(shot: Shot, base: SyncSettings, table: dict[str, dict[str, Any]],
                  path: str | os.PathLike | None) -> SyncSettings:
    settings = base
    for key in (shot.name, str(shot.index)):
        if key in table:
            settings = overridden(settings, table[key], path, key)
    return settings


def overridden(settings: SyncSettings, values: dict[str, Any],
               path: str | os.PathLike | None = None, key: str = "") -> SyncSettings:
    """``settings`` with one entry of the overrides file applied (``key`` names it)."""
    changes: dict[str, Any] = {}
    for name, value in values.items():
        if name not in _OVERRIDABLE:
            raise UsageError(f"'{key}': unknown setting '{name}' (use "
                             f"{', '.join(_OVERRIDABLE)})", path)
        current = getattr(settings, name)
        if name == "mask":
            if not isinstance(value, dict) or set(value) - {f.name for f in fields(MaskSettings)}:
                raise UsageError(f"'{key}': mask takes an object of kind, dilation, feather",
                                 path)
            changes[name] = replace(current, **value)
        elif isinstance(current, bool) != isinstance(value, bool) or not isinstance(
                value, (str,) if isinstance(current, str) else (int, float)):
            raise UsageError(f"'{key}': {name} must be a {type(current).__name__}, not "
                             f"{json.dumps(value)}", path)
        else:
            changes[name] = type(current)(value)
    try:
        return replace(settings, **changes)
    except UsageError as exc:
        raise UsageError(f"'{key}': {exc.problem}", path) from exc


def _read_sidecar(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none yet, or damaged: the shot renders again
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def report_rows(results: list[ShotResult], notes: list[str],
                timeline: otio.schema.Timeline) -> list[dict]:
    """One row per shot: index, name, record in/out timecode, frames, status, output, notes;
    then one row (status "note") per note on the timeline (shots refused, unused overrides)."""
    rows = []
    for r in results:
        s = r.shot
        rows.append({"index": s.index, "name": s.name,
                     "record_in": _record_timecode(timeline, s.record_in, s.rate),
                     "record_out": _record_timecode(timeline, s.record_out, s.rate),
                     "frames": r.frames, "status": r.status,
                     "output": str(r.output) if r.output else "",
                     "notes": "; ".join(r.notes)})
    rows += [{"index": "", "name": "", "record_in": "", "record_out": "", "frames": "",
              "status": "note", "output": "", "notes": note} for note in notes]
    return rows


def _record_timecode(timeline: otio.schema.Timeline, frame: int, rate: float) -> str:
    """Record timecode: the timeline's start timecode plus ``frame``."""
    start = timeline.global_start_time
    offset = round(start.value_rescaled_to(rate)) if start is not None else 0
    return otio.opentime.to_timecode(otio.opentime.RationalTime(offset + frame, rate), rate)


def _write_report(path: Path, results: list[ShotResult], notes: list[str],
                  timeline: otio.schema.Timeline, kind: str) -> None:
    rows = report_rows(results, notes, timeline)
    if kind == "json":
        _write_json(path, rows)
        return
    buffer = text_io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["index", "name", "record_in", "record_out",
                                                "frames", "status", "output", "notes"])
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buffer.getvalue())

