"""Audio decoding: exactness, seeking, conversion, streaming memory and error reporting."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from engine.errors import RedubError, UsageError
from engine.media import audio as audio_mod
from engine.media.audio import Audio, AudioStream, NoAudioError, read_audio
from tests.media_factory import make_video

SHARED_MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"


# Helpers, also used by test_mix.py and test_peaks.py.


def pcm16(frames: int, channels: int, seed: int = 0) -> np.ndarray:
    """Random int16 audio (frames, channels) at about -12 dBFS."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((frames, channels)) * 8000).clip(-32768, 32767).astype(np.int16)


def write_wav(path: Path, samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> Path:
    sf.write(path, samples, rate, subtype=subtype)
    return path


def tone(
    seconds: float, rate: int, freqs: tuple[float, ...] = (1000.0, 700.0), amp: float = 0.5
) -> np.ndarray:
    """Sine per channel, float32 (frames, channels): a one-sample shift changes it by ~amp*2*pi*f/rate."""
    t = np.arange(round(seconds * rate)) / rate
    return np.stack([amp * np.sin(2 * np.pi * f * t) for f in freqs], axis=1).astype(np.float32)


def write_av(path: Path, samples: np.ndarray, rate: int, codec: str = "aac", video: bool = False) -> Path:
    """Encode float32 (frames, channels) audio with PyAV (mp4/mkv/webm by suffix), optionally with video."""
    layout = {1: "mono", 2: "stereo"}[samples.shape[1]]
    with av.open(str(path), "w") as out:
        if video:
            vs = out.add_stream("mpeg4", rate=25)
            vs.width, vs.height, vs.pix_fmt = 64, 64, "yuv420p"
        stream = out.add_stream(codec, rate=rate, layout=layout)
        planar = np.ascontiguousarray(samples.T.astype(np.float32))
        for i in range(0, planar.shape[1], 4096):
            block = np.ascontiguousarray(planar[:, i : i + 4096])
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        if video:
            for i in range(5):
                img = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 40, np.uint8), format="rgb24")
                img.pts = i
                for packet in vs.encode(img):
                    out.mux(packet)
            for packet in vs.encode(None):
                out.mux(packet)
    return path


def write_video_only(path: Path, frames: int = 5) -> Path:
    return make_video(path, frames=frames, size=(64, 64), codec="mpeg4", bframes=0)


# Exactness and conversion.


def test_pcm16_wav_is_exact(tmp_path: Path) -> None:
    data = pcm16(12345, 2)
    data[0] = [-32768, 32767]
    a = read_audio(write_wav(tmp_path / "a.wav", data, 44100))
    assert isinstance(a, Audio)
    assert a.samples.dtype == np.float32 and a.samples.shape == (12345, 2)
    assert np.array_equal(a.samples, data.astype(np.float32) / 32768)
    assert (a.rate, a.channels, a.frames) == (44100, 2, 12345)
    assert a.duration == pytest.approx(12345 / 44100)


def test_start_and_duration_are_sample_exact(tmp_path: Path) -> None:
    data = pcm16(48000, 1)
    path = write_wav(tmp_path / "a.wav", data, 48000)
    full = read_audio(path).samples
    part = read_audio(path, start=0.123456, duration=0.25)
    first = round(0.123456 * 48000)
    assert np.array_equal(part.samples, full[first : first + 12000])
    tail = read_audio(path, start=0.9, duration=5.0)  # clipped at the end of the stream
    assert np.array_equal(tail.samples, full[43200:])
    assert read_audio(path, start=2.0).frames == 0


