"""Playback: clock, frame order, seek/step, scrub grains, audio choice, no-device and real-device paths."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from desktop.playback import CHANNELS, GRAIN_S, RATE, Playback
from tests.media_factory import make_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    # 2 s at 25 fps, 48 kHz stereo tone.
    return make_video(tmp_path_factory.mktemp("pb") / "clip.mp4", frames=50, audio_rate=48000)


@pytest.fixture(scope="module")
def dub(tmp_path_factory):
    # A distinguishable dub: white noise at a fixed level, mono 16 kHz (converted on the fly).
    path = tmp_path_factory.mktemp("pb") / "dub.wav"
    rng = np.random.default_rng(1)
    sf.write(path, (0.5 * rng.uniform(-1, 1, 16000 * 2)).astype(np.float32), 16000)
    return path


class FakeStream:
    """Stands in for sounddevice.OutputStream: pulls the callback in real time, records output."""

    instances: list[FakeStream] = []

    def __init__(self, *, samplerate, channels, dtype, device, callback, blocksize=512):
        assert (samplerate, channels, dtype) == (RATE, CHANNELS, "float32")
        self.callback, self.blocksize = callback, blocksize
        self.latency = 0.02
        self.chunks: list[np.ndarray] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.closed = False
        FakeStream.instances.append(self)

    def start(self):
        self._thread.start()

    def _run(self):
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            out = np.full((self.blocksize, CHANNELS), np.nan, np.float32)
            now = time.monotonic()
            self.callback(out, self.blocksize,
                          SimpleNamespace(currentTime=now, outputBufferDacTime=now + self.latency), None)
            assert not np.isnan(out).any()  # the callback fills every sample
            self.chunks.append(out)
            n += self.blocksize
            time.sleep(max(0.0, start + n / RATE - self.latency - time.monotonic()))

    def samples(self) -> np.ndarray:
        return np.concatenate(self.chunks[:]) if self.chunks else np.zeros((0, CHANNELS))

    def stop(self):
        self._stop.set()
        self._thread.join()

    def close(self):
        self.closed = True


@pytest.fixture
def fake_playback(qtbot):
    FakeStream.instances.clear()
    pb = Playback(stream_factory=FakeStream)
    yield pb
    pb.close()
    assert all(s.closed for s in FakeStream.instances)


def record(pb: Playback) -> list[tuple[int, float, float]]:
    shown: list[tuple[int, float, float]] = []
    pb.frame_ready.connect(lambda i, rgb: shown.append((i, pb.clock(), float(pb.times[i]))))
    return shown


def wait_frame(qtbot, pb: Playback, index: int) -> np.ndarray:
    with qtbot.waitSignal(pb.frame_ready, timeout=5000,
                          check_params_cb=lambda i, rgb: i == index) as blocker:
        pass
    return blocker.args[1]


def test_timer_clock_plays_in_order_within_a_frame(qtbot, clip):
    pb = Playback(audio_device=None)
    try:
        pb.set_media(clip)
        wait_frame(qtbot, pb, 0)
        shown = record(pb)
        states = []
        pb.state_changed.connect(states.append)
        pb.play()
        qtbot.wait(1000)
        pb.pause()
        assert states == ["playing", "paused"]
        indices = [i for i, _, _ in shown]
        assert len(indices) >= 20 and indices == sorted(set(indices))
        frame = 1 / 25
        for i, clock, t in shown:
            assert 0.0 <= clock - t < frame + 1e-6, (i, clock, t)
        assert abs(pb.clock() - 1.0) < 0.2
    finally:
        pb.close()


def test_seek_and_step_land_on_exact_frames(qtbot, clip):
    pb = Playback(audio_device=None)
    try:
        pb.set_media(clip)
        wait_frame(qtbot, pb, 0)
        positions = []
        pb.position_changed.connect(positions.append)
        pb.seek(1.23)  # inside frame 30 (1.20 .. 1.24)
        rgb = wait_frame(qtbot, pb, 30)
        assert rgb.dtype == np.uint8 and rgb.shape == (96, 160, 3)
        assert abs(int(rgb[0, 0, 2]) - 30 * 37 % 256) < 12  # per-frame blue level; neighbours differ by 37
        pb.step(5)
        wait_frame(qtbot, pb, 35)
        assert positions[-1] == pytest.approx(float(pb.times[35]))
        pb.step(-36)  # clamped at the first frame
        wait_frame(qtbot, pb, 0)
        pb.seek(99.0)
        wait_frame(qtbot, pb, 49)
        pb.play()  # at the end: nothing to play
        assert pb.state == "paused"
    finally:
        pb.close()


def test_reverse_shuttle_runs_backwards(qtbot, clip):
    pb = Playback(audio_device=None)
    try:
        pb.set_media(clip)
        pb.seek(1.5)
        wait_frame(qtbot, pb, 37)
        shown = record(pb)
        pb.shuttle(-2)
        qtbot.waitUntil(lambda: pb.state == "paused", timeout=3000)  # stops at the start
        indices = [i for i, _, _ in shown]
        assert indices == sorted(set(indices), reverse=True) and indices[-1] == 0
    finally:
        pb.close()


def test_scrub_shows_frame_and_plays_faded_grain(qtbot, clip, fake_playback):
    pb = fake_playback
    pb.set_media(clip)
    wait_frame(qtbot, pb, 0)
    stream = FakeStream.instances[-1]
    qtbot.wait(100)
    before = len(stream.chunks)
    pb.scrub(0.5)
    wait_frame(qtbot, pb, 12)
    qtbot.wait(300)
    out = np.concatenate(stream.chunks[before:])
    loud = np.flatnonzero(np.abs(out).max(axis=1) > 0)
    assert len(loud), "no grain was played"
    grain = out[loud[0] : loud[-1] + 1]
    n = round(GRAIN_S * RATE)
    assert n - 200 <= len(grain) <= n  # the tone's zero crossings may trim an edge sample or two
    peak = np.abs(grain).max()
    assert 0.2 < peak < 0.35  # the 0.3 tone
    # Faded in and out: the first and last 1 ms are far quieter than the middle.
    assert np.abs(grain[:48]).max() < 0.1 * peak and np.abs(grain[-48:]).max() < 0.1 * peak
    assert np.abs(out[loud[-1] + 1 :]).max(initial=0) == 0  # silence after it


def _tonal(x):
    """Residual of predicting each sample from the previous two as the source's 440 Hz tone:
    near 0 for the tone, large for the dub's noise."""
    m = x[:, 0].astype(np.float64)
    resid = m[2:] - 2 * np.cos(2 * np.pi * 440 / RATE) * m[1:-1] + m[:-2]
    return np.sqrt(np.mean(resid ** 2)) / max(np.sqrt(np.mean(m ** 2)), 1e-9)


