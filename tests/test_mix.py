"""DubMix: the source passes through untouched, the dub lands where it should, edges are smooth."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from engine.errors import RedubError, UsageError
from engine.media.audio import read_audio
from engine.media.mix import DubMix
from tests.test_audio import SHARED_MEDIA, pcm16, write_av, write_video_only, write_wav

RATE = 48000
FADE = 480  # samples of the default 10 ms crossfade at 48 kHz


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_wav(tmp_path / "source.wav", pcm16(3 * RATE, 2, seed=1), RATE)


@pytest.fixture
def source_samples(source: Path) -> np.ndarray:
    return read_audio(source).samples


def click_track(
    tmp_path: Path, seconds: float, clicks: dict[float, float], rate: int = RATE, channels: int = 2
) -> Path:
    """Quiet noise with single-sample clicks {time_s: value}, float wav so values survive exactly."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((round(seconds * rate), channels)) * 0.01).astype(np.float32)
    for t, v in clicks.items():
        x[round(t * rate)] = v
    return write_wav(tmp_path / f"dub_{rate}_{channels}_{len(clicks)}.wav", x, rate, subtype="FLOAT")


def mix_all(mix: DubMix, frames: int, chunks: tuple[int, ...] = (4097, 333, 10_000)) -> np.ndarray:
    """Read ``frames`` frames in uneven chunks, as an exporter would."""
    parts, done, i = [], 0, 0
    while done < frames:
        n = min(chunks[i % len(chunks)], frames - done)
        parts.append(mix.read(n))
        done += n
        i += 1
    return np.concatenate(parts)


def test_ranges_replace_only_inside(tmp_path: Path, source: Path, source_samples: np.ndarray) -> None:
    dub = click_track(tmp_path, 2.5, {0.2: 0.9})
    dub_samples = read_audio(dub).samples
    with DubMix(source=source, dub=dub, dub_offset=1.0, ranges=[(1.0, 2.0)]) as mix:
        assert (mix.rate, mix.channels) == (RATE, 2)
        out = mix_all(mix, 3 * RATE)
    a, b = RATE, 2 * RATE
    half = FADE // 2 + 1
    assert np.array_equal(out[: a - half], source_samples[: a - half])
    assert np.array_equal(out[b + half :], source_samples[b + half :])
    assert np.array_equal(out[a + half : b - half], dub_samples[half : RATE - half])
    assert a + int(np.argmax(out[a:b, 0])) == round(1.2 * RATE)  # the dub's click, where it belongs


