"""Re-sync every shot of an editor's timeline, write the shots as new media and a timeline
pointing at them, with a report.

Each shot is the source's frames [source_in - handles, source_out + handles) (clamped to the
file), re-synced over the overlap only, written beside the others as
``<timeline stem>_<NNN>_<clip name>_redub.<ext>`` with the start timecode of its first frame,
the source's reel name, frame rate, colour and codec family, so an NLE relinks it by timecode.
A fingerprint sidecar (``<output>.redub.json``) lets a rerun skip shots whose output already
matches their inputs and settings. A shot that fails gets its line in the report and keeps its
original clip; the others go on.

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
import hashlib
import io as text_io
import json
import os
import re
from collections.abc import Callable, Mapping
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
from engine.pipeline import SyncSession, SyncSettings, sync
from engine.progress import CancelToken, ProgressFn, no_progress
from engine.project import Project, RangeSettings
from engine.render import ExportSettings
from engine.timeline import io
from engine.timeline.conform import conform
from engine.timeline.shots import Shot, find_shots

VERSION = 1  # of the fingerprint: raise it when the same inputs would render differently
STATUSES = ("done", "skipped", "failed", "no-face")
REPORTS = ("csv", "json")
# Source codec -> the export preset of its family; others get H.264.
FAMILIES = {"h264": "h264", "hevc": "h265", "prores": "prores", "dnxhd": "dnxhr",
            "ffv1": "ffv1"}
LEARN_SECONDS = 30.0
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
              dub_track: str | None = None, handles: int = 0, fmt: str | None = None,
              report: str = "csv", export: dict[str, Any] | None = None,
              progress: ProgressFn = no_progress, cancel: CancelToken | None = None,
              on_shot: Callable[[ShotResult], None] | None = None) -> BatchResult:
    """Re-sync the shots of ``timeline`` (a file, or a timeline read from the file at
    ``path``, e.g. relinked in memory) into ``out_folder``, named after that file.

    ``projects``: shot index -> the shot's own project file (see the module's notes); they
    take precedence over ``overrides``. ``export``: ExportSettings fields for every shot
    (codec, quality, audio_mode; the codec defaults to the source's family). ``fmt``: the
    output timeline's format (default: the input's). ``on_shot`` gets each shot's result as it
    is known. Progress: stage "batch" counts shots; each shot's own stages are reported as
    "shot K/N <stage>". Cancelling stops between frames; finished shots stay (and are
    skipped by a rerun), the shot under way leaves no file.
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
    shots, notes = find_shots(timeline, timeline_path, dub_track=dub_track, handles=handles)
    notes = list(notes)
    if not shots:
        raise RedubError("no shot to re-sync (" + ("; ".join(notes) or "no dub track and no "
                         "dub markers") + ")", timeline_path)
    used = {str(s.index) for s in shots} | {s.name for s in shots}
    notes += [f"override '{key}' matches no shot" for key in table if key not in used]
    projects = dict(projects or {})
    notes += [f"project {os.fspath(p)} is for shot {i}, which the timeline does not have"
              for i, p in projects.items() if str(i) not in used]
    out.mkdir(parents=True, exist_ok=True)
    results: list[ShotResult] = []
    n = len(shots)
    progress("batch", 0, n)
    for k, shot in enumerate(shots):
        if cancel is not None:
            cancel.check()

        def shot_progress(stage: str, done: int, total: int, _k: int = k) -> None:
            progress(f"shot {_k + 1}/{n} {stage}", done, total)

        shot_settings = _settings_for(shot, base, table, overrides)
        results.append(_run_shot(shot, out, timeline_path.stem, shot_settings,
                                 projects.get(shot.index), export, shot_progress, cancel))
        if on_shot is not None:
            on_shot(results[-1])
        progress("batch", k + 1, n)
    suffix = _SUFFIXES[out_fmt]
    report_path = out / f"{timeline_path.stem}_redub_report.{report}"
    _write_report(report_path, results, notes, timeline, report)
    timeline_out = out / f"{timeline_path.stem}_redub{suffix}"
    conform(timeline, timeline_path, results, timeline_out, out_fmt)
    return BatchResult(shots=results, timeline=timeline_out, report=report_path, notes=notes)


# The suffix each format is written with (io.format_of reads them back).
_SUFFIXES = {"otio": ".otio", "fcp_xml": ".xml", "fcpx_xml": ".fcpxml", "edl": ".edl",
             "aaf": ".aaf", "kdenlive": ".kdenlive"}


