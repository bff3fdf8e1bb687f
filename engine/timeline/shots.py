"""The shots to re-sync in an editor's timeline: where the picture meets a dub.

Picture: at each record time, the top-most enabled video clip there (later tracks in the stack
lie on top, as in every NLE). Clips made by a generator (titles, solids, bars) hold no face and
are passed over as overlays; disabled tracks and clips are not seen; nested sequences are not
looked into (a note).

Dub: the audio track named by ``dub_track``, else the first whose name contains "dub" (any
case), else the last audio track. A shot is the overlap of one visible stretch of a video clip
with one clip of that track, so a dub line spanning a cut gives one shot per side (each hearing
its own part of the line) and two clips cut from one take are separate shots. A dub over no
picture gives no shot, only a note.

Markers: a clip carrying a marker named ``dub:PATH`` (PATH absolute, a file:// URL or relative
to the timeline file), or one whose metadata holds ``{"redub": {"dub": PATH, "dub_start": S}}``,
is a shot over all its visible length, the dub heard from its start (or S seconds in) at the
clip's first frame; dub-track clips over it are ignored. EDLs write marker names in capitals,
so a PATH that does not exist is looked for again ignoring case.

Frames: record frames count from the tracks' start (0) in the timeline's rate (add the
timeline's ``global_start_time`` for record timecode); source frames are frames into the media
file (0 = its first frame). OTIO gives a clip's source range in its reference's time space,
often starting at the media's start timecode: the reference's available range says where the
file starts. Without one, a source range at or after the file's probed start timecode (and
inside the file from there) is read as timecode, else as frames from the file's start. A dub's
source range is read the same way against its available range (else from 0), in seconds.

Rates: a clip whose media runs at another rate than the timeline (beyond NTSC rounding: 29.97 and
30000/1001 agree, 29.97 and 30 do not) is refused with a note: the editor conforms it, not us.
Missing media files are not refused here: the shot's render fails with the file named.
"""
from __future__ import annotations

import bisect
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import opentimelineio as otio

from engine.errors import RedubError, UsageError
from engine.media.probe import probe
from engine.timecode import format_timecode
from engine.timeline.io import media_path

_RATE_TOLERANCE = 1e-4  # relative
_MARKER_PREFIX = "dub:"


@dataclass
class Shot:
    """One stretch of one clip to re-sync to one dub."""

    index: int  # 1-based in record order; refused candidates keep their numbers (in notes)
    name: str  # the clip's name, with "_2", "_3"... where several shots would share it
    track: int  # timeline.tracks[track][clip] is the clip
    clip: int
    media: Path
    rate: float  # the timeline's frame rate (the media's agrees)
    source_in: int  # frames into the media file, end exclusive
    source_out: int
    record_in: int  # timeline frames from the tracks' start, end exclusive
    record_out: int
    dub: Path
    dub_start: float  # seconds into the dub file heard at record_in
    dub_name: str
    handles: int  # as asked: the render clamps them to the media

    @property
    def frames(self) -> int:
        return self.record_out - self.record_in


@dataclass(frozen=True)
class _Span:
    """Record time on a track: a video clip's visible stretch, or a dub clip."""

    record_in: int
    record_out: int
    track: int
    index: int
    item: otio.schema.Clip
    start: float  # the clip's own record start in timeline frames (a dub may start mid-frame)


@dataclass(frozen=True)
class _Dub:
    path: Path
    name: str
    offset: float  # seconds into the file heard at its clip's record start


def timeline_rate(timeline: otio.schema.Timeline,
                  timeline_path: str | os.PathLike | None = None) -> float:
    """The timeline's frame rate: its start time's, else its first video clip's."""
    if timeline.global_start_time is not None:
        return timeline.global_start_time.rate
    for track in timeline.video_tracks():
        for item in track:
            if isinstance(item, otio.schema.Clip):
                return item.trimmed_range().duration.rate
    raise RedubError("the timeline has no video clips", timeline_path)


