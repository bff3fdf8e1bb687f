"""Timeline files through every adapter (engine/timeline/io.py): what each keeps, frame-exact."""
from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

import opentimelineio as otio
import pytest

from engine.errors import RedubError, UsageError
from engine.media.probe import probe
from engine.timeline import io as tio
from tests.conftest import shared_clip
from tests.media_factory import make_video, set_timecode

RATE = 25
SUFFIX = {"otio": ".otio", "fcp_xml": ".xml", "fcpx_xml": ".fcpxml", "edl": ".edl",
          "aaf": ".aaf", "kdenlive": ".kdenlive"}
KIND = otio.schema.TrackKind


def rt(frames: float, rate: float = RATE) -> otio.opentime.RationalTime:
    return otio.opentime.RationalTime(frames, rate)


def span(start: float, frames: float, rate: float = RATE) -> otio.opentime.TimeRange:
    return otio.opentime.TimeRange(rt(start, rate), rt(frames, rate))


def reference(path: Path) -> otio.schema.ExternalReference:
    """``path`` with its probed length (the shared clips carry no start timecode)."""
    info = probe(path)
    frames = info.video[0].frame_count if info.video else round(info.duration * RATE)
    if info.video:
        assert info.video[0].frame_rate == RATE
    return otio.schema.ExternalReference(target_url=str(path), available_range=span(0, frames))


def edit() -> otio.schema.Timeline:
    """Two 25 fps clips (one used twice: a cut inside it), a gap, and a dub over the cut."""
    face, other = shared_clip("hdtf_aoc_512.mp4"), shared_clip("retalk_face3_590.mp4")
    dub = shared_clip("speech_radio31_16k.wav")
    timeline = otio.schema.Timeline(name="round trip", global_start_time=rt(90000))
    video = otio.schema.Track(name="V1", kind=KIND.Video)
    audio = otio.schema.Track(name="Dub", kind=KIND.Audio)
    timeline.tracks.extend([video, audio])
    first = otio.schema.Clip(name="hdtf_aoc_512", media_reference=reference(face),
                             source_range=span(10, 50))
    first.markers.append(otio.schema.Marker(name="dub speech_retalk1", marked_range=span(20, 0)))
    video.extend([
        first,
        otio.schema.Gap(source_range=span(0, 5)),
        otio.schema.Clip(name="retalk_face3_590", media_reference=reference(other),
                         source_range=span(5, 75)),
        otio.schema.Clip(name="hdtf_aoc_512 again", media_reference=reference(face),
                         source_range=span(120, 40)),
    ])
    audio.extend([
        otio.schema.Gap(source_range=span(0, 20)),
        otio.schema.Clip(name="speech_radio31_16k", media_reference=reference(dub),
                         source_range=span(12, 60)),
    ])
    return timeline


def clips(timeline: otio.schema.Timeline, kind: str) -> list[tuple]:
    """(name, media path, source in, source duration, record in, record duration) per clip of
    ``kind``, in frames."""
    rows = []
    for track in timeline.tracks:
        if track.kind != kind:
            continue
        for clip in track.find_clips():
            src, rec = clip.source_range, clip.range_in_parent()
            rows.append((clip.name, tio.media_path(clip, "/nowhere/t.otio"),
                         src.start_time.to_frames(RATE), src.duration.to_frames(RATE),
                         rec.start_time.to_frames(RATE), rec.duration.to_frames(RATE)))
    return rows


def available(timeline: otio.schema.Timeline, kind: str) -> list[tuple[int, int]]:
    return [(c.media_reference.available_range.start_time.to_frames(RATE),
             c.media_reference.available_range.duration.to_frames(RATE))
            for t in timeline.tracks if t.kind == kind for c in t.find_clips()]


def track_names(timeline: otio.schema.Timeline) -> list[tuple[str, str]]:
    return [(t.kind, t.name) for t in timeline.tracks]


def markers(timeline: otio.schema.Timeline) -> list[tuple[str, int]]:
    return [(m.name, m.marked_range.start_time.to_frames(RATE))
            for c in timeline.find_clips() for m in c.markers]


