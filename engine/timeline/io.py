"""Timeline files in and out through OpenTimelineIO's adapters, and the media they point at.

Every format is read into the same shape, with record positions counted from the timeline's
start (``global_start_time`` holds its record timecode where the format keeps one) and each
media reference's available range in the media's own frames (from its start timecode, else
0). What each adapter keeps, and what is evened out here:

- otio, fcp_xml (FCP 7 XML): everything we use (FCP 7 XML drops track names).
- fcpx_xml: clips, ranges, markers; track names become lane numbers, audio lanes come first,
  the record start timecode is lost.
- edl (cmx_3600): one video track only, no audio written, no available ranges; reel names,
  ``* FROM CLIP NAME:`` and the media path as ``* FROM CLIP:`` (Avid style), markers as
  ``* LOC:`` (upper-cased). Read: EDLs do not state their frame rate, so it is ``rate``, else
  the first clip's media's rate, else 25; ``* SOURCE FILE:`` comments count as media paths;
  each track's record offset is turned into leading gaps and ``global_start_time``; available
  ranges are probed from the media. Written: record timecodes from ``global_start_time``, and
  a reel made of the media name's letters and digits where a clip has none (the adapter keeps
  spaces in reels, which splits the event line).
- aaf: clips, ranges, record start; markers are lost; paths come back as file:// URLs; the
  reader names audio tracks after an inner sequence, so track names are read back from the
  composition's slots. Written: media without a mob ID get one made from their path, the same
  on every write, so clips of one file share one master clip (and its name, on reading back).
- kdenlive: clips, ranges, track names; markers and the record start timecode are lost; clips
  of one file come back with the first one's name; the adapter's deprecation notice on stdout
  is silenced. MLT reads in/out points as frames into the file, so source ranges are written
  counted from each file's first frame (less the reference's available-range start) and read
  back from the media's start timecode (probed; a missing file stays counted from 0). The
  project's profile is the first video clip's picture: size, pixel and display aspect, frame
  rate and colour matrix (the adapter writes 1920x1080 BT.709, in which melt would scale and
  convert other media).

Mixed frame rates do not survive the EDL, AAF and Kdenlive adapters (they convert or refuse);
find the refusal in engine/timeline/shots.py, before anything is written.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import opentimelineio as otio

from engine.errors import RedubError, UsageError
from engine.media.probe import VideoStreamInfo, probe
from engine.project import _files_by_name

FORMATS: dict[str, str] = {"otio": "otio_json", "fcp_xml": "fcp_xml", "fcpx_xml": "fcpx_xml",
                           "edl": "cmx_3600", "aaf": "AAF", "kdenlive": "kdenlive"}
# The suffix each format is written with, and read back by.
SUFFIXES: dict[str, str] = {"otio": ".otio", "fcp_xml": ".xml", "fcpx_xml": ".fcpxml",
                            "edl": ".edl", "aaf": ".aaf", "kdenlive": ".kdenlive"}
_FORMAT_OF = {suffix: fmt for fmt, suffix in SUFFIXES.items()}
_KNOWN = "otio, fcp_xml (.xml), fcpx_xml (.fcpxml), edl, aaf, kdenlive"
EDL_DEFAULT_RATE = 25.0
# Suffixes tried when relinking a clip whose name is a file name without its suffix (EDLs).
_MEDIA_SUFFIXES = (".mov", ".mp4", ".mxf", ".m4v", ".avi", ".mkv", ".wav", ".aif", ".aiff",
                   ".flac", ".mp3", ".m4a")
# FFmpeg's colour matrix -> an MLT profile's colorspace.
_MLT_COLORSPACE = {"bt709": "709", "bt470bg": "601", "smpte170m": "601", "fcc": "601",
                   "smpte240m": "240", "bt2020nc": "2020", "bt2020c": "2020"}


def format_of(path: str | os.PathLike) -> str:
    """Our format name for ``path``'s suffix; UsageError for a suffix no adapter reads."""
    suffix = Path(path).suffix.lower()
    if suffix not in _FORMAT_OF:
        shown = f"'{suffix}'" if suffix else "(no suffix)"
        raise UsageError(f"unsupported timeline format {shown} ({_KNOWN})", path)
    return _FORMAT_OF[suffix]


