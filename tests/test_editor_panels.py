"""The editor used for a day (issue 13): the jobs panel, the difference view against the exact
render, a missing model's ways out and H.265 in the export dialog."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PySide6 import QtCore, QtGui, QtWidgets

from desktop.bridge import EngineBridge, frame_to_qimage
from desktop.export_dialog import ExportDialog
from desktop.model_download import MissingModelDialog, ensure_model
from tests.editor_window import go_to_frame, mark, open_clip
from engine.media.reader import VideoReader
from engine.models import manifest
from engine.project import ExportPrefs
from engine.render import ExportSettings, RenderResult, render
from tests.media_factory import make_video, write_tone_wav
from tests.test_editor_day import engine, window  # noqa: F401  (shared fixtures)
from tests.model_factory import offset_model, restorer_entry, write_manifest
from tests.model_server import ModelServer

Qt = QtCore.Qt
CTRL = Qt.KeyboardModifier.ControlModifier


@pytest.fixture
def media(tmp_path):
    return (make_video(tmp_path / "v.mp4", frames=50, size=(160, 96), audio_rate=16000),
            write_tone_wav(tmp_path / "dub.wav", 2.5))


def rgb_of(image: QtGui.QImage) -> np.ndarray:
    image = image.convertToFormat(QtGui.QImage.Format.Format_RGB888)
    return np.frombuffer(image.constBits(), np.uint8).reshape(
        image.height(), image.bytesPerLine())[:, :image.width() * 3].reshape(
        image.height(), image.width(), 3).copy()


# -- 12: the jobs panel ----------------------------------------------------------------------

def test_jobs_panel_shows_every_job_in_full_and_forgets_the_old_project(qtbot, window, engine,
                                                                        media, tmp_path):
    window.resize(1440, 900)
    video, dub = media
    open_clip(qtbot, window, video, dub)
    mark(qtbot, window, 10, 30)
    renders = []
    for _ in range(3):
        qtbot.keyClick(window, Qt.Key.Key_R)
        renders.append(window.renders[-1].job)
    out = tmp_path / "a folder with a long name" / "deeper still" / "interview_take_12_redub.mov"
    export = window.export(ExportPrefs(output=str(out), codec="prores"))
    window.bridge.started.emit(export)
    window.bridge.finished.emit(renders[0], "/cache/renders/v-0123456789.mp4",
                                ["frames 12–14 keep their own mouth: fix them with a "
                                 "keep-original span or the mask tools"])
    window.bridge.failed.emit(renders[1], "render failed: a long one-line message from the "
                                          "engine naming the file and what went wrong with it")
    panel = window.jobs
    qtbot.waitUntil(lambda: panel.rows[renders[1]].state == "failed")
    qtbot.wait(50)

    # Several jobs show at once at 1440x900, the rest a scroll away; nothing scrolls sideways
    # or is cut.
    viewport = panel.scroll.viewport()
    visible = [row for row in panel.rows.values()
               if row.visibleRegion().boundingRect().height() == row.height()]
    assert len(visible) >= 2
    for row in panel.rows.values():
        panel.scroll.ensureWidgetVisible(row, 0, 0)
        qtbot.wait(10)
        assert row.visibleRegion().boundingRect().height() == row.height()
    assert panel.scroll.horizontalScrollBar().maximum() == 0
    for row in panel.rows.values():
        assert row.width() <= viewport.width()
        for label in (row.title, row.status, row.message, row.path):
            shown = label.shown_text()
            assert label.fontMetrics().horizontalAdvance(shown) <= label.contentsRect().width()
            assert label.toolTip() == label.text()  # the full text is a hover away

    # A long text is elided, never clipped.
    failed = panel.rows[renders[1]]
    assert failed.message.text().endswith("went wrong with it")
    assert failed.message.shown_text().endswith("…")
    done = panel.rows[renders[0]]
    assert "keep their own mouth" in done.message.text()

    # The export names its codec and its file; the folder gives way first.
    row = panel.rows[export]
    assert row.title.text() == "Export · Apple ProRes 422 HQ"
    assert row.path.text() == str(out) and row.path.isVisible()
    shown = row.path.shown_text()
    assert shown.startswith("…") and shown.endswith("/interview_take_12_redub.mov")

    # New Project: the old project's jobs go; the export still running stays to the end.
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    qtbot.keyClick(window, Qt.Key.Key_N, CTRL)
    assert window.project is None and list(panel.rows) == [export]
    window.bridge.finished.emit(export, str(out), [])
    assert panel.rows[export].state == "done"
    # Opening another clip leaves no finished job of before either.
    open_clip(qtbot, window, video, dub)
    assert panel.rows == {} and panel.empty.isVisible()


# -- 15: the difference view -----------------------------------------------------------------

def test_difference_compares_with_the_exact_rendered_frame(qtbot, window, engine, media,
                                                           tmp_path):
    video, dub = media
    open_clip(qtbot, window, video, dub)
    mark(qtbot, window, 10, 30)
    go_to_frame(qtbot, window, 20)  # the editor parks on a frame, then renders
    qtbot.keyClick(window, Qt.Key.Key_R)
    job, encoded = window.renders[-1].job, window.renders[-1].output
    # The render file is an encoded copy: every pixel moves a little, as in any render.
    render(str(video), ExportSettings(output=encoded, codec="h264",
                                      quality={"crf": "30", "preset": "veryfast"}), dub=None)
    assert window.bridge._worker.watched == 20  # the bridge sends that frame exactly
    source = window._source_rgb.copy()
    result = source.copy()
    result[40:60, 70:90] = 255 - result[40:60, 70:90]  # the mouth the render changed
    window.bridge.exact.emit(job, 20, QtGui.QImage(frame_to_qimage_rgb(result)))
    window.bridge.finished.emit(job, encoded, [])
    qtbot.waitUntil(lambda: window.renders.result_at == 20, timeout=5000)  # the file's frame too

    window.compare_actions["difference"].trigger()
    assert window.viewer.compare_mode() == "difference"
    diff = rgb_of(window.viewer._image("difference"))
    changed = np.zeros(diff.shape[:2], bool)
    changed[40:60, 70:90] = True
    assert diff[~changed].max() == 0  # untouched pixels are exactly black
    assert diff[changed].min() > 0
    assert window.viewer._exact

    # Elsewhere only the render file's encoded frame is known: the view says so.
    go_to_frame(qtbot, window, 25)
    qtbot.waitUntil(lambda: window.renders.result_at == 25, timeout=5000)
    assert window.viewer._result_rgb is not None and not window.viewer._exact


def frame_to_qimage_rgb(rgb: np.ndarray) -> QtGui.QImage:
    image = QtGui.QImage(rgb.data, rgb.shape[1], rgb.shape[0], rgb.shape[1] * 3,
                         QtGui.QImage.Format.Format_RGB888)
    return image.copy()


class _Frames:
    """A job that hands the preview every frame of a clip as fast as it can."""

    def __init__(self, path: str) -> None:
        self.path = path

    def run(self, progress, cancel, preview, unplaced) -> RenderResult:
        with VideoReader(self.path) as reader:
            for i in range(reader.frame_count):
                preview(reader.frame(i))
            return RenderResult(path=self.path, frames=reader.frame_count, seconds=1.0, notes=[])


def test_the_bridge_sends_the_watched_frame_exactly_past_the_throttle(qtbot, media):
    video, _ = media
    bridge = EngineBridge(preview_interval=60.0)  # throttled to the first frame only
    try:
        bridge.watch_frame(33)
        exact, previews = [], []
        bridge.exact.connect(lambda job, index, image: exact.append((index, rgb_of(image))))
        bridge.preview.connect(lambda job, index, image: previews.append(index))
        with qtbot.waitSignal(bridge.finished, timeout=20000):
            bridge.submit(_Frames(str(video)))
        qtbot.wait(50)
        assert 33 not in previews
        assert [i for i, _ in exact] == [33]
        with VideoReader(str(video)) as reader:
            assert np.array_equal(exact[0][1], reader.frame(33).rgb())
    finally:
        bridge.shutdown()


# -- 16: a missing model ---------------------------------------------------------------------

MODEL = offset_model()


@pytest.fixture
def models(tmp_path, monkeypatch):
    with ModelServer({"m.onnx": MODEL}) as server:
        path = write_manifest(tmp_path / "manifest.json", [
            restorer_entry("m", [server.url("m.onnx")], sha256=hashlib.sha256(MODEL).hexdigest())])
        monkeypatch.setattr(manifest, "MANIFEST_PATH", path)
        yield server, tmp_path / "models"


def answer_missing(button: str, seen: list[MissingModelDialog]) -> None:
    """Click ``button`` ("import" or "download") on the next missing-model dialog to show."""
    def click() -> None:
        dialog = next((w for w in QtWidgets.QApplication.topLevelWidgets()
                       if isinstance(w, MissingModelDialog) and w.isVisible()
                       and w not in seen), None)
        if dialog is None:
            QtCore.QTimer.singleShot(20, click)
            return
        seen.append(dialog)
        (dialog.import_button if button == "import" else dialog.download_button).click()
    QtCore.QTimer.singleShot(0, click)


def test_a_missing_model_offers_import_and_download(qtbot, models, tmp_path, monkeypatch):
    server, folder = models
    junk, good = tmp_path / "junk.onnx", tmp_path / "downloads" / "m-copy.onnx"
    junk.write_bytes(b"not a model")
    good.parent.mkdir()
    good.write_bytes(MODEL)
    chosen = [str(junk), str(good)]
    monkeypatch.setattr(QtWidgets.QFileDialog, "getOpenFileName",
                        lambda *a, **k: (chosen.pop(0), ""))
    seen: list[MissingModelDialog] = []

    # Offline: the dialog says so in a sentence; a file that is no model is refused and said
    # why, and the dialog comes back; the right file is checked and copied in.
    answer_missing("import", seen)
    QtCore.QTimer.singleShot(300, lambda: answer_missing("import", seen))
    assert ensure_model("m", directory=folder) == folder / "m.onnx"
    assert (folder / "m.onnx").read_bytes() == MODEL and server.requests == []
    assert len(seen) == 2
    assert seen[0].text() == "The restorer model “m” is not installed."
    assert "REDUB_OFFLINE" in seen[0].informativeText()
    assert "m.onnx" in seen[0].detailedText()  # the paths and command are under Details
    assert seen[1].informativeText().startswith("The file was not imported")
    assert str(junk) in seen[1].informativeText()

    # Download: fetched even though downloads are off by default, since the editor asked.
    (folder / "m.onnx").unlink()
    answer_missing("download", seen)
    assert ensure_model("m", directory=folder) == folder / "m.onnx"
    assert (folder / "m.onnx").read_bytes() == MODEL and server.requests


# -- H.265 in the export dialog --------------------------------------------------------------

def test_the_export_dialog_offers_h265(qtbot, tmp_path):
    dialog = ExportDialog(ExportPrefs(), str(tmp_path / "clip_redub.mp4"), has_ranges=True)
    qtbot.addWidget(dialog)
    dialog.show()
    index = dialog.codec.findData("h265")
    assert index >= 0 and dialog.codec.itemText(index) == "H.265 (x265)"
    dialog.codec.setFocus()
    while dialog.codec.currentData() != "h265":
        qtbot.keyClick(dialog.codec, Qt.Key.Key_Down)
    assert dialog.output.text().endswith(".mp4")  # H.265 goes in MP4 as it is
    assert dialog.quality.currentText() == "High (CRF 18)"
    choice = dialog.choice()
    assert choice.prefs.codec == "h265" and choice.prefs.quality == {"crf": "18",
                                                                     "preset": "slow"}
    settings = choice.prefs.to_export_settings()
    assert settings.codec == "h265"
