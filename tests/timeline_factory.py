"""OpenTimelineIO timelines built from the shared clips and dubs, for the editor round trip (#17).

Media are referenced by absolute file paths. A video reference's available range is the probed
file: it starts at the file's start timecode (in frames) when it has one, else at 0, so clip
source ranges are in the time space an NLE would use. Ready timelines run at 25 fps with short
shots (1-3 s), a "V1" video track and a "Dub" audio track; record time starts at
01:00:00:00 (``global_start_time``), as editors' sequences do.
"""
from __future__ import annotations

from pathlib import Path

import opentimelineio as otio

from engine.media.probe import probe
from tests.conftest import shared_clip
from tests.media_factory import make_video, set_timecode

RATE = 25
START = "01:00:00:00"
FACE = "hdtf_aoc_512.mp4"  # 200 frames at 25 fps, one frontal speaker
FACE_B = "retalk_face5_524.mp4"  # 122 frames at 25 fps
FACE_C = "talk_d12_512.mp4"  # 183 frames at 25 fps
FACE_30 = "talk_s18_720p.mp4"  # 282 frames at 30 fps
DUB_A = "speech_radio31_16k.wav"  # 8 s
DUB_B = "speech_retalk1.wav"  # about 5 s


def media_reference(path: Path, rate: float = RATE) -> otio.schema.ExternalReference:
    """A reference to ``path`` with its probed available range: a video's frames from its start
    timecode (or 0); an audio file's length in frames of ``rate`` from 0."""
    info = probe(path)
    if info.video:
        video = info.video[0]
        rate = float(video.frame_rate)
        available = otio.opentime.TimeRange(
            otio.opentime.RationalTime(video.clock.start_frame, rate),
            otio.opentime.RationalTime(video.frame_count, rate))
    else:
        available = otio.opentime.TimeRange(
            otio.opentime.RationalTime(0, rate),
            otio.opentime.RationalTime(int(info.duration * rate), rate))
    return otio.schema.ExternalReference(target_url=str(Path(path).resolve()),
                                         available_range=available)


def clip(path: Path, first: int, frames: int, name: str | None = None,
         rate: float = RATE) -> otio.schema.Clip:
    """``frames`` frames of ``path`` from its frame ``first`` (0 = the file's first frame); the
    source range is in the reference's time space (from the start timecode when there is one).
    A video counts its own frames; ``rate`` counts an audio file's."""
    ref = media_reference(path, rate)
    start = ref.available_range.start_time
    return otio.schema.Clip(
        name=name or Path(path).stem, media_reference=ref,
        source_range=otio.opentime.TimeRange(
            otio.opentime.RationalTime(start.value + first, start.rate),
            otio.opentime.RationalTime(frames, start.rate)))


def dub_marker(item: otio.schema.Clip, dub: Path) -> otio.schema.Clip:
    """``item`` marked to be re-synced to ``dub`` over its whole length (marker "dub:PATH")."""
    item.markers.append(otio.schema.Marker(
        name=f"dub:{Path(dub).resolve()}",
        marked_range=otio.opentime.TimeRange(item.source_range.start_time,
                                             otio.opentime.RationalTime(0, RATE))))
    return item


def gap(frames: int, rate: float = RATE) -> otio.schema.Gap:
    return otio.schema.Gap(source_range=otio.opentime.TimeRange(
        otio.opentime.RationalTime(0, rate), otio.opentime.RationalTime(frames, rate)))


def track(kind: str, name: str, *items: otio.schema.Clip | int) -> otio.schema.Track:
    """A track of clips in order; an int is a gap of that many frames."""
    out = otio.schema.Track(name=name, kind=kind)
    for item in items:
        out.append(gap(item) if isinstance(item, int) else item)
    return out


def video_track(*items: otio.schema.Clip | int, name: str = "V1") -> otio.schema.Track:
    return track(otio.schema.TrackKind.Video, name, *items)


def audio_track(*items: otio.schema.Clip | int, name: str = "Dub") -> otio.schema.Track:
    return track(otio.schema.TrackKind.Audio, name, *items)


def timeline(*tracks: otio.schema.Track, name: str = "redub test",
             start: str | None = START, rate: float = RATE) -> otio.schema.Timeline:
    """Tracks in stack order (later video tracks lie on top), record time from ``start``."""
    out = otio.schema.Timeline(name=name)
    if start is not None:
        out.global_start_time = otio.opentime.from_timecode(start, rate)
    for t in tracks:
        out.tracks.append(t)
    return out


