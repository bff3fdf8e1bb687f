"""Round trip through Kdenlive's engine (#17): MLT's ``melt`` renders the conformed Kdenlive
project; the re-synced shots show Redub's new media, every other frame the source's."""
from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import av
import numpy as np
import opentimelineio as otio
import pytest

from engine.media.probe import probe
from engine.timeline import io
from engine.timeline.conform import conform
from engine.timeline.shots import find_shots
from tests import timeline_factory as tf
from tests.conftest import shared_clip
from tests.resync_media import mouth_box, resynced

pytestmark = pytest.mark.skipif(shutil.which("melt") is None, reason="melt (MLT) not installed")

# MLT converts the decoded pictures for its own frame (and back for the encoder): allow for
# rounding, not for another frame or a colour-matrix change (those differ by tens).
MEAN, P99 = 1.5, 4


def fit_profile(project: Path, media: Path) -> None:
    """Give the project the media's picture, as an editor's project settings would: the
    adapter writes a fixed 1920x1080 BT.709 profile, in which MLT would scale a 512x512 clip
    and convert its colours."""
    video = probe(media).video[0]
    matrix = video.color_names["matrix"]
    tree = ET.parse(project)
    profile = tree.getroot().find("profile")
    profile.attrib.update(
        width=str(video.width), height=str(video.height), display_aspect_num=str(video.width),
        display_aspect_den=str(video.height),
        # FFmpeg and MLT read an unstated matrix as BT.601 below 720 lines.
        colorspace="709" if matrix == "bt709" or (matrix == "unspecified"
                                                  and video.height >= 720) else "601")
    tree.write(project, encoding="utf-8", xml_declaration=True)


def decode(path: Path) -> list[np.ndarray]:
    """Every frame's planes (Y over U and V, yuv420p)."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]


def test_melt_renders_the_new_media_in_the_shots_and_the_source_elsewhere(
        tmp_path: Path) -> None:
    face = shared_clip(tf.FACE)
    # One take in three clips: a dub over all of the first, over the second half of the second
    # (cut there: the first half keeps the source), none over the third. No timecode: the
    # kdenlive adapter writes source ranges as they are, and MLT reads them as frames into
    # the file.
    timeline = tf.timeline(
        tf.video_track(tf.clip(face, 0, 40), tf.clip(face, 60, 50), tf.clip(face, 150, 30)),
        tf.audio_track(tf.clip(shared_clip(tf.DUB_A), 0, 40), 20,
                       tf.clip(shared_clip(tf.DUB_B), 0, 30)))
    edit = tmp_path / "edit.otio"
    io.write_timeline(timeline, edit)
    shots, _ = find_shots(timeline, edit, handles=2)
    assert [(s.record_in, s.record_out) for s in shots] == [(0, 40), (60, 90)]
    results = [resynced(shot, tmp_path) for shot in shots]
    project = tmp_path / "edit.kdenlive"
    conform(timeline, edit, results, project)
    fit_profile(project, face)

    render = tmp_path / "render.mkv"
    length = round(timeline.duration().value)
    subprocess.run(["melt", str(project), f"out={length - 1}",
                    "-consumer", f"avformat:{render}", "vcodec=ffv1", "pix_fmt=yuv420p",
                    "an=1", "real_time=-1", "-quiet"],
                   check=True, capture_output=True, timeout=120)
    rendered = decode(render)
    assert len(rendered) == length

    source = decode(face)
    new = {id(r): decode(r.output) for r in results}
    video = probe(face).video[0]
    rows, cols = mouth_box(video.height, video.width)
    for k, frame in enumerate(rendered):
        shot = next((r for r in results if r.shot.record_in <= k < r.shot.record_out), None)
        if shot is not None:
            first = max(0, shot.shot.source_in - shot.shot.handles)
            at = shot.shot.source_in + k - shot.shot.record_in
            want = new[id(shot)][at - first]
            # The box, not the source's mouth: the render took the new media.
            assert np.abs(frame[rows, cols].astype(int) - source[at][rows, cols]).mean() > 30
        else:
            clip = next(c for c in timeline.video_tracks()[0].find_clips()
                        if c.range_in_parent().contains(otio.opentime.RationalTime(k, tf.RATE)))
            start = clip.range_in_parent().start_time.value
            want = source[round(clip.source_range.start_time.value + k - start)]
        diff = np.abs(frame.astype(int) - want)
        assert diff.mean() < MEAN and np.percentile(diff, 99) < P99, k
