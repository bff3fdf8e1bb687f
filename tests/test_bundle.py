"""The application bundle (``installer/build.sh``) built, moved and run as a user would.

The bundle is built into a temporary folder, copied to another one whose name has a space
(it must not depend on where it was built), and run from a clean environment: no virtual
environment on the PATH, no Python variables, an empty home; where this process may make a
mount namespace (root on Linux), with this machine's Python hidden too (its standard library
and installation, and the checkout with its ``.venv``, under empty mounts). Each run is
repeated with the source tree's ``.venv`` under its own empty home, and the outputs are
compared.
"""
from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np
import pytest

from engine.timeline import io as timeline_io
from tests import timeline_factory as tf
from tests.conftest import shared_clip
from tests.media_factory import decode_all
from tests.model_server import ModelServer, sha
from tests.musetalk_factory import musetalk_onnx  # noqa: F401
from tests.sievesync_models import install_models

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv" / "bin"
CLIP, DUB = "hdtf_aoc_512.mp4", "speech_radio31_16k.wav"
# Screenshots whose text changes from run to run of the same program: the render's rate and
# time left (3), and temporary folders' names (5, 14-16).
VARYING_TEXT = {"3-rendering-preview", "5-export-dialog", "14-timeline-shots",
                "15-timeline-shots-dock", "16-timeline-shot-opened"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Iterator[Path]:
    shared_clip(CLIP)  # skips where the shared media are absent
    dist = tmp_path_factory.mktemp("dist")
    build = subprocess.run(["bash", str(ROOT / "installer" / "build.sh"), "--dist", str(dist)],
                           cwd=ROOT, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    moved = tmp_path_factory.mktemp("apps") / "Redub Studio"
    shutil.copytree(dist / "redub-studio", moved, symlinks=True)
    shutil.rmtree(dist)
    yield moved
    shutil.rmtree(moved)  # 750 MB: not left for pytest's kept temporary folders


def python_folders() -> list[str]:
    """Where this machine's Pythons live: the installation running the tests (unless it is the
    system's /usr), the system's standard libraries and packages, the checkout with its
    virtual environment. Folders inside another one are left out (that one hides them)."""
    folders = {ROOT, *Path("/usr/lib").glob("python3*"), *Path("/usr/local/lib").glob("python3*")}
    if not sys.base_prefix.startswith("/usr"):
        folders.add(Path(sys.base_prefix))
    folders = {f for f in folders if f.is_dir()}
    return sorted(str(f) for f in folders if not any(o in f.parents for o in folders))


@cache
def can_hide_python() -> bool:
    return sys.platform == "linux" and shutil.which("unshare") is not None and \
        subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


def without_python(command: list[str]) -> list[str]:
    """``command`` in a mount namespace where :func:`python_folders` are empty (where the
    system allows one; else as it is)."""
    if not can_hide_python():
        return command
    mounts = "".join(f"mount -t tmpfs none {shlex.quote(f)} && " for f in python_folders())
    return ["unshare", "-m", "sh", "-c", mounts + "exec " + shlex.join(command)]


class Runner:
    """One program (the bundle or the source tree) with its own empty home."""

    def __init__(self, bin_dir: Path, home: Path, cwd: Path, isolated: bool = False) -> None:
        self.bin_dir, self.home, self.cwd, self.isolated = bin_dir, home, cwd, isolated
        self.extra: dict[str, str] = {}  # what a test sets on purpose
        home.mkdir(parents=True)

    def env(self) -> dict[str, str]:
        # Nothing of the test's environment: no venv, no PYTHONPATH, no REDUB_* folders.
        return {"PATH": "/usr/bin:/bin", "HOME": str(self.home), "LANG": "C.UTF-8",
                "QT_QPA_PLATFORM": "offscreen", **self.extra}

    def __call__(self, program: str, *args: str, status: int = 0, timeout: float = 600) -> str:
        command = [str(self.bin_dir / program), *args]
        done = subprocess.run(without_python(command) if self.isolated else command,
                              env=self.env(), cwd=self.cwd, capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == status, f"{program} {args[:1]}: {done.stderr[-3000:]}"
        return done.stdout + done.stderr


@pytest.fixture
def runners(bundle, tmp_path) -> tuple[Runner, Runner]:
    return (Runner(bundle, tmp_path / "home-bundle", tmp_path, isolated=True),
            Runner(VENV, tmp_path / "home-source", tmp_path))


def decoded(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Every video frame's native planes and all audio samples of a file."""
    frames = [np.ascontiguousarray(f.to_ndarray()) for f in decode_all(path)]
    with av.open(str(path)) as container:
        audio = [f.to_ndarray() for f in container.decode(audio=0)] if container.streams.audio \
            else []
    return frames, (np.concatenate(audio, axis=1) if audio else np.zeros((0, 0)))


def assert_same_media(a: Path, b: Path) -> None:
    frames_a, audio_a = decoded(a)
    frames_b, audio_b = decoded(b)
    assert len(frames_a) == len(frames_b) > 0
    assert all(np.array_equal(x, y) for x, y in zip(frames_a, frames_b))
    assert np.array_equal(audio_a, audio_b)


def test_bundle_needs_no_python_and_keeps_no_torch(bundle, tmp_path):
    internal = bundle / "_internal"
    assert (bundle / "redub").is_file() and (bundle / "redub-studio").is_file()
    assert not (internal / "torch").exists() and not list(internal.rglob("libtorch*"))
    if can_hide_python():
        # Where the bundle runs in these tests, the machine's Python cannot start.
        for python in {sys.executable, sys._base_executable,
                       shutil.which("python3", path="/usr/bin:/bin")} - {None}:
            hidden = subprocess.run(without_python([python, "-c", "import encodings"]),
                                    capture_output=True)
            assert hidden.returncode != 0, python
        assert "redub" in Runner(bundle, tmp_path / "home", tmp_path, isolated=True)("redub",
                                                                                     "--help")
    # dlib's landmark model, the theme and the manifest travel with it; the desktop entry too.
    assert (internal / "face_recognition_models" / "models"
            / "shape_predictor_68_face_landmarks.dat").is_file()
    assert (internal / "resources" / "theme.qss").is_file()
    assert (internal / "resources" / "models.json").is_file()
    assert "Exec=\"@BUNDLE@/redub-studio\"" in (bundle / "share" / "redub-studio.desktop").read_text()
    assert (bundle / "share" / "redub-studio.png").stat().st_size > 1000


def test_bundle_sync_matches_the_source_tree(runners, tmp_path):
    args = [str(shared_clip(CLIP)), "--audio", str(shared_clip(DUB)),
            "--range", "00:00:01:00-00:00:06:00"]
    for runner, name in zip(runners, ("bundle", "source")):
        runner("redub", "sync", *args, "-o", str(tmp_path / f"{name}.mp4"))
    assert_same_media(tmp_path / "bundle.mp4", tmp_path / "source.mp4")
    # The analysis was cached in the platform's cache folder.
    assert list((runners[0].home / ".cache" / "redub-studio").rglob("*"))


def test_bundle_desktop_screenshots_match_the_source_tree(runners, tmp_path):
    clip, dub = str(shared_clip(CLIP)), str(shared_clip(DUB))
    for runner, name in zip(runners, ("bundle", "source")):
        runner("redub-studio", "--screenshots", str(tmp_path / name), clip, "--audio", dub)
    names = sorted(p.name for p in (tmp_path / "source").glob("*.png"))
    assert len(names) >= 16
    assert sorted(p.name for p in (tmp_path / "bundle").glob("*.png")) == names
    for name in names:
        a = cv2.imread(str(tmp_path / "bundle" / name))
        b = cv2.imread(str(tmp_path / "source" / name))
        assert a.shape == b.shape, name
        differ = np.mean(np.any(a != b, axis=2))
        if Path(name).stem in VARYING_TEXT:
            assert differ < 0.02, name  # a line of text, not the picture
        else:
            assert differ == 0, name

    # A real start: the window comes up, and closing it saves the layout in the platform's
    # settings folder.
    assert "ready" in runners[0]("redub-studio", "--startup-check")
    assert (runners[0].home / ".config" / "Redub" / "Redub Studio.conf").is_file()


def test_bundle_downloads_a_model_on_first_use_and_runs_it(runners, wav2lip_model, tmp_path):
    # A studio's model mirror serving a Wav2Lip export (random weights) with its SHA256SUMS,
    # set once; the first job that needs the model downloads it, with progress.
    model = wav2lip_model.onnx.read_bytes()
    sums = f"{sha(model)}  {len(model)}  wav2lip_96.onnx\n".encode()
    args = [str(shared_clip(CLIP)), "--audio", str(shared_clip(DUB)), "--backend", "wav2lip",
            "--range", "2-3", "--codec", "ffv1"]
    with ModelServer({"studio/wav2lip_96.onnx": model, "studio/SHA256SUMS": sums}) as server:
        for runner, name in zip(runners, ("bundle", "source")):
            runner("redub", "models", "mirror", server.url("studio"))
            log = runner("redub", "sync", *args, "-o", str(tmp_path / f"{name}.mkv"))
            assert "wav2lip_96" in log and "100.0%" in log, log[-2000:]
            installed = runner.home / ".local" / "share" / "redub-studio" / "models"
            assert (installed / "wav2lip_96.onnx").read_bytes() == model
        assert [path for path, _ in server.requests].count("studio/wav2lip_96.onnx") == 2
    assert_same_media(tmp_path / "bundle.mkv", tmp_path / "source.mkv")

    # MuseTalk is made from PyTorch checkpoints: the bundle has no exporters, and says where
    # the files can come from instead, before downloading anything.
    error = runners[0]("redub", "models", "download", "musetalk", status=1).strip()
    assert "\n" not in error and "this bundled application cannot convert them" in error
    assert "redub models import FILE" in error


def test_bundle_runs_the_sievesync_pipeline_like_the_source_tree(runners, musetalk_onnx,
                                                                tmp_path, monkeypatch):
    # SieveSync on tiny random networks in the public contracts: LivePortrait, MuseTalk (its
    # Whisper features), CodeFormer, and the dub denoised by noisereduce (scipy) on the way.
    models = tmp_path / "models"
    monkeypatch.setenv("REDUB_MODELS_DIR", str(models))
    install_models(musetalk_onnx, tmp_path)
    for runner, name in zip(runners, ("bundle", "source")):
        runner.extra["REDUB_MODELS_DIR"] = str(models)
        runner("redub", "sync", str(shared_clip(CLIP)), "--audio", str(shared_clip(DUB)),
               "--backend", "sievesync", "--range", "3-4", "--offline", "--codec", "ffv1",
               "-o", str(tmp_path / f"{name}.mkv"))
    assert_same_media(tmp_path / "bundle.mkv", tmp_path / "source.mkv")
    source = decoded(shared_clip(CLIP))[0]
    assert not np.array_equal(decoded(tmp_path / "bundle.mkv")[0][90], source[90])  # it edited


def test_bundle_batch_reads_an_editors_timeline_on_worker_processes(runners, tmp_path):
    # Premiere's FCP 7 XML (an adapter loaded as a plugin), two shots on two worker processes:
    # spawned workers start the bundle's own executable.
    timeline = tmp_path / "edit.xml"
    timeline_io.write_timeline(tf.two_shots(), timeline)
    for runner, name in zip(runners, ("bundle", "source")):
        runner("redub", "batch", str(timeline), "-o", str(tmp_path / name), "--workers", "2",
               "--codec", "ffv1", "--report", "json")
    made = sorted(p.relative_to(tmp_path / "source")
                  for p in (tmp_path / "source").rglob("*.mkv"))
    assert len(made) == 2
    assert sorted(p.relative_to(tmp_path / "bundle")
                  for p in (tmp_path / "bundle").rglob("*.mkv")) == made
    for path in made:
        assert_same_media(tmp_path / "bundle" / path, tmp_path / "source" / path)
    conformed = [timeline_io.read_timeline(next((tmp_path / name).glob("*.xml")))
                 for name in ("bundle", "source")]
    assert [c.name for c in conformed[0].find_clips()] == \
        [c.name for c in conformed[1].find_clips()]


@pytest.mark.skipif(sys.platform != "linux", reason="the desktop entry is for Linux desktops")
def test_bundle_installs_its_desktop_entry(bundle, tmp_path):
    data = tmp_path / "data"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_DATA_HOME": str(data)}
    subprocess.run(["sh", str(bundle / "install-desktop-entry.sh")], env=env, check=True,
                   capture_output=True)
    entry = (data / "applications" / "redub-studio.desktop").read_text()
    assert f'Exec="{bundle}/redub-studio" %f' in entry
    assert (data / "icons" / "hicolor" / "256x256" / "apps" / "redub-studio.png").is_file()
    subprocess.run(["sh", str(bundle / "install-desktop-entry.sh"), "--remove"], env=env,
                   check=True)
    assert not (data / "applications" / "redub-studio.desktop").exists()