# What survives each adapter besides clips, media, source and record ranges (equal everywhere).
# Tracks: FCP 7 XML drops names, FCPX gives lane numbers (audio first), an EDL holds one video
# track; the record start: lost by FCPX and Kdenlive; markers: lost by AAF and Kdenlive, an EDL
# upper-cases them. AAF and Kdenlive name each clip after its media's master clip (producer):
# the first clip's name for every clip of one file.
KEEPS = {
    "otio": ([(KIND.Video, "V1"), (KIND.Audio, "Dub")], 90000, "dub speech_retalk1"),
    "fcp_xml": ([(KIND.Video, ""), (KIND.Audio, "")], 90000, "dub speech_retalk1"),
    "fcpx_xml": ([(KIND.Audio, "-1"), (KIND.Video, "0")], None, "dub speech_retalk1"),
    "edl": ([(KIND.Video, "V")], 90000, "DUB SPEECH_RETALK1"),
    "aaf": ([(KIND.Video, "V1"), (KIND.Audio, "Dub")], 90000, None),
    "kdenlive": ([(KIND.Video, "V1"), (KIND.Audio, "Dub")], None, None),
}


@pytest.mark.parametrize("fmt", list(tio.FORMATS))
def test_round_trip_through_each_adapter(tmp_path, fmt):
    original = edit()
    path = tmp_path / f"edit{SUFFIX[fmt]}"
    tio.write_timeline(original, path)
    assert tio.format_of(path) == fmt
    back = tio.read_timeline(path)

    expected = clips(original, KIND.Video)
    if fmt in ("aaf", "kdenlive"):  # a clip is named after its media's master clip/producer
        expected[2] = (expected[0][0], *expected[2][1:])
    assert clips(back, KIND.Video) == expected
    assert available(back, KIND.Video) == available(original, KIND.Video)
    names, start, marker = KEEPS[fmt]
    assert track_names(back) == names
    if fmt == "edl":
        assert clips(back, KIND.Audio) == []  # the adapter writes the video track only
    else:
        assert clips(back, KIND.Audio) == clips(original, KIND.Audio)
        assert available(back, KIND.Audio) == available(original, KIND.Audio)
    assert (back.global_start_time.to_frames(RATE) if back.global_start_time else None) == start
    assert markers(back) == ([(marker, 20)] if marker else [])
    assert tio.missing_media(back, path) == []
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_edl_from_an_nle(tmp_path):
    """Record timecodes from 01:00:00:00, Avid's SOURCE FILE comments and an audio event: the
    dub keeps its place 20 frames in, as in every other format."""
    face = shared_clip("hdtf_aoc_512.mp4")
    dub = shared_clip("speech_radio31_16k.wav")
    path = tmp_path / "nle.edl"
    path.write_text(
        "TITLE: NLE\nFCM: NON-DROP FRAME\n\n"
        "001  AX       V     C        00:00:00:10 00:00:02:10 01:00:00:00 01:00:02:00\n"
        f"* FROM CLIP NAME:  hdtf_aoc_512.mp4\n* SOURCE FILE: {face}\n"
        "002  AX       A     C        00:00:00:12 00:00:02:12 01:00:00:20 01:00:02:20\n"
        f"* FROM CLIP NAME:  speech_radio31_16k.wav\n* SOURCE FILE: {dub}\n")
    timeline = tio.read_timeline(path)
    assert timeline.global_start_time.to_frames(RATE) == 90000
    assert clips(timeline, KIND.Video) == [("hdtf_aoc_512.mp4", face, 10, 50, 0, 50)]
    assert clips(timeline, KIND.Audio) == [("speech_radio31_16k.wav", dub, 12, 50, 20, 50)]
    # Probed: EDLs carry no available ranges.
    assert available(timeline, KIND.Video) == available(timeline, KIND.Audio) == [(0, 200)]


