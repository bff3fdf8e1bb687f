"""A short range in a long clip is analysed around the range, not over the whole clip."""
from __future__ import annotations

import pytest

from engine import pipeline
from engine.face.track import FaceTracker
from engine.pipeline import LEARN_SECONDS, learn_range, prepare_sync
from tests.conftest import shared_clip
from tests.face_clip import write_face_clip


def test_the_default_footage_to_learn_from_does_not_grow_with_the_clip():
    for duration in (60.0, 600.0, 7200.0):
        start, end = learn_range([(30.0, 32.0)], duration)
        assert end - start == pytest.approx(LEARN_SECONDS) and start <= 30.0 and end >= 32.0
    assert learn_range([(1.0, 3.0)], 20.0) == (0.0, 20.0)  # a short clip: all of it
    assert learn_range([(0.0, 2.0)], 60.0) == (0.0, LEARN_SECONDS)  # kept inside the clip
    assert learn_range([(55.0, 60.0)], 60.0) == (60.0 - LEARN_SECONDS, 60.0)
    assert learn_range([(5.0, 8.0), (45.0, 50.0)], 60.0) == (5.0, 50.0)  # ranges span more


def test_a_two_second_range_in_a_minute_analyses_only_what_it_needs(tmp_path, monkeypatch):
    video = write_face_clip(tmp_path / "minute.mp4", frames=60 * 25)
    monkeypatch.setattr(pipeline, "LEARN_SECONDS", 6.0)  # keeps the test quick; same rule
    stepped = []
    step = FaceTracker.step
    monkeypatch.setattr(FaceTracker, "step",
                        lambda self, i, picture: (stepped.append(i), step(self, i, picture)))
    with prepare_sync(video, shared_clip("speech_eng_long.wav"), ranges=[(30.0, 32.0)]) as s:
        analysis, edited = s.analysis, s.edited_frames()
    # 6 s centred on the range, 28-34 s: 150 of the clip's 1500 frames, each once.
    assert len(stepped) == len(analysis) == 150
    assert (analysis.start, analysis.stop) == (28 * 25, 34 * 25)
    assert edited.min() == 30 * 25 and edited.max() == 32 * 25 - 1
