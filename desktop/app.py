"""``redub-studio``: the desktop application's entry point.

For now the window is a frame viewer with a scrub bar (open a clip, step through it at its true
timing); the editor around it (timeline, dub track, engine bridge) grows from here.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from engine.errors import RedubError
from engine.media.reader import VideoReader
from engine.timecode import format_timecode


class MainWindow(QtWidgets.QMainWindow):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("Redub Studio")
        self.resize(1100, 720)
        self.reader: VideoReader | None = None
        self.picture = QtWidgets.QLabel(alignment=QtCore.Qt.AlignmentFlag.AlignCenter)
        self.picture.setMinimumSize(320, 180)
        self.picture.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored,
                                   QtWidgets.QSizePolicy.Policy.Ignored)
        self.picture.setText("Open a clip (Ctrl+O) or drop one here")
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal, enabled=False)
        self.slider.valueChanged.connect(self.show_frame)
        self.timecode = QtWidgets.QLabel("--:--:--:--")
        self.timecode.setFont(QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.SystemFont.FixedFont))
        bar = QtWidgets.QHBoxLayout()
        bar.addWidget(self.slider, 1)
        bar.addWidget(self.timecode)
        body = QtWidgets.QWidget()
        layout = QtWidgets.QVBoxLayout(body)
        layout.addWidget(self.picture, 1)
        layout.addLayout(bar)
        self.setCentralWidget(body)
        self.setAcceptDrops(True)
        open_action = QtGui.QAction("&Open…", self, shortcut=QtGui.QKeySequence.StandardKey.Open)
        open_action.triggered.connect(self.choose_file)
        self.menuBar().addMenu("&File").addAction(open_action)
        for key, step in ((QtCore.Qt.Key.Key_Left, -1), (QtCore.Qt.Key.Key_Right, 1)):
            QtGui.QShortcut(QtGui.QKeySequence(key), self,
                            activated=lambda s=step: self.slider.setValue(self.slider.value() + s))
        self._image: QtGui.QImage | None = None

    def choose_file(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open clip")
        if path:
            self.open(path)

    def open(self, path: str) -> bool:
        try:
            reader = VideoReader(path)
        except RedubError as exc:
            QtWidgets.QMessageBox.warning(self, "Cannot open", str(exc))
            return False
        if self.reader is not None:
            self.reader.close()
        self.reader = reader
        self.setWindowTitle(f"Redub Studio — {path}")
        self.slider.setRange(0, reader.frame_count - 1)
        self.slider.setEnabled(True)
        self.slider.setValue(0)
        self.show_frame(0)
        return True

    def show_frame(self, index: int) -> None:
        if self.reader is None:
            return
        try:
            frame = self.reader.frame(index)
        except RedubError as exc:
            self.statusBar().showMessage(str(exc))
            return
        rgb = np.ascontiguousarray(frame.rgb())
        # QImage borrows the buffer: keep the array alive with the image.
        self._image = QtGui.QImage(rgb.data, rgb.shape[1], rgb.shape[0], rgb.strides[0],
                                   QtGui.QImage.Format.Format_RGB888)
        self._image.ndarray = rgb
        self._update_picture()
        self.timecode.setText(format_timecode(frame.time, self.reader.info.frame_rate))

    def _update_picture(self) -> None:
        if self._image is not None:
            pix = QtGui.QPixmap.fromImage(self._image).scaled(
                self.picture.size(), QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                QtCore.Qt.TransformationMode.SmoothTransformation)
            self.picture.setPixmap(pix)

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        super().resizeEvent(event)
        self._update_picture()

    def dragEnterEvent(self, event: QtGui.QDragEnterEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QtGui.QDropEvent) -> None:
        urls = event.mimeData().urls()
        if urls:
            self.open(urls[0].toLocalFile())

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        if self.reader is not None:
            self.reader.close()
        super().closeEvent(event)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="redub-studio", description="Redub Studio editor")
    parser.add_argument("video", nargs="?", help="clip to open")
    args = parser.parse_args(argv)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    window = MainWindow()
    window.show()
    if args.video:
        window.open(args.video)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
