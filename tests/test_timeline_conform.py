"""The output timeline (#17): re-synced clips point at their new media, frame-exact, through
every adapter."""
from __future__ import annotations

import os
from pathlib import Path

import opentimelineio as otio
import pytest

from engine.timeline import io
from engine.timeline.conform import conform
from engine.timeline.shots import find_shots
from tests import timeline_factory as tf
from tests.resync_media import resynced

RATE = tf.RATE
TIMECODE = "10:00:00:00"


def _frames(time: otio.opentime.RationalTime) -> int:
    return round(time.value_rescaled_to(RATE))


def shown(timeline: otio.schema.Timeline, timeline_path: Path,
          results: list) -> list[dict[int, tuple[Path, int]]]:
    """Per video track: record frame -> (source file, frame into it) it shows, each re-synced
    file's frames taken back to the source frames it was made from."""
    made_from = {r.output.resolve(): (r.shot.media.resolve(),
                                      max(0, r.shot.source_in - r.shot.handles))
                 for r in results if r.output is not None}
    tracks = []
    for track in timeline.video_tracks():
        frames: dict[int, tuple[Path, int]] = {}
        for item in track:
            if not isinstance(item, otio.schema.Clip):
                continue
            record = item.range_in_parent()
            available = item.media_reference.available_range
            start = _frames(item.source_range.start_time) - (
                _frames(available.start_time) if available is not None else 0)
            path = io.media_path(item, timeline_path).resolve()
            media, first = made_from.get(path, (path, 0))
            for k in range(_frames(record.duration)):
                frames[_frames(record.start_time) + k] = (media, first + start + k)
        tracks.append(frames)
    return tracks


def records(timeline: otio.schema.Timeline) -> list[list[tuple[int, int]]]:
    """Per audio track: each clip's record in and out."""
    return [[(_frames(c.range_in_parent().start_time),
              _frames(c.range_in_parent().end_time_exclusive())) for c in t.find_clips()]
            for t in timeline.audio_tracks()]


def resynced_frames(timeline: otio.schema.Timeline, timeline_path: Path,
                    results: list) -> set[int]:
    """Record frames of the video tracks whose clip shows a re-synced file."""
    outputs = {r.output.resolve() for r in results if r.output is not None}
    out = set()
    for track in timeline.video_tracks():
        for item in track.find_clips():
            if io.media_path(item, timeline_path).resolve() in outputs:
                record = item.range_in_parent()
                start = _frames(record.start_time)
                out |= set(range(start, start + _frames(record.duration)))
    return out


def check(before: otio.schema.Timeline, before_path: Path, after: otio.schema.Timeline,
          after_path: Path, results: list) -> None:
    """Frame-exact: every record frame shows the same source frame as before, dub clips stay
    put, each done shot's frames show its new media and nothing else does; every reference
    to new media names an existing file whose available range holds the clip's range."""
    assert shown(after, after_path, results) == shown(before, before_path, results)
    assert records(after) == records(before)
    done = set().union(*(range(r.shot.record_in, r.shot.record_out) for r in results
                         if r.status in ("done", "skipped")))
    assert done <= resynced_frames(after, after_path, results)
    kept = set().union(*(range(r.shot.record_in, r.shot.record_out) for r in results
                         if r.status not in ("done", "skipped")))
    assert not kept & resynced_frames(after, after_path, results)
    outputs = {r.output.resolve() for r in results if r.output is not None}
    for item in after.find_clips():
        path = io.media_path(item, after_path)
        if path.resolve() in outputs:
            assert path.is_file()
            available = item.media_reference.available_range
            assert available.start_time <= item.source_range.start_time
            assert item.source_range.end_time_exclusive() <= available.end_time_exclusive()


def run(timeline: otio.schema.Timeline, folder: Path, handles: int, fmt: str = "otio",
        failed: tuple[int, ...] = ()) -> tuple[otio.schema.Timeline, Path,
                                                otio.schema.Timeline, Path, list]:
    """Write ``timeline`` as ``fmt`` and read it back (the NLE's file), find its shots, fake
    their renders (``failed`` shot numbers fail), conform into a second file, read that."""
    suffix = {"fcp_xml": "xml", "fcpx_xml": "fcpxml"}.get(fmt, fmt)
    before_path, after_path = folder / f"edit.{suffix}", folder / f"out/edit.{suffix}"
    after_path.parent.mkdir(exist_ok=True)
    io.write_timeline(timeline, before_path)
    before = io.read_timeline(before_path)
    shots, notes = find_shots(before, before_path, handles=handles)
    assert shots and not notes
    results = []
    for shot in shots:
        result = resynced(shot, after_path.parent)
        if shot.index in failed:
            result.status, result.output = "failed", None
        results.append(result)
    returned = conform(before, before_path, results, after_path)
    after = io.read_timeline(after_path)
    check(before, before_path, returned, after_path, results)
    return before, before_path, after, after_path, results


