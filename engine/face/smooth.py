"""Jitter removal without lag: the One-Euro filter, run forwards and backwards.

The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) is a low-pass filter whose cutoff
rises with speed: still stretches are smoothed hard, fast moves pass nearly untouched. Run in
one direction it still trails a moving signal a little; analysis is offline, so the filter also
runs backwards in time (where it leads by the same amount) and the two runs are averaged. At
constant speed their errors cancel exactly, so a steadily moving head is followed without lag.
"""
from __future__ import annotations

import numpy as np


def _alpha(cutoff: np.ndarray | float, rate: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * np.pi * cutoff)
    return 1.0 / (1.0 + tau * rate)


def one_euro(x: np.ndarray, rate: float, min_cutoff: float, beta: float,
             d_cutoff: float = 1.0) -> np.ndarray:
    """Causal One-Euro filter over axis 0 of ``x`` (T, G, C).

    Each group of C channels (a point's x and y, say) shares one cutoff, driven by the norm of
    its velocity, so the filter treats every direction of motion alike. ``rate`` is samples
    per second; cutoffs are in Hz; ``beta`` is the cutoff's rise in Hz per unit/s of speed.
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    if not len(x):
        return out
    a_d = _alpha(d_cutoff, rate)
    prev = x[0].copy()
    speed = np.zeros(x.shape[1:-1] + (1,))
    out[0] = prev
    for t in range(1, len(x)):
        velocity = np.linalg.norm(x[t] - prev, axis=-1, keepdims=True) * rate
        speed += a_d * (velocity - speed)
        a = _alpha(min_cutoff + beta * speed, rate)
        prev = prev + a * (x[t] - prev)
        out[t] = prev
    return out


def smooth(x: np.ndarray, rate: float, min_cutoff: float, beta: float,
           d_cutoff: float = 1.0) -> np.ndarray:
    """Zero-lag One-Euro smoothing of ``x`` (T, G, C): the mean of a forward and a backward run."""
    forward = one_euro(x, rate, min_cutoff, beta, d_cutoff)
    backward = one_euro(x[::-1], rate, min_cutoff, beta, d_cutoff)[::-1]
    return (forward + backward) / 2
