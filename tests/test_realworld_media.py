"""Files editors actually have: cuts with edit lists, ffmpeg's AVI, variable frame rate, a start
timecode. Each is accepted, addressed as the editor sees it, and exported with the source's
frame count, timing and timecode."""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from engine.cli import main
from engine.media.probe import probe
from engine.media.reader import VideoReader
from engine.pipeline import prepare_sync
from engine.timecode import parse_range, parse_time
from tests.conftest import shared_clip
from tests.face_clip import write_face_clip
from tests.media_factory import (cut_copy, decode_all, frame_number, make_avi, make_video,
                                 remux, retime, set_timecode, write_tone_wav)

FPS = 25


@pytest.fixture()
def dub(tmp_path) -> Path:
    return write_tone_wav(tmp_path / "dub.wav", seconds=4.0)


def _numbers(path: Path) -> list[int]:
    return [frame_number(f.to_ndarray(format="rgb24")) for f in decode_all(path)]


def _export(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def _same_timing(source: Path, output: Path) -> None:
    """The export has the source's frames, at the source's times, with its timecode."""
    src, out = probe(source).video[0], probe(output).video[0]
    assert not out.truncated
    assert out.frame_count == src.frame_count
    np.testing.assert_allclose(out.index_data.times, src.index_data.times, atol=1e-3)
    assert out.start_timecode == src.start_timecode


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """75 numbered frames, B-frames and a GOP of 25, with sound."""
    return make_video(tmp_path_factory.mktemp("src") / "src.mp4", frames=75, bframes=2, gop=25,
                      audio_rate=48000)


@pytest.mark.parametrize("ext", [".mp4", ".mov"])
@pytest.mark.parametrize("start,end", [(1.3, None), (0.9, 2.3)])
def test_cut_with_edit_list_is_accepted_and_exported_frame_for_frame(
        tmp_path, capsys, dub, source, ext, start, end):
    cut = cut_copy(source, tmp_path / f"cut{ext}", start, end)
    with av.open(str(cut)) as c:  # the case at hand: the sample table counts skipped frames
        assert c.streams.video[0].frames > len(decode_all(cut))
    expected = [i for i in range(75) if start - 1e-6 <= i / FPS < (end or 99)]
    info = probe(cut).video[0]
    assert not info.truncated
    assert info.frame_rate == FPS and not info.variable_frame_rate
    assert _numbers(cut) == expected
    with VideoReader(cut) as reader:  # random access lands on the same frames
        for i in (len(expected) - 1, 0, len(expected) // 2):
            assert frame_number(reader.frame(i).rgb()) == expected[i]
    out = tmp_path / f"out{ext}"
    _export(capsys, "render", cut, "--audio", dub, "--range", "0.2-0.6", "-o", out)
    _same_timing(cut, out)
    assert _numbers(out) == expected


def test_a_really_truncated_cut_is_still_caught(tmp_path, capsys, dub, source):
    cut = cut_copy(source, tmp_path / "cut.mp4", 1.3)
    remux(cut, tmp_path / "fs.mp4", options={"movflags": "+faststart"})
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes((tmp_path / "fs.mp4").read_bytes()[: cut.stat().st_size * 6 // 10])
    assert probe(damaged).video[0].truncated
    assert main(["render", str(damaged), "--audio", str(dub), "-o", str(tmp_path / "o.mp4")]) == 1
    assert "truncated" in capsys.readouterr().err


def test_ffmpeg_avi_with_an_empty_chunk_is_accepted(tmp_path, capsys, dub):
    avi = make_avi(tmp_path / "clip.avi", frames=50)
    with av.open(str(avi)) as c:  # the header declares more frames than decode
        assert c.streams.video[0].frames > 50
    info = probe(avi).video[0]
    assert not info.truncated and info.frame_count == 50
    out = tmp_path / "out.mkv"
    _export(capsys, "render", avi, "--audio", dub, "--codec", "ffv1", "-o", out)
    _same_timing(avi, out)
    assert _numbers(out) == list(range(50))


def test_frame_ranges_on_variable_frame_rate_mean_frames(tmp_path, capsys, dub):
    durations = [80] * 20 + [20, 40, 33, 34, 33] * 10  # slow, then fast
    clip = retime(write_face_clip(tmp_path / "cfr.mp4", frames=70), tmp_path / "vfr.mp4",
                  durations)
    info = probe(clip).video[0]
    assert info.variable_frame_rate
    times = info.index_data.times
    assert parse_range("40f-60f", info.clock) == (times[40], times[60])
    assert parse_time("70f", info.clock) == pytest.approx(info.duration)
    # At the average rate frame 40 would start elsewhere: the bug this guards against.
    assert abs(40 / float(info.frame_rate) - times[40]) > 0.1
    with prepare_sync(clip, dub, ranges=[parse_range("40f-60f", info.clock)]) as session:
        assert session.edited_frames().tolist() == list(range(40, 60))
    out = tmp_path / "out.mkv"
    _export(capsys, "sync", clip, "--audio", dub, "--range", "40f-60f", "--codec", "ffv1",
            "-o", out)
    _same_timing(clip, out)
    with VideoReader(clip) as a, VideoReader(out) as b:
        changed = [i for i, (x, y) in enumerate(zip(a.frames(), b.frames()))
                   if not all(np.array_equal(p, q) for p, q in zip(x.planes, y.planes))]
    assert changed and set(changed) <= set(range(40, 60))
    assert len(changed) >= 15  # the face is found on (nearly) every frame of the range


@pytest.mark.parametrize("ext", [".mov", ".mp4"])
def test_start_timecode_addresses_ranges_and_is_exported(tmp_path, capsys, dub, source, ext):
    clip = set_timecode(source, tmp_path / f"tc{ext}", "01:00:00:00")
    info = probe(clip).video[0]
    assert info.start_timecode == "01:00:00:00"
    assert "timecode 01:00:00:00" in _export(capsys, "probe", clip)
    assert parse_range("01:00:01:00-01:00:02:05", info.clock) == (1.0, 2.2)
    assert parse_time("10f", info.clock) == 0.4  # frames and seconds count from the clip start
    out = tmp_path / f"out{ext}"
    _export(capsys, "render", clip, "--audio", dub, "--range", "01:00:01:00-01:00:02:05",
            "-o", out)
    _same_timing(clip, out)
    # A timecode before the clip's start is a clear usage error, not "outside the clip".
    code = main(["render", str(clip), "--audio", str(dub), "--range", "00:00:01:00-00:00:02:00",
                 "-o", str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "before the clip's start timecode 01:00:00:00" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "x.mp4").exists()


def test_drop_frame_start_timecode(tmp_path):
    clip = make_video(tmp_path / "ntsc.mp4", frames=40, rate=Fraction(30000, 1001))
    clip = set_timecode(clip, tmp_path / "ntsc_tc.mov", "00:00:59;28")
    clock = probe(clip).video[0].clock
    # 00:00:59;28 + 2 frames is 00:01:00;02: frames ;00 and ;01 do not exist at that minute.
    assert parse_time("00:01:00;02", clock) == pytest.approx(2 * 1001 / 30000)


def test_cut_of_a_shared_clip_is_re_synced(tmp_path, capsys):
    """The NLE's case: a cut of real footage (edit list) re-synced as the editor numbers it."""
    cut = cut_copy(shared_clip("talk_d12_512.mp4"), tmp_path / "cut.mp4", 1.3, 3.3)
    assert not probe(cut).video[0].truncated
    dub = shared_clip("speech_radio31_16k.wav")
    out = tmp_path / "out.mp4"
    printed = _export(capsys, "sync", cut, "--audio", dub, "--range", "5f-40f", "-o", out)
    assert "wrote" in printed
    _same_timing(cut, out)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".part.mp4")]


def test_source_without_sound_is_exported_with_the_dub(tmp_path, capsys, dub, source):
    """B-roll or a silent take: no audio stream at all. The export has the source's frames and
    timing, and the dub's sound inside the range (silence elsewhere)."""
    clip = make_video(tmp_path / "silent.mp4", frames=50)
    assert not probe(clip).audio
    out = tmp_path / "out.mp4"
    _export(capsys, "render", clip, "--audio", dub, "--range", "10f-40f", "-o", out)
    _same_timing(clip, out)
    assert _numbers(out) == list(range(50))
    from engine.media.audio import read_audio
    sound = read_audio(out, rate=16000, channels=1).samples[:, 0]
    level = [float(np.abs(sound[int(t * 16000):int((t + 0.2) * 16000)]).mean())
             for t in (0.1, 0.8, 1.7)]
    assert level[0] < 1e-3 and level[1] > 0.05 and level[2] < 1e-3