def find_shots(timeline: otio.schema.Timeline, timeline_path: str | os.PathLike,
               dub_track: str | None = None,
               handles: int = 0) -> tuple[list[Shot], list[str]]:
    """The shots to re-sync, in record order, and one note per thing refused or left out.

    Raises UsageError when ``dub_track`` names no audio track, or ``handles`` is negative.
    """
    if handles < 0:
        raise UsageError(f"handles must be 0 frames or more, not {handles}")
    rate = timeline_rate(timeline, timeline_path)
    notes: list[str] = []
    visible = _visible(timeline, rate, notes)
    track = _dub_track(timeline, timeline_path, dub_track)
    dubs = _dub_spans(timeline, track, timeline_path, rate, notes) if track is not None else []
    marked: dict[tuple[int, int], _Dub | None] = {}
    for span in visible:
        if (span.track, span.index) not in marked:
            marked[span.track, span.index] = _marked_dub(span.item, timeline_path, notes)

    # (record in, record out, the picture's span, the dub and its offset at record in)
    candidates: list[tuple[int, int, _Span, _Dub]] = []
    for span in visible:
        dub = marked[span.track, span.index]
        if dub is not None:
            candidates.append((span.record_in, span.record_out, span, _Dub(
                dub.path, dub.name, dub.offset + (span.record_in - span.start) / rate)))
    overruled = set()
    heard_in_all = 0
    for dub_span, dub in dubs:
        heard = 0
        for span in _overlapping(visible, dub_span):
            first = max(span.record_in, dub_span.record_in)
            last = min(span.record_out, dub_span.record_out)
            heard += last - first
            if marked[span.track, span.index] is not None:
                overruled.add(span.item.name)
                continue
            candidates.append((first, last, span, _Dub(
                dub.path, dub.name, dub.offset + (first - dub_span.start) / rate)))
        heard_in_all += heard
        length = dub_span.record_out - dub_span.record_in
        if heard < length:
            notes.append(f"dub clip '{dub.name}' at {_timecode(timeline, dub_span.record_in, rate)}"
                         f": {length - heard} of its {length} frames lie over no picture and "
                         "are not re-synced")
    notes += [f"clip '{name}': its dub marker is used, not the dub track's clips over it"
              for name in sorted(overruled)]
    if track is None and not candidates:
        notes.append("the timeline has no audio track to take dubs from and no clip carries a "
                     "dub marker")
    elif track is not None and not dubs and not candidates:
        notes.append(f"dub track '{track.name}' has no clips")
    elif dubs and not heard_in_all:
        notes.append(f"dub track '{track.name}' overlaps no video clip")

    shots = []
    for number, (first, last, span, dub) in enumerate(sorted(candidates, key=lambda c: c[0]),
                                                      start=1):
        shot = _shot(number, first, last, span, dub, timeline_path, rate, handles, notes)
        if shot is not None:
            shots.append(shot)
    _unique_names(shots)
    return shots, notes


def _shot(number: int, first: int, last: int, span: _Span, dub: _Dub,
          timeline_path: str | os.PathLike, rate: float, handles: int,
          notes: list[str]) -> Shot | None:
    clip = span.item
    label = f"shot {number} (clip '{clip.name}')"
    media = media_path(clip, timeline_path)
    if media is None:
        notes.append(f"{label}: the clip has no media file; relink it")
        return None
    source = clip.trimmed_range()
    start_timecode, count = 0, None
    if media.exists():
        try:
            info = probe(media)
        except RedubError as e:
            notes.append(f"{label}: {e}")
            return None
        if not info.video:
            notes.append(f"{label}: {media} has no video")
            return None
        video = info.video[0]
        if not _same_rate(float(video.frame_rate), rate):
            notes.append(f"{label}: the media runs at {float(video.frame_rate):g} fps, the "
                         f"timeline at {rate:g} fps: refused (conform the clip in the editor)")
            return None
        start_timecode, count = video.clock.start_frame, video.frame_count
    source_in = (_frame(source.start_time, rate) + first - round(span.start)
                 - _file_start(clip, source, start_timecode, count, rate))
    source_out = source_in + last - first
    if count is not None and (source_in < 0 or source_out > count):
        notes.append(f"{label}: uses frames {source_in}-{source_out} of {media}, which has "
                     f"{count}: refused (does the clip's source range match the file?)")
        return None
    return Shot(index=number, name=clip.name or media.stem, track=span.track, clip=span.index,
                media=media, rate=rate, source_in=source_in, source_out=source_out,
                record_in=first, record_out=last, dub=dub.path, dub_start=dub.offset,
                dub_name=dub.name, handles=handles)


