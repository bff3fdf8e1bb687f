"""Voice activity: silence rests, speech is found with its pauses, at any level."""
from __future__ import annotations

import numpy as np
import pytest

from engine.audio import detect_voice, features_from_samples, per_frame
from engine.audio.vad import SOUND_DBFS
from engine.media.audio import read_audio
from tests.conftest import shared_clip

SR = 16000
FPS = 25
SPANS = [(0.5, 1.6), (2.1, 3.3), (3.8, 4.4), (5.0, 6.2)]  # speech; gaps 0.5, 0.5, 0.6 s
TOTAL = 7.0


def speech_like(n: int, rng: np.random.Generator) -> np.ndarray:
    """Voiced buzz: harmonics of a wavering 120 Hz pitch, 4 Hz syllable loudness, breath noise."""
    t = np.arange(n) / SR
    f0 = 120 * (1 + 0.08 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    buzz = sum(np.sin(k * phase) / k for k in range(1, 33))
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6))
    return buzz * syllables + 0.05 * rng.standard_normal(len(t))


def bursts(level_dbfs: float, *, seed: int = 0, noise_dbfs: float | None = None) -> np.ndarray:
    """Speech-like bursts over SPANS at RMS ``level_dbfs`` while active, optional noise under."""
    rng = np.random.default_rng(seed)
    y = np.zeros(int(TOTAL * SR))
    for a, b in SPANS:
        y[int(a * SR) : int(b * SR)] = speech_like(int(b * SR) - int(a * SR), rng)
    active = np.concatenate([y[int(a * SR) : int(b * SR)] for a, b in SPANS])
    y *= 10 ** (level_dbfs / 20) / np.sqrt(np.mean(active**2))
    if noise_dbfs is not None:
        y += 10 ** (noise_dbfs / 20) * rng.standard_normal(len(y))
    return y.astype(np.float32)


