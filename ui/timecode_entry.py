"""The playhead's timecode, which is also where a position is typed, as in every NLE.

It shows the playhead while idle; a click makes it editable (all selected), Enter jumps, Escape
gives up. What may be typed (read against the clip's clock by :func:`target_time`):

- a position in any form ``engine.timecode`` reads: ``00:00:12:05``, ``12.5s``, ``300f``;
- digits alone fill timecode from the right, so ``112`` is ``00:00:01:12``;
- an offset from the playhead: ``+10`` / ``-10`` frames, ``+00:00:01:00``, ``-2s``, ``+5f``.
"""
from __future__ import annotations

import re
from typing import Callable

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from engine.errors import UsageError
from engine.timecode import Clock, parse_time

_DIGITS = re.compile(r"^\d{1,8}$")
_FRAME_OFFSET = re.compile(r"^([+-])(\d+)f?$")


def target_time(text: str, clock: Clock, now: float, frame_at: Callable[[float], int],
                frame_time: Callable[[int], float]) -> float:
    """Seconds ``text`` asks for, the playhead being at ``now``; raises UsageError.

    ``frame_at``/``frame_time`` map seconds to the clip's frame and back, so a frame offset
    counts the clip's own frames (variable frame rate too).
    """
    s = text.strip().replace(" ", "")
    if not s:
        raise UsageError("type a timecode, e.g. 00:00:01:12, or an offset such as +10")
    m = _FRAME_OFFSET.match(s)
    if m:
        step = int(m.group(2)) * (-1 if m.group(1) == "-" else 1)
        return frame_time(frame_at(now) + step)
    if _DIGITS.match(s):
        digits = s.rjust(8, "0")
        s = ":".join(digits[i:i + 2] for i in range(0, 8, 2))
    if s[0] in "+-":
        return now + parse_time(s, clock)  # a signed timecode or seconds is a length
    return parse_time(s, clock)


def clip_resolver(clock: Clock, times: np.ndarray,
                  now: Callable[[], float]) -> Callable[[str], float]:
    """:func:`target_time` for a clip whose frames start at ``times``, the playhead at
    ``now()``; frame offsets stop at the first and last frame."""
    def frame_time(i: int) -> float:
        return float(times[min(max(i, 0), len(times) - 1)])

    def frame_at(t: float) -> int:
        return max(int(np.searchsorted(times, t + 1e-9, side="right")) - 1, 0)

    return lambda text: target_time(text, clock, now(), frame_at, frame_time)


class TimecodeEntry(QtWidgets.QLineEdit):
    """The playhead's timecode; click to type a position or offset. ``jump`` carries the time
    asked for; ``rejected`` the one-line reason a text could not be read."""

    jump = QtCore.Signal(float)
    rejected = QtCore.Signal(str)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__("--:--:--:--", parent)
        self.setObjectName("TimecodeEntry")
        self.setFont(QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.SystemFont.FixedFont))
        self.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.setFocusPolicy(QtCore.Qt.FocusPolicy.ClickFocus)  # never a Tab stop for keys
        self.setToolTip("Click and type a timecode to jump (00:00:01:12, 112, 2.5s, 300f), "
                        "or an offset (+10 frames, -00:00:01:00); Enter jumps, Esc cancels")
        self.setFixedWidth(self.fontMetrics().horizontalAdvance("00:00:00:00") + 24)
        self.setReadOnly(True)
        self._shown = self.text()
        self._resolve: Callable[[str], float] | None = None
        self.returnPressed.connect(self._commit)

    def set_resolver(self, resolve: Callable[[str], float] | None) -> None:
        """How typed text becomes seconds (None: nothing to jump in, e.g. no clip)."""
        self._resolve = resolve

    def show_time(self, text: str) -> None:
        """Show the playhead's timecode, unless the editor is typing over it."""
        self._shown = text
        if self.isReadOnly():
            self.setText(text)

    @property
    def editing(self) -> bool:
        return not self.isReadOnly()

    def mousePressEvent(self, event: QtGui.QMouseEvent) -> None:
        if self.isReadOnly():
            # Idle, it never takes the focus (the transport keys stay live); a click with a
            # clip starts typing over the whole timecode.
            if self._resolve is not None:
                self.setReadOnly(False)
                self.setFocus(QtCore.Qt.FocusReason.MouseFocusReason)
                self.selectAll()
            event.accept()
            return
        super().mousePressEvent(event)

    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:
        if event.key() == QtCore.Qt.Key.Key_Escape and not self.isReadOnly():
            self._finish()
            return
        super().keyPressEvent(event)

    def focusOutEvent(self, event: QtGui.QFocusEvent) -> None:
        super().focusOutEvent(event)
        if not self.isReadOnly():
            self._finish()  # clicked away: nothing typed is applied

    def _commit(self) -> None:
        if self.isReadOnly() or self._resolve is None:
            return
        text = self.text()
        try:
            seconds = self._resolve(text)
        except UsageError as exc:
            self.rejected.emit(f"Timecode: {exc}")
            self.selectAll()  # still editing: correct it or press Esc
            return
        self._finish()
        self.jump.emit(seconds)

    def _finish(self) -> None:
        self.setReadOnly(True)
        self.setText(self._shown)
        self.deselect()
        if self.hasFocus():
            self.clearFocus()  # hand the keys back to the transport
