"""Whisper audio features for MuseTalk: the log-mel of each 30 s segment, the encoder's hidden
states over the whole dub, and each video frame's window of them placed by its timestamp.

The log-mel is Whisper's (what transformers' ``WhisperFeatureExtractor`` gives, and what
MuseTalk's ``AudioProcessor`` feeds its encoder), on 16 kHz mono:

  zero-pad the segment to 30 s  ->  |STFT|^2 (n_fft 400, hop 160, periodic Hann, centred
  frames, reflected ends)  ->  80 Slaney mel bands 0..8000 Hz, area-normalised  ->  drop the
  last frame (3000 remain)  ->  log10(max(m, 1e-10))  ->  max(x, max(x) - 8)  ->  (x + 4) / 4

The encoder (an ONNX model run by the caller) turns one segment into 1500 steps, 50 per
second, of every hidden state. MuseTalk splits the dub into 30 s segments from its start,
encodes each, joins them and trims the padding: ``floor(n / 16000 * 50)`` steps remain.

A frame at ``t`` seconds into the dub sees steps ``s - 4 .. s + 5`` with ``s = floor(50 t)``:
at 25 fps frame ``i`` gets ``2i - 4 .. 2i + 5``, exactly what MuseTalk's inference gives, and
at any other (or a variable) frame rate the same 200 ms of context around the frame's own
time, the geometry the network was trained on. Steps outside the trimmed track are zeros, as
MuseTalk pads them.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from engine.audio.mel import SAMPLE_RATE, mel_filterbank, mono
from engine.audio.stft import stft_blocks
from engine.errors import UsageError

__all__ = [
    "ENCODER_STEPS", "SEGMENT_FRAMES", "SEGMENT_SAMPLES", "STEPS_PER_SECOND", "WINDOW_STEPS",
    "WhisperFeatures", "segment_mels", "track_steps", "whisper_log_mel", "whisper_window_starts",
    "whisper_windows",
]

N_FFT = 400
HOP = 160
MEL_BANDS = 80
SEGMENT_SECONDS = 30
SEGMENT_SAMPLES = SEGMENT_SECONDS * SAMPLE_RATE
SEGMENT_FRAMES = SEGMENT_SAMPLES // HOP  # 3000 mel frames, 100 per second
ENCODER_STEPS = SEGMENT_FRAMES // 2  # 1500: the encoder's stride-2 convolution halves the rate
STEPS_PER_SECOND = ENCODER_STEPS // SEGMENT_SECONDS  # 50
WINDOW_BEFORE = 4  # steps before the frame's own: 2 frames of 25 fps context, as MuseTalk pads
WINDOW_STEPS = 10
LOG_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0  # log10 units (80 dB) below the segment's loudest value

_FILTERBANK = mel_filterbank(SAMPLE_RATE, N_FFT, MEL_BANDS, 0.0, SAMPLE_RATE / 2.0)
# As in engine.audio.windows: float timestamps landing a hair under a step stay on it.
_EPSILON_STEPS = 1e-6

Encoder = Callable[[np.ndarray], np.ndarray]  # (B, 80, 3000) log-mel -> (B, 1500, L, D)


def whisper_log_mel(samples: np.ndarray) -> np.ndarray:
    """Whisper's normalised log-mel of up to 30 s of 16 kHz mono ``samples``: float32 (80, 3000).

    Shorter audio is padded with zeros to 30 s before the transform, as Whisper pads it (the
    zeros, not the audio, are reflected at the right edge).
    """
    x = mono(samples).astype(np.float64)
    if len(x) > SEGMENT_SAMPLES:
        raise UsageError(f"a Whisper segment holds at most {SEGMENT_SAMPLES} samples, "
                         f"got {len(x)}")
    x = np.pad(x, (0, SEGMENT_SAMPLES - len(x)))
    power = np.empty((SEGMENT_FRAMES + 1, MEL_BANDS), np.float64)
    done = 0
    for spectra in stft_blocks(x, N_FFT, HOP, pad_mode="reflect"):
        power[done:done + len(spectra)] = (spectra.real ** 2 + spectra.imag ** 2) @ _FILTERBANK.T
        done += len(spectra)
    log = np.log10(np.maximum(power[:SEGMENT_FRAMES], LOG_FLOOR))
    log = np.maximum(log, log.max() - DYNAMIC_RANGE)
    return np.ascontiguousarray(((log + 4.0) / 4.0).T, dtype=np.float32)


def segment_mels(samples: np.ndarray, segments: list[int] | None = None) -> np.ndarray:
    """Log-mels of the 30 s segments of ``samples`` (all, or those listed): (S, 80, 3000)."""
    x = mono(samples)
    count = -(-len(x) // SEGMENT_SAMPLES)
    chosen = range(count) if segments is None else segments
    mels = [whisper_log_mel(x[i * SEGMENT_SAMPLES:(i + 1) * SEGMENT_SAMPLES]) for i in chosen]
    return np.stack(mels) if mels else np.zeros((0, MEL_BANDS, SEGMENT_FRAMES), np.float32)


def track_steps(n_samples: int) -> int:
    """Encoder steps a track of ``n_samples`` keeps after trimming the last segment's padding
    (MuseTalk's ``floor(n / 16000 * 50)``, computed the same way)."""
    return math.floor((n_samples / SAMPLE_RATE) * STEPS_PER_SECOND)


def whisper_window_starts(times: np.ndarray) -> np.ndarray:
    """First encoder step of each frame's window, int64 (N,): ``floor(50 t) - 4``.

    ``times`` are seconds into the dub (negative before it starts).
    """
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(t)):
        raise UsageError("frame times must be finite numbers of seconds")
    return np.floor(t * STEPS_PER_SECOND + _EPSILON_STEPS).astype(np.int64) - WINDOW_BEFORE


