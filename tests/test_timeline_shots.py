"""Finding the shots to re-sync in an editor's timeline (engine/timeline/shots.py)."""
from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import opentimelineio as otio
import pytest

from engine.errors import RedubError, UsageError
from engine.timeline import io
from engine.timeline.shots import find_shots
from tests import timeline_factory as tf
from tests.media_factory import make_video, set_timecode, write_tone_wav


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shots_media")
    take = make_video(folder / "take.mp4", frames=100, gop=25, bframes=0)
    return SimpleNamespace(
        folder=folder, take=take,
        other=make_video(folder / "other.mp4", frames=60, gop=25, bframes=0),
        take_tc=set_timecode(take, folder / "take_tc.mp4", "01:00:00:00"),
        ntsc=make_video(folder / "ntsc.mp4", frames=30, rate=Fraction(30000, 1001), bframes=0),
        thirty=make_video(folder / "thirty.mp4", frames=30, rate=30, bframes=0),
        line=write_tone_wav(folder / "line.wav", seconds=6.0),
        line2=write_tone_wav(folder / "line2.wav", seconds=6.0))


def brief(shots):
    return [(s.track, s.clip, s.media.name, s.source_in, s.source_out, s.record_in,
             s.record_out, s.dub.name, round(s.dub_start, 6)) for s in shots]


def test_each_dub_clip_over_a_video_clip_is_a_shot(media, tmp_path):
    timeline = tf.timeline(
        tf.video_track(tf.clip(media.take, 10, 50), tf.clip(media.other, 0, 40)),
        tf.audio_track(5, tf.clip(media.line, 25, 30), 20, tf.clip(media.line2, 0, 30)))
    shots, notes = find_shots(timeline, tmp_path / "edit.otio", handles=4)
    assert brief(shots) == [
        (0, 0, "take.mp4", 15, 45, 5, 35, "line.wav", 1.0),
        (0, 1, "other.mp4", 5, 35, 55, 85, "line2.wav", 0.0)]
    assert [s.index for s in shots] == [1, 2]
    assert [s.name for s in shots] == ["take", "other"]
    assert {s.handles for s in shots} == {4} and {s.rate for s in shots} == {25}
    assert [s.frames for s in shots] == [30, 30]
    assert notes == []
    # Without a start time the first video clip gives the rate; record frames are the same.
    timeline.global_start_time = None
    assert brief(find_shots(timeline, tmp_path / "edit.otio")[0]) == brief(shots)
    with pytest.raises(UsageError, match="handles"):
        find_shots(timeline, tmp_path / "edit.otio", handles=-1)


def test_a_dub_spanning_a_cut_gives_one_shot_per_side(media, tmp_path):
    timeline = tf.timeline(
        tf.video_track(tf.clip(media.take, 0, 40), tf.clip(media.other, 20, 40)),
        tf.audio_track(20, tf.clip(media.line, 10, 50)))
    shots, notes = find_shots(timeline, tmp_path / "edit.otio")
    # The second side hears the line 20 frames (0.8 s) further in.
    assert brief(shots) == [
        (0, 0, "take.mp4", 20, 40, 20, 40, "line.wav", 0.4),
        (0, 1, "other.mp4", 20, 50, 40, 70, "line.wav", 1.2)]
    assert notes == []
    # A dub whose reference starts at a timecode (a BWF time reference): the same seconds.
    line = timeline.tracks[1][1]
    line.media_reference.available_range = otio.opentime.TimeRange(
        otio.opentime.RationalTime(90000, 25), otio.opentime.RationalTime(150, 25))
    line.source_range = otio.opentime.TimeRange(otio.opentime.RationalTime(90010, 25),
                                                otio.opentime.RationalTime(50, 25))
    assert brief(find_shots(timeline, tmp_path / "edit.otio")[0]) == brief(shots)


def test_cuts_inside_a_clip_are_separate_shots_with_their_own_names(media, tmp_path):
    timeline = tf.timeline(
        tf.video_track(tf.clip(media.take, 0, 30), tf.clip(media.take, 60, 30),
                       tf.clip(media.other, 0, 10), tf.clip(media.take, 40, 10)),
        tf.audio_track(tf.clip(media.line, 0, 80)))
    shots, notes = find_shots(timeline, tmp_path / "edit.otio")
    assert brief(shots) == [
        (0, 0, "take.mp4", 0, 30, 0, 30, "line.wav", 0.0),
        (0, 1, "take.mp4", 60, 90, 30, 60, "line.wav", 1.2),
        (0, 2, "other.mp4", 0, 10, 60, 70, "line.wav", 2.4),
        (0, 3, "take.mp4", 40, 50, 70, 80, "line.wav", 2.8)]
    assert [s.name for s in shots] == ["take", "take_2", "other", "take_3"]
    assert notes == []


