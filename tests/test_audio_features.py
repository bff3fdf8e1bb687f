"""Wav2Lip log-mel, per-frame mel windows and the dub feature entry point.

The mel is checked against Wav2Lip's own code path run on librosa (with librosa 0.7's
``pad_mode='reflect'``) and, where librosa is absent, against a naive per-frame DFT.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf

from engine.audio import (
    MEL_STEPS, SILENCE, dub_features, features_from_samples, log_mel, mel_filterbank, mel_windows,
    window_starts,
)
from engine.errors import UsageError
from engine.media.audio import read_audio
from tests.conftest import shared_clip

SR = 16000
TOL = 1e-4


def wav2lip_mel(wav: np.ndarray) -> np.ndarray:
    """Wav2Lip's ``audio.melspectrogram`` with its hparams, on librosa."""
    librosa = pytest.importorskip("librosa")
    signal = pytest.importorskip("scipy.signal")
    y = signal.lfilter([1, -0.97], [1], wav)
    d = librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800, pad_mode="reflect")
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    s = np.dot(basis, np.abs(d))
    min_level = np.exp(-100 / 20 * np.log(10))
    s = 20 * np.log10(np.maximum(min_level, s)) - 20
    return np.clip(8 * ((s + 100) / 100) - 4, -4, 4)


def wav2lip_chunks(mel: np.ndarray, starts: list[int]) -> np.ndarray:
    return np.stack([mel[:, s : s + MEL_STEPS] for s in starts])


def slaney_filterbank_loop() -> np.ndarray:
    """The Slaney filterbank from its definition, one bin at a time (no librosa needed)."""

    def to_mel(f: float) -> float:
        return f / (200 / 3) if f < 1000 else 15 + math.log(f / 1000) / (math.log(6.4) / 27)

    def to_hz(m: float) -> float:
        return m * (200 / 3) if m < 15 else 1000 * math.exp((m - 15) * math.log(6.4) / 27)

    lo, hi = to_mel(55), to_mel(7600)
    edges = [to_hz(lo + (hi - lo) * i / 81) for i in range(82)]
    out = np.zeros((80, 401))
    for b in range(80):
        left, centre, right = edges[b], edges[b + 1], edges[b + 2]
        for k in range(401):
            f = k * 8000 / 400
            w = min((f - left) / (centre - left), (right - f) / (right - centre))
            out[b, k] = max(0.0, w) * 2 / (right - left)
    return out


