"""The dub cleaned for a generator's ears only: spectral gating with ``noisereduce``.

SieveSync runs the lip-sync model on a denoised dub (hiss, room tone and hum open the mouth
of an audio-driven model a little on every "silent" frame); the exported sound stays the dub as
delivered, so this is only ever applied to the copy a generator reads.

Non-stationary gating: the noise floor is tracked over time (a running estimate with a 2 s
time constant) rather than taken once from the whole track. A dub is often several takes cut
together, with a different room tone in each, and has no noise-only stretch to learn from; the
stationary mode's single floor, measured over a track that is mostly speech, also sits too high
and eats quiet syllables.
"""
from __future__ import annotations

import numpy as np

from engine.audio.mel import SAMPLE_RATE


def denoise(samples: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """``samples`` (n,) or (n, 1) mono float32 with background noise gated out, the same shape
    and length. Silence (all zeros) comes back as it is."""
    import noisereduce  # imported on use: only SieveSync needs it

    x = np.asarray(samples, np.float32)
    mono = x.reshape(-1)
    if not mono.size or not np.any(mono):
        return x.copy()
    clean = noisereduce.reduce_noise(y=mono, sr=rate, stationary=False, n_jobs=1)
    return np.nan_to_num(clean.astype(np.float32)).reshape(x.shape)
