"""Frame-accurate access: seeking to any frame gives exactly what a sequential decode gives."""
from __future__ import annotations

import numpy as np
import pytest

from engine.media.frame import planes_from_av
from engine.media.probe import probe
from engine.media.reader import VideoReader
from tests.conftest import shared_clip, shared_clips
from tests.media_factory import decode_all, make_video

VFR_MS = [40, 40, 20, 20, 60, 33, 33, 34, 100, 40, 40, 20] * 4


def _same(frame, ref) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(frame.planes, planes_from_av(ref)))


def _check_random_access(path, order_seed=0):
    ref = decode_all(path)
    with VideoReader(path, cache_bytes=0) as r:
        assert r.frame_count == len(ref)
        order = np.random.default_rng(order_seed).permutation(len(ref))
        # Random jumps, then a backward walk, then a forward walk: every path must agree.
        for i in list(order) + list(range(len(ref) - 1, -1, -3)) + list(range(0, len(ref), 2)):
            assert _same(r.frame(int(i)), ref[i]), f"frame {i} differs"
        for start, stop in [(0, 5), (7, 19), (len(ref) - 4, len(ref))]:
            got = list(r.frames(start, stop))
            assert [f.index for f in got] == list(range(start, stop))
            assert all(_same(f, ref[f.index]) for f in got)
    return ref


@pytest.mark.parametrize("codec,ext,bframes,gop", [
    ("libx264", ".mp4", 2, 12), ("libx264", ".mkv", 3, 10), ("libx265", ".mp4", 2, 8),
    ("mpeg4", ".avi", 0, 9), ("ffv1", ".mkv", 0, 1),
])
def test_seek_matches_sequential_decode_cfr(tmp_path, codec, ext, bframes, gop):
    path = make_video(tmp_path / f"cfr{ext}", codec=codec, bframes=bframes, gop=gop, frames=40)
    _check_random_access(path)


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_seek_matches_sequential_decode_vfr(tmp_path, ext):
    path = make_video(tmp_path / f"vfr{ext}", frames=len(VFR_MS), durations_ms=VFR_MS, gop=10)
    ref = _check_random_access(path)
    info = probe(path).video[0]
    assert info.variable_frame_rate
    assert info.frame_count == len(VFR_MS)
    with VideoReader(path) as r:
        expected = np.concatenate([[0], np.cumsum(VFR_MS[:-1])]) / 1000.0
        np.testing.assert_allclose(r.times, expected, atol=1e-9)
        # The frame on screen at any time is the last one starting at or before it.
        for i, t in enumerate(expected):
            assert r.index_at(t) == i
            assert r.index_at(t + VFR_MS[i] / 2000.0) == i
            assert r.frame_at(t + 0.001).index == i
    assert len(ref) == len(VFR_MS)


@pytest.mark.parametrize("name", shared_clips())
def test_seek_matches_sequential_decode_shared(name):
    path = shared_clip(name)
    ref = decode_all(path)
    with VideoReader(path, cache_bytes=0) as r:
        assert r.frame_count == len(ref)
        picks = sorted(set(np.random.default_rng(1).choice(len(ref), 12, replace=False))
                       | {0, len(ref) - 1})
        for i in picks[::-1] + picks:
            assert _same(r.frame(int(i)), ref[i]), f"{name}: frame {i} differs"
        seq = list(r.frames())
        assert len(seq) == len(ref)
        assert all(_same(f, ref[f.index]) for f in seq[::7])


def test_rotation_is_applied_losslessly(tmp_path):
    path = make_video(tmp_path / "phone.mp4", size=(96, 160), rotation=-90, codec="ffv1",
                      gop=1, bframes=0)
    path = path.rename(tmp_path / "phone.mkv")
    ref = decode_all(path)
    info = probe(path).video[0]
    assert info.rotation == 270
    assert (info.width, info.height) == (160, 96)
    with VideoReader(path) as r:
        f = r.frame(3)
        assert (f.width, f.height) == (160, 96)
        stored = planes_from_av(ref[3])
        assert np.array_equal(f.planes[0], np.rot90(stored[0], 3))
        assert f.rgb().shape == (96, 160, 3)


@pytest.mark.parametrize("pix_fmt", ["yuv422p", "yuv422p10le", "yuv411p"])
def test_rotated_subsampled_chroma_keeps_its_colour(tmp_path, pix_fmt):
    """4:2:2 on its side is 4:4:0 (an iPhone's portrait ProRes): colour right, export exact."""
    from engine.media.writer import VideoWriter

    path = make_video(tmp_path / "p.mp4", size=(96, 160), rotation=90, codec="ffv1",
                      pix_fmt=pix_fmt, gop=1, bframes=0).rename(tmp_path / "p.mkv")
    upright = [np.rot90(f.to_ndarray(format="rgb24"), 1) for f in decode_all(path)]
    out = tmp_path / "o.mkv"
    with VideoReader(path) as r:
        frames = list(r.frames())
        for f, ref in zip(frames, upright):
            error = np.abs(f.rgb().astype(int) - ref.astype(int))
            assert error.mean() < 2.5, error.mean()  # before: about 32 (chroma scrambled)
        with VideoWriter(out, r.info, codec="ffv1") as w:
            for f in frames:
                w.write(f)
    if pix_fmt == "yuv411p":
        return  # no format holds 4:1:1 on its side: it is read as 4:4:4, so not kept exactly
    with VideoReader(out) as r:
        for a, b in zip(frames, r.frames()):
            assert all(np.array_equal(p, q) for p, q in zip(a.planes, b.planes))


