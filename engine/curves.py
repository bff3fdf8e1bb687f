"""Keyframe curves: one value per frame from a few keyed frames (openness gain, audio offset).

Between keys a curve follows a monotone cubic (Fritsch-Carlson): it passes through every key,
its slope is continuous, and it never overshoots, so a gain keyed from 1.0 to 1.4 stays between
them. Before the first key and after the last the nearest key holds. A curve without keys
reads as the range's own setting.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.errors import UsageError


@dataclass
class Curve:
    keys: dict[int, float] = field(default_factory=dict)  # frame index -> value

    def __post_init__(self) -> None:
        self.keys = {int(f): float(v) for f, v in self.keys.items()}
        if not all(np.isfinite(v) for v in self.keys.values()):
            raise UsageError("curve keys must be finite numbers")

    def values(self, frames: np.ndarray, default: float) -> np.ndarray:
        """The curve at ``frames`` (float64 array); ``default`` everywhere without keys."""
        at = np.asarray(frames, dtype=np.float64)
        if not self.keys:
            return np.full(at.shape, float(default))
        xs = np.array(sorted(self.keys), dtype=np.float64)
        ys = np.array([self.keys[int(x)] for x in xs])
        if len(xs) == 1:
            return np.full(at.shape, ys[0])
        h = np.diff(xs)
        delta = np.diff(ys) / h
        slopes = _slopes(h, delta)
        i = np.clip(np.searchsorted(xs, at, side="right") - 1, 0, len(xs) - 2)
        t = np.clip((at - xs[i]) / h[i], 0.0, 1.0)  # clipped: the end keys hold outside
        t2, t3 = t * t, t * t * t
        return ((2 * t3 - 3 * t2 + 1) * ys[i] + (t3 - 2 * t2 + t) * h[i] * slopes[i]
                + (-2 * t3 + 3 * t2) * ys[i + 1] + (t3 - t2) * h[i] * slopes[i + 1])

    def value_at(self, frame: int, default: float) -> float:
        return float(self.values(np.array([frame]), default)[0])

    def to_dict(self) -> dict[str, float]:
        return {str(f): v for f, v in sorted(self.keys.items())}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Curve:
        return cls({int(f): float(v) for f, v in data.items()})


@dataclass
class MotionCurves:
    """Per-frame refinements of the generated motion, over the clip's frames."""

    openness_gain: Curve = field(default_factory=Curve)  # multiplies how far the mouth opens
    audio_offset_ms: Curve = field(default_factory=Curve)  # positive: the mouth follows later

    NAMES = ("openness_gain", "audio_offset_ms")

    def curve(self, name: str) -> Curve:
        if name not in self.NAMES:
            raise UsageError(f"unknown curve {name!r} ({', '.join(self.NAMES)})")
        return getattr(self, name)

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {name: self.curve(name).to_dict() for name in self.NAMES}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MotionCurves:
        return cls(**{name: Curve.from_dict(data.get(name, {})) for name in cls.NAMES})


def _slopes(h: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson tangents at the keys: zero at a local extreme, so no overshoot."""
    n = len(delta) + 1
    d = np.zeros(n)
    if n == 2:
        d[:] = delta[0]
        return d
    w1, w2 = 2 * h[1:] + h[:-1], h[1:] + 2 * h[:-1]
    same = delta[:-1] * delta[1:] > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        harmonic = (w1 + w2) / (w1 / delta[:-1] + w2 / delta[1:])
    d[1:-1] = np.where(same, harmonic, 0.0)
    d[0] = _end_slope(h[0], h[1], delta[0], delta[1])
    d[-1] = _end_slope(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _end_slope(h0: float, h1: float, d0: float, d1: float) -> float:
    """One-sided three-point tangent at an end key, kept shape-preserving."""
    slope = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
    if np.sign(slope) != np.sign(d0):
        return 0.0
    if np.sign(d0) != np.sign(d1) and abs(slope) > 3 * abs(d0):
        return 3 * d0
    return slope