def test_edl_rate_from_media_or_argument(tmp_path):
    clip30 = shared_clip("talk_s18_720p.mp4")
    path = tmp_path / "thirty.edl"
    path.write_text("001  AX       V     C        00:00:01:00 00:00:02:00 00:00:00:00 00:00:01:00\n"
                    f"* FROM CLIP: {clip30}\n")
    first = tio.read_timeline(path).find_clips()[0]
    assert first.source_range == span(30, 30, 30)  # 30 fps, as the media
    assert first.media_reference.available_range == span(0, 282, 30)
    forced = tio.read_timeline(path, rate=25).find_clips()[0]
    assert forced.source_range == span(25, 25, 25)
    (tmp_path / "gone.edl").write_text(path.read_text().replace(str(clip30), "/gone/clip.mov"))
    assert tio.read_timeline(tmp_path / "gone.edl").find_clips()[0].source_range == span(25, 25)


def test_edl_writes_one_video_track_only(tmp_path):
    timeline = otio.schema.Timeline(name="two")
    for name in ("V1", "V2"):
        track = otio.schema.Track(name=name, kind=KIND.Video)
        track.append(otio.schema.Clip(name=name, source_range=span(0, 10)))
        timeline.tracks.append(track)
    path = tmp_path / "two.edl"
    path.write_text("old\n")
    with pytest.raises(RedubError) as err:
        tio.write_timeline(timeline, path)
    assert str(err.value) == f"{path}: an EDL holds one video track; this timeline has 2"
    assert path.read_text() == "old\n"  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["two.edl"]


def test_edl_reel_without_spaces(tmp_path):
    timeline = otio.schema.Timeline(name="reels")
    track = otio.schema.Track(kind=KIND.Video)
    timeline.tracks.append(track)
    track.append(otio.schema.Clip(
        name="B", source_range=span(5, 10),
        media_reference=otio.schema.ExternalReference(target_url="/media/retalk face3 590.mp4")))
    track.append(otio.schema.Clip(name="A", source_range=span(0, 10),
                                  metadata={"cmx_3600": {"reel": "REEL01"}}))
    path = tmp_path / "reels.edl"
    tio.write_timeline(timeline, path)
    back = tio.read_timeline(path, rate=RATE)
    assert [c.metadata["cmx_3600"]["reel"] for c in back.find_clips()] == ["retalkfa", "REEL01"]
    assert [c.range_in_parent().start_time.value for c in back.find_clips()] == [0, 10]
    assert "reel" not in timeline.find_clips()[0].metadata.get("cmx_3600", {})  # a copy changed


def test_aaf_mob_ids_stable_and_shared(tmp_path):
    import aaf2

    def master_mobs(path: Path) -> dict[str, str]:
        with aaf2.open(str(path)) as f:
            return {str(m.mob_id): m.name for m in f.content.mastermobs()}

    timeline = otio.schema.Timeline(name="mobs")
    track = otio.schema.Track(kind=KIND.Video)
    timeline.tracks.append(track)
    for name, url in (("a", "/m/a.mov"), ("a2", "/m/a.mov"), ("b", "/m/b.mov")):
        track.append(otio.schema.Clip(
            name=name, source_range=span(0, 10),
            media_reference=otio.schema.ExternalReference(target_url=url,
                                                          available_range=span(0, 100))))
    tio.write_timeline(timeline, tmp_path / "one.aaf")
    tio.write_timeline(timeline, tmp_path / "two.aaf")
    assert len(master_mobs(tmp_path / "one.aaf")) == 2  # a.mov once for both of its clips
    assert master_mobs(tmp_path / "one.aaf") == master_mobs(tmp_path / "two.aaf")
    assert all("AAF" not in c.media_reference.metadata for c in timeline.find_clips())

    # Read back, every clip carries its master clip's ID; one clip of a.mov pointed at new
    # media (as a re-synced shot is) must not drag its sibling along.
    back = tio.read_timeline(tmp_path / "one.aaf")
    shot = back.tracks[0][1]
    assert shot.metadata["AAF"]["MobID"] == back.tracks[0][0].metadata["AAF"]["MobID"]
    shot.media_reference = otio.schema.ExternalReference(target_url="/out/a2_redub.mov",
                                                         available_range=span(0, 10))
    tio.write_timeline(back, tmp_path / "three.aaf")
    again = tio.read_timeline(tmp_path / "three.aaf")
    assert [tio.media_path(c, tmp_path).as_posix() for c in again.find_clips()] == [
        "/m/a.mov", "/out/a2_redub.mov", "/m/b.mov"]
    assert len(master_mobs(tmp_path / "three.aaf")) == 3


