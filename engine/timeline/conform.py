"""The output timeline: the input with each re-synced clip pointing at its new media.

Record in/out never move. A re-synced clip gets a reference whose available range is the new
file's frames in the time space the input used for the original (as the shot was found): source
timecode when the original's frames were counted from a timecode, and then the clip keeps its
source range (the new file carries the timecode of its first frame, so an NLE relinks it by
timecode); else frames from the file's start, and then the source range moves back by the
frames the new file starts into the old one.
A clip whose new media does not cover all of it (a dub over part of a clip, or two shots on one
clip) is cut at the shots' edges: the shot pieces point at their new media, the rest keeps the
original media, so every frame stays at the same record time.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import opentimelineio as otio

from engine.timeline import io

if TYPE_CHECKING:
    from engine.timeline.batch import ShotResult
    from engine.timeline.shots import Shot

RELINKED = ("done", "skipped")


@dataclass(frozen=True)
class _Piece:
    """Media frames [start, stop) of a clip and the result that replaces them (None: keep)."""
    start: int
    stop: int
    result: ShotResult | None


def conform(timeline: otio.schema.Timeline, timeline_path: str | os.PathLike,
            results: Sequence[ShotResult], out_path: str | os.PathLike,
            fmt: str | None = None) -> otio.schema.Timeline:
    """Write (with ``io.write_timeline``, in ``fmt`` or by ``out_path``'s suffix) and return a
    copy of ``timeline`` whose done and skipped shots point at their new media; failed shots
    keep their original clips. ``timeline_path`` is the input's file, as the batch passes it:
    where the input named media relative to it, new media are named relative to ``out_path``."""
    out = timeline.deepcopy()
    out_path = Path(out_path)
    shots: dict[tuple[int, int], list[ShotResult]] = {}
    for result in results:
        if result.status in RELINKED and result.output is not None:
            shots.setdefault((result.shot.track, result.shot.clip), []).append(result)
    # Replace from the last clip of each track back, so earlier indices stay valid.
    for (track, index) in sorted(shots, reverse=True):
        clip = out.tracks[track][index]
        if not isinstance(clip, otio.schema.Clip):
            raise ValueError(f"shot {shots[track, index][0].shot.name!r}: item {index} of "
                             f"track {track} is not a clip")
        pieces = _conformed(clip, shots[track, index], out_path)
        parent = out.tracks[track]
        del parent[index]
        for offset, piece in enumerate(pieces):
            parent.insert(index + offset, piece)
    io.write_timeline(out, out_path, fmt)
    return out


def _conformed(clip: otio.schema.Clip, results: list[ShotResult],
               out_path: Path) -> list[otio.schema.Clip]:
    """The clip relinked to its one shot's media, or cut into pieces at its shots' edges."""
    used = clip.trimmed_range()
    rate = used.start_time.rate  # the clip's own: frame numbers as the shots count them
    origin = _origin(clip, results[0].shot, rate)
    start = _frames(used.start_time, rate) - origin
    stop = start + _frames(used.duration, rate)
    results = sorted(results, key=lambda r: r.shot.source_in)
    if len(results) == 1 and _covers(results[0], start, stop):
        return [_piece(clip, _Piece(start, stop, results[0]), origin, rate, out_path)]
    pieces: list[_Piece] = []
    at = start
    for result in results:
        lo, hi = max(result.shot.source_in, at), min(result.shot.source_out, stop)
        if lo >= hi:
            continue
        if lo > at:
            pieces.append(_Piece(at, lo, None))
        pieces.append(_Piece(lo, hi, result))
        at = hi
    if at < stop:
        pieces.append(_Piece(at, stop, None))
    return [_piece(clip, p, origin, rate, out_path) for p in pieces]


def _piece(clip: otio.schema.Clip, piece: _Piece, origin: int, rate: float,
           out_path: Path) -> otio.schema.Clip:
    """A copy of ``clip`` over media frames [piece.start, piece.stop), relinked if re-synced;
    its markers inside that stretch move with its source range."""
    new = clip.deepcopy()
    duration = otio.opentime.RationalTime(piece.stop - piece.start, rate)
    was = otio.opentime.TimeRange(otio.opentime.RationalTime(origin + piece.start, rate),
                                  duration)
    result = piece.result
    if result is None:
        new.source_range = was
    else:
        first = _first(result)
        # A timecode space names the new file's first frame by its source timecode; a space
        # counted from each file's start begins again at 0 in the new file.
        at = origin + first if origin else 0
        new.source_range = otio.opentime.TimeRange(
            otio.opentime.RationalTime(at + piece.start - first, rate), duration)
        old = clip.media_reference
        ref = otio.schema.ExternalReference(
            target_url=_url(result.output, getattr(old, "target_url", None) or "", out_path),
            available_range=otio.opentime.TimeRange(
                otio.opentime.RationalTime(at, rate),
                otio.opentime.RationalTime(result.frames, rate)))
        ref.name = Path(result.output).name
        new.media_reference = ref
        # An AAF input names the original's master clip here; written with it, the new media
        # would be merged into that master clip.
        new.metadata.pop("AAF", None)
        new.metadata["redub"] = {**dict(new.metadata.get("redub") or {}),
                                 "shot": result.shot.index, "status": result.status,
                                 "source": getattr(old, "target_url", None)}
    shift = new.source_range.start_time - was.start_time
    new.markers[:] = []
    for marker in clip.markers:
        if was.contains(marker.marked_range.start_time):
            moved = marker.deepcopy()
            moved.marked_range = otio.opentime.TimeRange(
                marker.marked_range.start_time + shift, marker.marked_range.duration)
            new.markers.append(moved)
    return new


def _covers(result: ShotResult, start: int, stop: int) -> bool:
    """Whether the result's new media holds media frames [start, stop)."""
    return _first(result) <= start and stop <= _first(result) + result.frames


def _first(result: ShotResult) -> int:
    """The media frame the new file starts at: the shot's first, less the handles the media
    has (the batch renders them clamped to the media)."""
    return max(0, result.shot.source_in - result.shot.handles)


def _origin(clip: otio.schema.Clip, shot: Shot, rate: float) -> int:
    """Where the input's time space puts the media's first frame, as the shot was found: its
    first record frame shows media frame ``source_in``."""
    into = shot.record_in - _frames(clip.range_in_parent().start_time, rate)
    return _frames(clip.trimmed_range().start_time, rate) + into - shot.source_in


def _frames(time: otio.opentime.RationalTime, rate: float) -> int:
    return round(time.value_rescaled_to(rate))


def _url(output: Path, original: str, out_path: Path) -> str:
    """The new file named as the input named the original: a file URL, an absolute path, or a
    path relative to the output timeline."""
    output = Path(output).resolve()
    if original.startswith("file:"):
        return output.as_uri()
    if original and not os.path.isabs(original):
        return os.path.relpath(output, out_path.resolve().parent)
    return str(output)