def output_path(out: Path, stem: str, shot: Shot, ext: str) -> Path:
    """Where a shot's new media goes: ``<stem>_<NNN>_<clip name>_redub<ext>``."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", shot.name).strip("_")[:48] or "clip"
    return out / f"{stem}_{shot.index:03d}_{name}_redub{ext}"


def _run_shot(shot: Shot, out: Path, stem: str, settings: SyncSettings,
              project: str | os.PathLike | None, export: dict[str, Any], progress: ProgressFn,
              cancel: CancelToken | None) -> ShotResult:
    """Render one shot; a RedubError becomes a failed result, a faceless shot a no-face one."""
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
        target = output_path(out, stem, shot, _extension(codec, shot.media))
        clock = stream.clock
        t_in = clock.frame_time(shot.source_in, f"{shot.source_in}f")
        t_out = clock.frame_time(shot.source_out, f"{shot.source_out}f")
        settings = replace(settings, train_range=_learn_range(
            clock.frame_time(first, ""), clock.frame_time(stop, ""), stream.duration))
        # Frame source_in hears the dub at dub_start.
        plan = (_Plan(Path(shot.dub), t_in - shot.dub_start, [(t_in, t_out)], [settings],
                      Corrections()) if project is None
                else _project_plan(Path(project), shot, settings, t_in, t_out))
        options = ExportSettings(output=str(target), codec=codec,
                                 quality=dict(export.get("quality") or {}),
                                 audio_mode=export.get("audio_mode", "ranges"),
                                 span=(first, stop))
        key = _fingerprint(shot, plan, options)
        sidecar = Path(f"{target}.redub.json")
        previous = _read_sidecar(sidecar)
        if (previous.get("fingerprint") == key and target.is_file()
                and target.stat().st_size == previous.get("size")):
            return ShotResult(shot, "skipped", target, int(previous.get("frames", stop - first)),
                              ["output is up to date"])

        sessions: list[SyncSession] = []

        def prepared(session: SyncSession) -> None:
            # One session per distinct setting: faceless when none of them re-syncs a frame.
            sessions.append(session)
            if (len(sessions) == len(set(plan.settings))
                    and not any(s.edited_frames().size for s in sessions)):
                raise _NoFace([n for s in sessions for n in s.notes])

        try:
            result = sync(shot.media, plan.dub, options, dub_offset=plan.dub_offset,
                          ranges=plan.ranges, settings=plan.settings[0],
                          range_settings=plan.settings, corrections=plan.corrections,
                          progress=progress, cancel=cancel, prepared=prepared)
        except NoFaceError as exc:
            return ShotResult(shot, "no-face", None, 0, [exc.problem])
        except _NoFace as exc:
            return ShotResult(shot, "no-face", None, 0,
                              list(exc.notes) or ["no face to re-sync"])
        _write_json(sidecar, {"version": VERSION, "fingerprint": key,
                              "frames": result.frames, "size": target.stat().st_size,
                              "media": str(shot.media), "dub": str(plan.dub),
                              "project": None if project is None else os.fspath(project),
                              "source_in": shot.source_in,
                              "source_out": shot.source_out, "first": first})
        # A dub file running on past its clip is how timelines are cut: no news in a shot.
        notes = [n for n in result.notes if "past the edited range" not in n]
        return ShotResult(shot, "done", target, result.frames, notes)
    except Cancelled:
        raise
    except RedubError as exc:
        return ShotResult(shot, "failed", None, 0, [str(exc)])


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


def _learn_range(start: float, end: float, duration: float) -> tuple[float, float]:
    """Footage to learn the speaker's mouth from: LEARN_SECONDS of the source around the shot
    (a long source is not analysed whole), the whole take when it is shorter, so the shots
    of one take share one cached analysis."""
    length = max(LEARN_SECONDS, end - start)
    if duration <= length:
        return 0.0, duration
    first = min(max(0.0, (start + end - length) / 2), duration - length)
    return first, first + length


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
    _write_text(path, json.dumps(data, indent=2) + "\n")


def _write_text(path: Path, text: str) -> None:
    """Atomically: a temporary file beside ``path`` renamed over it."""
    temp = path.with_name(f".{path.name}.part")
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise RedubError(f"cannot write ({exc.strerror or exc})", path) from exc


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
    _write_text(path, buffer.getvalue())