def test_channel_conversion(tmp_path: Path) -> None:
    stereo = pcm16(1000, 2)
    path = write_wav(tmp_path / "s.wav", stereo, 16000)
    mono = read_audio(path, channels=1).samples
    expected = (stereo.astype(np.float32) / 32768).mean(axis=1, keepdims=True)
    np.testing.assert_allclose(mono, expected, atol=1e-7)
    mono_path = write_wav(tmp_path / "m.wav", stereo[:, :1], 16000)
    up = read_audio(mono_path, channels=2).samples
    assert up.shape == (1000, 2) and np.array_equal(up[:, 0], up[:, 1])
    assert np.array_equal(up[:, 0], stereo[:, 0].astype(np.float32) / 32768)
    six = np.repeat(stereo[:, :1], 6, axis=1)
    six_path = write_wav(tmp_path / "six.wav", six, 16000)
    down = read_audio(six_path, channels=2).samples
    assert down.shape == (1000, 2) and np.abs(down).max() > 0.1


def test_resampling_keeps_time(tmp_path: Path) -> None:
    data = np.zeros((48000, 1), np.float32)
    data[24000] = 0.9
    path = write_wav(tmp_path / "click.wav", data, 48000, subtype="FLOAT")
    a = read_audio(path, rate=16000)
    assert a.rate == 16000 and a.frames == 16000
    assert abs(int(np.argmax(a.samples[:, 0])) - 8000) <= 1
    up = read_audio(path, rate=44100)
    assert abs(int(np.argmax(up.samples[:, 0])) - 22050) <= 1


def test_resampled_seek_matches_full_read(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "n.wav", pcm16(44100 * 3, 2), 44100)
    full = read_audio(path, rate=16000, channels=1).samples
    for start in (0.01, 1.2345, 2.5):
        part = read_audio(path, rate=16000, channels=1, start=start, duration=0.3).samples
        first = round(start * 16000)
        np.testing.assert_allclose(part, full[first : first + len(part)], atol=1e-6)
        assert len(part) == 4800


