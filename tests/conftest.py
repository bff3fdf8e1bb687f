from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_MEDIA = SHARED / "media"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Tests never read or write the user's real cache or data, and never download a model.
    monkeypatch.setenv("REDUB_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("REDUB_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    monkeypatch.setenv("REDUB_OFFLINE", "1")
    monkeypatch.delenv("REDUB_MODEL_MIRROR", raising=False)  # a developer's studio mirror


@pytest.fixture(scope="module")
def _module_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("module-cache")


@pytest.fixture()
def module_cache(_module_cache_dir, tmp_path, monkeypatch):
    """One cache folder for the whole test module (a clip's face analysis is made once and
    serves every test) and a model folder of each test's own (``tmp_path/models``)."""
    monkeypatch.setenv("REDUB_CACHE_DIR", str(_module_cache_dir))
    monkeypatch.setenv("REDUB_MODELS_DIR", str(tmp_path / "models"))


@pytest.fixture()
def fresh_models(tmp_path, monkeypatch):
    """A model folder of this test's own (``tmp_path/models``) and no ONNX session cached by
    another test; yields ``tmp_path``."""
    from engine.models.session import clear_sessions

    monkeypatch.setenv("REDUB_MODELS_DIR", str(tmp_path / "models"))
    clear_sessions()
    yield tmp_path
    clear_sessions()


@pytest.fixture(scope="session")
def wav2lip_model(tmp_path_factory):
    """A full-size Wav2Lip with random weights, checkpoint and ONNX export, made once per run
    (skips without torch)."""
    from tests.wav2lip_model import export_random_wav2lip

    return export_random_wav2lip(tmp_path_factory.mktemp("wav2lip"))


def shared_clip(name: str) -> Path:
    path = SHARED_MEDIA / name
    if not path.exists():
        pytest.skip(f"shared media not available: {path}")
    return path


def shared_clips() -> list[str]:
    """Names of the shared video clips, or an empty list where ../shared is absent."""
    if not SHARED_MEDIA.is_dir():
        return []
    return sorted(p.name for p in SHARED_MEDIA.glob("*.mp4"))


os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