def test_the_picture_is_the_top_most_clip(media, tmp_path):
    title = otio.schema.Clip(
        name="title", media_reference=otio.schema.GeneratorReference(generator_kind="text"),
        source_range=otio.opentime.TimeRange(otio.opentime.RationalTime(0, 25),
                                             otio.opentime.RationalTime(20, 25)))
    hidden = tf.clip(media.other, 0, 10, name="disabled")
    hidden.enabled = False
    muted = tf.video_track(tf.clip(media.other, 0, 100), name="V4")
    muted.enabled = False
    timeline = tf.timeline(
        tf.video_track(tf.clip(media.take, 0, 100)),
        tf.video_track(30, tf.clip(media.other, 5, 30), name="V2"),
        tf.video_track(40, title, 20, hidden, name="V3"),  # an overlay and a disabled clip
        muted,
        tf.audio_track(tf.clip(media.line, 0, 100)))
    shots, notes = find_shots(timeline, tmp_path / "edit.otio")
    assert brief(shots) == [
        (0, 0, "take.mp4", 0, 30, 0, 30, "line.wav", 0.0),
        (1, 1, "other.mp4", 5, 35, 30, 60, "line.wav", 1.2),
        (0, 0, "take.mp4", 60, 100, 60, 100, "line.wav", 2.4)]
    assert [s.name for s in shots] == ["take", "other", "take_2"]
    assert notes == []


def test_a_dub_over_no_picture_gives_a_note_not_a_shot(media, tmp_path):
    timeline = tf.timeline(
        tf.video_track(tf.clip(media.take, 0, 20), 30, tf.clip(media.other, 0, 20)),
        tf.audio_track(10, tf.clip(media.line, 0, 20, name="line A"), 5,
                       tf.clip(media.line2, 0, 10, name="line B")))
    shots, notes = find_shots(timeline, tmp_path / "edit.otio")
    assert brief(shots) == [(0, 0, "take.mp4", 10, 20, 10, 20, "line.wav", 0.0)]
    assert notes == [
        "dub clip 'line A' at 01:00:00:10: 10 of its 20 frames lie over no picture and are "
        "not re-synced",
        "dub clip 'line B' at 01:00:01:10: 10 of its 10 frames lie over no picture and are "
        "not re-synced"]

    nowhere = tf.timeline(tf.video_track(tf.clip(media.take, 0, 20)),
                          tf.audio_track(40, tf.clip(media.line, 0, 10, name="late")))
    shots, notes = find_shots(nowhere, tmp_path / "edit.otio")
    assert shots == []
    assert notes[-1] == "dub track 'Dub' overlaps no video clip"

    empty = tf.timeline(tf.video_track(tf.clip(media.take, 0, 20)), tf.audio_track(20))
    assert find_shots(empty, tmp_path / "edit.otio") == ([], ["dub track 'Dub' has no clips"])
    silent = tf.timeline(tf.video_track(tf.clip(media.take, 0, 20)))
    assert find_shots(silent, tmp_path / "edit.otio")[1] == [
        "the timeline has no audio track to take dubs from and no clip carries a dub marker"]
    with pytest.raises(RedubError) as e:
        find_shots(tf.timeline(tf.audio_track(tf.clip(media.line, 0, 10)), start=None),
                   tmp_path / "edit.otio")
    assert str(e.value) == f"{tmp_path / 'edit.otio'}: the timeline has no video clips"


def test_the_dub_track_is_named_or_found_by_name_or_the_last(media, tmp_path):
    def timeline(*names):
        return tf.timeline(tf.video_track(tf.clip(media.take, 0, 50)), *[
            tf.audio_track(tf.clip(media.line if i == 0 else media.line2, 0, 50), name=name)
            for i, name in enumerate(names)])

    path = tmp_path / "edit.otio"
    assert find_shots(timeline("French DUB", "Production"), path)[0][0].dub.name == "line.wav"
    assert find_shots(timeline("A1", "A2"), path)[0][0].dub.name == "line2.wav"
    assert find_shots(timeline("A1", "A2"), path, dub_track="A1")[0][0].dub.name == "line.wav"
    assert find_shots(timeline("A1", "A2"), path, dub_track="a1")[0][0].dub.name == "line.wav"
    with pytest.raises(UsageError) as e:
        find_shots(timeline("A1", "A2"), path, dub_track="Dub")
    assert str(e.value) == f"{path}: no audio track named 'Dub' (audio tracks: 'A1', 'A2')"


