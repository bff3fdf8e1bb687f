from __future__ import annotations

import io
import os
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf

from engine.commands.progressbar import ProgressBar
from engine.errors import Cancelled, UsageError
from engine.media.audio import read_audio
from engine.media.probe import probe
from engine.progress import CancelToken
from engine.render import ExportSettings, render
from tests.media_factory import decode_all, make_video, remux


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


@pytest.mark.parametrize("rate, timecode, expected", [
    (25, "01:00:00:00", "01:00:00:10"),
    (Fraction(30000, 1001), "00:00:59;28", "00:01:00;10"),  # drop-frame skips ;00 and ;01
])
def test_trimmed_export_keeps_frames_timecode_reel_and_audio(tmp_path, rate, timecode, expected):
    plain = make_video(tmp_path / "p.mkv", frames=50, codec="ffv1", rate=rate, audio_rate=48000)
    video = remux(plain, tmp_path / "v.mkv", {"timecode": timecode, "reel_name": "A001"})
    out_path = tmp_path / "o.mkv"
    result = render(video, ExportSettings(output=str(out_path), codec="ffv1", span=(10, 40)),
                    dub=None)
    assert result.frames == 30
    info = probe(out_path)
    assert info.video[0].frame_count == 30 and info.video[0].start_time == 0
    assert info.video[0].start_timecode == expected and info.video[0].reel_name == "A001"
    # The source's own sound from frame 10's time, to the sample, as long as the frames.
    src_audio, out_audio = read_audio(video).samples, read_audio(out_path).samples
    skip = round(probe(video).video[0].clock.frame_time(10, "10f") * 48000)  # mkv: ms stamps
    assert abs(len(out_audio) - 30 / rate * 48000) <= 1
    assert np.array_equal(out_audio, src_audio[skip : skip + len(out_audio)])
    source, written = decode_all(video), decode_all(out_path)
    for k in (0, 29):  # FFV1 keeps every plane bit-exact
        for a, b in zip(source[10 + k].planes, written[k].planes):
            assert bytes(a) == bytes(b)
    assert 0 < result.seconds < 60
    # A dub placed in the source's time is heard at the same source frames in the trimmed file.
    dub = tmp_path / "dub.wav"  # noise: no shift of it matches itself
    sf.write(str(dub), np.random.default_rng(1).uniform(-0.3, 0.3, 96000), 48000,
             subtype="PCM_16")
    dubbed = render(video, ExportSettings(output=str(tmp_path / "d.mkv"), codec="ffv1",
                                          span=(10, 40)), dub=dub, dub_offset=0.2,
                    ranges=[(0.6, 1.0)])
    heard = read_audio(dubbed.path, channels=1).samples[:, 0]
    expected = read_audio(dub, rate=48000).samples[:, 0]
    origin = probe(video).video[0].clock.frame_time(10, "10f")
    inside = slice(round((0.6 - origin + 0.02) * 48000), round((1.0 - origin - 0.02) * 48000))
    shift = round((origin - 0.2) * 48000)  # output sample j hears dub sample j + shift
    assert np.abs(heard[inside] - expected[inside.start + shift:inside.stop + shift]).max() < 1e-3
    before = slice(0, round((0.6 - origin - 0.02) * 48000))
    assert np.array_equal(heard[before], src_audio[skip:, 0][before])
    with pytest.raises(UsageError, match="not inside the clip"):
        render(video, ExportSettings(output=str(tmp_path / "x.mkv"), codec="ffv1",
                                     span=(40, 60)), dub=None)
