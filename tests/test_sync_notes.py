"""The lip-sync job on awkward input: it does the sensible thing and says so, in one note each.

A clip without its own speech, a speaker whose mouth barely moves, a dub without speech and a
dub shorter than its range. Short stretches of the shared clips; their face analysis is cached
for the whole module.
"""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from engine.lipsync.shape import openness
from engine.media.audio import read_audio
from engine.media.probe import probe
from engine.pipeline import SyncSession, SyncSettings, prepare_sync, sync
from engine.render import ExportSettings
from tests.conftest import shared_clip
from tests.test_vad import chords

SR = 16000
LEARN = SyncSettings(train_range=(0.0, 4.0))  # one analysis (0-4 s) serves every test


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("notes-cache")


@pytest.fixture(autouse=True)
def _shared_cache(cache, monkeypatch):
    monkeypatch.setenv("REDUB_CACHE_DIR", str(cache))


@pytest.fixture(scope="module")
def clip():
    return shared_clip("hdtf_aoc_512.mp4")


@pytest.fixture(scope="module")
def speech():
    return shared_clip("speech_radio31_16k.wav")


def _remux(src: Path, dst: Path, audio: np.ndarray | None = None) -> Path:
    """``src``'s video stream as it is, with ``audio`` (16 kHz mono) as AAC or no sound at all."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        video = inp.streams.video[0]
        copy = out.add_stream_from_template(video)
        sound = out.add_stream("aac", rate=SR, layout="mono") if audio is not None else None
        for packet in inp.demux(video):
            if packet.dts is not None:
                packet.stream = copy
                out.mux(packet)
        if sound is not None:
            for start in range(0, len(audio), 1024):
                frame = av.AudioFrame.from_ndarray(audio[None, start : start + 1024],
                                                   format="flt", layout="mono")
                frame.sample_rate, frame.pts = SR, start
                out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return dst


def _planned(session: SyncSession) -> tuple[np.ndarray, np.ndarray]:
    """Per edited frame: the openness of the source frame chosen to lend its mouth, and the
    dub's loudness envelope there."""
    a, plan = session.analysis, session._generator.plan
    k = np.flatnonzero(plan >= 0)
    ctx = session._context(session._inputs, lambda note: None)
    return openness(a.landmarks)[plan[k]], ctx.dub_audio.envelope[k]


def _follows(video: Path, dub: Path) -> tuple[float, list[str]]:
    """How the planned mouth openness correlates with the dub's loudness; the job's notes
    (after a re-plan for a curve edit too, which must not repeat them)."""
    with prepare_sync(video, dub, ranges=[(0.0, 4.0)], settings=LEARN) as session:
        opened, loud = _planned(session)
        edited = session.corrections.copy()
        edited.curves.openness_gain.keys.update({10: 1.0, 60: 1.3})
        assert session.set_corrections(edited).size  # re-planned
        return float(np.corrcoef(opened, loud)[0, 1]), list(session.notes)


def _generic(notes: list[str]) -> list[str]:
    return [n for n in notes if "generic mapping" in n]


def test_a_clip_without_sound_follows_the_dub_with_the_generic_mapping(tmp_path, clip, speech):
    mute = _remux(clip, tmp_path / "mute.mp4")
    assert not probe(mute).audio
    with_sound, notes = _follows(clip, speech)
    assert not _generic(notes)
    # Learned from silence, the fit scaled the dub's features by 1e6: the mouth slammed between
    # shut and wide open (correlation 0.32 here, against 0.40 with the clip's own sound).
    without, notes = _follows(mute, speech)
    assert _generic(notes) == ["no speech in the clip's own sound to learn this speaker's "
                               "mouth from: using the generic mapping"]
    assert without > 0.45 and without > with_sound - 0.1


def test_a_clip_with_only_room_tone_uses_the_generic_mapping(tmp_path, clip, speech):
    hiss = 10 ** (-65 / 20) * np.random.default_rng(0).standard_normal(8 * SR)
    quiet = _remux(clip, tmp_path / "hiss.mp4", hiss.astype(np.float32))
    assert probe(quiet).audio
    follows, notes = _follows(quiet, speech)
    assert len(_generic(notes)) == 1 and "no speech in the clip's own sound" in notes[-1]
    assert follows > 0.45


def test_a_mouth_that_barely_moves_suggests_a_neural_backend(clip, speech):
    def barely(notes: list[str]) -> list[str]:
        return [n for n in notes if "barely moves" in n]

    # talk_s18's speaker talks with lips all but closed: its openness varies by 0.005
    # eye distances, the other shared clips' by 0.15 or more.
    s18 = shared_clip("talk_s18_720p.mp4")
    with prepare_sync(s18, speech, ranges=[(0.0, 1.0)],
                      settings=SyncSettings(train_range=(0.0, 3.0))) as session:
        notes = barely(session.notes)
    assert len(notes) == 1 and "--backend wav2lip" in notes[0]
    with prepare_sync(clip, speech, ranges=[(0.0, 4.0)], settings=LEARN) as session:
        assert not barely(session.notes)