def test_source_frames_count_from_the_files_first_frame(media, tmp_path):
    path = tmp_path / "edit.otio"

    def shot(item):
        timeline = tf.timeline(tf.video_track(item), tf.audio_track(tf.clip(media.line, 0, 20)))
        shots, notes = find_shots(timeline, path)
        assert notes == []
        return shots[0].source_in, shots[0].source_out

    # The reference's available range starts at the file's start timecode, 01:00:00:00.
    timecoded = tf.clip(media.take_tc, 30, 20)
    assert timecoded.media_reference.available_range.start_time.value == 90000
    assert timecoded.source_range.start_time.value == 90030
    assert shot(timecoded) == (30, 50)
    # Without an available range: the probed start timecode says the same.
    timecoded.media_reference.available_range = None
    assert shot(timecoded) == (30, 50)
    # A range counted from 0 in a file with a timecode, or in a file without one.
    counted = tf.clip(media.take, 30, 20)
    assert counted.source_range.start_time.value == 30
    counted.media_reference = otio.schema.ExternalReference(target_url=str(media.take_tc))
    assert shot(counted) == (30, 50)
    assert shot(tf.clip(media.take, 30, 20)) == (30, 50)


def test_ntsc_rates_agree_and_other_rates_are_refused(media, tmp_path):
    def clip(path):
        # As NLEs write NTSC: counted at 29.97.
        return otio.schema.Clip(
            name=path.stem, media_reference=otio.schema.ExternalReference(target_url=str(path)),
            source_range=otio.opentime.TimeRange(otio.opentime.RationalTime(2, 29.97),
                                                 otio.opentime.RationalTime(20, 29.97)))

    timeline = tf.timeline(tf.video_track(clip(media.ntsc), clip(media.thirty)),
                           tf.audio_track(tf.clip(media.line, 0, 40, rate=29.97)),
                           rate=30000 / 1001)
    shots, notes = find_shots(timeline, tmp_path / "edit.otio")
    assert [(s.media.name, s.source_in, s.source_out, s.record_in, s.record_out)
            for s in shots] == [("ntsc.mp4", 2, 22, 0, 20)]
    assert notes == ["shot 2 (clip 'thirty'): the media runs at 30 fps, the timeline at "
                     "29.97 fps: refused (conform the clip in the editor)"]


def test_markers_name_dubs(media, tmp_path):
    path = media.folder / "edit.otio"
    relative = tf.clip(media.take, 0, 20)
    relative.markers.append(otio.schema.Marker(name="dub:line.wav"))
    offset = tf.clip(media.other, 10, 20)
    offset.markers.append(otio.schema.Marker(
        name="ADR", metadata={"redub": {"dub": str(media.line2), "dub_start": 1.5}}))
    capitals = tf.clip(media.take, 50, 20)  # as an EDL writes it
    capitals.markers.append(otio.schema.Marker(name=f"DUB:{str(media.line).upper()}"))
    timeline = tf.timeline(tf.video_track(relative, offset, capitals))
    shots, notes = find_shots(timeline, path)
    assert brief(shots) == [
        (0, 0, "take.mp4", 0, 20, 0, 20, "line.wav", 0.0),
        (0, 1, "other.mp4", 10, 30, 20, 40, "line2.wav", 1.5),
        (0, 2, "take.mp4", 50, 70, 40, 60, "line.wav", 0.0)]
    assert shots[0].dub == media.line and shots[2].dub == media.line
    assert notes == []

    # A marked clip takes its marker's dub, not the dub track's; the rest of the track counts.
    over = tf.timeline(tf.video_track(tf.dub_marker(tf.clip(media.take, 0, 20), media.line2),
                                      tf.clip(media.other, 0, 20)),
                       tf.audio_track(tf.clip(media.line, 0, 40)))
    shots, notes = find_shots(over, path)
    assert brief(shots) == [(0, 0, "take.mp4", 0, 20, 0, 20, "line2.wav", 0.0),
                            (0, 1, "other.mp4", 0, 20, 20, 40, "line.wav", 0.8)]
    assert notes == ["clip 'take': its dub marker is used, not the dub track's clips over it"]