def test_audio_choice_changes_samples_while_playing(qtbot, clip, dub, fake_playback):
    pb = fake_playback
    pb.set_media(clip, dub_path=dub, dub_offset=0.0, ranges=[(0.0, 2.0)])
    wait_frame(qtbot, pb, 0)
    stream = FakeStream.instances[-1]
    pb.play()
    qtbot.wait(400)
    a = len(stream.chunks)
    pb.set_audio("dub")
    qtbot.wait(400)
    b = len(stream.chunks)
    pb.pause()
    source_part = np.concatenate(stream.chunks[a - 8 : a - 2])
    dub_part = np.concatenate(stream.chunks[b - 8 : b - 2])
    assert pb.state == "paused"

    assert np.abs(source_part).max() > 0.2 and _tonal(source_part) < 0.01
    assert np.abs(dub_part).max() > 0.2 and _tonal(dub_part) > 0.2  # noise (band-limited by the 16 kHz source)
    assert 0.3 < pb.clock() < 1.2  # the audio clock advanced with the samples


def test_result_audio_follows_the_ranges_while_playing(qtbot, clip, dub, fake_playback):
    pb = fake_playback
    pb.set_media(clip, dub_path=dub, dub_offset=0.0, ranges=[])
    pb.set_audio("result")
    wait_frame(qtbot, pb, 0)
    pb.play()
    qtbot.wait(400)
    a = len(FakeStream.instances[-1].chunks)
    before = np.concatenate(FakeStream.instances[-1].chunks[a - 8 : a - 2])
    pb.set_ranges([(0.0, 2.0)])  # the whole clip is now re-synced: the result is the dub
    qtbot.wait(400)
    chunks = FakeStream.instances[-1].chunks
    after = np.concatenate(chunks[len(chunks) - 8 : len(chunks) - 2])
    pb.pause()
    assert _tonal(before) < 0.01 and _tonal(after) > 0.2  # the source's tone, then the dub's noise


def test_audio_clock_keeps_frames_in_step(qtbot, clip, fake_playback):
    pb = fake_playback
    pb.set_media(clip)
    wait_frame(qtbot, pb, 0)
    shown = record(pb)
    pb.play()
    qtbot.wait(1000)
    pb.pause()
    indices = [i for i, _, _ in shown]
    assert len(indices) >= 15 and indices == sorted(set(indices))
    for i, clock, t in shown:
        assert 0.0 <= clock - t < 1 / 25 + 1e-6


def test_no_device_gives_one_notice(qtbot, clip):
    def broken(**kwargs):
        raise OSError("no default output device")

    pb = Playback(stream_factory=broken)
    notices = []
    pb.notice.connect(notices.append)
    try:
        pb.set_media(clip)
        pb.set_media(clip)
        pb.play()
        qtbot.wait(300)
        pb.scrub(0.2)
        assert len(notices) == 1 and "audio" in notices[0].lower()
        assert not pb.has_audio_device
        assert pb.clock() == pytest.approx(float(pb.times[5]), abs=0.04)
    finally:
        pb.close()


def test_real_device_starts_and_closes(qtbot, clip):
    sd = pytest.importorskip("sounddevice")
    try:
        with sd.OutputStream(samplerate=RATE, channels=CHANNELS, dtype="float32"):
            pass
    except Exception as exc:  # no PortAudio device at all
        pytest.skip(f"no audio output device: {exc}")
    pb = Playback()
    try:
        pb.set_media(clip)
        assert pb.has_audio_device
        wait_frame(qtbot, pb, 0)
        shown = record(pb)
        pb.play()
        qtbot.wait(500)
        pb.scrub(0.3)
        qtbot.wait(100)
        assert shown and pb.state == "paused"
    finally:
        pb.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("playback-")]
