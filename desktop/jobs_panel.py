"""The jobs panel: one row per engine job with its stage, progress, speed, time left and cancel.

Rows follow the :class:`~desktop.bridge.EngineBridge` signals; a failed job keeps the engine's
one-line message on its row, so the user sees why without opening a log.
"""
from __future__ import annotations

import os

from PySide6 import QtCore, QtWidgets

from desktop.bridge import EngineBridge
from ui import theme

STATES = ("queued", "running", "done", "failed", "cancelled")


def _eta(seconds: float) -> str:
    if seconds < 0:
        return ""
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d} left" if seconds >= 60 else f"{seconds} s left"


class JobRow(QtWidgets.QFrame):
    """One job: title and state, stage, a progress bar, fps and time left, a cancel button."""

    def __init__(self, job_id: int, title: str, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.job_id = job_id
        self.state = "queued"
        self.setFrameShape(QtWidgets.QFrame.Shape.StyledPanel)
        self.title = QtWidgets.QLabel(title)
        self.title.setStyleSheet("font-weight: bold")
        self.status = QtWidgets.QLabel("queued")
        self.status.setStyleSheet(f"color: {theme.TEXT_DIM}")
        self.bar = QtWidgets.QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        self.bar.setFixedHeight(8)
        self.rate = QtWidgets.QLabel("")
        self.rate.setStyleSheet(f"color: {theme.TEXT_DIM}")
        self.message = QtWidgets.QLabel("")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.hide()
        self.cancel = QtWidgets.QPushButton("Cancel")
        self.cancel.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)  # keep Space for play/pause
        top = QtWidgets.QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.cancel)
        mid = QtWidgets.QHBoxLayout()
        mid.addWidget(self.status, 1)
        mid.addWidget(self.rate)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.setSpacing(2)
        layout.addLayout(top)
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
        self._list.addStretch(1)
        inner = QtWidgets.QWidget()
        inner.setLayout(self._list)
        scroll = QtWidgets.QScrollArea()
        scroll.setWidgetResizable(True)
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

    def add(self, job_id: int, title: str) -> JobRow:
        """A row for a job just submitted to the bridge."""
        row = JobRow(job_id, title)
        row.cancel.clicked.connect(lambda: self.bridge.cancel(job_id))
        self.rows[job_id] = row
        self.empty.hide()
        self._list.insertWidget(0, row)
        return row

    def clear_finished(self) -> None:
        for job_id, row in list(self.rows.items()):
            if row.state in ("done", "failed", "cancelled"):
                del self.rows[job_id]
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
        self._final(job_id, "done", "\n".join([os.path.basename(path), *notes]))
        if job_id in self.rows:
            self.rows[job_id].message.setToolTip(path)

    def _final(self, job_id: int, state: str, message: str = "") -> None:
        if job_id in self.rows:
            self.rows[job_id].set_final(state, message)