def test_kdenlive_counts_frames_from_the_file_start_and_reads_back_the_timecode(tmp_path):
    """MLT takes in/out points as frames into the file: a timecoded take is written from 0
    and read back in its timecode again, frame-exact."""
    face = set_timecode(shared_clip("hdtf_aoc_512.mp4"), tmp_path / "face_tc.mp4", "10:00:00:00")
    timeline = edit()
    video = timeline.video_tracks()[0]
    for index in (0, 3):  # the take used twice, now with its timecode (frame 900000 first)
        clip = video[index]
        clip.media_reference = otio.schema.ExternalReference(
            target_url=str(face), available_range=span(900000, 200))
        clip.source_range = span(900000 + clip.source_range.start_time.value,
                                 clip.source_range.duration.value)
    path = tmp_path / "edit.kdenlive"
    tio.write_timeline(timeline, path)
    assert video[0].source_range == span(900010, 50)  # the caller's timeline is untouched

    project = ET.parse(path).getroot()
    takes = [p for p in project.iter("producer")
             if p.findtext("property[@name='resource']") == str(face)]
    # The bin clip is the whole file; the clips are its frames 10-59 and 120-159 (the adapter
    # writes seconds).
    assert [(p.get("in"), p.get("out")) for p in takes] == [("00:00:00.000", "00:00:07.960")]
    assert [(e.get("in"), e.get("out")) for playlist in project.iter("playlist")
            if playlist.get("id") != "main_bin" for e in playlist.iter("entry")
            if e.get("producer") == takes[0].get("id")] == [
        ("00:00:00.400", "00:00:02.360"), ("00:00:04.800", "00:00:06.360")]

    back = tio.read_timeline(path)
    expected = clips(timeline, KIND.Video)
    expected[2] = (expected[0][0], *expected[2][1:])  # named after the producer, as ever
    assert clips(back, KIND.Video) == expected
    assert available(back, KIND.Video) == available(timeline, KIND.Video)
    assert clips(back, KIND.Audio) == clips(timeline, KIND.Audio)  # sound files count from 0

    # The timecode comes from the media: without it, frames count from the file's start.
    face.rename(tmp_path / "moved.mp4")
    lost = tio.read_timeline(path).video_tracks()[0].find_clips()[0]
    assert lost.source_range == span(10, 50)


def test_kdenlive_profile_is_the_first_video_clip_s_picture(tmp_path):
    """The adapter writes a 1920x1080 BT.709 profile; melt would scale other media to it and
    convert their colours. The project takes the first video clip's picture instead."""
    def profile(media: Path | None, rate: float = RATE) -> dict[str, str]:
        timeline = otio.schema.Timeline(name="p")
        track = otio.schema.Track(kind=KIND.Video)
        timeline.tracks.append(track)
        url = str(media) if media else str(tmp_path / "gone.mp4")
        track.append(otio.schema.Clip(
            name="c", source_range=span(0, 4, rate),
            media_reference=otio.schema.ExternalReference(url, available_range=span(0, 4, rate))))
        path = tmp_path / "p.kdenlive"
        tio.write_timeline(timeline, path)
        return dict(ET.parse(path).getroot().find("profile").attrib)

    keys = ("width", "height", "frame_rate_num", "frame_rate_den", "sample_aspect_num",
            "sample_aspect_den", "display_aspect_num", "display_aspect_den", "colorspace")

    def picture(media: Path | None, rate: float = RATE) -> tuple[str, ...]:
        found = profile(media, rate)
        return tuple(found[k] for k in keys)

    # An SD take with no matrix stated: BT.601, as FFmpeg and MLT read it.
    assert picture(shared_clip("hdtf_aoc_512.mp4")) == (
        "512", "512", "25", "1", "1", "1", "1", "1", "601")
    assert picture(shared_clip("talk_s18_720p.mp4"), 30) == (  # tagged BT.709
        "1280", "720", "30", "1", "1", "1", "16", "9", "709")
    ntsc = make_video(tmp_path / "ntsc.mp4", frames=4, rate=Fraction(30000, 1001),
                      color=(1, 1, 1, 1))
    assert picture(ntsc, 30000 / 1001) == (
        "160", "96", "30000", "1001", "1", "1", "5", "3", "709")
    # Nothing to probe: the adapter's profile stays.
    assert picture(None)[:2] == ("1920", "1080")


