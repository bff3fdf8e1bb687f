"""Voice activity and a speech envelope, per 80 Hz audio step and per video frame.

Method (energy based, level independent):

1. Level: RMS of the 100-4000 Hz band (where voiced speech carries its energy; hum and hiss
   are left out) in 25 ms Hann frames every 12.5 ms, on the mel's 80 Hz grid, smoothed over
   ~40 ms, in dBFS.
2. Adaptive noise floor: the lower envelope of a ~110 ms average of the level, allowed to rise
   by at most ``FLOOR_RISE_DB_S`` per second away from any quiet moment, looking both ways in
   time (offline, so a track that opens with speech gets the floor of its first pause).
   Pauses pin it to the room noise; a steady sound (hum, a constant tone) becomes floor once
   the rise catches up with it; continuous speech cannot drag it up quickly.
3. Speech level: the upper envelope, falling by ``PEAK_FALL_DB_S`` per second. Sounds more
   than ``SPEECH_RANGE_DB`` below nearby speech (reverb tails, breaths in near-digital
   silence) are not speech even when far above the floor.
4. Hysteresis: speech opens above ``max(floor + OPEN_SNR_DB, peak - SPEECH_RANGE_DB,
   ABSOLUTE_GATE_DBFS)`` (nothing under -80 dBFS is audible in a dub) and closes
   ``HYSTERESIS_DB`` lower; then bursts shorter than ``MIN_SPEECH_S`` (clicks) are dropped
   and pauses shorter than ``MIN_SILENCE_S`` bridged (the mouth should not snap shut between
   words).

Energy alone cannot tell speech from every other sound: steady sound (hiss, hum, white noise,
held chords) becomes floor and is never speech, and its ``level_db`` (above ``SOUND_DBFS``)
tells it from silence; sound that starts and stops like syllables (struck chords, drums) does
read as speech.

The probability is a logistic of the level against the midpoint of the two thresholds; the
envelope is the level mapped to 0 (at the closing threshold) .. 1 (at the nearby speech peak),
for correlating with mouth openness.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.audio.mel import MEL_FPS, SAMPLE_RATE, mono
from engine.audio.stft import periodic_hann, stft_blocks
from engine.audio.windows import window_starts

__all__ = ["FrameActivity", "VoiceActivity", "detect_voice", "per_frame"]

HOP = SAMPLE_RATE // MEL_FPS  # 200 samples: same grid as the mel steps
N_FFT = 2 * HOP  # 25 ms analysis frames
BAND_HZ = (100.0, 4000.0)
SMOOTH_STEPS = 3  # ~40 ms: syllable-rate detail and edge timing survive, jitter does not
# ~110 ms: only real pauses, not the brief closures inside words, are evidence of the noise level.
FLOOR_SMOOTH_STEPS = 9
SILENT_DBFS = -100.0
FLOOR_RISE_DB_S = 6.0
PEAK_FALL_DB_S = 6.0
SPEECH_RANGE_DB = 32.0
OPEN_SNR_DB = 12.0
HYSTERESIS_DB = 6.0
ABSOLUTE_GATE_DBFS = -80.0
PROB_SLOPE_DB = 1.5
MIN_SILENCE_S = 0.2
MIN_SPEECH_S = 0.1
# Louder than this (band RMS), a track without speech holds sound (music, noise), not silence
# or room tone.
SOUND_DBFS = -50.0


@dataclass(frozen=True)
class VoiceActivity:
    """Per 80 Hz step of a track (step k centred at k / 80 s); all arrays (T,)."""

    speech: np.ndarray  # bool: speech after hysteresis and minimum durations
    prob: np.ndarray  # float32 0..1: continuous speech likelihood
    envelope: np.ndarray  # float32 0..1: loudness between closing threshold and nearby peak
    level_db: np.ndarray  # float32: smoothed band RMS, dBFS
    floor_db: np.ndarray  # float32: adaptive noise floor, dBFS


@dataclass(frozen=True)
class FrameActivity:
    """Voice activity per video frame; all arrays (N,)."""

    speech: np.ndarray  # bool
    prob: np.ndarray  # float32 0..1
    envelope: np.ndarray  # float32 0..1
    level_db: np.ndarray  # float32: mean band level, dBFS (above SOUND_DBFS: sound, not silence)


def _band_power(samples: np.ndarray) -> np.ndarray:
    """Mean square of the speech band per step (a full-scale in-band sine gives 0.5)."""
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    band = (freqs >= BAND_HZ[0]) & (freqs <= BAND_HZ[1])
    # Parseval: one-sided bins count twice; dividing by N * sum(w^2) gives the mean square.
    scale = 2.0 / (N_FFT * np.sum(periodic_hann(N_FFT) ** 2))
    blocks = [
        np.sum(np.abs(s[:, band]) ** 2, axis=1) * scale
        for s in stft_blocks(samples, N_FFT, HOP, pad_mode="constant")
    ]
    return np.concatenate(blocks) if blocks else np.zeros(0)


def _smoothed_db(power: np.ndarray, steps: int) -> np.ndarray:
    """Zero-phase Hann average of ``power`` over ``steps`` (odd) steps, in dB."""
    if len(power):
        kernel = np.hanning(steps + 2)[1:-1]
        # The centre of the full convolution, so levels stay on their own steps.
        power = np.convolve(power, kernel / kernel.sum())[steps // 2 :][: len(power)]
    return 10.0 * np.log10(np.maximum(power, 10.0 ** (SILENT_DBFS / 10.0)))


def _slope_envelope(level: np.ndarray, slope: float, lower: bool) -> np.ndarray:
    """Lower envelope min_s(level[s] + slope |t - s|), or upper max_s(level[s] - slope |t - s|)."""
    sign = 1.0 if lower else -1.0
    ramp = sign * slope * np.arange(len(level))
    acc = np.minimum.accumulate if lower else np.maximum.accumulate
    forward = acc(level - ramp) + ramp
    backward = (acc((level + ramp)[::-1]) - ramp[::-1])[::-1]
    return np.minimum(forward, backward) if lower else np.maximum(forward, backward)


def _hysteresis(level: np.ndarray, open_at: np.ndarray, close_at: np.ndarray) -> np.ndarray:
    """Speech starts above ``open_at`` and lasts until below ``close_at``: no flicker."""
    speech = np.zeros(len(level), bool)
    on = False
    for i, (x, hi, lo) in enumerate(zip(level.tolist(), open_at.tolist(), close_at.tolist())):
        on = x > hi or (on and x > lo)
        speech[i] = on
    return speech


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start, end (exclusive) and value of each run of equal values."""
    change = np.flatnonzero(np.diff(mask.astype(np.int8))) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(mask)]])
    return starts, ends, mask[starts]