@pytest.mark.parametrize("suffix", ["mp4", "mkv"])
def test_container_seek_is_sample_accurate(
    tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 8 s so Matroska gets a second cluster: the seek then really lands mid-stream on 1 ms
    # timestamps, which must be snapped to the AAC frame grid.
    path = write_av(tmp_path / f"tone.{suffix}", tone(8.0, 48000), 48000)
    full = read_audio(path).samples
    landed: list[int] = []
    seek = audio_mod._AVSource._seek

    def spy(self: audio_mod._AVSource, start: int) -> tuple[av.AudioFrame, int] | None:
        result = seek(self, start)
        landed.append(-1 if result is None else result[1])
        return result

    monkeypatch.setattr(audio_mod._AVSource, "_seek", spy)
    for start in (1.37, 6.31):
        part = read_audio(path, start=start, duration=0.5).samples
        first = round(start * 48000)
        # AAC noise substitution makes a re-decode differ slightly; a 1-sample shift costs ~0.06.
        assert np.abs(part - full[first : first + 24000]).max() < 2e-3
    assert max(landed) > 0  # the seek path, not a decode from the start


def test_other_formats(tmp_path: Path) -> None:
    data = pcm16(16000, 2)
    flac = write_wav(tmp_path / "a.flac", data, 16000)
    assert np.array_equal(read_audio(flac).samples, data.astype(np.float32) / 32768)
    sig = tone(1.0, 48000)
    for name, fmt in (("a.ogg", "VORBIS"), ("a.mp3", "MPEG_LAYER_III")):
        path = tmp_path / name
        sf.write(path, sig, 48000, subtype=fmt)
        a = read_audio(path, rate=16000, channels=1)
        assert a.rate == 16000 and a.channels == 1 and abs(a.duration - 1.0) < 0.1
    # Packed 16-bit PCM through PyAV (libsndfile cannot open Matroska) is exact too.
    with av.open(str(tmp_path / "pcm.mkv"), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=16000, layout="stereo")
        frame = av.AudioFrame.from_ndarray(data.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate, frame.pts = 16000, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    assert np.array_equal(read_audio(tmp_path / "pcm.mkv").samples, data.astype(np.float32) / 32768)
    opus = write_av(tmp_path / "a.webm", sig, 48000, codec="libopus")
    full = read_audio(opus)
    assert (full.rate, full.channels) == (48000, 2)
    part = read_audio(opus, start=0.5, duration=0.1).samples
    assert np.array_equal(part, full.samples[24000:28800])


# Streaming.


def test_stream_matches_whole_read_and_pads(tmp_path: Path) -> None:
    data = pcm16(10007, 2)
    path = write_wav(tmp_path / "a.wav", data, 22050)
    whole = read_audio(path, rate=16000, start=0.05).samples
    with AudioStream(path, rate=16000, start=0.05) as stream:
        assert (stream.rate, stream.channels) == (16000, 2)
        assert stream.duration == pytest.approx(10007 / 22050)
        sizes = (0, 1, 999, 4096, 5000)
        parts = [stream.read(n) for n in sizes]
        assert all(p.shape == (n, 2) and p.dtype == np.float32 for p, n in zip(parts, sizes))
        got = np.concatenate(parts)
        assert stream.exhausted
        assert not stream.read(10).any()
    assert np.array_equal(got[: len(whole)], whole)
    assert not got[len(whole) :].any()


def test_stream_exhausted_only_at_end(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "a.wav", pcm16(100, 1), 8000)
    with AudioStream(path) as stream:
        assert not stream.exhausted
        assert len(stream.read(60, pad=False)) == 60
        assert not stream.exhausted
        assert len(stream.read(60, pad=False)) == 40
        assert stream.exhausted


@pytest.mark.parametrize("kind", ["wav", "mp4"])
def test_stream_memory_is_bounded(tmp_path: Path, kind: str) -> None:
    seconds = 60 if kind == "wav" else 15
    if kind == "wav":
        path = write_wav(tmp_path / "long.wav", pcm16(48000 * seconds, 2), 48000)
    else:
        path = write_av(tmp_path / "long.mp4", tone(seconds, 48000), 48000)
    whole_bytes = 48000 * seconds * 2 * 4
    tracemalloc.start()
    try:
        with AudioStream(path, rate=16000, channels=1) as stream:
            total = 0
            while not stream.exhausted:
                total += len(stream.read(4096, pad=False))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert abs(total - 16000 * seconds) < 2048
    assert peak < min(4 << 20, whole_bytes // 4)


# Errors: one-line RedubError, never a raw av/soundfile exception.


def _problem(exc: pytest.ExceptionInfo[RedubError]) -> str:
    assert "\n" not in str(exc.value)
    return exc.value.problem


def test_errors_missing_empty_folder_garbage(tmp_path: Path) -> None:
    with pytest.raises(RedubError) as exc:
        read_audio(tmp_path / "nope.wav")
    assert _problem(exc) == "no such file" and exc.value.path == str(tmp_path / "nope.wav")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(RedubError) as exc:
        AudioStream(tmp_path / "empty.mp4")
    assert "empty" in _problem(exc)
    with pytest.raises(RedubError) as exc:
        read_audio(tmp_path)
    assert "folder" in _problem(exc)
    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(1).bytes(5000))
    with pytest.raises(RedubError) as exc:
        read_audio(tmp_path / "junk.mp4")
    assert _problem(exc).startswith("not a readable media file or damaged (")


def test_errors_truncated_and_corrupt(tmp_path: Path) -> None:
    good = write_av(tmp_path / "good.mp4", tone(3.0, 48000), 48000).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(good[: len(good) // 2])
    with pytest.raises(RedubError) as exc:
        read_audio(tmp_path / "cut.mp4")
    assert "damaged" in _problem(exc)
    damaged = bytearray(good)
    damaged[2000:60000] = np.random.default_rng(2).bytes(58000)
    (tmp_path / "damaged.mp4").write_bytes(bytes(damaged))
    with pytest.raises(RedubError) as exc:
        read_audio(tmp_path / "damaged.mp4")
    assert "damaged" in _problem(exc) or "corrupt" in _problem(exc)


def test_errors_no_audio_and_bad_stream(tmp_path: Path) -> None:
    video = write_video_only(tmp_path / "v.mp4")
    with pytest.raises(NoAudioError) as exc:
        read_audio(video)
    assert _problem(exc) == "no audio stream"
    both = write_av(tmp_path / "av.mp4", tone(0.5, 16000), 16000, video=True)
    with pytest.raises(UsageError, match="not audio"):
        read_audio(both, stream_index=0)
    with pytest.raises(UsageError, match="no stream 7"):
        read_audio(both, stream_index=7)
    assert read_audio(both, stream_index=1).rate == 16000
    assert read_audio(both).frames > 0


def test_errors_undecodable_codec(tmp_path: Path) -> None:
    # A WAV whose format tag names no codec FFmpeg (or libsndfile) knows.
    data = bytes(2000)
    fmt = (0x1234).to_bytes(2, "little") + (1).to_bytes(2, "little") + (16000).to_bytes(4, "little")
    fmt += (32000).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt
    body += b"data" + len(data).to_bytes(4, "little") + data
    (tmp_path / "odd.wav").write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)
    with pytest.raises(RedubError) as exc:
        read_audio(tmp_path / "odd.wav")
    assert "cannot decode" in _problem(exc)


def test_bad_arguments(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "a.wav", pcm16(100, 1), 8000)
    for kwargs in ({"rate": 0}, {"channels": 0}, {"start": -1.0}, {"duration": -1.0}):
        with pytest.raises(UsageError):
            read_audio(path, **kwargs)


# Real clips from ../shared (skipped where absent).

needs_shared = pytest.mark.skipif(not SHARED_MEDIA.is_dir(), reason="../shared/media not available")


@needs_shared
def test_shared_wavs_are_exact() -> None:
    files = (("speech_radio31_16k.wav", 16000), ("speech_retalk1.wav", 44100), ("speech_retalk2.wav", 48000))
    for name, rate in files:
        path = SHARED_MEDIA / name
        ref, ref_rate = sf.read(path, dtype="int16", always_2d=True)
        a = read_audio(path)
        assert a.rate == ref_rate == rate
        assert np.array_equal(a.samples, ref.astype(np.float32) / 32768)
        analysis = read_audio(path, rate=16000, channels=1)
        assert analysis.channels == 1 and abs(analysis.frames - round(len(ref) * 16000 / rate)) <= 1


@needs_shared
@pytest.mark.parametrize("name", ["hdtf_aoc_512.mp4", "retalk_face2_844.mp4", "talk_d12_512.mp4"])
def test_shared_mp4_aac(name: str) -> None:
    path = SHARED_MEDIA / name
    full = read_audio(path)
    assert full.channels == 2 and full.rate in (16000, 44100)
    with AudioStream(path) as stream:
        assert stream.duration is not None and abs(stream.duration - full.duration) < 0.05
    part = read_audio(path, start=2.0, duration=1.0).samples
    first = round(2.0 * full.rate)
    ref = full.samples[first : first + len(part)]
    assert len(part) == full.rate
    assert np.abs(part - ref).max() < 0.02 * np.abs(ref).max()
    analysis = read_audio(path, rate=16000, channels=1)
    assert abs(analysis.frames - round(full.frames * 16000 / full.rate)) <= 1


@pytest.mark.parametrize("name", ["speech_retalk1.wav", "speech_radio31_16k.wav"])
def test_read_mono_gives_librosa_loads_samples(name):
    """The dub as MuseTalk's official code reads it (librosa.load(sr=16000)), to the sample:
    channels averaged, soxr HQ, length ceil(n * ratio)."""
    librosa = pytest.importorskip("librosa")
    from tests.conftest import shared_clip

    path = shared_clip(name)
    expected, _ = librosa.load(str(path), sr=16000)
    got = audio_mod.read_mono(path, 16000)
    assert got.shape == (len(expected), 1) and got.dtype == np.float32
    np.testing.assert_array_equal(got[:, 0], expected)
