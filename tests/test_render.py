from __future__ import annotations

import io
import os

import pytest

from engine.commands.progressbar import ProgressBar
from engine.errors import Cancelled
from engine.progress import CancelToken
from engine.render import ExportSettings, render
from tests.media_factory import make_video


def test_progress_and_cancel_leave_no_output(tmp_path):
    video = make_video(tmp_path / "v.mp4", frames=40, audio_rate=48000)
    token = CancelToken()
    seen = []

    def progress(stage, done, total):
        seen.append((stage, done, total))
        if done == 15:
            token.cancel()

    before = sorted(os.listdir(tmp_path))
    with pytest.raises(Cancelled):
        render(video, ExportSettings(output=str(tmp_path / "o.mp4")), dub=None,
               progress=progress, cancel=token)
    assert sorted(os.listdir(tmp_path)) == before
    assert seen[0] == ("export", 1, 40) and seen[-1] == ("export", 15, 40)


def test_render_without_dub_keeps_source_audio(tmp_path):
    video = make_video(tmp_path / "v.mp4", frames=20, audio_rate=48000)
    result = render(video, ExportSettings(output=str(tmp_path / "o.mp4")), dub=None)
    assert result.frames == 20 and os.path.exists(result.path) and result.fps > 0


def test_progress_bar_text():
    out = io.StringIO()
    bar = ProgressBar(stream=out)
    assert "50.0% 5/10 frames" in bar.render("export", 5, 10, elapsed=1.0, counted=5)
    assert "left 00:01" in bar.render("export", 5, 10, elapsed=1.0, counted=5)
    bar("export", 10, 10)
    assert "100.0%" in out.getvalue()
