"""The redub command end to end: probe output, render with the dub laid in where asked."""
from __future__ import annotations

import json

import av
import numpy as np
import pytest
import soundfile as sf

from engine.cli import main
from engine.media.audio import read_audio
from engine.media.probe import probe
from tests.conftest import shared_clip
from tests.media_factory import make_video

RATE = 48000


@pytest.fixture()
def clip(tmp_path):
    return make_video(tmp_path / "clip.mkv", frames=100, size=(160, 96), audio_rate=RATE,
                      codec="ffv1", gop=1, bframes=0)


@pytest.fixture()
def click_dub(tmp_path):
    """Two seconds of silence with a click at 0.5 s."""
    samples = np.zeros(2 * RATE, np.float32)
    samples[RATE // 2] = 0.9
    path = tmp_path / "click.wav"
    sf.write(path, samples, RATE, subtype="FLOAT")
    return path


def test_probe_table_and_json(clip, capsys):
    assert main(["probe", str(clip)]) == 0
    table = capsys.readouterr().out
    assert "160x96" in table and "100 (00:00:04:00)" in table and "constant" in table
    assert main(["probe", "--json", str(clip)]) == 0
    data = json.loads(capsys.readouterr().out)
    v, a = data["video"][0], data["audio"][0]
    assert (v["frame_count"], v["frame_rate"], v["pix_fmt"], v["bit_depth"]) == (
        100, "25/1", "yuv420p", 8)
    assert (a["rate"], a["channels"]) == (RATE, 2)


@pytest.mark.parametrize("offset", ["1.0", "25f", "00:00:01:00"])
def test_render_places_the_dub_inside_the_range(tmp_path, clip, click_dub, offset, capsys):
    out = tmp_path / "out.mkv"
    code = main(["render", str(clip), "--audio", str(click_dub), "--offset", offset,
                 "--range", "1.0-3.0", "--codec", "ffv1", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    audio = read_audio(out)
    src = read_audio(clip)
    assert audio.rate == RATE and audio.channels == 2
    assert abs(audio.frames - 4 * RATE) <= 1
    left = audio.samples[:, 0]
    # The click lands at offset + 0.5 s; inside the range the source tone is gone.
    assert int(np.argmax(np.abs(left))) == int(1.5 * RATE)
    inside = left[int(1.1 * RATE) : int(1.4 * RATE)]
    assert np.abs(inside).max() == 0
    # Outside the range (clear of the 10 ms crossfade) the source's samples are untouched.
    before = slice(0, int(0.98 * RATE))
    after = slice(int(3.02 * RATE), int(3.9 * RATE))
    assert np.array_equal(audio.samples[before], src.samples[before])
    assert np.allclose(audio.samples[after], src.samples[after], atol=1 / 32768)
    assert probe(out).video[0].frame_count == 100


def test_render_mode_all_and_prores_pcm(tmp_path, clip, click_dub, capsys):
    out = tmp_path / "out.mov"
    code = main(["render", str(clip), "--audio", str(click_dub), "--audio-mode", "all",
                 "--codec", "prores", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == "pcm_s16le"  # the source was 16-bit
        assert c.streams.video[0].codec_context.name == "prores"
    audio = read_audio(out).samples[:, 0]
    assert int(np.argmax(np.abs(audio))) == RATE // 2
    assert np.abs(audio[RATE : 2 * RATE]).max() == 0  # no source tone anywhere: dub only
    text = capsys.readouterr().out
    assert "note: the dub ends at 2.00 s" in text


def test_render_shared_clip_h264_with_aac(tmp_path, capsys):
    video = shared_clip("talk_d12_512.mp4")
    dub = shared_clip("speech_radio31_16k.wav")
    out = tmp_path / "dubbed.mp4"
    code = main(["render", str(video), "--audio", str(dub), "--range", "00:00:01:00-00:00:06:00",
                 "--crf", "23", "--preset", "veryfast", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    src, got = probe(video), probe(out)
    assert got.video[0].frame_count == src.video[0].frame_count
    assert got.video[0].frame_rate == src.video[0].frame_rate
    assert got.audio[0].codec == "aac" and got.audio[0].rate == src.audio[0].rate
    assert abs(got.audio[0].duration - src.video[0].duration) < 0.05
    assert [p.name for p in tmp_path.iterdir()] == ["dubbed.mp4"]