def test_whole_clips_keep_their_source_ranges_in_timecode(tmp_path: Path) -> None:
    # Handles reach past both clips: each clip is relinked whole, its source range as it was,
    # the new media starting at the source timecode of its first frame.
    timeline = tf.two_shots(tmp_path, timecode=TIMECODE)
    before, before_path, after, after_path, results = run(timeline, tmp_path, handles=5)
    check(before, before_path, after, after_path, results)
    old, new = before.video_tracks()[0].find_clips(), after.video_tracks()[0].find_clips()
    assert len(new) == len(old) == 2
    for clip, was, result in zip(new, old, results):
        assert clip.source_range == was.source_range
        assert clip.range_in_parent() == was.range_in_parent()
        assert io.media_path(clip, after_path) == result.output.resolve()
        first = result.shot.source_in - 5
        start = otio.opentime.from_timecode(TIMECODE, RATE).value + first
        assert clip.media_reference.available_range == otio.opentime.TimeRange(
            otio.opentime.RationalTime(start, RATE),
            otio.opentime.RationalTime(result.frames, RATE))
        assert clip.name == was.name


def test_frames_from_the_file_start_shift_the_source_range(tmp_path: Path) -> None:
    # Media without a timecode: the new file's frames count from 0 again.
    before, before_path, after, after_path, results = run(tf.two_shots(), tmp_path, handles=5)
    clip, was = after.video_tracks()[0].find_clips()[0], before.video_tracks()[0].find_clips()[0]
    assert clip.media_reference.available_range.start_time.value == 0
    assert clip.source_range.start_time.value == was.source_range.start_time.value - 25


def test_a_dub_over_part_of_a_clip_cuts_it_at_the_shot(tmp_path: Path) -> None:
    # No handles: the new media holds the shot's frames only, so the clip is cut there and the
    # frames around the shot keep the original media.
    timeline = tf.two_shots(tmp_path, timecode=TIMECODE)
    before, _, after, after_path, results = run(timeline, tmp_path, handles=0)
    clips = after.video_tracks()[0].find_clips()
    assert [(_frames(c.range_in_parent().start_time), _frames(c.range_in_parent().duration))
            for c in clips] == [(0, 5), (5, 40), (45, 5), (50, 5), (55, 40), (95, 5)]
    assert [c.name for c in clips] == ["hdtf_aoc_512_tc"] * 3 + ["retalk_face5_524_tc"] * 3
    assert [io.media_path(c, after_path) for c in clips[1::3]] == [
        r.output.resolve() for r in results]


def test_failed_shots_keep_their_original_clips(tmp_path: Path) -> None:
    timeline = tf.two_shots(tmp_path, timecode=TIMECODE)
    before, before_path, after, after_path, results = run(timeline, tmp_path, handles=5,
                                                          failed=(2,))
    old, new = before.video_tracks()[0].find_clips(), after.video_tracks()[0].find_clips()
    assert io.media_path(new[0], after_path) == results[0].output.resolve()
    assert io.media_path(new[1], after_path) == io.media_path(old[1], before_path)
    assert new[1].source_range == old[1].source_range
    assert new[1].media_reference.available_range == old[1].media_reference.available_range


def test_no_face_shot_keeps_its_clip_too(tmp_path: Path) -> None:
    timeline = tf.faceless_shot(tmp_path)
    before_path = tmp_path / "edit.otio"
    io.write_timeline(timeline, before_path)
    shots, _ = find_shots(timeline, before_path, handles=2)
    results = [resynced(shots[0], tmp_path), resynced(shots[1], tmp_path, status="no-face")]
    results[1].output = None
    after = conform(timeline, before_path, results, tmp_path / "out.otio")
    check(timeline, before_path, after, tmp_path / "out.otio", results)
    assert after.video_tracks()[0].find_clips()[1].media_reference.target_url == \
        timeline.video_tracks()[0].find_clips()[1].media_reference.target_url