def _min_durations(speech: np.ndarray) -> np.ndarray:
    """Drop bursts shorter than MIN_SPEECH_S, then bridge pauses shorter than MIN_SILENCE_S.

    Dropping first keeps a click in a pause from splitting it into two short, bridged halves.
    Leading and trailing silence is never bridged: it is real rest.
    """
    out = speech.copy()
    if not len(out):
        return out
    starts, ends, values = _runs(out)
    for s, e, v in zip(starts, ends, values):
        if v and e - s < MIN_SPEECH_S * MEL_FPS:
            out[s:e] = False
    starts, ends, values = _runs(out)
    for s, e, v in zip(starts, ends, values):
        if not v and s > 0 and e < len(out) and e - s < MIN_SILENCE_S * MEL_FPS:
            out[s:e] = True
    return out


def detect_voice(samples: np.ndarray) -> VoiceActivity:
    """Voice activity of 16 kHz mono ``samples`` ((n,) or (n, 1)) on the mel's 80 Hz grid."""
    power = _band_power(mono(samples))
    level = _smoothed_db(power, SMOOTH_STEPS)
    floor_level = _smoothed_db(power, FLOOR_SMOOTH_STEPS)
    floor = _slope_envelope(floor_level, FLOOR_RISE_DB_S / MEL_FPS, lower=True)
    peak = _slope_envelope(level, PEAK_FALL_DB_S / MEL_FPS, lower=False)
    open_at = np.maximum.reduce([floor + OPEN_SNR_DB, peak - SPEECH_RANGE_DB,
                                 np.full_like(level, ABSOLUTE_GATE_DBFS)])
    close_at = open_at - HYSTERESIS_DB
    speech = _min_durations(_hysteresis(level, open_at, close_at))
    mid = open_at - HYSTERESIS_DB / 2.0
    prob = 1.0 / (1.0 + np.exp(-(level - mid) / PROB_SLOPE_DB))
    span = np.maximum(peak - close_at, HYSTERESIS_DB)
    envelope = np.clip((level - close_at) / span, 0.0, 1.0)
    f32 = np.float32
    return VoiceActivity(speech=speech, prob=prob.astype(f32), envelope=envelope.astype(f32),
                         level_db=level.astype(f32), floor_db=floor.astype(f32))


def per_frame(
    activity: VoiceActivity, times: np.ndarray, *, offset_ms: float = 0.0
) -> FrameActivity:
    """Average ``activity`` over each video frame's span [t_i, t_i+1) of audio steps.

    The last frame spans as many steps as the one before it. Time outside the track counts as
    silence. ``offset_ms`` delays the audio as in :func:`engine.audio.windows.window_starts`.
    """
    starts = window_starts(times, offset_ms)
    n = len(starts)
    if n == 0:
        empty = np.zeros(0, np.float32)
        return FrameActivity(np.zeros(0, bool), empty, empty, empty)
    last_span = starts[-1] - starts[-2] if n > 1 else 1
    ends = np.maximum(np.append(starts[1:], starts[-1] + last_span), starts + 1)
    steps = len(activity.speech)

    def mean(values: np.ndarray) -> np.ndarray:
        total = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
        inside = total[np.clip(ends, 0, steps)] - total[np.clip(starts, 0, steps)]
        return inside / (ends - starts)

    return FrameActivity(
        speech=mean(activity.speech) >= 0.5,
        prob=mean(activity.prob).astype(np.float32),
        envelope=mean(activity.envelope).astype(np.float32),
        # Shifted so that time outside the track reads as silence here too.
        level_db=(mean(activity.level_db - SILENT_DBFS) + SILENT_DBFS).astype(np.float32),
    )