def test_ten_bit_frames_keep_ten_bits(tmp_path):
    path = make_video(tmp_path / "ten.mkv", codec="ffv1", pix_fmt="yuv422p10le", gop=1,
                      bframes=0, frames=6)
    with VideoReader(path) as r:
        f = r.frame(2)
        assert f.pix_fmt == "yuv422p10le" and f.bit_depth == 10
        assert f.planes[0].dtype == np.uint16
        assert f.planes[1].shape == (96, 80)
        assert f.rgb().dtype == np.uint8


def test_cache_is_bounded_and_serves_repeats(tmp_path):
    path = make_video(tmp_path / "c.mp4", frames=30)
    with VideoReader(path, cache_bytes=5 * (160 * 96 * 3 + 160 * 96 * 3 // 2)) as r:
        for i in range(30):
            r.frame(i)
        assert len(r.cache) == 5
        assert r.cache.nbytes <= r.cache.max_bytes
        again = r.frame(29)
        assert r.cache.get(29) is again


def test_region_edit_leaves_other_pixels_bit_identical(tmp_path):
    path = make_video(tmp_path / "e.mp4", frames=3)
    with VideoReader(path) as r:
        f = r.frame(1)
        patch = np.full((20, 30, 3), (200, 30, 90), np.uint8)
        edited = f.with_region(40, 32, patch)
        y, u, v = f.planes
        ey, eu, ev = edited.planes
        mask = np.ones_like(y, bool)
        mask[32:52, 40:70] = False
        assert np.array_equal(y[mask], ey[mask])
        cmask = np.ones_like(u, bool)
        cmask[16:26, 20:35] = False
        assert np.array_equal(u[cmask], eu[cmask]) and np.array_equal(v[cmask], ev[cmask])
        got = edited.rgb()[32:52, 40:70].astype(int)
        assert np.abs(got - patch).max() <= 3  # one Y'CbCr round trip of a flat colour
        assert np.array_equal(edited.rgb()[:30], f.rgb()[:30])


def test_masked_region_edit_changes_only_masked_pixels(tmp_path):
    path = make_video(tmp_path / "m.mp4", frames=2)
    with VideoReader(path) as r:
        f = r.frame(0)
        patch = np.full((24, 24, 3), (10, 200, 40), np.uint8)
        mask = np.zeros((24, 24), np.float32)
        mask[6:18, 6:18] = 0.5  # a soft-edged mask: anything above 0 counts as edited
        edited = f.with_region(41, 31, patch, mask=mask)  # odd position: chroma hull grows
        y, ey = f.planes[0], edited.planes[0]
        changed = np.argwhere(y != ey)
        assert changed.size and changed[:, 0].min() >= 37 and changed[:, 0].max() < 49
        assert changed[:, 1].min() >= 47 and changed[:, 1].max() < 59
        cu = np.argwhere(f.planes[1] != edited.planes[1])
        # Chroma samples covering pixels 47..58 x 37..48 only.
        assert cu[:, 0].min() >= 37 // 2 and cu[:, 0].max() <= 48 // 2
        assert cu[:, 1].min() >= 47 // 2 and cu[:, 1].max() <= 58 // 2
        assert np.abs(edited.rgb()[40:46, 50:56].astype(int) - (10, 200, 40)).max() <= 4


def test_rgb_region_equals_the_full_conversion(tmp_path):
    path = make_video(tmp_path / "r.mp4", frames=2, size=(160, 96))
    with VideoReader(path) as r:
        full = r.frame(1).rgb().copy()
        r.cache.clear()
        fresh = r.frame(1)
        for box in [(0, 0, 160, 96), (41, 17, 99, 63), (150, 90, 160, 96), (1, 1, 2, 2)]:
            x0, y0, x1, y1 = box
            assert np.array_equal(fresh.rgb_region(*box), full[y0:y1, x0:x1]), box


def test_a_kept_part_of_a_frame_reads_as_the_whole_frame(tmp_path):
    # 720 lines, untagged: the whole picture converts with BT.709, so must a small part of it.
    path = make_video(tmp_path / "tall.mp4", frames=2, size=(64, 720))
    with VideoReader(path) as r:
        frame = r.frame(0)
        full = frame.rgb().copy()
        r.cache.clear()
        fresh = r.frame(0)
        asked = []

        def whole():
            asked.append(1)
            return fresh

        part = fresh.part(10, 300, 50, 380, whole)
        assert part.nbytes < fresh.nbytes / 4
        for box in [(10, 300, 50, 380), (21, 333, 37, 351)]:
            x0, y0, x1, y1 = box
            assert np.array_equal(part.rgb_region(*box), full[y0:y1, x0:x1]), box
        assert not asked
        x0, y0, x1, y1 = box = (0, 290, 30, 320)  # reaches past the part: the whole frame reads it
        assert np.array_equal(part.rgb_region(*box), full[y0:y1, x0:x1])
        assert asked
