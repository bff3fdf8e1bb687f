"""Moving among the sync ranges: go to in/out, next/previous range, play in to out, and the
Ranges panel that lists them (in, out and duration in timecode; a click selects and goes).

Ranges are listed in time order, as they lie on the timeline, whatever order they were made
in; each row keeps its range's index in the project.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from PySide6 import QtCore, QtWidgets

from engine.timecode import format_timecode

Qt = QtCore.Qt
Span = tuple[float, float]


def in_time_order(spans: Sequence[Span]) -> list[int]:
    return sorted(range(len(spans)), key=lambda i: spans[i])


def next_range(spans: Sequence[Span], t: float, direction: int) -> int | None:
    """The range whose in point is the nearest after (``direction`` 1) or before (-1) ``t``;
    backwards, a range the playhead is inside counts from its in point (like a previous
    edit)."""
    eps = 1e-6
    order = in_time_order(spans)
    if direction > 0:
        return next((i for i in order if spans[i][0] > t + eps), None)
    return next((i for i in reversed(order) if spans[i][0] < t - eps), None)


class RangeNavigation:
    """The window's range moves. ``window`` is the editor (its project, selection, clip and
    playback); kept apart so the main window only wires the actions."""

    def __init__(self, window: Any) -> None:
        self.w = window

    def _spans(self) -> list[Span]:
        project = self.w.project
        return [(r.start, r.end) for r in project.ranges] if project is not None else []

    def _current(self) -> int | None:
        """The selected range, else the one under the playhead."""
        spans = self._spans()
        if self.w.selected is not None and self.w.selected < len(spans):
            return self.w.selected
        return next((i for i, (a, b) in enumerate(spans) if a <= self.w.time < b), None)

    def _say(self, text: str) -> None:
        self.w.statusBar().showMessage(text, 4000)

    def go_to(self, index: int) -> None:
        """Select range ``index`` and put the playhead on its in point."""
        self.w.select_range(index)
        if self.w.selected == index:
            self.w.playback.seek(self._spans()[index][0])

    def go_in(self) -> None:
        i = self._current()
        if i is None:
            self._say("No range here: mark one (I, O) or pick one in the Ranges panel")
            return
        self.go_to(i)

    def go_out(self) -> None:
        """To the range's last frame (the out point includes it)."""
        i = self._current()
        if i is None or self.w.clip is None:
            self._say("No range here: mark one (I, O) or pick one in the Ranges panel")
            return
        self.w.select_range(i)
        clip = self.w.clip
        last = clip.index_at(self._spans()[i][1] - 0.5 / clip.fps)
        self.w.playback.seek(float(clip.times[last]))

    def step(self, direction: int) -> None:
        """Next (1) or previous (-1) range, selected, the playhead on its in point."""
        i = next_range(self._spans(), self.w.time, direction)
        if i is None:
            self._say("No later range" if direction > 0 else "No earlier range")
            return
        self.go_to(i)

    def play_in_to_out(self) -> None:
        i = self._current()
        if i is None:
            self._say("No range to play: mark one (I, O) or pick one in the Ranges panel")
            return
        self.w.select_range(i)
        self.w.playback.play_span(*self._spans()[i])


class RangeList(QtWidgets.QTableWidget):
    """The project's ranges in time order: number, in, out (its last frame) and duration in
    the clip's timecode. ``chosen`` carries the clicked range's project index."""

    chosen = QtCore.Signal(int)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(0, 4, parent)
        self.setObjectName("RangeList")
        self.setHorizontalHeaderLabels(["#", "In", "Out", "Duration"])
        self.verticalHeader().hide()
        self.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # a click must not take the transport keys
        header = self.horizontalHeader()
        header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self._indices: list[int] = []
        # Clicks, not selection changes: the list follows the window's selection quietly, and
        # a click on the selected range still goes to it.
        self.cellClicked.connect(lambda row, col: self.chosen.emit(self._indices[row]))

    def show_ranges(self, spans: Sequence[Span], selected: int | None,
                    timecode: Callable[[float], str], times: np.ndarray, fps: float) -> None:
        """List ``spans`` of a clip whose frames start at ``times``; ``timecode`` formats a
        position, ``fps`` counts durations."""
        self._indices = in_time_order(spans)
        self.setRowCount(len(spans))
        for row, i in enumerate(self._indices):
            start, end = spans[i]
            # The out column shows the last frame inside, as the timeline's out bracket does.
            last = times[max(int(np.searchsorted(times, end - 1e-6, side="right")) - 1, 0)]
            cells = (str(i + 1), timecode(start), timecode(float(last)),
                     format_timecode(end - start + 1e-9, fps))
            for col, text in enumerate(cells):
                item = QtWidgets.QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter if col == 0 else
                                      Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft)
                self.setItem(row, col, item)
        self.clearSelection()
        if selected is not None and selected in self._indices:
            self.selectRow(self._indices.index(selected))
