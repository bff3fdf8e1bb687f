"""Per-video-frame mel windows: the 16-step (200 ms) slice each lip-sync network frame sees.

Wav2Lip feeds frame ``i`` the mel steps ``int(i * 80 / fps)`` .. ``+ 16``; here the start comes
from each frame's own timestamp, ``floor((t - offset) * 80)``, so constant, NTSC and variable
frame rates all place windows on the audio they show.

Audio outside the track reads as digital silence (the mel floor, -4), on both sides: frames
before the audio starts (a positive offset) and windows running past its end are padded with
it. Wav2Lip's inference instead repeats the last 16 steps for every window that overruns; that
would freeze the last ~200 ms of mouth motion, and for a dub shorter than the video hold the
final syllable's mouth shape to the end, where silence gives a closed, resting mouth.
"""
from __future__ import annotations

import numpy as np

from engine.audio.mel import MEL_FPS, SILENCE
from engine.errors import UsageError

__all__ = ["MEL_STEPS", "mel_windows", "window_starts"]

MEL_STEPS = 16  # 200 ms at 80 steps per second: Wav2Lip's mel_step_size

# Timestamps come from rational time bases through floats: 0.2 s * 80 may land at 15.999999...
# This tolerance (far below one audio sample) keeps such frames on the step they are exactly at.
_EPSILON_STEPS = 1e-6


def window_starts(times: np.ndarray, offset_ms: float = 0.0) -> np.ndarray:
    """First mel step of each frame's window, int64 (N,); negative before the audio starts.

    ``offset_ms`` delays the audio against the video: a frame at ``t`` seconds hears the track
    at ``t - offset_ms / 1000`` (negative offsets advance the audio).
    """
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(t)) or not np.isfinite(offset_ms):
        raise UsageError("frame times and audio offset must be finite numbers of seconds / ms")
    return np.floor((t - offset_ms / 1000.0) * MEL_FPS + _EPSILON_STEPS).astype(np.int64)


def mel_windows(mel: np.ndarray, times: np.ndarray, *, offset_ms: float = 0.0) -> np.ndarray:
    """(N, 80, 16) float32 windows of ``mel`` (80, T) for frames at ``times`` (seconds).

    Steps outside ``0 .. T - 1`` are silence (-4). Neural backends feed ``windows[:, None]`` as
    (B, 1, 80, 16).
    """
    mel = np.asarray(mel, dtype=np.float32)
    if mel.ndim != 2:
        raise UsageError(f"mel must be 2-D (bands, steps), got shape {mel.shape}")
    bands, steps = mel.shape
    padded = np.full((bands, steps + 2 * MEL_STEPS), SILENCE, np.float32)
    padded[:, MEL_STEPS : MEL_STEPS + steps] = mel
    # Clamped starts beyond either end still select only padding, so every window stays in range.
    starts = np.clip(window_starts(times, offset_ms), -MEL_STEPS, steps) + MEL_STEPS
    index = starts[:, None] + np.arange(MEL_STEPS)
    return np.ascontiguousarray(padded[:, index].transpose(1, 0, 2))
