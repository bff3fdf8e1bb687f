"""Log-mel spectrogram exactly as Wav2Lip computes it (its ``audio.py`` with ``hparams.py``).

Wav2Lip pins librosa 0.7.0, whose ``stft`` pads centred frames with ``pad_mode='reflect'`` (later
librosa versions default to zero padding, which changes the first and last frames), so this
module reflects too. The pipeline, on 16 kHz mono:

  pre-emphasis y[n] = x[n] - 0.97 x[n-1]  ->  |STFT| (n_fft 800, hop 200, periodic Hann 800)
  ->  80 Slaney mel bands, 55..7600 Hz, area-normalised  ->  20 log10(max(1e-5, m)) - 20 dB
  ->  clip(8 (S + 100) / 100 - 4, -4, 4)

giving float32 (80, T), T = 1 + samples // 200: 80 steps per second, step ``k`` centred at k/80 s.
Digital silence maps to exactly ``SILENCE`` (-4).
"""
from __future__ import annotations

import numpy as np

from engine.audio.stft import frame_count, stft_blocks
from engine.errors import UsageError

__all__ = [
    "MEL_BANDS", "MEL_FPS", "SAMPLE_RATE", "SILENCE",
    "log_mel", "mel_filterbank", "mono", "preemphasis",
]

SAMPLE_RATE = 16000
N_FFT = 800
HOP = 200
MEL_BANDS = 80
MEL_FPS = SAMPLE_RATE // HOP  # 80 mel steps per second
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS = 4.0
SILENCE = -MAX_ABS

# Slaney's mel scale (Auditory Toolbox): linear below 1 kHz, logarithmic above.
_MEL_LINEAR_HZ = 200.0 / 3.0
_MEL_BREAK_HZ = 1000.0
_MEL_BREAK = _MEL_BREAK_HZ / _MEL_LINEAR_HZ
_MEL_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    log_part = _MEL_BREAK + np.log(np.maximum(hz, _MEL_BREAK_HZ) / _MEL_BREAK_HZ) / _MEL_LOG_STEP
    return np.where(hz < _MEL_BREAK_HZ, hz / _MEL_LINEAR_HZ, log_part)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    log_part = _MEL_BREAK_HZ * np.exp(_MEL_LOG_STEP * (np.maximum(mel, _MEL_BREAK) - _MEL_BREAK))
    return np.where(mel < _MEL_BREAK, mel * _MEL_LINEAR_HZ, log_part)


def mel_filterbank(
    rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = MEL_BANDS,
    fmin: float = FMIN, fmax: float = FMAX,
) -> np.ndarray:
    """Triangular Slaney mel filters, (n_mels, n_fft // 2 + 1), each scaled to unit area per Hz.

    Band edges are equally spaced on the Slaney mel scale; each triangle rises from edge i to
    i + 1 and falls to i + 2, and is scaled by 2 / (its width in Hz) so wide bands are not louder.
    """
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    bins = np.linspace(0.0, rate / 2.0, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lo) / (mid - lo)
    falling = (hi - bins) / (hi - mid)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (hi - lo))


_FILTERBANK = mel_filterbank()


def preemphasis(samples: np.ndarray, k: float = PREEMPHASIS) -> np.ndarray:
    """y[n] = x[n] - k x[n-1] with x[-1] = 0 (scipy's ``lfilter([1, -k], [1], x)``), float64."""
    x = np.asarray(samples, dtype=np.float64)
    y = x.copy()
    y[1:] -= k * x[:-1]
    return y


def mono(samples: np.ndarray) -> np.ndarray:
    """``samples`` of shape (n,) or (n, 1) (``read_audio``'s layout) as a 1-D array."""
    x = np.asarray(samples)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1:
        raise UsageError(f"audio features need mono samples, shape (n,) or (n, 1); got {x.shape}")
    return x


def log_mel(samples: np.ndarray) -> np.ndarray:
    """Wav2Lip's normalised log-mel of 16 kHz mono ``samples`` ((n,) or (n, 1)): float32 (80, T)."""
    x = mono(samples)
    out = np.empty((frame_count(len(x), HOP), MEL_BANDS), np.float64)
    done = 0
    for spectra in stft_blocks(preemphasis(x), N_FFT, HOP, pad_mode="reflect"):
        out[done : done + len(spectra)] = np.abs(spectra) @ _FILTERBANK.T
        done += len(spectra)
    db = 20.0 * np.log10(np.maximum(10.0 ** (MIN_LEVEL_DB / 20.0), out)) - REF_LEVEL_DB
    norm = 2.0 * MAX_ABS * (db - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MAX_ABS
    return np.ascontiguousarray(np.clip(norm, -MAX_ABS, MAX_ABS).T, dtype=np.float32)
