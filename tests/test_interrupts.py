"""A real ``redub`` process stopped mid-export by SIGTERM or SIGINT leaves no file behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.face_clip import write_face_clip
from tests.media_factory import make_video, write_tone_wav

ROOT = Path(__file__).resolve().parents[1]
STATUS = {signal.SIGTERM: (143, "terminated"), signal.SIGINT: (130, "interrupted")}

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    # Long enough that the export is still running when its temporary file shows up.
    clip = make_video(folder / "clip.mp4", frames=300, size=(640, 360), audio_rate=48000,
                      gop=25, bframes=0)
    return clip, write_tone_wav(folder / "dub.wav", seconds=12.0)


def _default_sigint() -> None:
    # As in a terminal: a shell starting a background job would have SIGINT ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop_mid_export(args: list[str], out_dir: Path, sig: signal.Signals) -> tuple[int, str]:
    """Run ``redub ARGS``, send ``sig`` once its temporary output exists; (status, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 60
        while not any(".part" in name for name in os.listdir(out_dir)):
            assert proc.poll() is None, f"finished before it could be stopped: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no temporary output appeared"
            time.sleep(0.005)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_render_stopped_mid_export_leaves_nothing(tmp_path, media, sig):
    clip, dub = media
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, err = _stop_mid_export(["render", str(clip), "--audio", str(dub),
                                  "-o", str(out_dir / "dubbed.mp4")], out_dir, sig)
    status, word = STATUS[sig]
    assert code == status, err
    assert err.strip().splitlines()[-1] == f"redub render: {word}"
    assert "Traceback" not in err
    assert os.listdir(out_dir) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sync_stopped_mid_export_leaves_nothing(tmp_path, media, sig):
    # A face, so the lip-sync edit runs on its worker threads while the signal arrives.
    clip = write_face_clip(tmp_path / "face.mp4", frames=200)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, err = _stop_mid_export(["sync", str(clip), "--audio", str(media[1]),
                                  "-o", str(out_dir / "synced.mp4")], out_dir, sig)
    status, word = STATUS[sig]
    assert code == status, err
    assert err.strip().splitlines()[-1] == f"redub sync: {word}"
    assert "Traceback" not in err
    assert os.listdir(out_dir) == []


def test_sigterm_handler_is_restored_after_main(tmp_path, media):
    from engine.cli import main

    before = signal.getsignal(signal.SIGTERM)
    assert main(["render", str(media[0]), "--audio", str(media[1]), "--crf", "99",
                 "-o", str(tmp_path / "o.mp4")]) == 2
    assert signal.getsignal(signal.SIGTERM) == before