def tone(level_dbfs: float, seconds: float = TOTAL, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (np.sqrt(2) * 10 ** (level_dbfs / 20) * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def chords(seconds: float = TOTAL, level_dbfs: float = -20.0) -> np.ndarray:
    """Music as steady as an organ: a four-chord progression, a chord a second."""
    n = int(seconds * SR)
    roots = np.array([220.0, 174.6, 261.6, 196.0])[(np.arange(n) // SR) % 4]
    phase = 2 * np.pi * np.cumsum(roots) / SR  # continuous across chord changes: no clicks
    y = sum(np.sin(ratio * phase) for ratio in (1.0, 1.26, 1.5, 2.0))
    return (y * 10 ** (level_dbfs / 20) / np.sqrt(np.mean(y**2))).astype(np.float32)


def frame_times(seconds: float = TOTAL, fps: float = FPS) -> np.ndarray:
    return np.arange(int(seconds * fps)) / fps


def vad_frames(samples: np.ndarray, times: np.ndarray, offset_ms: float = 0.0) -> np.ndarray:
    return per_frame(detect_voice(samples), times, offset_ms=offset_ms).speech


def assert_spans(
    speech: np.ndarray, times: np.ndarray, spans=SPANS, slack_frames: float = 2
) -> None:
    """Every frame further than ``slack_frames`` from a span edge has the right decision."""
    durations = np.diff(times, append=times[-1] + (times[-1] - times[-2]))
    edges = np.array([e for span in spans for e in span])
    truth = np.zeros(len(times), bool)
    for a, b in spans:
        truth |= (times + durations / 2 > a) & (times + durations / 2 < b)
    # Distance from the frame's span [t, t + d) to the nearest edge, in frame durations.
    ends = times + durations
    gap = np.maximum(edges[None] - ends[:, None], times[:, None] - edges[None]).clip(0).min(axis=1)
    sure = gap > slack_frames * np.median(durations)
    wrong = np.flatnonzero(sure & (speech != truth))
    assert not len(wrong), f"wrong decisions at t = {times[wrong]}"
    # Each gap and each span is really seen, not merely left undecided by the slack.
    for a, b in spans:
        assert np.all(speech[sure & (times > a) & (times + durations < b)])
    for a, b in zip([0.0] + [b for _, b in spans], [a for a, _ in spans] + [times[-1]]):
        inside = sure & (times > a) & (times + durations < b)
        assert inside.any() and not speech[inside].any()


def test_silence_is_never_speech() -> None:
    times = frame_times(3.0)
    assert not vad_frames(np.zeros(3 * SR, np.float32), times).any()
    quiet = (10 ** (-90 / 20) * np.random.default_rng(0).standard_normal(3 * SR)).astype(np.float32)
    assert not vad_frames(quiet, times).any()
    hiss = (10 ** (-30 / 20) * np.random.default_rng(1).standard_normal(3 * SR)).astype(np.float32)
    assert not vad_frames(hiss, times).any()  # steady noise is floor, however loud


@pytest.mark.parametrize("level", [-10.0, -40.0])
def test_bursts_and_gaps_are_timed_at_any_level(level: float) -> None:
    times = frame_times()
    assert_spans(vad_frames(bursts(level, noise_dbfs=level - 50), times), times)


def test_speech_over_a_steady_tone() -> None:
    """A -40 dBFS tone under -10 dBFS speech is background: the gaps still rest the mouth."""
    times = frame_times()
    assert_spans(vad_frames(bursts(-10.0) + tone(-40.0), times), times)
    assert not vad_frames(tone(-40.0), times).any()


def test_steady_sound_is_loud_but_not_speech() -> None:
    """White noise, a tone and held chords: no speech, yet a level that is not silence's."""
    times = frame_times()
    rng = np.random.default_rng(4)
    noise = (0.1 * rng.standard_normal(int(TOTAL * SR))).astype(np.float32)  # -20 dBFS
    for sound in (noise, tone(-20.0), chords()):
        frames = per_frame(detect_voice(sound), times)
        assert not frames.speech.any()
        assert frames.level_db.min() > SOUND_DBFS + 20
    silence = per_frame(detect_voice(np.zeros(3 * SR, np.float32)), times)
    assert silence.level_db.max() <= -99.0  # time past the track's end reads as silence too
    assert np.all(per_frame(detect_voice(noise[: 3 * SR]), times).level_db[times >= 3.04]
                  <= -99.0)


def test_quiet_tone_bursts_are_activity() -> None:
    """Detection is relative to the floor: sound at -40 dBFS in silence counts like loud sound."""
    quiet = np.zeros(int(TOTAL * SR), np.float32)
    full = tone(-40.0)
    for a, b in SPANS:
        quiet[int(a * SR) : int(b * SR)] = full[int(a * SR) : int(b * SR)]
    times = frame_times()
    assert_spans(vad_frames(quiet, times), times)


def test_clicks_do_not_open_the_mouth() -> None:
    x = np.zeros(4 * SR, np.float32)
    x[[SR // 2, SR, 2 * SR, 3 * SR + 7]] = 0.9
    assert not vad_frames(x, frame_times(4.0)).any()
    speech = bursts(-10.0)
    speech[[int(1.85 * SR), int(3.55 * SR)]] = 0.9  # clicks inside two gaps
    times = frame_times()
    assert_spans(vad_frames(speech, times), times)


def test_probability_and_envelope_follow_speech() -> None:
    times = frame_times()
    frames = per_frame(detect_voice(bursts(-20.0, noise_dbfs=-70.0)), times)
    inside = np.zeros(len(times), bool)
    for a, b in SPANS:
        inside |= (times > a + 0.1) & (times < b - 0.1)
    gaps = ~inside
    for a, b in SPANS:
        gaps &= (times < a - 0.1) | (times > b + 0.1)
    assert frames.prob.dtype == frames.envelope.dtype == np.float32
    assert frames.prob[inside].mean() > 0.9 and frames.prob[gaps].max() < 0.1
    assert 0.0 <= frames.envelope.min() and frames.envelope.max() <= 1.0
    assert frames.envelope[inside].mean() > 0.4 and frames.envelope[gaps].max() < 0.05


def test_offset_and_variable_frame_rate() -> None:
    samples = bursts(-10.0)
    delayed = [(a + 0.4, b + 0.4) for a, b in SPANS]
    times = frame_times(TOTAL + 0.4)
    assert_spans(vad_frames(samples, times, offset_ms=400.0), times, delayed)
    rng = np.random.default_rng(9)
    vfr = np.concatenate([[0.0], np.cumsum(rng.uniform(1 / 50, 1 / 20, 400))])
    vfr = vfr[vfr < TOTAL]
    assert_spans(vad_frames(samples, vfr), vfr)


def test_features_carry_the_same_activity() -> None:
    samples = bursts(-10.0)
    times = frame_times()
    feats = features_from_samples(samples, times)
    frames = per_frame(detect_voice(samples), times)
    assert np.array_equal(feats.vad, frames.speech)
    assert np.array_equal(feats.speech_prob, frames.prob)
    assert np.array_equal(feats.envelope, frames.envelope)


# -- real speech -------------------------------------------------------------------------------


def test_long_speech_has_its_pauses() -> None:
    samples = read_audio(shared_clip("speech_eng_long.wav"), rate=SR, channels=1).samples
    times = frame_times(len(samples) / SR)
    speech = vad_frames(samples, times)
    assert not speech[times < 2.9].any()  # the recording opens with 3 s of room noise
    talking = speech[times >= 3.2]
    assert 0.7 < talking.mean() < 0.97
    change = np.flatnonzero(np.diff(talking.astype(np.int8)))
    pauses = [b - a for a, b in zip(change[::2], change[1::2])]  # False runs between speech
    assert sum(p >= 5 for p in pauses) >= 5  # several pauses of 200 ms or more


@pytest.mark.parametrize(
    "name",
    ["speech_radio31_16k.wav", "speech_retalk1.wav", "speech_retalk2.wav", "retalk_face2_844.mp4"],
)
def test_short_speech_is_mostly_speech(name: str) -> None:
    samples = read_audio(shared_clip(name), rate=SR, channels=1).samples
    speech = vad_frames(samples, frame_times(len(samples) / SR))
    assert 0.7 < speech.mean() < 1.0


def test_real_speech_decisions_do_not_depend_on_level() -> None:
    samples = read_audio(shared_clip("speech_radio31_16k.wav"), rate=SR, channels=1).samples
    times = frame_times(len(samples) / SR)
    loud = vad_frames(samples, times)
    quiet = vad_frames(samples * np.float32(10 ** (-30 / 20)), times)
    assert (loud == quiet).mean() > 0.97
    pause = (times > 5.9) & (times < 6.1)  # the one breath pause in this clip
    assert not loud[pause].any() and not quiet[pause].any()