def test_two_clips_of_one_take_each_get_their_own_media(tmp_path: Path) -> None:
    timeline = tf.cut_inside_a_clip(tmp_path, timecode=TIMECODE)
    _, _, after, after_path, results = run(timeline, tmp_path, handles=3)
    clips = after.video_tracks()[0].find_clips()
    assert len(clips) == 3
    assert [io.media_path(c, after_path) for c in clips[:2]] == [
        r.output.resolve() for r in results]
    assert results[0].output != results[1].output


def test_a_dub_spanning_a_cut_relinks_both_sides(tmp_path: Path) -> None:
    timeline = tf.dub_spanning_a_cut(tmp_path, timecode=TIMECODE)
    _, _, after, after_path, results = run(timeline, tmp_path, handles=0)
    clips = after.video_tracks()[0].find_clips()
    # Each clip is cut where the line starts or ends; its shot's piece shows the new media.
    assert [_frames(c.range_in_parent().duration) for c in clips] == [20, 20, 30, 20]
    assert [io.media_path(c, after_path) for c in clips[1:3]] == [
        r.output.resolve() for r in results]


def test_relative_paths_stay_relative(tmp_path: Path) -> None:
    timeline = tf.two_shots()
    before_path = tmp_path / "edit.otio"
    for clip in timeline.find_clips():
        ref = clip.media_reference
        ref.target_url = os.path.relpath(ref.target_url, tmp_path)
    shots, _ = find_shots(timeline, before_path, handles=5)
    (tmp_path / "renders").mkdir()
    (tmp_path / "out").mkdir()
    results = [resynced(s, tmp_path / "renders") for s in shots]
    after = conform(timeline, before_path, results, tmp_path / "out" / "edit.otio")
    for clip, result in zip(after.video_tracks()[0].find_clips(), results):
        url = clip.media_reference.target_url
        assert url == "../renders/" + result.output.name


# EDLs keep one video track and no sound: their shots come from markers naming the dubs.
@pytest.mark.parametrize("fmt", ["otio", "fcp_xml", "fcpx_xml", "edl", "aaf", "kdenlive"])
def test_through_every_adapter(tmp_path: Path, fmt: str) -> None:
    if fmt == "edl":
        timeline, handles = tf.marked_shots(tmp_path, timecode=TIMECODE), 2
    else:
        timeline, handles = tf.dub_spanning_a_cut(tmp_path, timecode=TIMECODE), 0
    before, before_path, after, after_path, results = run(timeline, tmp_path, handles, fmt)
    check(before, before_path, after, after_path, results)
    assert {io.media_path(c, after_path) for c in after.find_clips()} >= {
        r.output.resolve() for r in results}


def test_two_dubs_over_one_clip_give_two_new_pieces(tmp_path: Path) -> None:
    timeline = tf.timeline(
        tf.video_track(tf.clip(tf.shared_clip(tf.FACE), 0, 80)),
        tf.audio_track(5, tf.clip(tf.shared_clip(tf.DUB_A), 0, 20), 10,
                       tf.clip(tf.shared_clip(tf.DUB_B), 0, 30)))
    _, _, after, after_path, results = run(timeline, tmp_path, handles=3)
    clips = after.video_tracks()[0].find_clips()
    assert [(_frames(c.range_in_parent().start_time), _frames(c.range_in_parent().duration))
            for c in clips] == [(0, 5), (5, 20), (25, 10), (35, 30), (65, 15)]
    assert [io.media_path(c, after_path) for c in clips[1::2]] == [
        r.output.resolve() for r in results]


def test_markers_move_with_the_source_range(tmp_path: Path) -> None:
    # A marked clip without timecode: its source range now counts from the new file's start,
    # and so does its marker.
    before, _, after, _, results = run(tf.marked_shots(), tmp_path, handles=4)
    for was, clip, result in zip(before.video_tracks()[0].find_clips(),
                                 after.video_tracks()[0].find_clips(), results):
        shift = clip.source_range.start_time - was.source_range.start_time
        assert shift.value == -max(0, result.shot.source_in - 4)
        assert [m.marked_range.start_time for m in clip.markers] == [
            m.marked_range.start_time + shift for m in was.markers]
        assert [m.name for m in clip.markers] == [m.name for m in was.markers]
