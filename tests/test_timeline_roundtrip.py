"""The editor round trip through every format: a timeline written by an NLE's format, the batch
run on it for real, and the timeline it hands back read again by the same adapter."""
from __future__ import annotations

from pathlib import Path

import opentimelineio as otio
import pytest

from engine.media.probe import probe
from engine.timeline.batch import run_batch
from engine.timeline.io import SUFFIXES, media_path, read_timeline, write_timeline
from engine.timeline.shots import find_shots
from tests import timeline_factory as tf


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """Timecoded copies of the shared clips, shared by every format's run."""
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def renders(tmp_path_factory) -> Path:
    """One output folder for all formats: a shot rendered for one format is skipped (its
    fingerprint matches) when another format's timeline asks for the same shot."""
    return tmp_path_factory.mktemp("renders")


def _edit(fmt: str, media: Path) -> otio.schema.Timeline:
    # EDLs hold one video track and no audio tracks: their dubs travel as clip markers.
    if fmt == "edl":
        return tf.marked_shots(media, timecode="10:00:00:00")
    return tf.dub_spanning_a_cut(media, timecode="10:00:00:00")


def _record(item) -> tuple[int, int]:
    span = item.range_in_parent()
    start = span.start_time.to_frames(tf.RATE)
    return start, start + span.duration.to_frames(tf.RATE)


@pytest.mark.parametrize("fmt", list(SUFFIXES))
def test_the_batch_hands_back_a_timeline_each_format_reads(fmt, media, renders, tmp_path):
    source = tmp_path / f"edit{SUFFIXES[fmt]}"
    write_timeline(_edit(fmt, media), source, fmt)
    edit = read_timeline(source)
    shots, _ = find_shots(edit, source)
    assert len(shots) == 2

    result = run_batch(source, renders / fmt, handles=5, export={"codec": "ffv1"})
    assert [r.status for r in result.shots] == ["done", "done"]
    assert result.timeline.suffix == SUFFIXES[fmt] and result.timeline.is_file()
    back = read_timeline(result.timeline)

    # Every record frame of every track shows the same source frame (source timecode; the new
    # media carry the timecode of the frames they hold): record in/out and durations unchanged,
    # the re-synced clips cut at the shots' edges where the new media do not cover them.
    def frames(timeline):
        return [[(r, item.source_range.start_time.to_frames(tf.RATE) + r - _record(item)[0])
                 for item in track if isinstance(item, otio.schema.Clip)
                 for r in range(*_record(item))] for track in timeline.tracks]

    assert frames(back) == frames(edit)
    assert [track.duration() for track in back.tracks] == [track.duration()
                                                            for track in edit.tracks]
    # Every media reference exists; the re-synced pieces point at Redub's media, whose frames
    # hold the clip's source range at the same timecode.
    outputs = {r.output.resolve() for r in result.shots}
    relinked = 0
    for clip in back.find_clips():
        path = media_path(clip, result.timeline)
        assert path is not None and path.is_file(), clip.name
        if path.resolve() in outputs:
            relinked += 1
            info = probe(path).video[0]
            first = otio.opentime.from_timecode(info.start_timecode, tf.RATE).to_frames(tf.RATE)
            start = clip.source_range.start_time.to_frames(tf.RATE)
            assert first <= start
            assert start + clip.source_range.duration.to_frames(tf.RATE) <= first + info.frame_count
    assert relinked >= 2
    # Read again, the handed-back timeline's shots are the same shots, now on the new media.
    again, _ = find_shots(back, result.timeline)
    assert [(s.record_in, s.record_out) for s in again] == \
        [(s.record_in, s.record_out) for s in shots]
    assert all(s.media.resolve() in outputs for s in again)
