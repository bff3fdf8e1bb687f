"""Export: bit-exact lossless, bit depth, timing, colour and rotation kept, atomic output."""
from __future__ import annotations

import os

import numpy as np
import pytest

from engine.errors import RedubError, UsageError
from engine.media.frame import planes_from_av
from engine.media.probe import probe
from engine.media.reader import VideoReader
from engine.media.writer import VideoWriter
from tests.conftest import shared_clip
from tests.media_factory import decode_all, make_video
from tests.test_reader import VFR_MS

BT709 = (1, 1, 1, 1)


def _export(src, out, codec, **kw):
    with VideoReader(src) as r, VideoWriter(out, r.info, codec=codec, sources=[src], **kw) as w:
        for f in r.frames():
            w.write(f)
    return out


def _planes_equal(a, b):
    return len(a) == len(b) and all(
        all(np.array_equal(x, y) for x, y in zip(planes_from_av(fa), planes_from_av(fb)))
        for fa, fb in zip(a, b))


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv422p10le", "yuv444p"])
def test_ffv1_export_is_bit_exact(tmp_path, pix_fmt):
    src = make_video(tmp_path / "src.mkv", codec="ffv1", pix_fmt=pix_fmt, gop=1, bframes=0,
                     frames=12, color=BT709 if pix_fmt == "yuv420p" else None)
    out = _export(src, tmp_path / "out.mkv", "ffv1")
    assert _planes_equal(decode_all(src), decode_all(out))
    assert probe(out).video[0].pix_fmt == pix_fmt


def test_ffv1_export_of_shared_clip_is_bit_exact(tmp_path):
    src = shared_clip("talk_d12_512.mp4")
    out = _export(src, tmp_path / "out.mkv", "ffv1")
    assert _planes_equal(decode_all(src), decode_all(out))
    a, b = probe(src).video[0], probe(out).video[0]
    assert (b.frame_count, b.frame_rate, b.color) == (a.frame_count, a.frame_rate, a.color)


def test_ffv1_keeps_rotation_and_stored_pixels(tmp_path):
    src = make_video(tmp_path / "phone.mkv", codec="ffv1", size=(96, 160), rotation=90, gop=1,
                     bframes=0, frames=6)
    out = _export(src, tmp_path / "out.mkv", "ffv1")
    assert probe(out).video[0].rotation == 90
    assert _planes_equal(decode_all(src), decode_all(out))


@pytest.mark.parametrize("codec,ext,expect_fmt", [
    ("prores", ".mov", "yuv422p10le"), ("dnxhr", ".mov", "yuv422p10le"),
    ("h264", ".mp4", "yuv422p10le"), ("h265", ".mkv", "yuv422p10le"),
])
def test_ten_bit_input_stays_ten_bit(tmp_path, codec, ext, expect_fmt):
    src = make_video(tmp_path / "ten.mkv", codec="ffv1", pix_fmt="yuv422p10le", gop=1,
                     bframes=0, frames=6, size=(256, 144))
    out = _export(src, tmp_path / f"out{ext}", codec)
    info = probe(out).video[0]
    assert info.pix_fmt == expect_fmt and info.bit_depth == 10
    y_src = planes_from_av(decode_all(src)[3])[0].astype(int)
    y_out = planes_from_av(decode_all(out)[3])[0].astype(int)
    # Real 10-bit content survives: values off the 8-bit grid, and close to the source.
    assert np.count_nonzero(y_out % 4) > y_out.size // 4
    assert np.abs(y_out - y_src).mean() < 4


def test_eight_bit_dnxhr_is_hq(tmp_path):
    src = make_video(tmp_path / "s.mp4", frames=4, size=(256, 144))
    out = _export(src, tmp_path / "o.mov", "dnxhr")
    assert probe(out).video[0].pix_fmt == "yuv422p"


def test_timing_colour_and_rate_are_kept(tmp_path):
    src = make_video(tmp_path / "vfr.mkv", frames=len(VFR_MS), durations_ms=VFR_MS,
                     color=BT709)
    for codec, ext in [("h264", ".mp4"), ("ffv1", ".mkv"), ("prores", ".mov")]:
        out = _export(src, tmp_path / f"o_{codec}{ext}", codec)
        with VideoReader(src) as a, VideoReader(out) as b:
            np.testing.assert_allclose(b.times, a.times, atol=1e-3)
            assert b.info.variable_frame_rate
            assert b.info.color == a.info.color == __import__(
                "engine.media.frame", fromlist=["ColorInfo"]).ColorInfo(*BT709)


def test_odd_frame_size_exports_everywhere(tmp_path):
    src = make_video(tmp_path / "odd.mkv", codec="ffv1", size=(259, 145), pix_fmt="yuv420p",
                     gop=1, bframes=0, frames=5)
    for codec, ext in [("h264", ".mp4"), ("h265", ".mp4"), ("prores", ".mov"),
                       ("ffv1", ".mkv"), ("dnxhr", ".mov")]:
        out = _export(src, tmp_path / f"o_{codec}{ext}", codec)
        info = probe(out).video[0]
        assert (info.width, info.height, info.frame_count) == (259, 145, 5), codec


def test_too_small_for_dnxhr_is_a_usage_error(tmp_path):
    src = make_video(tmp_path / "small.mp4", frames=2)
    with VideoReader(src) as r, pytest.raises(UsageError, match="at least 256x120"):
        VideoWriter(tmp_path / "o.mov", r.info, codec="dnxhr", sources=[src])
    assert sorted(os.listdir(tmp_path)) == ["small.mp4"]