def read_timeline(path: str | os.PathLike, fmt: str | None = None,
                  rate: float | None = None) -> otio.schema.Timeline:
    """The timeline in ``path`` (format by suffix unless ``fmt``); ``rate`` is for EDLs only,
    which do not state theirs (default: the first clip's media's rate, else 25). RedubError
    naming the file, one line, when it is missing or no adapter can make sense of it."""
    path = Path(path)
    name = _format(path, fmt)
    if not path.is_file():
        raise RedubError("timeline file not found", path)
    if name == "edl":
        timeline = _read_edl(path, rate)
    else:
        timeline = _read(path, name)
    if name == "aaf":
        _restore_aaf_track_names(timeline, path)
    elif name == "kdenlive":
        _from_timecode(timeline, path)
    for clip in timeline.find_clips():
        ref = clip.media_reference
        if isinstance(ref, otio.schema.ExternalReference) and ref.available_range is None:
            found = media_path(clip, path)
            if found is not None and found.is_file():
                ref.available_range = _media_range(found, clip.trimmed_range().duration.rate)
    return timeline


def write_timeline(timeline: otio.schema.Timeline, path: str | os.PathLike,
                   fmt: str | None = None) -> None:
    """Write ``timeline`` to ``path`` (format by suffix unless ``fmt``) atomically: into a
    temporary file beside it, renamed on success; RedubError naming the file otherwise."""
    path = Path(path)
    name = _format(path, fmt)
    options: dict = {}
    profile: dict[str, str] = {}
    if name == "edl":
        timeline, options["rate"] = _edl_ready(timeline, path)
    elif name == "aaf":
        timeline = _with_mob_ids(timeline)
    elif name == "kdenlive":
        profile = _mlt_profile(timeline, path)
        timeline = _from_file_start(timeline)
    temp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        with _quiet(name):
            otio.adapters.write_to_file(timeline, str(temp), adapter_name=FORMATS[name],
                                        **options)
        if name == "kdenlive" and profile:
            _set_profile(temp, profile)
        with open(temp, "rb+") as f:
            os.fsync(f.fileno())  # the rename must not land before the data does
        os.replace(temp, path)
    except Exception as exc:  # adapters raise anything from validation errors to KeyErrors
        temp.unlink(missing_ok=True)
        raise RedubError(f"cannot write as {name} ({_short(exc)})", path) from None


def media_path(clip: otio.schema.Clip, timeline_path: str | os.PathLike) -> Path | None:
    """The file ``clip``'s media reference names (file:// URL, absolute path or a path relative
    to the timeline's folder), or None when it names none (missing, generated, remote)."""
    ref = clip.media_reference
    if not isinstance(ref, otio.schema.ExternalReference) or not ref.target_url:
        return None
    url = ref.target_url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        path = urllib.request.url2pathname(parts.path)
        if parts.netloc not in ("", "localhost"):
            path = f"//{parts.netloc}{path}"  # a UNC share
    elif len(parts.scheme) > 1:
        return None  # http and the like: not a file here
    else:
        path = url  # a plain path (a one-letter "scheme" is a Windows drive)
        if not os.path.exists(path) and "%" in path:
            path = urllib.parse.unquote(path)
    found = Path(path)
    if not found.is_absolute():
        found = Path(timeline_path).parent / found
    return found


