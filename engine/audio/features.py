"""Everything a lip-sync pass needs from a dub track, aligned to the video's frame times."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from engine.audio.mel import SAMPLE_RATE, log_mel, mono
from engine.audio.vad import detect_voice, per_frame
from engine.audio.windows import mel_windows
from engine.media.audio import read_audio

__all__ = ["AudioFeatures", "dub_features", "features_from_samples"]


@dataclass(frozen=True)
class AudioFeatures:
    """Audio features of a dub for N video frames."""

    mel: np.ndarray  # float32 (80, T): Wav2Lip log-mel of the whole track, 80 steps/s
    windows: np.ndarray  # float32 (N, 80, 16): each frame's mel window
    vad: np.ndarray  # bool (N,): speech during the frame
    speech_prob: np.ndarray  # float32 (N,) 0..1
    envelope: np.ndarray  # float32 (N,) 0..1: loudness, for mouth openness
    level_db: np.ndarray  # float32 (N,): speech-band level, dBFS (vad.SOUND_DBFS: sound or not)
    duration: float  # seconds of audio in the track


def features_from_samples(
    samples: np.ndarray, frame_times: np.ndarray, *, offset_ms: float = 0.0
) -> AudioFeatures:
    """Features of 16 kHz mono ``samples`` for frames at ``frame_times`` (seconds, first frame 0).

    ``offset_ms`` delays the audio against the video (negative: plays earlier).
    """
    x = mono(samples)
    mel = log_mel(x)
    frames = per_frame(detect_voice(x), frame_times, offset_ms=offset_ms)
    return AudioFeatures(
        mel=mel,
        windows=mel_windows(mel, frame_times, offset_ms=offset_ms),
        vad=frames.speech,
        speech_prob=frames.prob,
        envelope=frames.envelope,
        level_db=frames.level_db,
        duration=len(x) / SAMPLE_RATE,
    )


def dub_features(
    path: str | os.PathLike,
    frame_times: np.ndarray,
    *,
    offset_ms: float = 0.0,
    stream_index: int | None = None,
) -> AudioFeatures:
    """Features of the dub at ``path`` (any audio or video file, mixed to mono at 16 kHz)."""
    audio = read_audio(path, rate=SAMPLE_RATE, channels=1, stream_index=stream_index)
    return features_from_samples(audio.samples, frame_times, offset_ms=offset_ms)
