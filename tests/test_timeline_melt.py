"""Round trip through Kdenlive's engine (#17): MLT's ``melt`` renders the conformed Kdenlive
project; the re-synced shots show Redub's new media, every other frame the source's."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import opentimelineio as otio
import pytest

from engine.media.probe import probe
from engine.timeline import io
from engine.timeline.batch import ShotResult, run_batch
from engine.timeline.conform import conform
from engine.timeline.shots import find_shots
from tests import timeline_factory as tf
from tests.conftest import shared_clip
from tests.media_factory import set_timecode
from tests.resync_media import mouth_box, resynced

pytestmark = pytest.mark.skipif(shutil.which("melt") is None, reason="melt (MLT) not installed")

# MLT converts the decoded pictures for its own frame (and back for the encoder): allow for
# rounding, not for another frame or a colour-matrix change (those differ by tens).
MEAN, P99 = 1.5, 4
TIMECODE = "10:00:00:00"


def decode(path: Path) -> list[np.ndarray]:
    """Every frame's planes (Y over U and V, yuv420p)."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]


def timecoded(name: str, folder: Path) -> Path:
    """A shared clip remuxed into ``folder`` with a start timecode, as camera media carry."""
    path = shared_clip(name)
    return set_timecode(path, folder / f"{path.stem}_tc.mp4", TIMECODE)


def melt(project: Path, frames: int) -> list[np.ndarray]:
    """The project's first ``frames`` frames as melt renders them (lossless)."""
    render = project.with_name("render.mkv")
    subprocess.run(["melt", str(project), f"out={frames - 1}",
                    "-consumer", f"avformat:{render}", "vcodec=ffv1", "pix_fmt=yuv420p",
                    "an=1", "real_time=-1", "-quiet"],
                   check=True, capture_output=True, timeout=120)
    rendered = decode(render)
    assert len(rendered) == frames
    return rendered


def expected(timeline: otio.schema.Timeline, results: list[ShotResult], k: int,
             decoded: dict[Path, list[np.ndarray]]) -> tuple[ShotResult | None, np.ndarray,
                                                              np.ndarray]:
    """At record frame ``k``: the shot shown there (None: the source), the frame it should
    show (from the new media inside a shot) and the source's frame there. ``decoded`` keeps
    the files decoded so far."""
    def frames(path: Path) -> list[np.ndarray]:
        if path not in decoded:
            decoded[path] = decode(path)
        return decoded[path]

    clip = next(c for c in timeline.video_tracks()[0].find_clips()
                if c.range_in_parent().contains(otio.opentime.RationalTime(k, tf.RATE)))
    origin = clip.media_reference.available_range.start_time.value  # the start timecode
    at = round(clip.source_range.start_time.value - origin + k
               - clip.range_in_parent().start_time.value)
    source = frames(io.media_path(clip, "/"))[at]
    shot = next((r for r in results if r.shot.record_in <= k < r.shot.record_out), None)
    if shot is None:
        return None, source, source
    assert at == shot.shot.source_in + k - shot.shot.record_in
    first = max(0, shot.shot.source_in - shot.shot.handles)
    return shot, frames(shot.output)[at - first], source


def ranges(timeline: otio.schema.Timeline, path: Path) -> list[tuple]:
    """(media, source range, media's available range, record range) of every clip."""
    return [(io.media_path(c, path), c.source_range, c.media_reference.available_range,
             c.range_in_parent()) for c in timeline.find_clips()]


def differences(rendered: list[np.ndarray], want: list[np.ndarray]) -> tuple[float, float]:
    """The worst frame's mean and 99th percentile absolute difference."""
    diffs = [np.abs(r.astype(int) - w) for r, w in zip(rendered, want)]
    return max(d.mean() for d in diffs), max(np.percentile(d, 99) for d in diffs)