def _wav(path: Path, samples: np.ndarray) -> Path:
    sf.write(str(path), samples.astype(np.float32), SR)
    return path


@pytest.mark.parametrize("kind", ["white noise", "chords", "silence"])
def test_a_dub_without_speech_closes_the_mouth_and_says_why(tmp_path, clip, kind):
    samples = {"white noise": 0.1 * np.random.default_rng(1).standard_normal(4 * SR),
               "chords": chords(4.0), "silence": np.zeros(4 * SR)}[kind]  # to the range end
    dub = _wav(tmp_path / "dub.wav", samples)
    with prepare_sync(clip, dub, ranges=[(2.0, 4.0)], settings=LEARN) as session:
        opened, _ = _planned(session)
        footage = openness(session.analysis.landmarks[session._inputs.train])
        notes = [n for n in session.notes if "dub" in n]
    if kind == "silence":
        assert notes == ["the dub is silent in the edited ranges: the mouth stays closed"]
    else:
        assert notes == ["the dub holds sound but no speech in the edited ranges (music or "
                         "noise?): the mouth stays closed"]
    assert opened.max() <= np.percentile(footage, 15)  # the most closed mouths of the footage


def _dub_notes(notes: list[str]) -> list[str]:
    return [n for n in notes if "dub" in n]


def test_a_short_dub_gets_one_note_that_says_what_happens(tmp_path, clip, speech):
    # Half a second of speech laid in at the start of a 2 s range.
    dub = _wav(tmp_path / "short.wav", read_audio(speech, rate=SR, channels=1).samples[: SR // 2])
    out = tmp_path / "short.mkv"
    result = sync(clip, dub, ExportSettings(output=str(out), codec="ffv1"), dub_offset=2.0,
                  ranges=[(2.0, 4.0)], settings=LEARN)
    assert _dub_notes(result.notes) == ["the dub ends 1.50 s before the edited range does "
                                        "(silence and a resting mouth after it)"]
    # Both halves of it hold: silence after 2.5 s inside the range, and a resting mouth.
    sound = read_audio(out, rate=SR, channels=1).samples[:, 0]
    assert np.abs(sound[int(2.05 * SR) : int(2.45 * SR)]).max() > 0.05
    assert np.abs(sound[int(2.55 * SR) : int(3.95 * SR)]).max() < 1e-3
    with prepare_sync(clip, dub, dub_offset=2.0, ranges=[(2.0, 4.0)], settings=LEARN) as session:
        opened, _ = _planned(session)
        footage = openness(session.analysis.landmarks[session._inputs.train])
        times = session.analysis.times[session._generator.plan >= 0]
    assert opened[times >= 2.7].max() <= np.percentile(footage, 15)
    assert opened[times < 2.5].max() > np.percentile(footage, 50)


def test_a_dub_that_misses_the_range_or_starts_late_gets_one_note(tmp_path, clip, speech):
    samples = read_audio(speech, rate=SR, channels=1).samples
    dub = _wav(tmp_path / "early.wav", samples[: SR // 2])
    with prepare_sync(clip, dub, ranges=[(2.0, 4.0)], settings=LEARN) as session:
        assert _dub_notes(session.notes) == ["the dub (0.00-0.50 s) misses the edited range "
                                             "(2.00-4.00 s): silence there, the mouth stays "
                                             "closed"]
    late = _wav(tmp_path / "late.wav", samples[: int(1.5 * SR)])
    with prepare_sync(clip, late, dub_offset=2.5, ranges=[(2.0, 4.0)],
                      settings=LEARN) as session:
        assert _dub_notes(session.notes) == ["the dub starts 0.50 s after the edited range does "
                                             "(silence and a resting mouth before it)"]


def test_ranges_with_their_own_settings_share_one_dub_note(tmp_path, clip, speech):
    """Each settings group is prepared alone; the export still words one note for all ranges
    (not "runs past" the first range and "ends before" the second)."""
    dub = _wav(tmp_path / "mid.wav", read_audio(speech, rate=SR, channels=1).samples[: 3 * SR])
    wide = SyncSettings(train_range=(0.0, 4.0), openness_gain=1.5)
    result = sync(clip, dub, ExportSettings(output=str(tmp_path / "two.mkv"), codec="ffv1"),
                  ranges=[(1.0, 2.0), (3.0, 4.0)], range_settings=[LEARN, wide])
    assert _dub_notes(result.notes) == ["the dub ends 1.00 s before the edited ranges do "
                                        "(silence and a resting mouth after it)"]