def test_failure_mid_export_leaves_nothing(tmp_path):
    src = make_video(tmp_path / "s.mp4", frames=10)
    out = tmp_path / "out.mp4"
    before = set(os.listdir(tmp_path))
    with pytest.raises(RuntimeError):
        with VideoReader(src) as r, VideoWriter(out, r.info, sources=[src]) as w:
            for f in r.frames():
                w.write(f)
                if f.index == 4:
                    raise RuntimeError("boom")
    assert set(os.listdir(tmp_path)) == before


def test_existing_target_survives_a_failed_export(tmp_path):
    src = make_video(tmp_path / "s.mp4", frames=6)
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"previous export")
    with pytest.raises(RuntimeError):
        with VideoReader(src) as r, VideoWriter(out, r.info, sources=[src]) as w:
            w.write(r.frame(0))
            raise RuntimeError("cancelled")
    assert out.read_bytes() == b"previous export"


def test_output_path_checks(tmp_path):
    src = make_video(tmp_path / "s.mp4", frames=3)
    with VideoReader(src) as r:
        with pytest.raises(UsageError, match="overwrite an input"):
            VideoWriter(src, r.info, sources=[src])
        with pytest.raises(UsageError, match="folder does not exist"):
            VideoWriter(tmp_path / "nope" / "o.mp4", r.info, sources=[src])
        with pytest.raises(UsageError, match=r"needs a \.mov"):
            VideoWriter(tmp_path / "o.mp4", r.info, codec="prores", sources=[src])
        with pytest.raises(UsageError, match="unknown codec"):
            VideoWriter(tmp_path / "o.mp4", r.info, codec="vp9", sources=[src])


def test_full_disk_gives_clear_error_and_no_file(tmp_path):
    import errno

    import av

    class FillsUp:
        """The real output container, until the disk 'fills' after a few packets."""

        def __init__(self, real):
            self.real, self.packets = real, 0

        def mux(self, packet):
            self.packets += 1
            if self.packets > 3:
                raise av.FFmpegError(errno.ENOSPC, "No space left on device")
            self.real.mux(packet)

        def close(self):
            self.real.close()

    src = make_video(tmp_path / "s.mp4", frames=8)
    out = tmp_path / "o.mp4"
    before = set(os.listdir(tmp_path))
    with VideoReader(src) as r:
        w = VideoWriter(out, r.info, sources=[src])
        w._container = FillsUp(w._container)
        with pytest.raises(RedubError, match="disk full"):
            for f in r.frames():
                w.write(f)
            w.close()
    assert set(os.listdir(tmp_path)) == before


def test_dnxhr_keeps_bt601_tags(tmp_path):
    # The DNxHD decoder reports BT.709 on every frame; the container's tags must win.
    bt601 = (6, 6, 6, 1)
    src = make_video(tmp_path / "s.mkv", codec="ffv1", gop=1, bframes=0, frames=3,
                     size=(256, 144), color=bt601)
    out = _export(src, tmp_path / "o.mov", "dnxhr")
    assert probe(out).video[0].color == probe(src).video[0].color
    assert probe(out).video[0].color.matrix == 6


@pytest.mark.parametrize("refusal", [
    PermissionError(1, "Operation not permitted"),  # chattr +i, or open in a player on Windows
    OSError(16, "Device or resource busy"),
])
def test_refused_rename_removes_the_temp_file_and_keeps_the_target(tmp_path, monkeypatch,
                                                                   refusal):
    src = make_video(tmp_path / "s.mp4", frames=6)
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"previous export")
    before = set(os.listdir(tmp_path))

    def refuse(a, b):
        raise refusal

    with VideoReader(src) as r:
        with pytest.raises(RedubError) as caught:
            with VideoWriter(out, r.info, sources=[src]) as w:
                for f in r.frames():
                    w.write(f)
                monkeypatch.setattr(os, "replace", refuse)
    message = str(caught.value)
    assert message == (f"{out}: cannot put the finished file in place ({refusal.strerror}): "
                       "is it read-only or open in another program? Nothing was saved")
    assert "\n" not in message
    assert out.read_bytes() == b"previous export"
    assert set(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("stage", ["flush", "rename"])
def test_interrupt_while_closing_leaves_nothing(tmp_path, monkeypatch, stage):
    class Interrupted:
        """The real output container, until Ctrl+C arrives while the encoder is flushed."""

        def __init__(self, real):
            self.real, self.armed = real, False

        def mux(self, packet):
            if self.armed:
                raise KeyboardInterrupt
            self.real.mux(packet)

        def close(self):
            self.real.close()

    def interrupt(a, b):
        raise KeyboardInterrupt

    src = make_video(tmp_path / "s.mp4", frames=60)  # past x264's look-ahead: a file exists
    before = set(os.listdir(tmp_path))
    with VideoReader(src) as r:
        with pytest.raises(KeyboardInterrupt):
            with VideoWriter(tmp_path / "o.mp4", r.info, sources=[src]) as w:
                w._container = Interrupted(w._container)
                for f in r.frames():
                    w.write(f)
                assert any(".part" in name for name in os.listdir(tmp_path))
                if stage == "flush":
                    w._container.armed = True  # x264 still holds frames: close() muxes them
                else:
                    monkeypatch.setattr(os, "replace", interrupt)
    assert set(os.listdir(tmp_path)) == before


def test_immutable_target_is_kept_and_nothing_is_left(tmp_path):
    import shutil
    import subprocess

    src = make_video(tmp_path / "s.mp4", frames=6)
    out = tmp_path / "locked.mp4"
    out.write_bytes(b"previous export")
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(out)],
                                                    capture_output=True).returncode != 0:
        pytest.skip("chattr +i needs root and an ext4-like file system")
    try:
        before = set(os.listdir(tmp_path))
        with pytest.raises(RedubError, match="cannot put the finished file in place"):
            _export(src, out, "h264")
        assert set(os.listdir(tmp_path)) == before
        assert out.read_bytes() == b"previous export"
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)