def _file_start(clip: otio.schema.Clip, source: otio.opentime.TimeRange, start_timecode: int,
                count: int | None, rate: float) -> int:
    """Where the media file's first frame lies in the time space of the clip's source range."""
    available = getattr(clip.media_reference, "available_range", None)
    if available is not None:
        return _frame(available.start_time, rate)
    first = _frame(source.start_time, rate)
    if start_timecode and first >= start_timecode and (
            count is None or first - start_timecode + _frame(source.duration, rate) <= count):
        return start_timecode
    return 0


def _visible(timeline: otio.schema.Timeline, rate: float, notes: list[str]) -> list[_Span]:
    """The picture: each stretch of record time where one clip is on top, in record order."""
    layers: list[list[_Span]] = []  # bottom to top, each in record order
    for t, track in enumerate(timeline.tracks):
        if track.kind != otio.schema.TrackKind.Video or not track.enabled:
            continue
        ranges = track.range_of_all_children()
        layer = []
        for i, item in enumerate(track):
            if isinstance(item, (otio.schema.Stack, otio.schema.Track)):
                notes.append(f"track '{track.name}': nested sequence '{item.name}' is not "
                             "looked into")
            if not isinstance(item, otio.schema.Clip) or not item.enabled or isinstance(
                    item.media_reference, otio.schema.GeneratorReference):
                continue
            start = _exact(ranges[item].start_time, rate)
            end = round(start + _exact(ranges[item].duration, rate))
            if end > round(start):
                layer.append(_Span(round(start), end, t, i, item, start))
        layers.append(layer)
    starts = [[s.record_in for s in layer] for layer in layers]
    cuts = sorted({x for layer in layers for s in layer for x in (s.record_in, s.record_out)})
    visible: list[_Span] = []
    for first, last in zip(cuts, cuts[1:]):
        top = next((s for layer, ins in zip(reversed(layers), reversed(starts))
                    if (s := _at(layer, ins, first)) is not None), None)
        if top is None:
            continue
        if visible and visible[-1].item is top.item and visible[-1].record_out == first:
            prev = visible.pop()
            visible.append(_Span(prev.record_in, last, top.track, top.index, top.item, top.start))
        else:
            visible.append(_Span(first, last, top.track, top.index, top.item, top.start))
    return visible


def _at(layer: list[_Span], starts: list[int], frame: int) -> _Span | None:
    i = bisect.bisect_right(starts, frame) - 1
    return layer[i] if i >= 0 and layer[i].record_out > frame else None


def _overlapping(visible: list[_Span], span: _Span) -> list[_Span]:
    return [s for s in visible if s.record_in < span.record_out and s.record_out > span.record_in]


def _dub_track(timeline: otio.schema.Timeline, timeline_path: str | os.PathLike,
               name: str | None) -> otio.schema.Track | None:
    tracks = timeline.audio_tracks()
    if name is not None:
        found = next((t for t in tracks if t.name == name), None) or next(
            (t for t in tracks if t.name.casefold() == name.casefold()), None)
        if found is None:
            names = ", ".join(f"'{t.name}'" for t in tracks) or "none"
            raise UsageError(f"no audio track named '{name}' (audio tracks: {names})",
                             timeline_path)
        return found
    tracks = [t for t in tracks if t.enabled]
    return next((t for t in tracks if "dub" in t.name.casefold()),
                tracks[-1] if tracks else None)