def test_format_of_and_unknown_formats(tmp_path):
    assert {tio.format_of(f"x{s.upper()}") for s in SUFFIX.values()} == set(tio.FORMATS)
    with pytest.raises(UsageError) as err:
        tio.format_of("cut.xyz")
    assert str(err.value) == ("cut.xyz: unsupported timeline format '.xyz' (otio, fcp_xml "
                              "(.xml), fcpx_xml (.fcpxml), edl, aaf, kdenlive)")
    with pytest.raises(UsageError, match="unknown timeline format 'avid'"):
        tio.read_timeline(tmp_path / "cut.otio", fmt="avid")
    with pytest.raises(RedubError, match="timeline file not found"):
        tio.read_timeline(tmp_path / "cut.otio")


@pytest.mark.parametrize("content", [b"\x00\xff garbage {[", b"<?xml version='1.0'?>\n<xmeml><seq"])
@pytest.mark.parametrize("fmt", list(tio.FORMATS))
def test_corrupt_file_is_one_line_naming_it(tmp_path, fmt, content):
    path = tmp_path / f"broken{SUFFIX[fmt]}"
    path.write_bytes(content)
    with pytest.raises(RedubError) as err:
        tio.read_timeline(path)
    text = str(err.value)
    assert text.startswith(f"{path}: cannot read as {fmt} (") and "\n" not in text


def test_other_format_under_a_suffix(tmp_path):
    timeline = otio.schema.Timeline(name="t")
    timeline.tracks.append(otio.schema.Track(kind=KIND.Video))
    timeline.tracks[0].append(otio.schema.Clip(name="c", source_range=span(0, 5)))
    tio.write_timeline(timeline, tmp_path / "cut.xml")
    (tmp_path / "cut.xml").rename(tmp_path / "cut.fcpxml")
    with pytest.raises(RedubError) as err:
        tio.read_timeline(tmp_path / "cut.fcpxml")
    assert str(err.value) == (f"{tmp_path / 'cut.fcpxml'}: cannot read as fcpx_xml "
                              "(not this format, or damaged)")
    assert tio.read_timeline(tmp_path / "cut.fcpxml", fmt="fcp_xml").find_clips()[0].name == "c"


def test_media_path_forms(tmp_path):
    def clip(url: str | None) -> otio.schema.Clip:
        ref = otio.schema.ExternalReference(target_url=url) if url else None
        return otio.schema.Clip(name="c", media_reference=ref)

    timeline_path = tmp_path / "edit" / "cut.xml"
    spaced = tmp_path / "my media" / "take 1.mov"
    spaced.parent.mkdir()
    spaced.write_bytes(b"")
    assert tio.media_path(clip(spaced.as_uri()), timeline_path) == spaced  # percent-encoded
    assert tio.media_path(clip(f"file://localhost{spaced.as_uri()[7:]}"), timeline_path) == spaced
    assert tio.media_path(clip(str(spaced)), timeline_path) == spaced
    assert tio.media_path(clip(spaced.as_uri()[7:]), timeline_path) == spaced  # %20 in a path
    assert tio.media_path(clip("../my media/take 1.mov"), timeline_path).resolve() == spaced
    assert tio.media_path(clip("media/a.mov"), timeline_path) == tmp_path / "edit/media/a.mov"
    assert tio.media_path(clip("https://example.com/a.mov"), timeline_path) is None
    assert tio.media_path(clip(None), timeline_path) is None