def missing_media(timeline: otio.schema.Timeline,
                  timeline_path: str | os.PathLike) -> list[str]:
    """Names of the clips whose media file does not exist (each once, in timeline order);
    generated clips (black, bars) need none."""
    names: list[str] = []
    for clip in _media_clips(timeline):
        found = media_path(clip, timeline_path)
        if found is None or not found.is_file():
            name = clip.name or (found.name if found is not None else "unnamed clip")
            if name not in names:
                names.append(name)
    return names


def relink(timeline: otio.schema.Timeline, timeline_path: str | os.PathLike,
           folders: Sequence[str | os.PathLike]) -> int:
    """Point clips with missing media at files of the same name in the timeline's folder and
    ``folders`` (and two levels below them, as projects relink). One candidate is taken; of
    several, the first whose length matches the reference's available range; none, or several
    with nothing to tell them apart, leave the clip as it was. Returns the clips relinked."""
    lost: list[tuple[otio.schema.Clip, list[str]]] = []
    for clip in _media_clips(timeline):
        found = media_path(clip, timeline_path)
        if found is None or not found.is_file():
            lost.append((clip, _wanted_names(clip, found)))
    if not lost:
        return 0
    index = _files_by_name([Path(timeline_path).parent, *folders],
                           {name for _, names in lost for name in names})
    relinked = 0
    for clip, names in lost:
        candidates = list(dict.fromkeys(p for name in names for p in index.get(name, [])))
        if len(candidates) > 1:
            candidates = [p for p in candidates if _same_length(clip, Path(p))]
        if candidates:
            _point_at(clip, Path(candidates[0]))
            relinked += 1
    return relinked


# -- reading -------------------------------------------------------------------------------

def _format(path: Path, fmt: str | None) -> str:
    if fmt is None:
        return format_of(path)
    if fmt not in FORMATS:
        raise UsageError(f"unknown timeline format '{fmt}' ({_KNOWN})", path)
    return fmt


def _read(path: Path, name: str, **options) -> otio.schema.Timeline:
    try:
        with _quiet(name):
            result = otio.adapters.read_from_file(str(path), adapter_name=FORMATS[name],
                                                  **options)
    except Exception as exc:  # adapters raise anything from XML parse errors to KeyErrors
        # An adapter's own slip (an element it expected and did not find) means little to a
        # user: the file is not what its suffix says, or damaged.
        slip = isinstance(exc, (AttributeError, TypeError, KeyError, IndexError))
        detail = "not this format, or damaged" if slip else _short(exc)
        raise RedubError(f"cannot read as {name} ({detail})", path) from None
    if isinstance(result, otio.schema.Timeline):
        return result
    # FCP XML and AAF files may hold several sequences: the first is the edit.
    timelines = [t for t in result if isinstance(t, otio.schema.Timeline)] \
        if isinstance(result, otio.schema.SerializableCollection) else []
    if not timelines:
        raise RedubError(f"no timeline in this {name} file", path)
    return timelines[0]


def _read_edl(path: Path, rate: float | None) -> otio.schema.Timeline:
    timeline = _edl_media(_read(path, "edl", rate=rate or EDL_DEFAULT_RATE))
    if rate is None:
        media_rate = _first_media_rate(timeline, path)
        if media_rate is not None and media_rate != EDL_DEFAULT_RATE:
            timeline = _edl_media(_read(path, "edl", rate=media_rate))
    # The adapter keeps each track's first record timecode as a negative source-range start;
    # as leading gaps and a timeline start, record positions read as in every other format.
    offsets = [-track.source_range.start_time for track in timeline.tracks
               if track.source_range is not None]
    if offsets:
        origin = min(offsets)
        timeline.global_start_time = origin
        for track in timeline.tracks:
            if track.source_range is None:
                continue
            lead = -track.source_range.start_time - origin
            track.source_range = None
            if lead.value > 0:
                track.insert(0, otio.schema.Gap(duration=lead))
    return timeline


