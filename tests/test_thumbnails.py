from __future__ import annotations

import numpy as np

from engine.media.reader import VideoReader
from engine.media.thumbnails import thumbnails
from tests.media_factory import make_video


def test_keyframe_thumbnails_show_the_keyframe_before(tmp_path):
    path = make_video(tmp_path / "v.mp4", frames=48, gop=12, size=(320, 180))
    times = [0.0, 0.5, 1.0, 1.5]
    got = list(thumbnails(path, times, height=36))
    assert [t.shown_time for t in got] == [0.0, 0.48, 0.96, 1.44]  # keyframes every 12 frames
    assert all(t.image.shape == (36, 64, 3) and t.image.dtype == np.uint8 for t in got)


def test_exact_thumbnails_match_the_frame(tmp_path):
    path = make_video(tmp_path / "v.mp4", frames=48, gop=12, size=(320, 180))
    got = list(thumbnails(path, [0.2, 0.6, 1.3], height=90, exact=True))
    with VideoReader(path) as r:
        for t in got:
            i = r.index_at(t.time)
            assert t.shown_time == r.times[i]
            full = r.frame(i).rgb().astype(float)
            small = full.reshape(90, 2, 160, 2, 3).mean(axis=(1, 3))
            assert np.abs(small - t.image).mean() < 3


def test_thumbnails_are_upright_for_rotated_clips(tmp_path):
    # Stored 96x160, shown rotated: 160x96, as the reader gives it.
    path = make_video(tmp_path / "p.mp4", frames=6, size=(96, 160), rotation=90, gop=6)
    (thumb,) = thumbnails(path, [0.0], height=48)
    assert thumb.image.shape == (48, 80, 3)
    with VideoReader(path) as r:
        full = r.frame(0).rgb().astype(float)
    small = full.reshape(48, 2, 80, 2, 3).mean(axis=(1, 3))
    assert np.abs(small - thumb.image).mean() < 3