def naive_mel(wav: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Wav2Lip's pipeline with an explicit reflect pad and a DFT per frame."""
    x = np.asarray(wav, np.float64)
    y = np.array([x[0]] + [x[i] - 0.97 * x[i - 1] for i in range(1, len(x))])
    n = len(y)

    def reflect(j: int) -> int:
        return -j if j < 0 else (2 * (n - 1) - j if j >= n else j)

    padded = np.array([y[reflect(j - 400)] for j in range(n + 800)])
    window = np.array([0.5 - 0.5 * math.cos(2 * math.pi * i / 800) for i in range(800)])
    dft = np.exp(-2j * np.pi * np.outer(np.arange(401), np.arange(800)) / 800)
    frames = [padded[t * 200 : t * 200 + 800] for t in range(1 + n // 200)]
    mag = np.stack([np.abs(dft @ (f * window)) for f in frames], axis=1)
    s = 20 * np.log10(np.maximum(1e-5, basis @ mag)) - 20
    return np.clip(8 * ((s + 100) / 100) - 4, -4, 4)


def tone(seconds: float, hz: float = 440.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * hz * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def clicks(seconds: float) -> np.ndarray:
    x = np.zeros(int(seconds * SR), np.float32)
    n = len(x)
    x[[0, n // 5 + 1, n // 2, n // 2 + 1, n - 1]] = [0.9, -0.7, 0.5, 0.5, 0.8]
    return x


def synthetic(name: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    return {
        "tone": tone(1.3),
        "silence": np.zeros(SR, np.float32),
        "clicks": clicks(1.0),
        "noise": (0.1 * rng.standard_normal(SR + 37)).astype(np.float32),
        "chirp_short": tone(0.07, 3000.0),  # 1120 samples: padding reaches across the signal
    }[name]


# -- mel ---------------------------------------------------------------------------------------


def test_filterbank_matches_definition_and_librosa() -> None:
    ours = mel_filterbank()
    assert ours.shape == (80, 401)
    assert np.abs(ours - slaney_filterbank_loop()).max() < 1e-9
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    assert np.abs(ours - ref).max() < 1e-8  # librosa's basis is float32


@pytest.mark.parametrize("name", ["tone", "silence", "clicks", "noise", "chirp_short"])
def test_mel_matches_wav2lip_on_synthetic(name: str) -> None:
    wav = synthetic(name)
    mel = log_mel(wav)
    assert mel.dtype == np.float32 and mel.shape == (80, 1 + len(wav) // 200)
    assert np.abs(mel - wav2lip_mel(wav)).max() < TOL


def test_mel_matches_naive_dft_without_librosa() -> None:
    wav = np.concatenate([clicks(0.1), tone(0.2, 1234.5, 0.3)])
    ref = naive_mel(wav, slaney_filterbank_loop())
    assert np.abs(log_mel(wav) - ref).max() < TOL


def test_silence_is_the_mel_floor() -> None:
    assert np.all(log_mel(np.zeros(4000, np.float32)) == SILENCE)
    assert log_mel(np.zeros((0, 1), np.float32)).shape == (80, 0)
    with pytest.raises(UsageError):
        log_mel(np.zeros((100, 2), np.float32))


@pytest.mark.parametrize(
    ("name", "fps"),
    [
        ("speech_radio31_16k.wav", Fraction(25)),
        ("speech_retalk1.wav", Fraction(30000, 1001)),  # 44.1 kHz source
        ("speech_retalk2.wav", Fraction(24000, 1001)),  # 48 kHz source
    ],
)
def test_mel_windows_match_wav2lip_on_real_speech(name: str, fps: Fraction) -> None:
    wav = read_audio(shared_clip(name), rate=SR, channels=1).samples[:, 0]
    ref = wav2lip_mel(wav)
    n = int(len(wav) / SR * fps)
    feats = features_from_samples(wav, np.arange(n) / float(fps))
    assert np.abs(feats.mel - ref).max() < TOL
    # Wav2Lip's chunking int(i * 80 / fps) (in exact arithmetic), for every window that fits.
    starts = [math.floor(i * 80 / fps) for i in range(n)]
    fits = [s for s in starts if s + MEL_STEPS <= ref.shape[1]]
    assert len(fits) >= len(starts) - 6
    assert np.abs(feats.windows[: len(fits)] - wav2lip_chunks(ref, fits)).max() < TOL


def test_dub_features_with_video_frame_times() -> None:
    from engine.media.reader import VideoReader

    clip = shared_clip("hdtf_aoc_512.mp4")
    times = VideoReader(clip).times
    feats = dub_features(clip, times)
    n = len(times)
    assert feats.windows.shape == (n, 80, 16) and feats.windows.dtype == np.float32
    assert feats.vad.shape == feats.speech_prob.shape == feats.envelope.shape == (n,)
    assert feats.vad.dtype == bool
    wav = read_audio(clip, rate=SR, channels=1).samples[:, 0]
    assert feats.duration == pytest.approx(len(wav) / SR)
    ref = wav2lip_mel(wav)
    starts = [(i * 16) // 5 for i in range(n)]  # 25 fps: int(i * 80 / 25) exactly
    fits = [s for s in starts if s + MEL_STEPS <= ref.shape[1]]
    assert np.abs(feats.windows[: len(fits)] - wav2lip_chunks(ref, fits)).max() < TOL
    assert 0.5 < feats.vad.mean() <= 1.0


def test_dub_features_from_a_file(tmp_path) -> None:
    wav = tone(1.0)
    path = tmp_path / "dub.wav"
    sf.write(path, wav, SR, subtype="FLOAT")
    times = np.arange(25) / 25
    feats = dub_features(path, times, offset_ms=40.0)
    direct = features_from_samples(wav, times, offset_ms=40.0)
    assert np.array_equal(feats.windows, direct.windows)
    assert np.array_equal(feats.vad, direct.vad)


# -- window placement --------------------------------------------------------------------------


def test_window_starts_at_25_and_2997_fps() -> None:
    i = np.arange(20000)
    assert np.array_equal(window_starts(i / 25), (i * 80) // 25)
    # NTSC: t = i * 1001 / 30000 exactly; floats must not slip a step below exact multiples.
    assert np.array_equal(window_starts(i * 1001 / 30000), (i * 80 * 1001) // 30000)


def test_window_starts_variable_frame_rate() -> None:
    rng = np.random.default_rng(3)
    pts = np.cumsum(rng.integers(1000, 7000, 3000))  # 90 kHz ticks: 11..78 ms frame durations
    pts[0] = 0
    pts = np.sort(pts)
    assert np.array_equal(window_starts(pts / 90000), (pts * 80) // 90000)


def test_windows_follow_timestamps_at_variable_frame_rate() -> None:
    rng = np.random.default_rng(5)
    mel = rng.uniform(-4, 4, (80, 400)).astype(np.float32)
    times = np.concatenate([[0.0], np.cumsum(rng.uniform(1 / 60, 1 / 12, 60))])
    windows = mel_windows(mel, times)
    for w, t in zip(windows, times):
        s = math.floor(t * 80 + 1e-6)
        assert np.array_equal(w, mel[:, s : s + 16])


def test_windows_past_the_end_are_padded_with_silence() -> None:
    mel = np.arange(80 * 40, dtype=np.float32).reshape(80, 40) / 1000
    windows = mel_windows(mel, np.array([0.3, 0.4, 0.45, 0.5, 10.0]))  # starts 24, 32, 36, 40, 800
    assert np.array_equal(windows[0], mel[:, 24:40])
    assert np.array_equal(windows[1][:, :8], mel[:, 32:40]) and np.all(windows[1][:, 8:] == SILENCE)
    assert np.array_equal(windows[2][:, :4], mel[:, 36:40]) and np.all(windows[2][:, 4:] == SILENCE)
    assert np.all(windows[3:] == SILENCE)


def test_audio_offset_shifts_windows_and_pads_before_the_start() -> None:
    mel = np.random.default_rng(1).uniform(-4, 4, (80, 200)).astype(np.float32)
    times = np.arange(40) / 25
    base = mel_windows(mel, times)
    delayed = mel_windows(mel, times, offset_ms=80.0)  # audio plays 2 frames (6.4 steps) later
    starts = window_starts(times, 80.0)
    assert starts[0] == -7 and starts[3] == 3  # (0.12 - 0.08) * 80 = 3.2
    assert np.all(delayed[0][:, :7] == SILENCE) and np.array_equal(delayed[0][:, 7:], mel[:, :9])
    # Whole-frame offsets move windows by whole frames.
    assert np.array_equal(mel_windows(mel, times, offset_ms=200.0)[10:], base[5:35])
    advanced = mel_windows(mel, times, offset_ms=-200.0)  # audio 5 frames earlier
    assert np.array_equal(advanced[:35], base[5:])
    with pytest.raises(UsageError):
        window_starts(np.array([0.0, np.nan]))
