"""The jobs panel: one row per engine job with its stage, progress, speed, time left and cancel.

Rows follow the :class:`~desktop.bridge.EngineBridge` signals; a failed job keeps the engine's
one-line message on its row, so the user sees why without opening a log. Rows are compact and
their text is elided to the dock's width (the full text in a tooltip), so several jobs show at
once in a narrow dock and a long name never pushes the row out of view; an export's row names
its codec and output path (the folder elided first, the file name kept).
"""
from __future__ import annotations

import os
from typing import Callable

from PySide6 import QtCore, QtGui, QtWidgets

from desktop.bridge import EngineBridge
from engine.media.codecs import PRESETS
from ui import theme

STATES = ("queued", "running", "done", "failed", "cancelled")


def _eta(seconds: float) -> str:
    if seconds < 0:
        return ""
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d} left" if seconds >= 60 else f"{seconds} s left"


class ElidedLabel(QtWidgets.QLabel):
    """A one-line label that elides what does not fit (``mode``) instead of widening its row;
    ``text()`` and the tooltip keep the full text (lines of a multi-line text shown joined)."""

    def __init__(self, text: str = "",
                 mode: QtCore.Qt.TextElideMode = QtCore.Qt.TextElideMode.ElideRight,
                 parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.mode = mode
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored,
                           QtWidgets.QSizePolicy.Policy.Preferred)
        self.setText(text)

    def setText(self, text: str) -> None:
        super().setText(text)
        self.setToolTip(text)

    def shown_text(self) -> str:
        """What fits in the label's width."""
        line = " · ".join(part for part in self.text().splitlines() if part)
        return self.fontMetrics().elidedText(line, self.mode, max(self.contentsRect().width(), 0))


class PathLabel(ElidedLabel):
    """A file path that gives up its folder before its file name (``…/folder/name.mov``)."""

    def shown_text(self) -> str:
        metrics, width = self.fontMetrics(), max(self.contentsRect().width(), 0)
        folder, name = os.path.split(self.text())
        if metrics.horizontalAdvance(self.text()) <= width or not folder:
            return metrics.elidedText(self.text(), QtCore.Qt.TextElideMode.ElideMiddle, width)
        name = os.sep + name
        room = width - metrics.horizontalAdvance(name)
        if room < metrics.horizontalAdvance("…"):
            return metrics.elidedText(name[1:], QtCore.Qt.TextElideMode.ElideMiddle, width)
        return metrics.elidedText(folder, QtCore.Qt.TextElideMode.ElideLeft, room) + name

    def minimumSizeHint(self) -> QtCore.QSize:
        return QtCore.QSize(0, super().minimumSizeHint().height())

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:
        p = QtGui.QPainter(self)
        p.setPen(self.palette().color(self.foregroundRole()))
        p.drawText(self.contentsRect(), int(self.alignment()), self.shown_text())


class JobRow(QtWidgets.QFrame):
    """One job: title and state, stage, a progress bar, fps and time left, a cancel button;
    an export also shows its output path."""

    def __init__(self, job_id: int, title: str, parent: QtWidgets.QWidget | None = None,
                 path: str | None = None) -> None:
        super().__init__(parent)
        self.job_id = job_id
        self.state = "queued"
        self.setFrameShape(QtWidgets.QFrame.Shape.StyledPanel)
        self.title = ElidedLabel(title)
        self.title.setStyleSheet("font-weight: bold")
        self.path = PathLabel(path or "")
        self.path.setStyleSheet(f"color: {theme.TEXT_DIM}")
        self.path.setVisible(bool(path))
        self.status = ElidedLabel("queued")
        self.status.setStyleSheet(f"color: {theme.TEXT_DIM}")
        self.bar = QtWidgets.QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        self.bar.setFixedHeight(5)
        self.rate = QtWidgets.QLabel("")
        self.rate.setStyleSheet(f"color: {theme.TEXT_DIM}")
        self.message = ElidedLabel("")
        self.message.hide()
        self.cancel = QtWidgets.QToolButton()  # a tool button: no taller than the title line
        self.cancel.setText("Cancel")
        self.cancel.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)  # keep Space for play/pause
        top = QtWidgets.QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.cancel)
        mid = QtWidgets.QHBoxLayout()
        mid.addWidget(self.status, 1)
        mid.addWidget(self.rate)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(6, 3, 6, 3)
        layout.setSpacing(1)
        layout.addLayout(top)
        layout.addWidget(self.path)
        layout.addLayout(mid)
        layout.addWidget(self.bar)
        layout.addWidget(self.message)

    def set_progress(self, stage: str, fraction: float, fps: float, seconds_left: float) -> None:
        self.state = "running"
        self.status.setText(stage)
        if fraction < 0:
            self.bar.setRange(0, 0)  # busy indicator: the stage has no known length
        else:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(fraction * 1000))
        parts = [f"{fps:.1f} fps" if fps > 0 else "", _eta(seconds_left)]
        self.rate.setText("  ".join(p for p in parts if p))

    def set_final(self, state: str, message: str = "") -> None:
        self.state = state
        self.status.setText(state)
        self.rate.setText("")
        self.bar.setRange(0, 1000)
        self.bar.setValue(1000 if state == "done" else self.bar.value())
        self.cancel.hide()
        colour = {"done": theme.RANGE_STATE["rendered"], "failed": "#e05555"}.get(state,
                                                                                   theme.TEXT_DIM)
        self.status.setStyleSheet(f"color: {colour}")
        if message:
            self.message.setText(message)
            self.message.setStyleSheet("color: #e05555" if state == "failed" else "")
            self.message.show()