def _media(name: str, folder: Path | None, timecode: str | None) -> Path:
    # A shared clip as is, or remuxed into ``folder`` with a start timecode.
    path = shared_clip(name)
    if timecode is None:
        return path
    if folder is None:
        raise ValueError("a timecoded copy needs a folder")
    target = Path(folder) / f"{path.stem}_tc.mp4"
    return target if target.exists() else set_timecode(path, target, timecode)


def two_shots(folder: Path | None = None, timecode: str | None = None) -> otio.schema.Timeline:
    """Two clips, each with its own dub over part of it.

    Shot 1: FACE frames 30-70 at record 5-45, DUB_A from 1.0 s.
    Shot 2: FACE_B frames 15-55 at record 55-95, DUB_B from 0.
    """
    a, b = _media(FACE, folder, timecode), _media(FACE_B, folder, timecode)
    return timeline(
        video_track(clip(a, 25, 50), clip(b, 10, 50)),
        audio_track(5, clip(shared_clip(DUB_A), 25, 40), 10, clip(shared_clip(DUB_B), 0, 40)))


def cut_inside_a_clip(folder: Path | None = None,
                      timecode: str | None = None) -> otio.schema.Timeline:
    """One take cut into two clips (a jump cut), then another clip; one dub over the take.

    Shot 1: FACE frames 0-40 at record 0-40, DUB_A from 0.
    Shot 2: FACE frames 60-100 at record 40-80, DUB_A from 1.6 s.
    FACE_B at record 80-105 has no dub.
    """
    a, b = _media(FACE, folder, timecode), _media(FACE_B, folder, timecode)
    return timeline(
        video_track(clip(a, 0, 40), clip(a, 60, 40), clip(b, 0, 25)),
        audio_track(clip(shared_clip(DUB_A), 0, 80)))


def dub_spanning_a_cut(folder: Path | None = None,
                       timecode: str | None = None) -> otio.schema.Timeline:
    """One dub line over the cut between two clips.

    Shot 1: FACE_B frames 20-40 at record 20-40, DUB_B from 0.
    Shot 2: FACE_C frames 20-50 at record 40-70, DUB_B from 0.8 s.
    """
    b, c = _media(FACE_B, folder, timecode), _media(FACE_C, folder, timecode)
    return timeline(
        video_track(clip(b, 0, 40), clip(c, 20, 50)),
        audio_track(20, clip(shared_clip(DUB_B), 0, 50)))


def no_face_clip(folder: Path) -> Path:
    """A 2 s, 25 fps clip of a moving pattern with no face in it."""
    path = Path(folder) / "no_face.mp4"
    return path if path.exists() else make_video(path, frames=50, size=(256, 256))


def faceless_shot(folder: Path, timecode: str | None = None) -> otio.schema.Timeline:
    """A dub over a face clip and a clip with no face.

    Shot 1: FACE frames 50-90 at record 0-40, DUB_A from 0.
    Shot 2: the faceless clip's frames 0-40 at record 40-80, DUB_A from 1.6 s.
    """
    face = _media(FACE, folder, timecode)
    return timeline(
        video_track(clip(face, 50, 40), clip(no_face_clip(folder), 0, 40)),
        audio_track(clip(shared_clip(DUB_A), 0, 80)))


def mixed_rates() -> otio.schema.Timeline:
    """A 25 fps timeline with a 30 fps clip: one dub over both.

    Shot 1: FACE frames 0-40 at record 0-40, DUB_A from 0.
    The 30 fps clip (36 frames, record 40-70) is refused.
    """
    return timeline(
        video_track(clip(shared_clip(FACE), 0, 40), clip(shared_clip(FACE_30), 30, 36, rate=30)),
        audio_track(clip(shared_clip(DUB_A), 0, 70)))


def marked_shots(folder: Path | None = None, timecode: str | None = None) -> otio.schema.Timeline:
    """No dub track: two clips carry markers naming their dubs (EDLs keep markers, not tracks).

    Shot 1: FACE frames 10-50 at record 0-40, DUB_A from 0.
    Shot 2: FACE_B frames 0-30 at record 40-70, DUB_B from 0.
    """
    a, b = _media(FACE, folder, timecode), _media(FACE_B, folder, timecode)
    return timeline(video_track(dub_marker(clip(a, 10, 40), shared_clip(DUB_A)),
                                dub_marker(clip(b, 0, 30), shared_clip(DUB_B))))
