"""Peak pyramid: exact min/max reduction, spike survival, streaming build and the disk cache."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from engine.errors import Cancelled, RedubError, UsageError
from engine.media.audio import AudioStream, read_audio
from engine.media.peaks import PeakPyramid, cached_peaks
from engine.progress import CancelToken
from tests.test_audio import SHARED_MEDIA, pcm16, write_wav

RATE = 8000
N = 1_000_003  # not a multiple of any bucket size: every level ends with a partial bucket
SPIKE_HI, SPIKE_LO = 123_457, 876_543


@pytest.fixture(scope="module")
def signal() -> np.ndarray:
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(N) * 0.01).astype(np.float32)
    x[SPIKE_HI] = 0.9
    x[SPIKE_LO] = -0.8
    return x


@pytest.fixture(scope="module")
def pyramid(signal: np.ndarray) -> PeakPyramid:
    return PeakPyramid.from_samples(signal, RATE)


def brute_force(
    pyr: PeakPyramid, x: np.ndarray, start_s: float, end_s: float, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Min/max over the samples of every bucket each pixel overlaps, at the level query must pick."""
    per_pixel = (end_s - start_s) * pyr.rate / width
    level = 0
    while level + 1 < len(pyr.levels) and pyr.bucket_size(level + 1) <= per_pixel:
        level += 1
    size = pyr.bucket_size(level)
    lo = np.zeros(width, np.float32)
    hi = np.zeros(width, np.float32)
    for i in range(width):
        a = start_s * pyr.rate + i * per_pixel
        b = start_s * pyr.rate + (i + 1) * per_pixel
        first = max(int(np.floor(a / size)), 0) * size
        stop = max(int(np.ceil(b / size)), 0) * size
        span = x[first:stop]
        if len(span):
            lo[i], hi[i] = span.min(), span.max()
    return lo, hi