def _dub_spans(timeline: otio.schema.Timeline, track: otio.schema.Track,
               timeline_path: str | os.PathLike, rate: float,
               notes: list[str]) -> list[tuple[_Span, _Dub]]:
    t = next(i for i, x in enumerate(timeline.tracks) if x is track)
    ranges = track.range_of_all_children()
    spans = []
    for i, item in enumerate(track):
        if not isinstance(item, otio.schema.Clip) or not item.enabled:
            continue
        start = _exact(ranges[item].start_time, rate)
        end = round(start + _exact(ranges[item].duration, rate))
        if end <= round(start):
            continue
        path = media_path(item, timeline_path)
        if path is None:
            notes.append(f"dub clip '{item.name}' at {_timecode(timeline, round(start), rate)}"
                         ": has no media file")
            continue
        available = getattr(item.media_reference, "available_range", None)
        source = item.trimmed_range().start_time
        offset = (source - available.start_time if available is not None else source).to_seconds()
        spans.append((_Span(round(start), end, t, i, item, start),
                      _Dub(path, item.name or path.name, offset)))
    return spans


def _marked_dub(clip: otio.schema.Clip, timeline_path: str | os.PathLike,
                notes: list[str]) -> _Dub | None:
    """The dub a clip's marker names, if any (the first such marker)."""
    for marker in clip.markers:
        meta = marker.metadata.get("redub")
        if isinstance(meta, Mapping) and meta.get("dub"):
            text, offset = str(meta["dub"]), float(meta.get("dub_start", 0.0))
        elif marker.name.casefold().startswith(_MARKER_PREFIX):
            text, offset = marker.name[len(_MARKER_PREFIX):].strip(), 0.0
        else:
            continue
        holder = otio.schema.Clip(media_reference=otio.schema.ExternalReference(target_url=text))
        path = media_path(holder, timeline_path) if text else None
        if path is None:
            notes.append(f"clip '{clip.name}': dub marker '{marker.name}' names no file")
            return None
        if not path.exists():
            path = _ignoring_case(path) or path
        return _Dub(path, path.name, offset)
    return None


def _ignoring_case(path: Path) -> Path | None:
    current = Path(path.anchor)
    for part in path.parts[1:]:
        if not (current / part).exists():
            try:
                part = next(e for e in os.listdir(current) if e.casefold() == part.casefold())
            except (OSError, StopIteration):
                return None
        current = current / part
    return current


def _unique_names(shots: list[Shot]) -> None:
    seen: dict[str, int] = {}
    for shot in shots:
        seen[shot.name] = seen.get(shot.name, 0) + 1
        if seen[shot.name] > 1:
            shot.name = f"{shot.name}_{seen[shot.name]}"


def _same_rate(a: float, b: float) -> bool:
    return abs(a - b) <= _RATE_TOLERANCE * max(a, b)


def _exact(time: otio.opentime.RationalTime, rate: float) -> float:
    """``time`` in frames of ``rate``; a time counted at the same rate (29.97 for 30000/1001)
    keeps its own count, so hour-long timecodes do not drift."""
    return time.value if _same_rate(time.rate, rate) else time.value * rate / time.rate


def _frame(time: otio.opentime.RationalTime, rate: float) -> int:
    return round(_exact(time, rate))


def _timecode(timeline: otio.schema.Timeline, frame: int, rate: float) -> str:
    """Record timecode of ``frame`` for notes (drop-frame where OTIO infers it)."""
    start = timeline.global_start_time
    frame += _frame(start, rate) if start else 0
    try:
        return otio.opentime.to_timecode(otio.opentime.RationalTime(frame, rate), rate)
    except ValueError:  # a rate SMPTE does not define, e.g. 29.97 written as such
        return format_timecode(frame / rate, rate)