def test_melt_renders_the_new_media_in_the_shots_and_the_source_elsewhere(
        tmp_path: Path) -> None:
    face = timecoded(tf.FACE, tmp_path)
    # One timecoded take in three clips: a dub over all of the first, over the second half of
    # the second (cut there: the first half keeps the source), none over the third.
    timeline = tf.timeline(
        tf.video_track(tf.clip(face, 0, 40), tf.clip(face, 60, 50), tf.clip(face, 150, 30)),
        tf.audio_track(tf.clip(shared_clip(tf.DUB_A), 0, 40), 20,
                       tf.clip(shared_clip(tf.DUB_B), 0, 30)))
    edit = tmp_path / "edit.otio"
    io.write_timeline(timeline, edit)
    shots, _ = find_shots(timeline, edit, handles=2)
    assert [(s.record_in, s.record_out) for s in shots] == [(0, 40), (60, 90)]
    results = [resynced(shot, tmp_path) for shot in shots]
    assert probe(results[1].output).video[0].start_timecode == "10:00:03:03"  # frame 78
    project = tmp_path / "edit.kdenlive"
    after = conform(timeline, edit, results, project)
    # Read back: the same media, record and source frames (counted from the timecode).
    assert ranges(io.read_timeline(project), project) == ranges(after, project)

    rendered = melt(project, round(timeline.duration().value))
    video = probe(face).video[0]
    rows, cols = mouth_box(video.height, video.width)
    want, decoded = [], {}
    for k, frame in enumerate(rendered):
        shot, frame_want, source = expected(timeline, results, k, decoded)
        if shot is not None:
            # The box, not the source's mouth: the render took the new media.
            assert np.abs(frame[rows, cols].astype(int) - source[rows, cols]).mean() > 30
        want.append(frame_want)
    mean, p99 = differences(rendered, want)
    print(f"worst frame: mean {mean:.3f} p99 {p99:.1f}")
    assert mean < MEAN and p99 < P99


def test_melt_renders_a_batch_of_shots_written_as_a_kdenlive_project(tmp_path: Path) -> None:
    # Two timecoded takes of one picture size, one dub line over the cut between them.
    first, second = timecoded(tf.FACE, tmp_path), timecoded(tf.FACE_C, tmp_path)
    timeline = tf.timeline(tf.video_track(tf.clip(first, 20, 25), tf.clip(second, 30, 25)),
                           tf.audio_track(10, tf.clip(shared_clip(tf.DUB_B), 0, 30)))
    edit = tmp_path / "edit.otio"
    io.write_timeline(timeline, edit)
    result = run_batch(edit, tmp_path / "out", handles=5, fmt="kdenlive",
                       export={"codec": "ffv1"})
    assert [(r.status, r.shot.record_in, r.shot.record_out, r.frames)
            for r in result.shots] == [("done", 10, 25, 25), ("done", 25, 40, 25)]
    assert result.timeline.suffix == ".kdenlive"
    back = io.read_timeline(result.timeline)
    # Pieces at the same record frames; source frames counted from each file's timecode
    # (10:00:00:00 is frame 900000), as in the input.
    assert [(io.media_path(c, result.timeline), c.range_in_parent(), c.source_range.start_time)
            for c in back.video_tracks()[0].find_clips()] == [
        (path, otio.opentime.TimeRange(otio.opentime.RationalTime(start, tf.RATE),
                                       otio.opentime.RationalTime(length, tf.RATE)),
         otio.opentime.RationalTime(900000 + frame, tf.RATE))
        for path, start, length, frame in (
            (first, 0, 10, 20), (result.shots[0].output, 10, 15, 30),
            (result.shots[1].output, 25, 15, 30), (second, 40, 10, 45))]

    rendered = melt(result.timeline, 50)
    video = probe(first).video[0]  # both takes are 512x512
    rows, cols = mouth_box(video.height, video.width)
    inside, outside = ([], []), ([], [])
    changed: dict[int, list[float]] = {}
    decoded: dict[Path, list[np.ndarray]] = {}
    for k, frame in enumerate(rendered):
        shot, want, source = expected(timeline, result.shots, k, decoded)
        pair = inside if shot is not None else outside
        pair[0].append(frame)
        pair[1].append(want)
        if shot is not None:
            changed.setdefault(shot.shot.index, []).append(
                np.abs(frame[rows, cols].astype(int) - source[rows, cols]).mean())
    print("re-synced frames: mean %.3f p99 %.1f; source frames: mean %.3f p99 %.1f; mouth "
          "changed by the re-sync: %s" % (*differences(*inside), *differences(*outside),
                                          [round(float(np.mean(v)), 2) for v in changed.values()]))
    for got, want in (inside, outside):
        mean, p99 = differences(got, want)
        assert mean < MEAN and p99 < P99
    # Each shot shows Redub's mouth, not the source's: further from it than melt's rounding.
    assert all(np.mean(v) > 2 * MEAN for v in changed.values())