def _edl_media(timeline: otio.schema.Timeline) -> otio.schema.Timeline:
    """Avid writes the media path as ``* SOURCE FILE:``, which the adapter keeps as a comment."""
    for clip in timeline.find_clips():
        if isinstance(clip.media_reference, otio.schema.ExternalReference):
            continue
        for comment in clip.metadata.get("cmx_3600", {}).get("comments", []):
            match = re.match(r"SOURCE FILE:\s*(.+)", comment)
            if match:
                clip.media_reference = otio.schema.ExternalReference(
                    target_url=match.group(1).strip())
    return timeline


def _clip_video(clip: otio.schema.Clip, path: Path) -> VideoStreamInfo | None:
    """The video stream of ``clip``'s media file, or None (no file, unreadable, no video)."""
    found = media_path(clip, path)
    if found is None or not found.is_file():
        return None
    try:
        info = probe(found)
    except RedubError:
        return None
    return info.video[0] if info.video else None


def _first_video(timeline: otio.schema.Timeline, path: Path) -> VideoStreamInfo | None:
    """The video stream of the first video-track clip whose media file is found, or None."""
    for clip in (c for track in timeline.video_tracks() for c in track.find_clips()):
        video = _clip_video(clip, path)
        if video is not None:
            return video
    return None


def _first_media_rate(timeline: otio.schema.Timeline, path: Path) -> float | None:
    video = _first_video(timeline, path)
    return None if video is None else float(video.frame_rate)


def _restore_aaf_track_names(timeline: otio.schema.Timeline, path: Path) -> None:
    """Name the tracks after the composition's picture and sound slots, in order, where the
    counts agree (the adapter's simplification keeps an inner sequence's name instead)."""
    import aaf2

    try:
        with aaf2.open(str(path)) as f:
            mobs = [m for m in f.content.toplevel() if m.name == timeline.name]
            if len(mobs) != 1:
                return
            slots = {kind: [s.name for s in mobs[0].slots
                            if getattr(s.segment, "media_kind", None) == media]
                     for kind, media in ((otio.schema.TrackKind.Video, "Picture"),
                                         (otio.schema.TrackKind.Audio, "Sound"))}
    except Exception:  # the adapter read it; names are a nicety, not worth failing for
        return
    for kind, names in slots.items():
        tracks = [t for t in timeline.tracks if t.kind == kind]
        if len(tracks) == len(names):
            for track, name in zip(tracks, names):
                if name:
                    track.name = name


def _from_timecode(timeline: otio.schema.Timeline, path: Path) -> None:
    """Count a Kdenlive project's source ranges (and clip markers) from each video file's start
    timecode, as the other formats do: MLT counts them from the file's first frame."""
    for clip in _media_clips(timeline):
        video = _clip_video(clip, path)
        if video is None or not video.clock.start_frame:
            continue
        rate = clip.source_range.start_time.rate
        offset = otio.opentime.RationalTime(video.clock.start_frame,
                                            float(video.frame_rate)).rescaled_to(rate)
        clip.source_range = otio.opentime.TimeRange(clip.source_range.start_time + offset,
                                                    clip.source_range.duration)
        clip.media_reference.available_range = _video_range(video)
        for marker in clip.markers:
            marker.marked_range = otio.opentime.TimeRange(
                marker.marked_range.start_time + offset, marker.marked_range.duration)


# -- writing -------------------------------------------------------------------------------

def _edl_ready(timeline: otio.schema.Timeline, path: Path) -> tuple[otio.schema.Timeline, float]:
    """A copy the EDL adapter writes faithfully, and its frame rate."""
    out = timeline.deepcopy()
    video = [t for t in out.tracks if t.kind == otio.schema.TrackKind.Video and t.find_clips()]
    if len(video) != 1:
        raise RedubError(f"an EDL holds one video track; this timeline has {len(video)}", path)
    track = video[0]
    for other in [t for t in out.tracks if t is not track]:
        out.tracks.remove(other)  # the adapter writes the first track only
    rate = track.find_clips()[0].trimmed_range().duration.rate
    if out.global_start_time is not None and out.global_start_time.value:
        start = out.global_start_time.rescaled_to(rate)
        track.source_range = otio.opentime.TimeRange(-start, track.duration())
    for clip in track.find_clips():
        meta = clip.metadata.setdefault("cmx_3600", {})
        if not meta.get("reel"):
            found = getattr(clip.media_reference, "target_url", None)
            stem = Path(urllib.parse.urlsplit(found).path).stem if found else clip.name
            meta["reel"] = re.sub(r"[^A-Za-z0-9]", "", stem)[:8] or "AX"
    return out, rate


