"""The redub command end to end: probe output, render with the dub laid in where asked."""
from __future__ import annotations

import json
import os
import re

import av
import numpy as np
import pytest
import soundfile as sf

from engine.cli import main
from engine.errors import RedubError, UsageError
from engine.face.analysis import FaceAnalysis
from engine.media.codecs import check_quality
from engine.media.audio import read_audio
from engine.media.probe import probe
from engine.project import ExportPrefs
from tests.conftest import shared_clip
from tests.face_clip import write_face_clip
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


def _error_line(capsys) -> str:
    """The one line of the message: the last on stderr, after finished stages' progress."""
    *before, last = capsys.readouterr().err.strip().splitlines()
    assert all(re.match(r"\w+ +\[#+\] 100\.0% ", line) for line in before), before
    return last


@pytest.mark.parametrize("command", ["render", "sync"])
@pytest.mark.parametrize("options,out,words", [
    (["--preset", "bogus"], "o.mp4", "unknown h264 preset 'bogus': use one of ultrafast, "
                                     "superfast, veryfast, faster, fast, medium, slow, slower, "
                                     "veryslow, placebo"),
    (["--crf", "-5"], "o.mp4", "crf '-5' is not valid for h264: use a number from 0 to 51"),
    (["--crf", "99"], "o.mp4", "crf '99' is not valid for h264: use a number from 0 to 51"),
    (["--crf", "high"], "o.mp4", "crf 'high' is not valid for h264"),
    (["--codec", "h265", "--crf", "52"], "o.mkv", "crf '52' is not valid for h265"),
    (["--codec", "prores", "--crf", "18"], "o.mov",
     "the prores codec has no crf setting (only h264 and h265 have one)"),
    (["--codec", "dnxhr", "--preset", "fast"], "o.mov", "the dnxhr codec has no preset setting"),
    (["--codec", "ffv1", "--crf", "0"], "o.mkv", "the ffv1 codec has no crf setting"),
])
def test_bad_encoder_settings_are_usage_errors_before_any_work(tmp_path, capsys, command,
                                                              options, out, words):
    # The video does not exist: the settings are refused before anything opens it.
    code = main([command, str(tmp_path / "missing.mp4"), "--audio", str(tmp_path / "d.wav"),
                 *options, "-o", str(tmp_path / out)])
    assert code == 2
    assert _error_line(capsys).startswith(f"redub {command}: error: {words}")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("codec,quality", [
    ("h264", {"crf": "0", "preset": "ultrafast"}), ("h264", {"crf": "23.5"}),
    ("h265", {"crf": "51", "preset": "placebo"}), ("prores", {"profile": "3"}), ("ffv1", {}),
])
def test_valid_encoder_settings_pass(codec, quality):
    assert check_quality(codec, quality) == quality


def test_export_preferences_are_checked_when_the_export_is_built():
    # The desktop builds its export from the project's preferences; it shows this line.
    prefs = ExportPrefs(codec="prores", quality={"crf": "18"})
    with pytest.raises(UsageError, match=r"^the prores codec has no crf setting \(only h264 "
                                         r"and h265 have one\)$"):
        prefs.to_export_settings("/o.mov")


@pytest.fixture()
def seven_seconds(tmp_path):
    return make_video(tmp_path / "seven.mkv", frames=175, size=(160, 96), codec="ffv1", gop=1,
                      bframes=0)


@pytest.mark.parametrize("command", ["analyze", "sync"])
@pytest.mark.parametrize("target,words", [
    ("80,40@99", "target time 99 s is outside the clip (0-7.00 s)"),
    ("80,40@-1", "target time -1 s is outside the clip (0-7.00 s)"),
    ("80,40@7", "target time 7 s is outside the clip (0-7.00 s)"),
    ("160,40@1", "target point 160,40 is outside the 160x96 frame"),
    ("80,-3@1", "target point 80,-3 is outside the 160x96 frame"),
])
def test_target_off_the_clip_is_a_usage_error(tmp_path, capsys, seven_seconds, command, target,
                                             words):
    extra = []
    if command == "sync":
        sf.write(tmp_path / "d.wav", np.zeros(RATE, np.float32), RATE)
        extra = ["--audio", str(tmp_path / "d.wav"), "-o", str(tmp_path / "o.mp4")]
    before = set(os.listdir(tmp_path))
    code = main([command, str(seven_seconds), "--target", target, *extra])
    assert code == 2
    assert _error_line(capsys) == f"redub {command}: error: {seven_seconds}: {words}"
    assert set(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("failure,code,message", [
    (KeyboardInterrupt, 130, "redub analyze: interrupted"),
    (RedubError("the overlay broke", "x"), 1, "redub analyze: error: x: the overlay broke"),
])
def test_analyze_outputs_are_all_or_nothing(tmp_path, capsys, monkeypatch, failure, code,
                                            message):
    import engine.face.overlay as overlay

    clip = write_face_clip(tmp_path / "face.mp4", frames=60)
    npz, drawn = tmp_path / "faces.npz", tmp_path / "overlay.mp4"
    npz.write_bytes(b"previous analysis")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_draw, calls, parts = overlay.draw, [], []

    def draw_then_fail(rgb, face):
        calls.append(face.index)
        if len(calls) == 50:  # well into the overlay, past x264's look-ahead
            parts.extend(p.name for p in tmp_path.iterdir() if ".part" in p.name)
            raise failure
        return real_draw(rgb, face)

    monkeypatch.setattr(overlay, "draw", draw_then_fail)
    assert main(["analyze", str(clip), "-o", str(npz), "--overlay", str(drawn)]) == code
    assert _error_line(capsys) == message
    # When it failed, the analysis was saved and the overlay half written, both aside.
    assert len(calls) == 50 and len(parts) == 2
    assert sorted(p.lstrip(".").split(".part")[0].rsplit(".", 1)[0] for p in parts) == [
        "faces.npz", "overlay.mp4"], parts
    # Neither output: the analysis saved before the overlay began is gone too.
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before

    monkeypatch.setattr(overlay, "draw", real_draw)
    assert main(["analyze", str(clip), "-o", str(npz), "--overlay", str(drawn)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.mp4", "faces.npz", "overlay.mp4"]
    assert FaceAnalysis.load(npz).stop == 60


def test_analyze_refused_move_keeps_the_previous_outputs(tmp_path, capsys, monkeypatch):
    clip = write_face_clip(tmp_path / "face.mp4", frames=10)
    npz, drawn = tmp_path / "faces.npz", tmp_path / "overlay.mp4"
    npz.write_bytes(b"previous analysis")
    drawn.write_bytes(b"previous overlay, open in a player")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_replace = os.replace

    def locked(src, dst):
        if os.fspath(dst) == str(drawn):
            raise PermissionError(13, "Permission denied")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", locked)
    assert main(["analyze", str(clip), "-o", str(npz), "--overlay", str(drawn)]) == 1
    assert _error_line(capsys) == (
        f"redub analyze: error: {drawn}: cannot put the finished file in place (Permission "
        "denied): is it read-only or open in another program? Nothing was saved")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_output_cut_short_by_the_reader_is_quiet(tmp_path):
    """``redub probe FILE | head -1``: no BrokenPipeError traceback."""
    import subprocess
    import sys

    clip = make_video(tmp_path / "c.mp4", frames=5)
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "probe", str(clip)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the table is printed
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err
