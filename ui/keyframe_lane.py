"""The keyframe lane under the timeline: mask keys, motion curves and keep-original spans.

Rows share the timeline's time axis (:meth:`KeyframeLane.set_view` with its visible span, a
header column as wide as the timeline's):

- Mask: a diamond per key of every mask layer: the outline's on top (filled in the mask
  colour, hollow where it is automatic), brush and exclusion layers' below in their colours,
  with a bar over the frames they act on. Click selects (and moves the playhead there), drag moves a key, double-click on an
  empty frame adds a key there; Delete deletes the selected key, C copies it to the marked
  in/out span, A resets it to automatic. The same actions are in the right-click menu.
- Openness gain and mouth timing: keyframe curves. Double-click adds a key at that frame and
  value, drag moves a key in time and value (by the pointer's travel, not to it; with Shift
  ten times finer), double-click on a key or Enter on the selected key types its value,
  Delete deletes it.
- Keep original: drag across frames to add a span where the source mouth is kept; drag a span's
  end to change it; select it and press Delete to remove it.

A press on an empty part of a row moves the playhead. The lane holds no project data: it shows
the :class:`engine.maskedit.Corrections` it is given and reports edits as signals, once per
gesture (on release), in frame indices.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from engine.curves import Curve
from engine.maskedit import Corrections
from ui import theme
from ui.mask_editor import ROLE_COLORS

Qt = QtCore.Qt

HEADER_W = 92  # as the timeline's lane headers, so the time axes line up
ROW_H = {"mask": 24, "openness_gain": 32, "audio_offset_ms": 32, "keep": 16}
ROWS = tuple(ROW_H)
ROW_LABELS = {"mask": "Mask", "openness_gain": "Openness", "audio_offset_ms": "Mouth timing",
              "keep": "Keep original"}
# Value span each curve row shows (bottom, top), and the unit in its labels.
CURVE_SPAN = {"openness_gain": (0.0, 2.0), "audio_offset_ms": (-250.0, 250.0)}
# What a typed value may be (the inspector's limits), its step and decimals.
CURVE_ENTRY = {"openness_gain": (0.0, 3.0, 0.05, 2, "×"),
               "audio_offset_ms": (-500.0, 500.0, 5.0, 0, " ms")}
STEP = {"openness_gain": 0.01, "audio_offset_ms": 1.0}  # gains to 1 %, offsets to 1 ms
FINE = 0.1  # Shift-drag: value per pixel, against a plain drag
CURVE_COLOR = {"openness_gain": "#e8c15a", "audio_offset_ms": "#6fb8ff"}
KEEP_COLOR = "#9aa4b1"
_GAP = 2
_GRAB_PX = 6
_DRAG_START_PX = 3


@dataclass
class _Drag:
    kind: str  # "key", "curve", "keep_new", "keep_edge", "seek"
    x0: float
    target: tuple = ()
    frame: int = 0
    value: float = 0.0
    moved: bool = False
    y: float = 0.0  # curve drags: the last pointer y, values move by the travel from it


class KeyframeLane(QtWidgets.QWidget):
    seek = QtCore.Signal(int)  # frame
    mask_key_selected = QtCore.Signal(str, int)  # layer id, frame
    mask_key_moved = QtCore.Signal(str, int, int)  # layer id, from, to
    mask_key_deleted = QtCore.Signal(str, int)
    mask_key_added = QtCore.Signal(int)
    mask_key_copied = QtCore.Signal(str, int)  # to the marked in/out span
    mask_key_reset = QtCore.Signal(str, int)  # to automatic
    curve_key_set = QtCore.Signal(str, int, float)  # curve, frame, value
    curve_key_moved = QtCore.Signal(str, int, int, float)  # curve, from, to, value
    curve_key_deleted = QtCore.Signal(str, int)
    keep_set = QtCore.Signal(int, int, int)  # first, last, index (-1: a new span)
    keep_deleted = QtCore.Signal(int)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.setMinimumHeight(sum(ROW_H.values()) + _GAP * (len(ROWS) + 1))
        self._times = np.zeros(0)
        self._duration = 0.0
        self._view = (0.0, 1.0)
        self._playhead = 0
        self._marked: tuple[int, int] | None = None
        self._corrections = Corrections()
        self._defaults = {"openness_gain": 1.0, "audio_offset_ms": 0.0}
        self._selected: tuple | None = None  # ("mask", id, f), ("curve", name, f), ("keep", i)
        self._drag: _Drag | None = None
        self.entry: QtWidgets.QDoubleSpinBox | None = None  # a key's value being typed

    def sizeHint(self) -> QtCore.QSize:
        return QtCore.QSize(800, self.minimumHeight())

    # -- data ----------------------------------------------------------------------------
    def set_clip(self, times: np.ndarray, duration: float) -> None:
        """Frame start times (seconds) of the clip, and its duration."""
        self._times = np.asarray(times, np.float64)
        self._duration = float(duration)
        self._view = (0.0, max(self._duration, 1e-3))
        self.update()

    def set_view(self, start: float, end: float) -> None:
        """The span of seconds shown (the timeline's visible range)."""
        view = (float(start), max(float(end), float(start) + 1e-6))
        if view != self._view:
            self._view = view
            self.update()

    def set_playhead(self, frame: int) -> None:
        self._playhead = int(frame)
        self.update()

    def set_marked(self, span: tuple[int, int] | None) -> None:
        """The marked in/out span (first and last frame), shaded."""
        self._marked = span
        self.update()

    def set_corrections(self, corrections: Corrections,
                        defaults: dict[str, float] | None = None) -> None:
        """What to show; ``defaults`` are the range's curve values where a curve has no keys."""
        self._corrections = corrections
        if defaults:
            self._defaults.update(defaults)
        if not self._selection_exists():
            self._selected = None
        self.update()

    def selected(self) -> tuple | None:
        return self._selected

    def select_mask_key(self, layer_id: str, frame: int) -> None:
        self._selected = ("mask", layer_id, int(frame))
        self.update()

    # -- geometry ------------------------------------------------------------------------
    def row_rect(self, row: str) -> QtCore.QRectF:
        y = _GAP
        for name in ROWS:
            if name == row:
                return QtCore.QRectF(HEADER_W, y, self.width() - HEADER_W, ROW_H[name])
            y += ROW_H[name] + _GAP
        raise ValueError(f"unknown row {row!r}")

    def x_of(self, frame: int) -> float:
        """Widget x of a frame's key (its start time)."""
        t = self._times[int(np.clip(frame, 0, len(self._times) - 1))] if len(self._times) else 0
        t0, t1 = self._view
        return HEADER_W + (t - t0) / (t1 - t0) * max(self.width() - HEADER_W, 1)

    def frame_at(self, x: float) -> int:
        if not len(self._times):
            return 0
        t0, t1 = self._view
        t = t0 + (x - HEADER_W) / max(self.width() - HEADER_W, 1) * (t1 - t0)
        # The frame whose span holds t, nearest key positions being frame starts: round.
        i = int(np.searchsorted(self._times, t, side="right")) - 1
        i = int(np.clip(i, 0, len(self._times) - 1))
        if i + 1 < len(self._times) and t - self._times[i] > self._times[i + 1] - t:
            i += 1
        return i

    def y_of(self, name: str, value: float) -> float:
        rect = self.row_rect(name)
        lo, hi = CURVE_SPAN[name]
        frac = (min(max(value, lo), hi) - lo) / (hi - lo)
        return rect.bottom() - 3 - frac * (rect.height() - 6)

    def value_at(self, name: str, y: float) -> float:
        rect = self.row_rect(name)
        lo, hi = CURVE_SPAN[name]
        frac = (rect.bottom() - 3 - y) / max(rect.height() - 6, 1)
        value = lo + min(max(frac, 0.0), 1.0) * (hi - lo)
        return round(value / STEP[name]) * STEP[name]

    def row_at(self, y: float) -> str | None:
        for name in ROWS:
            rect = self.row_rect(name)
            if rect.top() <= y < rect.bottom():
                return name
        return None

    def _mask_key_at(self, x: float, y: float | None = None) -> tuple[str, int] | None:
        """The mask key under ``x``; ``y`` in the row's lower half prefers brush and exclusion
        keys (drawn there), the upper half the outline's."""
        lower = y is not None and y > self.row_rect("mask").center().y()
        best = None
        for layer in self._corrections.layers:
            for frame in layer.keys:
                d = abs(self.x_of(frame) - x) + (0.5 if (layer.role == "outline") == lower else 0)
                if d <= _GRAB_PX + 0.5 and (best is None or d < best[0]):
                    best = (d, layer.id, frame)
        return None if best is None else (best[1], best[2])

    def _curve_key_at(self, name: str, x: float, y: float) -> int | None:
        curve = self._corrections.curves.curve(name)
        for frame, value in curve.keys.items():
            if abs(self.x_of(frame) - x) <= _GRAB_PX and abs(self.y_of(name, value) - y) <= 8:
                return frame
        return None

    def _keep_at(self, x: float) -> tuple[int, str] | None:
        """The keep span under ``x``: (index, "first" / "last" edge or "body")."""
        for i, (a, b) in enumerate(self._corrections.keep):
            xa, xb = self.x_of(a), self.x_of(b + 1)
            if abs(x - xa) <= _GRAB_PX:
                return i, "first"
            if abs(x - xb) <= _GRAB_PX:
                return i, "last"
            if xa < x < xb:
                return i, "body"
        return None

    def _selection_exists(self) -> bool:
        s = self._selected
        if s is None:
            return True
        if s[0] == "mask":
            return any(l.id == s[1] and s[2] in l.keys for l in self._corrections.layers)
        if s[0] == "curve":
            return s[2] in self._corrections.curves.curve(s[1]).keys
        return s[1] < len(self._corrections.keep)

    # -- interaction ---------------------------------------------------------------------
    def mousePressEvent(self, event: QtGui.QMouseEvent) -> None:
        pos = event.position()
        x, y = pos.x(), pos.y()
        row = self.row_at(y)
        if x < HEADER_W or row is None or not len(self._times):
            return
        frame = self.frame_at(x)
        if event.button() == Qt.MouseButton.RightButton:
            self._context_menu(row, x, y, event.globalPosition().toPoint())
            return
        if event.button() != Qt.MouseButton.LeftButton:
            return
        if row == "mask" and (hit := self._mask_key_at(x, y)) is not None:
            self._selected = ("mask", *hit)
            self._drag = _Drag("key", x, hit, hit[1])
            self.mask_key_selected.emit(*hit)
        elif row in CURVE_SPAN and (key := self._curve_key_at(row, x, y)) is not None:
            self._selected = ("curve", row, key)
            self._drag = _Drag("curve", x, (row, key), key,
                               self._corrections.curves.curve(row).keys[key], y=y)
        elif row == "keep" and (hit := self._keep_at(x)) is not None:
            index, part = hit
            self._selected = ("keep", index)
            if part != "body":
                self._drag = _Drag("keep_edge", x, (index, part), frame)
        elif row == "keep":
            self._selected = None
            self._drag = _Drag("keep_new", x, (frame,), frame)
        else:
            self._selected = None
            self._drag = _Drag("seek", x)
            self.seek.emit(frame)
        self.update()

    def mouseMoveEvent(self, event: QtGui.QMouseEvent) -> None:
        d = self._drag
        if d is None:
            return
        x, y = event.position().x(), event.position().y()
        if d.kind == "curve":
            self._drag_value(d, y, bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier))
        if not d.moved and abs(x - d.x0) < _DRAG_START_PX and d.kind != "curve":
            return
        d.moved = True
        if d.kind != "curve" or abs(x - d.x0) >= _DRAG_START_PX:  # a vertical drag keeps its frame
            d.frame = self.frame_at(x)
        if d.kind == "seek":
            self.seek.emit(d.frame)
        self.update()

    def _drag_value(self, d: _Drag, y: float, fine: bool) -> None:
        """Move a curve key's value by the pointer's travel since the last move."""
        name = d.target[0]
        lo, hi = CURVE_SPAN[name]
        per_px = (hi - lo) / max(self.row_rect(name).height() - 6, 1) * (FINE if fine else 1.0)
        lo, hi = CURVE_ENTRY[name][:2]
        d.value = min(max(d.value + (d.y - y) * per_px, lo), hi)
        d.y = y

    def mouseReleaseEvent(self, event: QtGui.QMouseEvent) -> None:
        d, self._drag = self._drag, None
        if d is None or not d.moved:
            self.update()
            return
        if d.kind == "key":
            layer_id, start = d.target
            if d.frame != start:
                self._selected = ("mask", layer_id, d.frame)
                self.mask_key_moved.emit(layer_id, start, d.frame)
        elif d.kind == "curve":
            name, start = d.target
            self._selected = ("curve", name, d.frame)
            value = round(d.value / STEP[name]) * STEP[name]
            self.curve_key_moved.emit(name, start, d.frame, value)
        elif d.kind == "keep_new":
            first, last = sorted((d.target[0], d.frame))
            self.keep_set.emit(first, last, -1)
        elif d.kind == "keep_edge":
            index, part = d.target
            a, b = self._corrections.keep[index]
            a, b = (d.frame, b) if part == "first" else (a, d.frame - 1)
            self.keep_set.emit(min(a, b), max(a, b), index)
        self.update()

    def mouseDoubleClickEvent(self, event: QtGui.QMouseEvent) -> None:
        x, y = event.position().x(), event.position().y()
        row = self.row_at(y)
        if x < HEADER_W or row is None or not len(self._times):
            return
        frame = self.frame_at(x)
        if row == "mask" and self._mask_key_at(x, y) is None:
            self.mask_key_added.emit(frame)
        elif row in CURVE_SPAN and (key := self._curve_key_at(row, x, y)) is not None:
            self._drag = None
            self.edit_curve_key(row, key)
        elif row in CURVE_SPAN:
            self._selected = ("curve", row, frame)
            self.curve_key_set.emit(row, frame, self.value_at(row, y))

    def edit_curve_key(self, name: str, frame: int) -> None:
        """Type the value of the key at ``frame``: Enter sets it, Escape leaves it."""
        self.close_entry()
        self._selected = ("curve", name, frame)
        lo, hi, step, decimals, suffix = CURVE_ENTRY[name]
        entry = QtWidgets.QDoubleSpinBox(self)
        entry.setObjectName("curve-key-entry")
        entry.setRange(lo, hi)
        entry.setSingleStep(step)
        entry.setDecimals(decimals)
        entry.setSuffix(suffix)
        entry.setKeyboardTracking(False)
        entry.setValue(self._corrections.curves.curve(name).keys[frame])
        entry.installEventFilter(self)
        entry.setProperty("key", (name, frame))
        entry.editingFinished.connect(self._commit_entry)  # a method: gone with the lane
        rect = self.row_rect(name)
        entry.setGeometry(int(min(self.x_of(frame) + 6, self.width() - 96)),
                          int(rect.top()), 92, int(rect.height()))
        self.entry = entry
        entry.show()
        entry.setFocus()
        entry.selectAll()
        self.update()

    def close_entry(self) -> None:
        entry, self.entry = self.entry, None
        if entry is not None:
            entry.hide()
            entry.deleteLater()
            self.setFocus()

    def _commit_entry(self) -> None:
        entry = self.entry
        if entry is None:  # already closed (Escape, or a second finish signal)
            return
        name, frame = entry.property("key")
        value = float(entry.value())
        self.close_entry()
        if value != self._corrections.curves.curve(name).keys.get(frame):
            self.curve_key_set.emit(name, frame, value)

    def eventFilter(self, obj: QtCore.QObject, event: QtCore.QEvent) -> bool:
        if obj is self.entry and event.type() == QtCore.QEvent.Type.KeyPress:
            if event.key() == Qt.Key.Key_Escape:
                self.close_entry()
                return True
            if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                # Finish here: unhandled, the key would reach the lane and reopen the entry.
                self.entry.interpretText()
                self._commit_entry()
                return True
        return super().eventFilter(obj, event)

    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:
        key = event.key()
        s = self._selected
        if key in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace) and s is not None:
            self.delete_selected()
        elif key == Qt.Key.Key_C and s is not None and s[0] == "mask":
            self.mask_key_copied.emit(s[1], s[2])
        elif key == Qt.Key.Key_A and s is not None and s[0] == "mask":
            self.mask_key_reset.emit(s[1], s[2])
        elif key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and s is not None and s[0] == "curve":
            self.edit_curve_key(s[1], s[2])
        else:
            super().keyPressEvent(event)

    def delete_selected(self) -> None:
        s, self._selected = self._selected, None
        if s is None:
            return
        if s[0] == "mask":
            self.mask_key_deleted.emit(s[1], s[2])
        elif s[0] == "curve":
            self.curve_key_deleted.emit(s[1], s[2])
        else:
            self.keep_deleted.emit(s[1])
        self.update()

    def _context_menu(self, row: str, x: float, y: float, at: QtCore.QPoint) -> None:
        menu = QtWidgets.QMenu(self)
        frame = self.frame_at(x)
        if row == "mask":
            hit = self._mask_key_at(x, y)
            if hit is not None:
                self._selected = ("mask", *hit)
                menu.addAction("Delete Keyframe\tDel", self.delete_selected)
                menu.addAction("Copy to In/Out Range\tC",
                               lambda: self.mask_key_copied.emit(*hit))
                menu.addAction("Reset to Automatic\tA",
                               lambda: self.mask_key_reset.emit(*hit))
            else:
                menu.addAction("Add Keyframe Here", lambda: self.mask_key_added.emit(frame))
        elif row in CURVE_SPAN:
            key = self._curve_key_at(row, x, y)
            if key is not None:
                self._selected = ("curve", row, key)
                menu.addAction("Delete Key\tDel", self.delete_selected)
            else:
                value = self._corrections.curves.curve(row).value_at(frame, self._defaults[row])
                menu.addAction("Add Key Here",
                               lambda: self.curve_key_set.emit(row, frame, value))
        elif (hit := self._keep_at(x)) is not None:
            self._selected = ("keep", hit[0])
            menu.addAction("Remove Span\tDel", self.delete_selected)
        self.update()
        if not menu.isEmpty():
            menu.popup(at)

    # -- painting ------------------------------------------------------------------------
    def paintEvent(self, event: QtGui.QPaintEvent) -> None:
        p = QtGui.QPainter(self)
        p.fillRect(self.rect(), theme.color(theme.PANEL))
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        font = p.font()
        font.setPointSizeF(8)
        p.setFont(font)
        for name in ROWS:
            rect = self.row_rect(name)
            p.fillRect(rect, theme.color(theme.BASE))
            header = QtCore.QRectF(0, rect.top(), HEADER_W - 2, rect.height())
            p.fillRect(header, theme.color(theme.RAISED))
            p.setPen(theme.color(theme.TEXT_DIM))
            p.drawText(header.adjusted(8, 0, 0, 0),
                       Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                       ROW_LABELS[name])
        if not len(self._times):
            return
        p.setClipRect(QtCore.QRectF(HEADER_W, 0, self.width() - HEADER_W, self.height()))
        if self._marked is not None:
            a, b = self._marked
            xa, xb = self.x_of(a), self.x_of(b + 1) if b + 1 < len(self._times) \
                else self._x_time(self._duration)
            p.fillRect(QtCore.QRectF(xa, 0, xb - xa, self.height()), theme.color(theme.ACCENT, 22))
        self._paint_keep(p)
        self._paint_curves(p)
        self._paint_mask(p)
        x = self.x_of(self._playhead)
        p.setPen(QtGui.QPen(theme.color(theme.ACCENT), 1.2))
        p.drawLine(QtCore.QPointF(x, 0), QtCore.QPointF(x, self.height()))

    def _x_time(self, t: float) -> float:
        t0, t1 = self._view
        return HEADER_W + (t - t0) / (t1 - t0) * max(self.width() - HEADER_W, 1)

    def _dragged(self, kind: str, target: tuple) -> _Drag | None:
        d = self._drag
        return d if d is not None and d.moved and d.kind == kind and d.target == target else None

    def _paint_mask(self, p: QtGui.QPainter) -> None:
        rect = self.row_rect("mask")
        for layer in self._corrections.layers:
            colour = ROLE_COLORS[layer.role]
            outline = layer.role == "outline"
            y = rect.top() + 7 if outline else rect.bottom() - 6
            span = layer.span()
            if span is not None:  # the frames a brush or exclusion acts on
                xa, xb = self.x_of(span[0]), self.x_of(span[1])
                p.fillRect(QtCore.QRectF(xa, y - 1.5, max(xb - xa, 2), 3),
                           theme.color(colour, 110))
            for frame, key in layer.keys.items():
                d = self._dragged("key", (layer.id, frame))
                x = self.x_of(d.frame if d else frame)
                selected = self._selected == ("mask", layer.id, frame)
                self._diamond(p, x, y, 5.5 if outline else 4.5, colour, key.points is None,
                              selected)

    def _paint_curves(self, p: QtGui.QPainter) -> None:
        for name in CURVE_SPAN:
            rect = self.row_rect(name)
            curve = self._corrections.curves.curve(name)
            zero = 1.0 if name == "openness_gain" else 0.0
            p.setPen(QtGui.QPen(theme.color(theme.BORDER), 1, Qt.PenStyle.DashLine))
            p.drawLine(QtCore.QPointF(rect.left(), self.y_of(name, zero)),
                       QtCore.QPointF(rect.right(), self.y_of(name, zero)))
            keys = dict(curve.keys)
            d = self._drag
            if d is not None and d.moved and d.kind == "curve" and d.target[0] == name:
                keys.pop(d.target[1], None)  # the key being dragged, where it is now
                keys[d.frame] = d.value
            shown = Curve(keys)
            first, last = self.frame_at(rect.left()), self.frame_at(rect.right())
            frames = np.arange(first, last + 1)
            values = shown.values(frames, self._defaults[name])
            colour = CURVE_COLOR[name]
            p.setPen(QtGui.QPen(theme.color(colour, 230 if keys else 110), 1.5))
            p.drawPolyline(QtGui.QPolygonF([QtCore.QPointF(self.x_of(f), self.y_of(name, v))
                                            for f, v in zip(frames, values)]))
            for frame, value in keys.items():
                selected = self._selected is not None and self._selected[:2] == ("curve", name) \
                    and self._selected[2] == frame
                centre = QtCore.QPointF(self.x_of(frame), self.y_of(name, value))
                p.setPen(QtGui.QPen(theme.color("#ffffff" if selected else "#101010"), 1.2))
                p.setBrush(theme.color(colour))
                p.drawEllipse(centre, 4, 4)
            p.setPen(theme.color(theme.TEXT_DIM))
            unit = "×" if name == "openness_gain" else " ms"
            value = shown.value_at(self._playhead, self._defaults[name])
            p.drawText(QtCore.QRectF(rect.left() + 4, rect.top() + 1, 120, 14),
                       Qt.AlignmentFlag.AlignLeft, f"{value:.2f}{unit}" if unit == "×"
                       else f"{value:+.0f}{unit}")

    def _paint_keep(self, p: QtGui.QPainter) -> None:
        rect = self.row_rect("keep")
        spans = list(self._corrections.keep)
        d = self._drag
        if d is not None and d.moved and d.kind == "keep_new":
            spans.append(tuple(sorted((d.target[0], d.frame))))
        for i, (a, b) in enumerate(spans):
            if d is not None and d.moved and d.kind == "keep_edge" and d.target[0] == i:
                a, b = (d.frame, b) if d.target[1] == "first" else (a, d.frame - 1)
            xa, xb = self.x_of(min(a, b)), self.x_of(max(a, b) + 1)
            box = QtCore.QRectF(xa, rect.top() + 3, max(xb - xa, 2), rect.height() - 6)
            selected = self._selected == ("keep", i)
            p.setPen(QtGui.QPen(theme.color("#ffffff" if selected else KEEP_COLOR), 1))
            p.setBrush(QtGui.QBrush(theme.color(KEEP_COLOR, 120), Qt.BrushStyle.FDiagPattern))
            p.drawRoundedRect(box, 2, 2)

    def _diamond(self, p: QtGui.QPainter, x: float, y: float, r: float, colour: str,
                 hollow: bool, selected: bool) -> None:
        poly = QtGui.QPolygonF([QtCore.QPointF(x, y - r), QtCore.QPointF(x + r, y),
                                QtCore.QPointF(x, y + r), QtCore.QPointF(x - r, y)])
        p.setPen(QtGui.QPen(theme.color("#ffffff" if selected else colour if hollow
                                        else "#101010"), 1.6 if selected or hollow else 1))
        p.setBrush(Qt.BrushStyle.NoBrush if hollow else theme.color(colour))
        p.drawPolygon(poly)