def _with_mob_ids(timeline: otio.schema.Timeline) -> otio.schema.Timeline:
    """A copy whose clips all have a mob ID (the AAF writer needs one) that names their media.

    A clip read from an AAF keeps its master clip's ID after being pointed at new media, and
    the writer would make every clip with that ID share one file: such a clip, and any clip
    without an ID, gets one made from its media's path instead. The ID's own media is the one
    the reference read from the AAF names, else the first clip's.
    """
    import aaf2.mobid

    def mob_id(meta: dict) -> str | None:
        aaf = meta.get("AAF", {})
        found = aaf.get("MobID") or aaf.get("SourceID")
        return str(found) if found else None

    out = timeline.deepcopy()
    clips = [(c, getattr(c.media_reference, "target_url", None) or c.name)
             for c in out.find_clips()]
    owner: dict[str, str] = {}
    for clip, url in clips:
        if mob_id(clip.media_reference.metadata):
            owner.setdefault(mob_id(clip.media_reference.metadata), url)
    for clip, url in clips:
        known = mob_id(clip.metadata) or mob_id(clip.media_reference.metadata)
        if known and owner.setdefault(known, url) == url:
            continue
        for meta in (clip.metadata, clip.media_reference.metadata):
            for key in ("MobID", "SourceID"):
                meta.get("AAF", {}).pop(key, None)
        made = aaf2.mobid.MobID.new()
        made.material = uuid.uuid5(uuid.NAMESPACE_URL, url)
        clip.media_reference.metadata.setdefault("AAF", {})["MobID"] = str(made.urn)
    return out


def _from_file_start(timeline: otio.schema.Timeline) -> otio.schema.Timeline:
    """A copy whose source ranges count frames from each file's first frame, as MLT reads in
    and out points: less the reference's available-range start (a start timecode, say). A
    reference without an available range is taken as counted so already."""
    out = timeline.deepcopy()
    for clip in out.find_clips():
        ref = clip.media_reference
        known = getattr(ref, "available_range", None)
        if not isinstance(ref, otio.schema.ExternalReference) or known is None \
                or not known.start_time.value:
            continue
        used = clip.trimmed_range()
        clip.source_range = otio.opentime.TimeRange(
            used.start_time - known.start_time.rescaled_to(used.start_time), used.duration)
        ref.available_range = otio.opentime.TimeRange(
            otio.opentime.RationalTime(0, known.start_time.rate), known.duration)
    return out


def _mlt_profile(timeline: otio.schema.Timeline, path: Path) -> dict[str, str]:
    """MLT profile attributes for the first video clip's media (none when no video file is
    found): melt renders in the profile's picture, scaling and converting media that differ.
    The frame rate is the media's exact one where it is the timeline's (29.97 as 30000/1001)."""
    video = _first_video(timeline, path)
    if video is None:
        return {}
    sar = video.sample_aspect_ratio
    if video.rotation in (90, 270):
        sar = 1 / sar  # width and height are as displayed, the pixel shape as stored
    dar = Fraction(video.width * sar.numerator, video.height * sar.denominator)
    profile = {
        "description": f"{video.width}x{video.height} {float(video.frame_rate):g} fps",
        "width": str(video.width), "height": str(video.height),
        "sample_aspect_num": str(sar.numerator), "sample_aspect_den": str(sar.denominator),
        "display_aspect_num": str(dar.numerator), "display_aspect_den": str(dar.denominator),
        # FFmpeg and MLT read an unstated matrix as BT.601 below 720 lines.
        "colorspace": _MLT_COLORSPACE.get(video.color_names["matrix"],
                                          "709" if video.height >= 720 else "601")}
    fps = video.frame_rate.limit_denominator(1001)
    if abs(float(fps) - timeline.duration().rate) < 0.01:
        profile["frame_rate_num"] = str(fps.numerator)
        profile["frame_rate_den"] = str(fps.denominator)
    return profile


