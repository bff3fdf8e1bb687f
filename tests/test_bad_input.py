"""Every bad input gives one clear line naming the file, the right exit status, and no output."""
from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from engine.cli import main
from tests.media_factory import make_video


@pytest.fixture()
def dub(tmp_path) -> Path:
    path = tmp_path / "dub.wav"
    t = np.arange(16000 * 2) / 16000
    sf.write(path, (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    return path


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    return code, err


def _render_fails(capsys, tmp_path, video, dub, expect_code, expect_text, out_name="out.mp4"):
    before = sorted(os.listdir(tmp_path))
    code, err = _run(capsys, "render", video, "--audio", dub, "-o", tmp_path / out_name)
    assert code == expect_code, err
    assert expect_text in err
    assert len(err.splitlines()) == 1, err  # one line, no traceback
    assert sorted(os.listdir(tmp_path)) == before  # nothing written, not even a temp file
    return err


def _faststart_copy(src: Path, dst: Path) -> Path:
    """Remux with the index (moov) first, as web-ready files are."""
    with av.open(str(src)) as i, av.open(str(dst), "w", options={"movflags": "+faststart"}) as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for packet in i.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                o.mux(packet)
    return dst


def test_truncated_file_with_index_at_end(tmp_path, capsys, dub):
    good = make_video(tmp_path / "g.mp4", frames=50, audio_rate=48000)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size * 6 // 10])
    good.unlink()
    err = _render_fails(capsys, tmp_path, cut, dub, 1, "damaged")
    assert str(cut) in err


def test_truncated_file_with_index_first(tmp_path, capsys, dub):
    good = _faststart_copy(make_video(tmp_path / "g.mp4", frames=50, audio_rate=48000),
                           tmp_path / "fs.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size * 6 // 10])
    good.unlink()
    (tmp_path / "g.mp4").unlink()
    _render_fails(capsys, tmp_path, cut, dub, 1, "truncated")
    code, out = main(["probe", str(cut)]), capsys.readouterr().out
    assert code == 0 and "TRUNCATED" in out


def test_corrupt_file(tmp_path, capsys, dub):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, np.uint8).tobytes())
    _render_fails(capsys, tmp_path, junk, dub, 1, "not a readable media file")


def test_zero_length_file(tmp_path, capsys, dub):
    empty = tmp_path / "empty.mov"
    empty.touch()
    _render_fails(capsys, tmp_path, empty, dub, 1, "file is empty")
    assert _run(capsys, "probe", empty)[0] == 1


def test_missing_file(tmp_path, capsys, dub):
    _render_fails(capsys, tmp_path, tmp_path / "nope.mp4", dub, 1, "no such file")


def test_audio_only_file_as_video(tmp_path, capsys, dub):
    _render_fails(capsys, tmp_path, dub, dub, 1, "no video stream")


def test_video_only_file_takes_the_dub(tmp_path, capsys, dub):
    video = make_video(tmp_path / "silent.mp4", frames=25)
    code, err = _run(capsys, "render", video, "--audio", dub, "-o", tmp_path / "o.mp4")
    assert code == 0, err
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert len(c.streams.audio) == 1 and c.streams.audio[0].rate == 16000


def test_video_only_file_as_dub(tmp_path, capsys):
    video = make_video(tmp_path / "v.mp4", frames=10)
    silent = make_video(tmp_path / "silent.mp4", frames=10)
    _render_fails(capsys, tmp_path, video, silent, 1, "no audio stream")


def test_unsupported_codec(tmp_path, capsys, dub):
    good = make_video(tmp_path / "g.mp4", frames=10)
    data = good.read_bytes()
    assert data.count(b"avc1") >= 1
    strange = tmp_path / "strange.mp4"
    strange.write_bytes(data.replace(b"avc1", b"zzz9"))  # a sample entry no decoder knows
    good.unlink()
    _render_fails(capsys, tmp_path, strange, dub, 1, "unsupported video codec")


def test_missing_output_folder(tmp_path, capsys, dub):
    video = make_video(tmp_path / "v.mp4", frames=5)
    code, err = _run(capsys, "render", video, "--audio", dub, "-o", tmp_path / "no" / "o.mp4")
    assert code == 2 and "output folder does not exist" in err
    assert not (tmp_path / "no").exists()


def test_output_equal_to_input(tmp_path, capsys, dub):
    video = make_video(tmp_path / "v.mp4", frames=5)
    before = video.read_bytes()
    for target in (video, tmp_path / "." / "v.mp4"):
        code, err = _run(capsys, "render", video, "--audio", dub, "-o", target)
        assert code == 2 and "overwrite an input" in err
    code, err = _run(capsys, "render", video, "--audio", dub, "-o", dub.with_suffix(".wav"))
    assert code == 2
    assert video.read_bytes() == before


def test_odd_frame_size_renders(tmp_path, capsys, dub):
    video = make_video(tmp_path / "odd.mkv", codec="ffv1", size=(101, 75), gop=1, bframes=0,
                       frames=8)
    code, err = _run(capsys, "render", video, "--audio", dub, "-o", tmp_path / "o.mp4")
    assert code == 0, err
    with av.open(str(tmp_path / "o.mp4")) as c:
        v = c.streams.video[0]
        assert (v.width, v.height) == (101, 75)


def test_usage_errors_exit_2(tmp_path, capsys, dub):
    video = make_video(tmp_path / "v.mp4", frames=5)
    for bad in (["--range", "5-2"], ["--range", "abc"], ["--offset", "1:2:3:4:5"],
                ["--range", "30-40"]):
        code, err = _run(capsys, "render", video, "--audio", dub, "-o", tmp_path / "o.mp4", *bad)
        assert code == 2, (bad, err)
        assert len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(["render", str(video), "--audio", str(dub), "-o", str(tmp_path / "o.mp4"),
              "--codec", "vp9"])
    assert exc.value.code == 2
    assert sorted(os.listdir(tmp_path)) == ["dub.wav", "v.mp4"]
