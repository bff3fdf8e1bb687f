"""Short-time Fourier transform with centred frames, computed in bounded-memory blocks.

Frame ``k`` is centred on sample ``k * hop`` (the signal is padded by ``n_fft // 2`` on both
sides), so a track of ``n`` samples gives ``1 + n // hop`` frames, librosa's convention.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["frame_count", "periodic_hann", "stft_blocks"]

# Frames transformed per block: bounds memory for long tracks (10 min at hop 200 is 48k frames).
_BLOCK_FRAMES = 2048


def periodic_hann(n: int) -> np.ndarray:
    """Hann window of length ``n`` for spectral analysis (periodic: the DFT-even variant)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def frame_count(n_samples: int, hop: int) -> int:
    """Number of centred frames for a signal of ``n_samples`` (0 for an empty signal)."""
    return 1 + n_samples // hop if n_samples > 0 else 0


def stft_blocks(
    y: np.ndarray, n_fft: int, hop: int, *, pad_mode: str = "reflect"
) -> Iterator[np.ndarray]:
    """Complex spectra of Hann-windowed centred frames, as (frames, n_fft // 2 + 1) blocks in order.

    ``pad_mode`` is numpy's: "reflect" mirrors the signal about its ends without repeating the edge
    sample, "constant" pads with zeros.
    """
    y = np.asarray(y, dtype=np.float64)
    total = frame_count(len(y), hop)
    if not total:
        return
    padded = np.pad(y, n_fft // 2, mode=pad_mode)
    frames = sliding_window_view(padded, n_fft)[::hop]
    window = periodic_hann(n_fft)
    for first in range(0, total, _BLOCK_FRAMES):
        yield np.fft.rfft(frames[first : first + _BLOCK_FRAMES] * window, axis=1)
