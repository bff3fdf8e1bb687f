"""The clip's own sound at its analysed frames, cached on disk.

The retrieval generator learns the speaker's mouth from the clip's own sound; a batch renders
one shot in several languages, so these features are computed once per shot (beside its face
analysis) and loaded by every language's render. Cached in ``cache_dir()/sound`` under a hash
of the file's identity (path, size, modification time) and the frame times, written atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import fields
from pathlib import Path

import numpy as np

from engine.audio.features import AudioFeatures, features_from_samples
from engine.audio.mel import SAMPLE_RATE
from engine.media.audio import read_audio
from engine.media.probe import MediaInfo
from engine.paths import cache_dir

VERSION = 1  # of the cached features: raise it when the same sound would give others


def source_features(video: str | os.PathLike, times: np.ndarray,
                    info: MediaInfo) -> AudioFeatures:
    """The sound of ``video`` (probed as ``info``) at frame ``times`` (silence without any)."""
    video = os.fspath(video)
    entry = _entry(video, times)
    try:
        with np.load(entry) as data:
            return AudioFeatures(**{f.name: data[f.name] for f in fields(AudioFeatures)
                                    if f.name != "duration"}, duration=float(data["duration"]))
    except (OSError, ValueError, KeyError):
        pass  # not cached yet, or damaged: computed again and rewritten
    features = _compute(video, times, info)
    temp = entry.with_name(f"{entry.stem}.{uuid.uuid4().hex}.tmp.npz")
    np.savez(temp, **{f.name: getattr(features, f.name) for f in fields(AudioFeatures)})
    os.replace(temp, entry)
    return features


def _compute(video: str, times: np.ndarray, info: MediaInfo) -> AudioFeatures:
    if not info.audio:
        samples = np.zeros(int((times[-1] + 1) * SAMPLE_RATE), np.float32)
    else:
        samples = read_audio(video, rate=SAMPLE_RATE, channels=1).samples
        # The audio track may start before or after the first frame.
        shift = info.audio[0].start_time - info.video[0].start_time
        if shift > 0:
            samples = np.concatenate([np.zeros((int(shift * SAMPLE_RATE), 1), np.float32),
                                      samples])
        elif shift < 0:
            samples = samples[int(-shift * SAMPLE_RATE):]
    return features_from_samples(samples, times)


def _entry(video: str, times: np.ndarray) -> Path:
    st = os.stat(video)
    key = json.dumps({"version": VERSION,
                      "file": [os.path.abspath(video), st.st_size, st.st_mtime_ns],
                      "times": hashlib.sha256(np.asarray(times, np.float64).tobytes())
                      .hexdigest()}, sort_keys=True)
    folder = cache_dir() / "sound"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".npz")
