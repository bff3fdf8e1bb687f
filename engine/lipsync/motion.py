"""This speaker's audio-to-mouth-shape mapping, learned from the footage's own sound.

Features per video frame are the log-mel energy of a few broad bands around the frame (a short
context on either side, since lips move ahead of and behind the sound they make), the voice
activity, and last the loudness envelope (broad-band log-mel smoothed over 150 ms). Each track's
features are normalised by that track's own statistics, so a dub recorded at another level or by
another voice lands in the same range. A ridge regression maps them to the PCA coordinates of
the shape code. Openness, the component that matters most, follows the envelope alone with a
slope that cannot be negative: the mouth opens with loudness for every speaker, and a clip's few
seconds of training footage are too little to learn more without over-fitting (a free fit of the
openness on held-out halves of the shared clips scored a mean correlation of 0.13, the envelope
0.25). The prediction is smoothed in time and pulled to the resting mouth where there is no
speech.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.audio import AudioFeatures

BANDS = (0, 20, 40, 60, 80)  # mel band groups: low, low-mid, high-mid, high
LAGS = (-2, -1, 0, 1, 2)  # video frames of context
MIN_TRAIN_SECONDS = 2.0
# Of the clip's own speech in the training footage. Without it (a silent take, B-roll, stripped
# audio, room tone) there is nothing to learn: on silence's constant features the fit scaled the
# dub's by 1e6 and slammed the mouth between shut and wide open.
MIN_SPEECH_SECONDS = 1.0
ENVELOPE_STEPS = 12  # mel steps (12.5 ms each) the loudness envelope averages over
ENVELOPE_LAG = 2  # mel steps: the envelope is read slightly after the frame, as lips lead sound


@dataclass(frozen=True)
class MotionSettings:
    openness_gain: float | np.ndarray = 1.0  # scales openness around the resting mouth (per frame)
    ridge: float = 100.0
    smooth_frames: float = 1.0  # Gaussian sigma of the temporal smoothing, in frames
    silence_pull: float = 1.0  # 1: silent frames take the resting mouth fully


def audio_features(features: AudioFeatures, times: np.ndarray) -> np.ndarray:
    """(N, F) regression inputs for frames at ``times``, normalised within the track."""
    mel = features.mel
    steps = mel.shape[1]
    starts = np.clip(np.round(np.asarray(times) * 80).astype(int) - 2, 0, max(steps - 4, 0))
    band = np.stack([mel[a:b].mean(0) for a, b in zip(BANDS[:-1], BANDS[1:])])  # (4, T)
    per_frame = np.stack([band[:, s : s + 4].mean(1) for s in starts])  # (N, 4)
    speech = features.vad.astype(bool)
    ref = per_frame[speech] if speech.sum() >= 5 else per_frame
    normed = (per_frame - ref.mean(0)) / (ref.std(0) + 1e-3)
    n = len(normed)
    context = [normed[np.clip(np.arange(n) + lag, 0, n - 1)] for lag in LAGS]
    return np.column_stack(context + [features.speech_prob, _envelope(mel, times, speech)])


def _envelope(mel: np.ndarray, times: np.ndarray, speech: np.ndarray) -> np.ndarray:
    """Broad-band loudness per frame, smoothed, normalised over the track's speech."""
    level = mel.mean(0)
    kernel = np.ones(ENVELOPE_STEPS) / ENVELOPE_STEPS
    padded = np.pad(level, ENVELOPE_STEPS, mode="edge")
    smooth = np.convolve(padded, kernel, mode="same")[ENVELOPE_STEPS:-ENVELOPE_STEPS]
    at = np.clip(np.round(np.asarray(times) * 80).astype(int) + ENVELOPE_LAG, 0, len(level) - 1)
    env = smooth[at]
    ref = env[speech] if speech.sum() >= 5 else env
    return (env - ref.mean()) / (ref.std() + 1e-3)


@dataclass(frozen=True)
class MotionModel:
    weights: np.ndarray  # (F, D)
    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: np.ndarray  # (D,)
    rest: np.ndarray  # (D,) shape code of the closed, resting mouth
    generic: bool  # True: the speaker-independent fallback (too little footage)

    @staticmethod
    def fit(x: np.ndarray, codes: np.ndarray,
            settings: MotionSettings = MotionSettings()) -> MotionModel:
        """Learn from training frames: features ``x`` (N, F) and measured shape codes (N, D).

        Needs at least ``MIN_TRAIN_SECONDS`` of footage to generalise; with less, use
        :meth:`generic_for`.
        """
        rest = _rest_shape(codes)
        mu, sd = x.mean(0), x.std(0) + 1e-6
        xn = (x - mu) / sd
        y_mean = codes.mean(0)
        gram = xn.T @ xn + settings.ridge * np.eye(x.shape[1])
        weights = np.linalg.solve(gram, xn.T @ (codes - y_mean))
        # Openness from the envelope alone (the last feature), with this speaker's own range of
        # openness: a least-squares slope would shrink the motion by the (weak) correlation and
        # leave a mumbling mouth.
        weights[:, 0] = 0.0
        weights[-1, 0] = codes[:, 0].std()
        return MotionModel(weights, mu, sd, y_mean, rest, generic=False)

    @staticmethod
    def generic_for(codes: np.ndarray, n_features: int) -> MotionModel:
        """Openness follows loudness and speech; the other components stay at rest."""
        rest = _rest_shape(codes)
        d = codes.shape[1]
        weights = np.zeros((n_features, d))
        # A typical open vowel opens the mouth about 0.15 inter-ocular distances beyond rest.
        span = max(float(np.percentile(codes[:, 0], 95) - rest[0]), 0.08) if len(codes) else 0.12
        centre = LAGS.index(0) * (len(BANDS) - 1)
        weights[centre : centre + len(BANDS) - 1, 0] = span / 8  # broad-band loudness
        weights[-2, 0] = span / 2  # speech probability
        weights[-1, 0] = span / 4  # smoothed loudness
        y_mean = rest.copy()
        y_mean[0] += span / 3
        return MotionModel(weights, np.zeros(n_features), np.ones(n_features), y_mean, rest,
                           generic=True)

    def predict(self, x: np.ndarray, speech: np.ndarray,
                settings: MotionSettings = MotionSettings()) -> np.ndarray:
        """Shape codes (N, D) for dub features ``x`` (N, F) with voice activity ``speech``."""
        codes = ((x - self.x_mean) / self.x_scale) @ self.weights + self.y_mean
        codes = _gaussian_smooth(codes, settings.smooth_frames)
        # Silence: the resting mouth, eased in and out so the lips do not snap shut.
        pull = _gaussian_smooth((~speech.astype(bool)).astype(float)[:, None] * settings.silence_pull,
                                1.5)[:, 0]
        codes = codes * (1 - pull[:, None]) + self.rest * pull[:, None]
        codes[:, 0] = self.rest[0] + settings.openness_gain * (codes[:, 0] - self.rest[0])
        codes[:, 0] = np.maximum(codes[:, 0], 0.0)
        return codes


def _rest_shape(codes: np.ndarray) -> np.ndarray:
    """Mean code of the most closed frames: this speaker's resting mouth."""
    if len(codes) == 0:
        return np.zeros(codes.shape[1])
    closed = codes[:, 0] <= np.percentile(codes[:, 0], 15)
    return codes[closed].mean(0)


def _gaussian_smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0 or len(values) < 2:
        return values
    radius = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(values, ((radius, radius), (0, 0)), mode="edge")
    return np.stack([np.convolve(padded[:, j], k, mode="valid") for j in range(values.shape[1])], 1)