def test_missing_media_names_the_clips(tmp_path):
    real = make_video(tmp_path / "real.mp4", frames=5)
    timeline = otio.schema.Timeline(name="m")
    track = otio.schema.Track(kind=KIND.Video)
    timeline.tracks.append(track)
    for name, url in (("here", str(real)), ("gone", "gone.mov"), ("gone", "gone.mov"),
                      ("", "/elsewhere/nameless.mov")):
        track.append(otio.schema.Clip(name=name, source_range=span(0, 5),
                                      media_reference=otio.schema.ExternalReference(url)))
    track.append(otio.schema.Clip(name="unlinked", source_range=span(0, 5)))
    track.append(otio.schema.Clip(name="black", source_range=span(0, 5),
                                  media_reference=otio.schema.GeneratorReference(
                                      generator_kind="black")))
    assert tio.missing_media(timeline, tmp_path / "t.otio") == ["gone", "nameless.mov",
                                                                "unlinked"]


def test_relink_moved_media(tmp_path):
    moved = tmp_path / "moved"
    (moved / "deep").mkdir(parents=True)
    (tmp_path / "copy").mkdir()
    one = make_video(moved / "deep" / "one.mp4", frames=8)
    two = make_video(moved / "two.mp4", frames=12)
    make_video(tmp_path / "copy" / "two.mp4", frames=6)  # same name, other length
    make_video(moved / "three.mp4", frames=4)
    make_video(tmp_path / "copy" / "three.mp4", frames=4)  # two equal candidates

    timeline = otio.schema.Timeline(name="r")
    track = otio.schema.Track(kind=KIND.Video)
    timeline.tracks.append(track)
    for name, url, frames in (("one", "file:///old/one.mp4", 8), ("two", "/old/two.mp4", 12),
                              ("three", "/old/three.mp4", 4), ("four", "/old/four.mp4", 4)):
        track.append(otio.schema.Clip(
            name=name, source_range=span(0, 4),
            media_reference=otio.schema.ExternalReference(url, available_range=span(0, frames))))
    edl_clip = otio.schema.Clip(name="one", source_range=span(0, 4))  # an EDL without paths
    track.append(edl_clip)
    timeline_path = tmp_path / "edit" / "cut.otio"  # its folder is searched too: empty here

    assert tio.relink(timeline, timeline_path, [tmp_path / "copy", moved]) == 4
    urls = [c.media_reference.target_url for c in timeline.find_clips()]
    assert urls[:2] == [one.resolve().as_uri(), str(two.resolve())]  # URL style kept
    assert urls[2] == str((tmp_path / "copy" / "three.mp4").resolve())  # the first that fits
    assert urls[3:] == ["/old/four.mp4", str(one.resolve())]
    assert edl_clip.media_reference.available_range == span(0, 8)  # probed
    assert tio.missing_media(timeline, timeline_path) == ["four"]
    assert tio.relink(timeline, timeline_path, [moved]) == 0


def test_relink_leaves_an_undecidable_clip(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        make_video(tmp_path / folder / "take.mp4", frames=4)
    clip = otio.schema.Clip(name="take", source_range=span(0, 4),
                            media_reference=otio.schema.MissingReference())
    timeline = otio.schema.Timeline(name="u")
    timeline.tracks.append(otio.schema.Track(kind=KIND.Video))
    timeline.tracks[0].append(clip)
    # Two files called take.mp4 and no length to tell them apart: nothing is guessed.
    assert tio.relink(timeline, tmp_path / "cut.edl", [tmp_path]) == 0
    assert isinstance(clip.media_reference, otio.schema.MissingReference)
    shutil.rmtree(tmp_path / "b")
    assert tio.relink(timeline, tmp_path / "cut.edl", [tmp_path]) == 1
    assert tio.media_path(clip, tmp_path) == (tmp_path / "a" / "take.mp4").resolve()
    assert os.path.isfile(tio.media_path(clip, tmp_path))