def test_crossfade_is_equal_power_and_smooth(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "s.wav", np.full((RATE, 1), 0.5, np.float32), RATE, subtype="FLOAT")
    dub = write_wav(tmp_path / "d.wav", np.full((RATE, 1), -0.5, np.float32), RATE, subtype="FLOAT")
    with DubMix(source=src, dub=dub, ranges=[(0.25, 0.75)]) as mix:
        out = mix.read(RATE)[:, 0]
    a = RATE // 4
    # Gains cos/sin of the fade angle: constant power, 0.5 / 0.5 weight at the edge itself.
    weight = np.clip((np.arange(a - FADE, a + FADE) + 0.5 - a) / FADE + 0.5, 0, 1) * math.pi / 2
    expected = 0.5 * np.cos(weight) - 0.5 * np.sin(weight)
    np.testing.assert_allclose(out[a - FADE : a + FADE], expected, atol=1e-6)
    assert np.abs(np.diff(out)).max() < 0.01  # no click: the step is spread over the fade
    assert out[a - FADE // 2 - 1] == 0.5 and out[a + FADE // 2] == -0.5


def test_hard_switch_without_crossfade(tmp_path: Path, source: Path, source_samples: np.ndarray) -> None:
    dub = click_track(tmp_path, 3.0, {})
    with DubMix(source=source, dub=dub, ranges=[(0.5, 1.0)], crossfade=0.0) as mix:
        out = mix.read(3 * RATE)
    dub_samples = read_audio(dub).samples
    a, b = RATE // 2, RATE
    assert np.array_equal(out[:a], source_samples[:a]) and np.array_equal(out[b:], source_samples[b:])
    assert np.array_equal(out[a:b], dub_samples[a:b])


def test_source_offsets(tmp_path: Path, source: Path, source_samples: np.ndarray) -> None:
    with DubMix(source=source, source_offset=0.5, dub=None) as mix:
        out = mix.read(3 * RATE)
    lead = RATE // 2
    assert not out[:lead].any()
    assert np.array_equal(out[lead:], source_samples[: 3 * RATE - lead])
    with DubMix(source=source, source_offset=-0.25, dub=None) as mix:
        out = mix.read(3 * RATE)
    skip = RATE // 4
    assert np.array_equal(out[: 3 * RATE - skip], source_samples[skip:])
    assert not out[3 * RATE - skip :].any()  # silence after the source ends


def test_dub_offsets_place_the_click(tmp_path: Path, source: Path) -> None:
    dub = click_track(tmp_path, 1.0, {0.5: 0.9})
    for offset, expected_t in ((-0.3, 0.2), (0.0, 0.5), (1.25, 1.75)):
        with DubMix(source=source, dub=dub, dub_offset=offset, mode="all") as mix:
            out = mix_all(mix, 3 * RATE)
        assert int(np.argmax(out[:, 0])) == round(expected_t * RATE)


def test_dub_shorter_than_range_leaves_silence(
    tmp_path: Path, source: Path, source_samples: np.ndarray
) -> None:
    dub = click_track(tmp_path, 0.5, {})  # ends at 1.5 s on the timeline; the range runs to 2.5 s
    with DubMix(source=source, dub=dub, dub_offset=1.0, ranges=[(1.0, 2.5)]) as mix:
        out = mix.read(3 * RATE)
    assert np.abs(out[RATE + FADE : int(1.5 * RATE)]).max() > 0
    assert not out[int(1.5 * RATE) : int(2.5 * RATE) - FADE].any()
    assert np.array_equal(out[int(2.5 * RATE) + FADE :], source_samples[int(2.5 * RATE) + FADE :])


def test_mode_all_and_overlapping_ranges(tmp_path: Path, source: Path) -> None:
    dub = click_track(tmp_path, 3.0, {})
    dub_samples = read_audio(dub).samples
    with DubMix(source=source, dub=dub, mode="all") as mix:
        assert np.array_equal(mix_all(mix, 3 * RATE), dub_samples)
    # Overlapping and touching ranges merge: no fade inside their union.
    with DubMix(source=source, dub=dub, ranges=[(1.0, 1.6), (0.5, 1.2), (1.6, 2.0)]) as mix:
        out = mix.read(3 * RATE)
    lo, hi = RATE // 2 + FADE, 2 * RATE - FADE
    assert np.array_equal(out[lo:hi], dub_samples[lo:hi])


def test_no_dub_passes_the_source_through(source: Path, source_samples: np.ndarray) -> None:
    for mode in ("ranges", "all"):
        with DubMix(source=source, dub=None, mode=mode, ranges=[(0.5, 1.0)]) as mix:
            assert np.array_equal(mix_all(mix, 3 * RATE), source_samples)


def test_video_only_source_gives_dub_only(tmp_path: Path) -> None:
    video = write_video_only(tmp_path / "v.mp4")
    dub = click_track(tmp_path, 1.0, {0.5: 0.9}, rate=16000, channels=1)
    with DubMix(source=video, dub=dub, ranges=[(0.0, 0.75)]) as mix:
        assert (mix.rate, mix.channels) == (16000, 1)
        out = mix.read(16000)
    assert int(np.argmax(out[:, 0])) == 8000
    assert not out[int(0.75 * 16000) + 80 :].any()  # outside the ranges: the (absent) source is silence


def test_mono_dub_into_stereo_source(tmp_path: Path, source: Path) -> None:
    dub = click_track(tmp_path, 3.0, {1.0: 0.9}, channels=1)
    with DubMix(source=source, dub=dub, mode="all") as mix:
        out = mix.read(3 * RATE)
    assert out.shape == (3 * RATE, 2)
    assert np.array_equal(out[:, 0], out[:, 1])
    assert np.array_equal(out[:, 0], read_audio(dub).samples[:, 0])


def test_dub_resampled_to_the_source_rate(tmp_path: Path, source: Path) -> None:
    dub = click_track(tmp_path, 2.0, {0.6: 0.9}, rate=16000, channels=1)
    with DubMix(source=source, dub=dub, dub_offset=0.3, ranges=[(0.5, 1.5)]) as mix:
        assert (mix.rate, mix.channels) == (RATE, 2)
        out = mix_all(mix, 3 * RATE)
    inside = out[RATE // 2 + FADE : int(1.5 * RATE) - FADE, 0]
    assert abs(RATE // 2 + FADE + int(np.argmax(inside)) - round(0.9 * RATE)) <= 1


def test_rate_and_channels_override(tmp_path: Path, source: Path) -> None:
    dub = click_track(tmp_path, 1.0, {0.5: 0.9})
    with DubMix(source=source, dub=dub, mode="all", rate=16000, channels=1) as mix:
        assert (mix.rate, mix.channels) == (16000, 1)
        out = mix.read(16000)
    assert abs(int(np.argmax(out[:, 0])) - 8000) <= 1


def test_validation(tmp_path: Path, source: Path) -> None:
    dub = click_track(tmp_path, 1.0, {})
    with pytest.raises(UsageError, match="unknown mix mode"):
        DubMix(source=source, dub=dub, mode="replace")
    with pytest.raises(UsageError, match="nothing to mix"):
        DubMix(source=None, dub=None)
    with pytest.raises(UsageError, match="end must be after the start"):
        DubMix(source=source, dub=dub, ranges=[(1.0, 1.0)])
    video = write_video_only(tmp_path / "v.mp4")
    with pytest.raises(RedubError, match="dub track has no audio") as exc:
        DubMix(source=source, dub=video)
    assert exc.value.path == str(video)
    with pytest.raises(RedubError, match="no audio stream and there is no dub"):
        DubMix(source=video, dub=None)


def test_source_from_a_video_container(tmp_path: Path) -> None:
    clip = write_av(tmp_path / "clip.mp4", np.zeros((RATE, 2), np.float32), RATE, video=True)
    dub = click_track(tmp_path, 1.0, {0.4: 0.9})
    with DubMix(source=clip, dub=dub, ranges=[(0.2, 0.8)]) as mix:
        out = mix.read(RATE)
    assert int(np.argmax(out[:, 0])) == round(0.4 * RATE)


@pytest.mark.skipif(not SHARED_MEDIA.is_dir(), reason="../shared/media not available")
def test_shared_cross_dub() -> None:
    clip = SHARED_MEDIA / "retalk_face2_844.mp4"
    dub = SHARED_MEDIA / "speech_radio31_16k.wav"
    source = read_audio(clip).samples
    with DubMix(source=clip, dub=dub, ranges=[(1.0, 3.0)]) as mix:
        assert (mix.rate, mix.channels) == (44100, 2)
        out = mix_all(mix, len(source))
    edge = 441  # past the crossfade
    assert np.array_equal(out[: 44100 - edge], source[: 44100 - edge])
    assert np.array_equal(out[3 * 44100 + edge :], source[3 * 44100 + edge :])
    inside = read_audio(dub, rate=44100, start=1.0, duration=1.0).samples
    np.testing.assert_allclose(out[44100 + 44100 // 2 : 2 * 44100], inside[44100 // 2 :], atol=1e-5)