class JobsPanel(QtWidgets.QWidget):
    """All jobs of the session, newest at the top; rows update from the bridge's signals."""

    def __init__(self, bridge: EngineBridge, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.rows: dict[int, JobRow] = {}
        self._list = QtWidgets.QVBoxLayout()
        self._list.setSpacing(4)
        self._list.setContentsMargins(0, 0, 0, 0)
        self._list.addStretch(1)
        inner = QtWidgets.QWidget()
        inner.setLayout(self._list)
        scroll = QtWidgets.QScrollArea()
        scroll.setWidgetResizable(True)
        # Rows take the dock's width (their text elides): never a sideways scroll.
        scroll.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll = scroll
        scroll.setWidget(inner)
        scroll.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        self.empty = QtWidgets.QLabel("No jobs yet: render a range (R) or export (Ctrl+E).")
        self.empty.setStyleSheet(f"color: {theme.TEXT_DIM}")
        self.empty.setWordWrap(True)
        self._list.insertWidget(0, self.empty)
        clear = QtWidgets.QPushButton("Clear finished")
        clear.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
        clear.clicked.connect(self.clear_finished)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(scroll, 1)
        layout.addWidget(clear, 0, QtCore.Qt.AlignmentFlag.AlignRight)
        bridge.started.connect(self._on_started)
        bridge.progress.connect(self._on_progress)
        bridge.finished.connect(self._on_finished)
        bridge.failed.connect(lambda job, msg: self._final(job, "failed", msg))
        bridge.cancelled.connect(lambda job: self._final(job, "cancelled"))

    def add(self, job_id: int, title: str, path: str | None = None) -> JobRow:
        """A row for a job just submitted to the bridge (``path``: the file it writes)."""
        row = JobRow(job_id, title, path=path)
        row.cancel.clicked.connect(lambda: self.bridge.cancel(job_id))
        self.rows[job_id] = row
        self.empty.hide()
        self._list.insertWidget(0, row)
        return row

    def add_export(self, job_id: int, path: str, codec: str) -> JobRow:
        """The row of an export to ``path`` with ``codec`` (a preset name of the engine's)."""
        return self.add(job_id, f"Export · {PRESETS[codec].label if codec in PRESETS else codec}",
                        path)

    def clear_finished(self) -> None:
        self._remove(lambda row: row.state in ("done", "failed", "cancelled"))

    def clear_project(self) -> None:
        """Another project opens: only exports still queued or running stay (they finish and
        name their file); the old project's renders and analysis are of no use now."""
        self._remove(lambda row: not (row.path.text() and row.state in ("queued", "running")))

    def _remove(self, drop: Callable[[JobRow], bool]) -> None:
        for job_id, row in list(self.rows.items()):
            if drop(row):
                del self.rows[job_id]
                self._list.removeWidget(row)
                row.deleteLater()
        self.empty.setVisible(not self.rows)

    def _on_started(self, job_id: int) -> None:
        if job_id in self.rows:
            self.rows[job_id].state = "running"
            self.rows[job_id].status.setText("starting")

    def _on_progress(self, job_id: int, stage: str, fraction: float, fps: float,
                     left: float) -> None:
        if job_id in self.rows:
            self.rows[job_id].set_progress(stage, fraction, fps, left)

    def _on_finished(self, job_id: int, path: str, notes: list) -> None:
        # An export's row already names its file; a render's cache file means nothing to the user.
        self._final(job_id, "done", "\n".join(notes))

    def _final(self, job_id: int, state: str, message: str = "") -> None:
        if job_id in self.rows:
            self.rows[job_id].set_final(state, message)