def _set_profile(project: Path, profile: dict[str, str]) -> None:
    tree = ET.parse(project)
    tree.getroot().find("profile").attrib.update(profile)
    tree.write(project, encoding="utf-8", xml_declaration=True)


# -- media ---------------------------------------------------------------------------------

def _media_clips(timeline: otio.schema.Timeline) -> Iterable[otio.schema.Clip]:
    """Clips that need a media file: not black or bars."""
    return (c for c in timeline.find_clips()
            if not isinstance(c.media_reference, otio.schema.GeneratorReference))


def _media_range(path: Path, rate: float) -> otio.opentime.TimeRange | None:
    """The media's frames as an available range: video in its own rate from its start
    timecode (else 0), sound-only files in ``rate`` from 0."""
    try:
        info = probe(path)
    except RedubError:
        return None
    if info.video:
        return _video_range(info.video[0])
    return otio.opentime.TimeRange(otio.opentime.RationalTime(0, rate),
                                   otio.opentime.RationalTime(round(info.duration * rate), rate))


def _video_range(video: VideoStreamInfo) -> otio.opentime.TimeRange:
    """A video's frames in its own rate, from its start timecode (else 0)."""
    own = float(video.frame_rate)
    return otio.opentime.TimeRange(otio.opentime.RationalTime(video.clock.start_frame, own),
                                   otio.opentime.RationalTime(video.frame_count, own))


def _wanted_names(clip: otio.schema.Clip, found: Path | None) -> list[str]:
    """File names a lost clip's media may have: the referenced one, else the clip's name
    (an EDL's clip name is often the file name, with or without its suffix)."""
    if found is not None:
        return [found.name]
    if not clip.name:
        return []
    if Path(clip.name).suffix.lower() in _MEDIA_SUFFIXES:
        return [clip.name]
    return [clip.name + suffix for suffix in _MEDIA_SUFFIXES]


def _same_length(clip: otio.schema.Clip, path: Path) -> bool:
    """Whether ``path`` is as long as the clip's reference says its media is (within a frame);
    False when the reference does not say."""
    known = getattr(clip.media_reference, "available_range", None)
    if known is None:
        return False
    try:
        info = probe(path)
    except RedubError:
        return False
    if info.video:
        video = info.video[0]
        frames = known.duration.rescaled_to(float(video.frame_rate)).value
        return abs(frames - video.frame_count) <= 1
    return abs(known.duration.to_seconds() - info.duration) <= 1 / known.duration.rate


def _point_at(clip: otio.schema.Clip, path: Path) -> None:
    """Re-point ``clip`` at ``path``, keeping the reference's URL style."""
    path = path.resolve()
    ref = clip.media_reference
    if isinstance(ref, otio.schema.ExternalReference):
        was_url = urllib.parse.urlsplit(ref.target_url or "").scheme == "file"
        ref.target_url = path.as_uri() if was_url else str(path)
    else:
        ref = clip.media_reference = otio.schema.ExternalReference(target_url=str(path))
    if ref.available_range is None:
        ref.available_range = _media_range(path, clip.trimmed_range().duration.rate)


# -- helpers -------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet(name: str):
    """The kdenlive adapter prints a deprecation notice on stdout (the CLI's own output)."""
    if name != "kdenlive":
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _short(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