def test_clips_without_usable_media(media, tmp_path):
    offline = otio.schema.Clip(name="offline", media_reference=otio.schema.MissingReference(),
                               source_range=tf.clip(media.take, 0, 10).source_range)
    moved = tf.clip(media.take, 0, 10, name="moved")
    moved.media_reference.target_url = str(tmp_path / "gone.mp4")
    long = tf.clip(media.other, 50, 20, name="long")  # the file has 60 frames
    timeline = tf.timeline(tf.video_track(offline, moved, long),
                           tf.audio_track(tf.clip(media.line, 0, 40)))
    shots, notes = find_shots(timeline, tmp_path / "edit.otio")
    # A missing file is the render's to report, in the shot's own report line.
    assert [(s.index, s.media, s.source_in, s.source_out) for s in shots] == [
        (2, tmp_path / "gone.mp4", 0, 10)]
    assert notes == [
        "shot 1 (clip 'offline'): the clip has no media file; relink it",
        f"shot 3 (clip 'long'): uses frames 50-70 of {media.other}, which has 60: refused "
        "(does the clip's source range match the file?)"]


READY = {
    "two_shots": [("hdtf_aoc_512", 30, 70, 5, 45, tf.DUB_A, 1.0),
                  ("retalk_face5_524", 15, 55, 55, 95, tf.DUB_B, 0.0)],
    "cut_inside_a_clip": [("hdtf_aoc_512", 0, 40, 0, 40, tf.DUB_A, 0.0),
                          ("hdtf_aoc_512", 60, 100, 40, 80, tf.DUB_A, 1.6)],
    "dub_spanning_a_cut": [("retalk_face5_524", 20, 40, 20, 40, tf.DUB_B, 0.0),
                           ("talk_d12_512", 20, 50, 40, 70, tf.DUB_B, 0.8)],
    "faceless_shot": [("hdtf_aoc_512", 50, 90, 0, 40, tf.DUB_A, 0.0),
                      ("no_face", 0, 40, 40, 80, tf.DUB_A, 1.6)],
    "mixed_rates": [("hdtf_aoc_512", 0, 40, 0, 40, tf.DUB_A, 0.0)],
    "marked_shots": [("hdtf_aoc_512", 10, 50, 0, 40, tf.DUB_A, 0.0),
                     ("retalk_face5_524", 0, 30, 40, 70, tf.DUB_B, 0.0)],
}


def _ready(name, tmp_path):
    build = getattr(tf, name)
    return build() if name == "mixed_rates" else build(tmp_path)


@pytest.mark.parametrize("name", sorted(READY))
def test_the_ready_timelines_hold_the_shots_they_describe(name, tmp_path):
    shots, notes = find_shots(_ready(name, tmp_path), tmp_path / "edit.otio")
    assert [(s.media.stem, s.source_in, s.source_out, s.record_in, s.record_out, s.dub.name,
             round(s.dub_start, 6)) for s in shots] == READY[name]
    assert notes == ([] if name != "mixed_rates" else [
        "shot 2 (clip 'talk_s18_720p'): the media runs at 30 fps, the timeline at 25 fps: "
        "refused (conform the clip in the editor)"])


def test_timecoded_copies_keep_the_shots(tmp_path):
    timeline = tf.two_shots(tmp_path, timecode="10:00:00:00")
    assert timeline.tracks[0][0].media_reference.available_range.start_time.value == 900000
    shots, _ = find_shots(timeline, tmp_path / "edit.otio")
    assert [(s.source_in, s.source_out) for s in shots] == [(30, 70), (15, 55)]


@pytest.mark.parametrize("fmt", ["otio", "fcp_xml", "fcpx_xml", "edl", "aaf", "kdenlive"])
def test_shots_survive_each_adapter(fmt, tmp_path):
    # EDLs keep one video track and its markers (no dub track); the others keep the dub track.
    name = "marked_shots" if fmt == "edl" else "two_shots"
    path = tmp_path / f"edit.{ {'fcp_xml': 'xml', 'fcpx_xml': 'fcpxml'}.get(fmt, fmt)}"
    io.write_timeline(_ready(name, tmp_path), path, fmt)
    shots, notes = find_shots(io.read_timeline(path, fmt), path)
    assert [(s.media.stem, s.source_in, s.source_out, s.record_in, s.record_out, s.dub.name,
             round(s.dub_start, 3)) for s in shots] == READY[name]
    assert notes == []
