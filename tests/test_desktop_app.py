from __future__ import annotations

import numpy as np

from desktop.app import MainWindow
from tests.media_factory import make_video


def test_window_opens_a_clip_and_scrubs(qtbot, tmp_path):
    path = make_video(tmp_path / "v.mp4", frames=30, size=(160, 96))
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    assert window.open(str(path))
    assert window.slider.maximum() == 29
    window.slider.setValue(25)
    assert window.timecode.text() == "00:00:01:00"
    image = window._image
    assert (image.width(), image.height()) == (160, 96)
    assert np.array_equal(image.ndarray, window.reader.frame(25).rgb())


def test_window_reports_a_bad_file(qtbot, tmp_path, monkeypatch):
    from PySide6 import QtWidgets

    shown = []
    monkeypatch.setattr(QtWidgets.QMessageBox, "warning", lambda *a: shown.append(a[2]))
    window = MainWindow()
    qtbot.addWidget(window)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    assert not window.open(str(bad))
    assert "not a readable media file" in shown[0]
