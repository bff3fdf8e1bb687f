"""The desktop's model download dialog, against a local HTTP server."""
from __future__ import annotations

import hashlib

import pytest
from PySide6 import QtWidgets

from desktop.model_download import (MissingModelDialog, ModelDownloadDialog, ensure_model,
                                    ensure_models)
from engine.models import download, manifest
from tests.model_factory import offset_model, restorer_entry, write_manifest
from tests.model_server import ModelServer, unused_port

MODEL = offset_model(bias_size=100_000)  # about 400 kB


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "CHUNK", 8192)
    monkeypatch.delenv(download.OFFLINE_ENV)  # these download, from the local server only
    return tmp_path / "models"


@pytest.fixture
def server(tmp_path, monkeypatch):
    with ModelServer({"m.onnx": MODEL}) as s:
        path = write_manifest(tmp_path / "manifest.json", [
            restorer_entry("m", [s.url("m.onnx")], sha256=hashlib.sha256(MODEL).hexdigest()),
            restorer_entry("offline", [f"http://127.0.0.1:{unused_port()}/x.onnx"])])
        monkeypatch.setattr(manifest, "MANIFEST_PATH", path)
        yield s


def test_dialog_downloads_with_progress(qtbot, server, folder):
    dialog = ModelDownloadDialog("m", folder)
    qtbot.addWidget(dialog)
    values = []
    dialog.thread_.progressed.connect(lambda done, total: values.append((done, total)))
    with qtbot.waitSignal(dialog.downloaded, timeout=10_000) as done:
        dialog.start()
    assert done.args == [str(folder / "m.onnx")]
    assert (folder / "m.onnx").read_bytes() == MODEL and dialog.path == folder / "m.onnx"
    assert values[-1] == (len(MODEL), len(MODEL)) and dialog.value() == dialog.maximum()
    qtbot.waitUntil(lambda: not dialog.thread_.isRunning())
    assert not dialog.isVisible()


def test_cancel_keeps_the_part_and_the_next_download_resumes(qtbot, server, folder):
    server.throttle = 0.02  # about 1 MB/s: the download is still running when Cancel lands
    dialog = ModelDownloadDialog("m", folder)
    qtbot.addWidget(dialog)
    cancel = dialog.findChild(QtWidgets.QPushButton)
    assert cancel.text() == "Cancel"
    dialog.thread_.progressed.connect(lambda done, total: done > 50_000 and cancel.click())
    with qtbot.waitSignal(dialog.download_cancelled, timeout=10_000):
        dialog.start()
    qtbot.waitUntil(lambda: not dialog.thread_.isRunning())
    kept = (folder / "m.onnx.part").stat().st_size
    assert 0 < kept < len(MODEL) and not (folder / "m.onnx").exists() and dialog.path is None

    server.throttle = 0.0
    assert ensure_model("m", directory=folder) == folder / "m.onnx"
    assert (folder / "m.onnx").read_bytes() == MODEL
    assert server.requests[-1] == ("m.onnx", f"bytes={kept}-")
    # Installed and verified: no dialog, no request.
    count = len(server.requests)
    assert ensure_model("m", directory=folder) == folder / "m.onnx"
    assert len(server.requests) == count


def test_offline_setting_reports_the_missing_file_without_downloading(qtbot, server, folder,
                                                                      monkeypatch):
    monkeypatch.setenv(download.OFFLINE_ENV, "1")
    shown = []  # the missing-model dialog's details, answered with Cancel
    monkeypatch.setattr(MissingModelDialog, "exec",
                        lambda self: shown.append(self.detailedText()) or 0)
    assert ensure_model("m", directory=folder) is None
    assert server.requests == [] and len(shown) == 1
    assert "model 'm' (restorer) is missing" in shown[0] and "m.onnx" in shown[0]


def test_failure_is_reported_in_one_line(qtbot, server, folder, monkeypatch):
    shown = []  # the engine's message, said by the missing-model dialog (answered with Cancel)
    monkeypatch.setattr(MissingModelDialog, "exec",
                        lambda self: shown.append(self.informativeText().split("\n")[0]) or 0)
    assert ensure_model("offline", directory=folder) is None
    assert len(shown) == 1
    assert shown[0].startswith(f"The download failed: {folder / 'offline.onnx'}: offline: "
                               "cannot reach 127.0.0.1")


def test_one_dialog_installs_several_models_phase_by_phase(qtbot, server, folder, tmp_path,
                                                           monkeypatch):
    second = offset_model(offset=2.0)
    server.files["n.onnx"] = second
    path = write_manifest(tmp_path / "two.json", [
        restorer_entry("m", [server.url("m.onnx")], sha256=hashlib.sha256(MODEL).hexdigest()),
        restorer_entry("n", [server.url("n.onnx")])])
    monkeypatch.setattr(manifest, "MANIFEST_PATH", path)
    dialog = ModelDownloadDialog(["m", "n"], folder)
    qtbot.addWidget(dialog)
    phases, labels = [], []
    dialog.thread_.phase.connect(phases.append)
    dialog.thread_.progressed.connect(lambda done, total: labels.append(dialog.labelText()))
    with qtbot.waitSignal(dialog.downloaded, timeout=10_000):
        dialog.start()
    assert phases == ["m", "n"] and dialog.paths == [folder / "m.onnx", folder / "n.onnx"]
    assert any(label.startswith("Downloading n: ") for label in labels)
    qtbot.waitUntil(lambda: not dialog.thread_.isRunning())
    # A conversion counts networks, not bytes, in the same dialog.
    dialog.thread_.phase.emit("convert musetalk_unet_v15")
    dialog.thread_.progressed.emit(1.0, 5.0)
    assert dialog.labelText() == ("Converting the official checkpoints: musetalk_unet_v15 "
                                  "(2 of 5)")
    assert (dialog.value(), dialog.maximum()) == (1, 5)
    # Installed and verified: ensure_models answers at once, no dialog, no request.
    count = len(server.requests)
    assert ensure_models(["n", "m"], directory=folder) == [folder / "n.onnx", folder / "m.onnx"]
    assert len(server.requests) == count


def test_a_model_made_from_checkpoints_can_be_asked_for(qtbot, tmp_path):
    # The shipped manifest: MuseTalk's UNet has no public file, but "Download" converts it.
    entry = manifest.get_entry("musetalk_unet_v15")
    ask = MissingModelDialog(entry, tmp_path, "Downloads are turned off (REDUB_OFFLINE).")
    qtbot.addWidget(ask)
    assert ask.download_button.isEnabled() and ask.defaultButton() is ask.download_button
    assert "converts" in ask.download_button.toolTip()
    assert "musetalk_unet_v15.onnx + musetalk_unet_v15.onnx.data" in ask.detailedText()
    own = manifest.get_entry("expression_neutralizer")  # no source at all: import only
    ask = MissingModelDialog(own, tmp_path, "")
    qtbot.addWidget(ask)
    assert not ask.download_button.isEnabled()