def test_levels_are_exact_and_keep_a_single_sample_spike(pyramid: PeakPyramid, signal: np.ndarray) -> None:
    assert pyramid.frames == N and pyramid.duration == pytest.approx(N / RATE)
    assert len(pyramid.levels[-1][0]) == 1
    for k, (lo, hi) in enumerate(pyramid.levels):
        size = pyramid.bucket_size(k)
        assert size == 256 * 4**k
        assert len(lo) == len(hi) == -(-N // size)
        assert lo.dtype == hi.dtype == np.float32
        assert hi[SPIKE_HI // size] == np.float32(0.9) and hi.max() == np.float32(0.9)
        assert lo[SPIKE_LO // size] == np.float32(-0.8) and lo.min() == np.float32(-0.8)
        if k < 3:  # brute force on the finer levels (the coarser ones reduce from these)
            tail = np.full(len(lo) * size - N, np.nan, np.float32)
            padded = np.concatenate([signal, tail]).reshape(-1, size)
            assert np.array_equal(lo, np.nanmin(padded, axis=1))
            assert np.array_equal(hi, np.nanmax(padded, axis=1))


@pytest.mark.parametrize("width", [1, 2, 7, 100, 333, 1000, 4096, 20000])
def test_spike_survives_every_width(pyramid: PeakPyramid, width: int) -> None:
    lo, hi = pyramid.query(0.0, pyramid.duration, width)
    assert lo.shape == hi.shape == (width,)
    assert hi.max() == np.float32(0.9) and lo.min() == np.float32(-0.8)
    # Zoomed so that the spike sits between pixel edges: still visible in exactly the pixel(s) around it.
    t = SPIKE_HI / RATE
    lo, hi = pyramid.query(t - 0.37, t + 0.91, width)
    assert hi.max() == np.float32(0.9)


@pytest.mark.parametrize(
    ("start_s", "end_s", "width"),
    [
        (0.0, N / RATE, 800),
        (3.3, 97.1, 613),
        (10.0, 10.5, 1000),
        (15.4321, 15.4329, 50),
        (-2.0, 3.0, 300),
        (120.0, 130.0, 64),
    ],
)
def test_query_matches_brute_force(
    pyramid: PeakPyramid, signal: np.ndarray, start_s: float, end_s: float, width: int
) -> None:
    lo, hi = pyramid.query(start_s, end_s, width)
    ref_lo, ref_hi = brute_force(pyramid, signal, start_s, end_s, width)
    assert np.array_equal(lo, ref_lo) and np.array_equal(hi, ref_hi)
    # Never narrower than the exact samples under each pixel.
    edges = start_s * RATE + (end_s - start_s) * RATE / width * np.arange(width + 1)
    for i in range(0, width, max(1, width // 37)):
        span = signal[max(int(np.ceil(edges[i])), 0) : max(int(np.ceil(edges[i + 1])), 0)]
        if len(span):
            assert lo[i] <= span.min() and hi[i] >= span.max()


def test_finer_than_base_repeats_level0_buckets(pyramid: PeakPyramid) -> None:
    # 64 pixels over one 256-sample bucket: every pixel shows that bucket's extremes.
    lo, hi = pyramid.query(256 / RATE, 512 / RATE, 64)
    assert np.all(lo == pyramid.levels[0][0][1]) and np.all(hi == pyramid.levels[0][1][1])


def test_outside_the_audio_is_silence(pyramid: PeakPyramid) -> None:
    lo, hi = pyramid.query(-10.0, -1.0, 10)
    assert not lo.any() and not hi.any()
    lo, hi = pyramid.query(pyramid.duration - 1.0, pyramid.duration + 1.0, 20)
    assert hi[:10].max() > 0 and not hi[11:].any() and not lo[11:].any()


def test_query_rejects_bad_arguments(pyramid: PeakPyramid) -> None:
    with pytest.raises(UsageError):
        pyramid.query(0.0, 1.0, 0)
    with pytest.raises(UsageError):
        pyramid.query(1.0, 1.0, 10)


def test_streaming_build_equals_in_memory(tmp_path: Path) -> None:
    data = pcm16(300_001, 2)
    path = write_wav(tmp_path / "a.wav", data, RATE)
    mono = read_audio(path, channels=1).samples[:, 0]
    reports: list[tuple[str, int, int]] = []
    built = PeakPyramid.build(path, chunk=5000, progress=lambda s, d, t: reports.append((s, d, t)))
    ref = PeakPyramid.from_samples(mono, RATE)
    assert built.frames == ref.frames == 300_001 and built.rate == RATE
    assert len(built.levels) == len(ref.levels)
    for (a_lo, a_hi), (b_lo, b_hi) in zip(built.levels, ref.levels):
        assert np.array_equal(a_lo, b_lo) and np.array_equal(a_hi, b_hi)
    assert reports[-1] == ("peaks", 300_001, 300_001)
    # An open stream works too (channels averaged here rather than by the reader).
    with AudioStream(path) as stream:
        from_stream = PeakPyramid.build(stream, chunk=1 << 16)
    np.testing.assert_allclose(from_stream.levels[0][1], ref.levels[0][1], atol=1e-7)


def test_build_can_be_cancelled(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "a.wav", pcm16(50_000, 1), RATE)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        PeakPyramid.build(path, cancel=token)


def test_empty_audio(tmp_path: Path) -> None:
    pyr = PeakPyramid.from_samples(np.zeros((0, 1), np.float32), RATE)
    assert pyr.frames == 0
    lo, hi = pyr.query(0.0, 1.0, 5)
    assert not lo.any() and not hi.any()


def test_save_load_roundtrip(tmp_path: Path, pyramid: PeakPyramid) -> None:
    pyramid.save(tmp_path / "p.npz")
    back = PeakPyramid.load(tmp_path / "p.npz")
    assert (back.rate, back.frames, back.base, back.factor) == (RATE, N, 256, 4)
    for (a_lo, a_hi), (b_lo, b_hi) in zip(back.levels, pyramid.levels):
        assert np.array_equal(a_lo, b_lo) and np.array_equal(a_hi, b_hi)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(RedubError, match="not a readable peak file"):
        PeakPyramid.load(tmp_path / "bad.npz")


def test_cached_peaks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDUB_CACHE_DIR", str(tmp_path / "cache"))
    path = write_wav(tmp_path / "a.wav", pcm16(20_000, 1), RATE)
    first = cached_peaks(path)
    entries = list((tmp_path / "cache" / "peaks").iterdir())
    assert len(entries) == 1 and entries[0].suffix == ".npz"

    def no_build(*args: object, **kwargs: object) -> PeakPyramid:
        raise AssertionError("should have come from the cache")

    with monkeypatch.context() as m:
        m.setattr(PeakPyramid, "build", no_build)
        again = cached_peaks(path)
    assert np.array_equal(again.levels[0][1], first.levels[0][1])

    # Another setting is another entry; an edited file is rebuilt.
    cached_peaks(path, base=64)
    assert len(list((tmp_path / "cache" / "peaks").iterdir())) == 2
    write_wav(path, pcm16(30_000, 1, seed=9), RATE)
    os.utime(path, ns=(1, 1))
    assert cached_peaks(path).frames == 30_000

    # A damaged entry is rebuilt, not reported.
    for entry in (tmp_path / "cache" / "peaks").iterdir():
        entry.write_bytes(b"garbage")
    assert cached_peaks(path).frames == 30_000
    assert not [p for p in (tmp_path / "cache" / "peaks").iterdir() if p.suffix != ".npz"]

    with pytest.raises(RedubError, match="file not found"):
        cached_peaks(tmp_path / "missing.wav")


@pytest.mark.skipif(not SHARED_MEDIA.is_dir(), reason="../shared/media not available")
def test_shared_long_speech() -> None:
    path = SHARED_MEDIA / "speech_eng_long.wav"
    pyr = PeakPyramid.build(path)
    mono = read_audio(path, channels=1).samples[:, 0]
    assert pyr.frames == len(mono)
    lo, hi = pyr.query(0.0, pyr.duration, 1200)
    ref_lo, ref_hi = brute_force(pyr, mono, 0.0, pyr.duration, 1200)
    assert np.array_equal(lo, ref_lo) and np.array_equal(hi, ref_hi)
    assert hi.max() == mono.max() and lo.min() == mono.min()