def whisper_windows(track: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Windows of an encoded ``track`` (T, L, D) for frames at ``times``: float32 (N, 10 L, D).

    Step-major, as MuseTalk flattens them (``b c h w -> b (c h) w``); steps outside the track
    are zeros.
    """
    track = np.asarray(track, dtype=np.float32)
    steps, layers, width = track.shape
    index = whisper_window_starts(times)[:, None] + np.arange(WINDOW_STEPS)
    inside = (index >= 0) & (index < steps)
    out = np.zeros((len(index), WINDOW_STEPS, layers, width), np.float32)
    out[inside] = track[index[inside]]
    return out.reshape(len(index), WINDOW_STEPS * layers, width)


class WhisperFeatures:
    """The encoded dub, segment by segment as frames need them, with per-frame windows.

    ``encode`` runs the Whisper encoder: (B, 80, 3000) log-mels -> (B, 1500, L, D) hidden
    states. Segments are encoded on first use and kept, so a job that edits a few seconds of a
    long dub encodes one or two segments; the values are those of encoding them all.
    Not thread-safe: callers serialise ``windows``.
    """

    def __init__(self, samples: np.ndarray, encode: Encoder, *, batch: int = 4) -> None:
        self.samples = mono(samples)
        self.steps = track_steps(len(self.samples))
        self._encode = encode
        self._batch = max(1, batch)
        self._segments: dict[int, np.ndarray] = {}

    def load(self, times: np.ndarray) -> None:
        """Encode now the segments that frames at ``times`` will need (a job's whole-dub work,
        done before its first frame)."""
        self._segments_for(times)

    def windows(self, times: np.ndarray) -> np.ndarray:
        """Each frame's window, float32 (N, 10 L, D), for frames ``times`` seconds into the dub."""
        index, inside, segment, wanted = self._segments_for(times)
        layers, width = next(iter(self._segments.values())).shape[1:]
        out = np.zeros((len(index), WINDOW_STEPS, layers, width), np.float32)
        for s in wanted:
            at = inside & (segment == s)
            out[at] = self._segments[s][index[at] - s * ENCODER_STEPS]
        return out.reshape(len(index), WINDOW_STEPS * layers, width)

    def track(self) -> np.ndarray:
        """The whole trimmed track, float32 (T, L, D) (every segment encoded)."""
        count = -(-self.steps // ENCODER_STEPS)
        self._load(list(range(count)) or [0])
        layers, width = next(iter(self._segments.values())).shape[1:]
        if not count:
            return np.zeros((0, layers, width), np.float32)
        return np.concatenate([self._segments[s] for s in range(count)])[:self.steps]

    def _segments_for(self, times: np.ndarray):
        index = whisper_window_starts(times)[:, None] + np.arange(WINDOW_STEPS)
        inside = (index >= 0) & (index < self.steps)
        segment = index // ENCODER_STEPS
        wanted = np.unique(segment[inside]).tolist()
        # The output's layer count and width come from the encoder: a job that hears no dub at
        # all still encodes one segment (silence) to learn them.
        self._load(wanted or ([] if self._segments else [0]))
        return index, inside, segment, wanted

    def _load(self, segments: list[int]) -> None:
        todo = [s for s in segments if s not in self._segments]
        for first in range(0, len(todo), self._batch):
            chunk = todo[first:first + self._batch]
            hidden = np.asarray(self._encode(segment_mels(self.samples, chunk)), np.float32)
            self._segments.update(zip(chunk, hidden))
