"""The frame viewer: a picture at its true aspect with zoom, pan, face overlays and compare modes.

Coordinates: frame points use the engine's convention (pixel centres at integer coordinates, so
pixel ``(i, j)`` covers ``[j - 0.5, j + 0.5) x [i - 0.5, i + 0.5)``). A frame pixel is shown
``sample_aspect_ratio`` times as wide as it is tall; ``scale`` is widget pixels per frame pixel
vertically.

Mouse: wheel zooms around the cursor; middle-drag or Space+drag pans; left-click emits
:attr:`Viewer.clicked` in frame pixels; in split mode, dragging the wipe line moves it.
Picking a target face is deliberate, never a stray click: a click while picking is armed
(:meth:`Viewer.set_picking`, one shot; Escape disarms) or an Alt+click emits
:attr:`Viewer.target_picked` instead.
Keys: ``+``/``-`` zoom around the centre, ``Shift+Z`` or ``F`` fits, ``1`` shows 100 %.
Space is noted for panning but ignored, so it still reaches the window (play/pause).
"""
from __future__ import annotations

from fractions import Fraction
from typing import Literal

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from ui import theme
from ui.guides import GUIDES, draw_guides
from ui.images import rgb_to_qimage

CompareMode = Literal["source", "result", "split", "difference"]
COMPARE_MODES: tuple[str, ...] = ("source", "result", "split", "difference")
OVERLAYS: tuple[str, ...] = ("box", "landmarks", "mask", "crop")

_WHEEL_STEP = 1.25  # zoom factor per wheel notch
_KEY_STEP = 2 ** 0.5
_MAX_SCALE = 32.0
_WIPE_GRAB_PX = 6  # how close to the wipe line a press grabs it
_NEAREST_FROM = 2.0  # at or above this magnification, show pixels as blocks (pixel peeping)

Qt = QtCore.Qt


def _finite(points: np.ndarray | None, shape: tuple[int, ...] | None = None) -> np.ndarray | None:
    """Overlay geometry as float64, or None when absent or NaN (a frame without the face)."""
    if points is None:
        return None
    arr = np.asarray(points, dtype=np.float64)
    if shape is not None and arr.shape != shape:
        raise ValueError(f"expected shape {shape}, got {arr.shape}")
    return arr if arr.size and np.isfinite(arr).all() else None


def draw_tag(p: QtGui.QPainter, text: str, at: QtCore.QPointF,
             align: Qt.AlignmentFlag = Qt.AlignmentFlag.AlignLeft) -> None:
    """A small label on a translucent dark plate, legible over any picture; ``at`` is its
    top-left corner (top-right with ``AlignRight``)."""
    p.save()
    font = p.font()
    font.setPointSizeF(8)
    font.setBold(True)
    p.setFont(font)
    metrics = QtGui.QFontMetricsF(font)
    w, h = metrics.horizontalAdvance(text) + 12, metrics.height() + 4
    x = at.x() - w if align == Qt.AlignmentFlag.AlignRight else at.x()
    box = QtCore.QRectF(x, at.y(), w, h)
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(theme.color("#000000", 150))
    p.drawRoundedRect(box, 3, 3)
    p.setPen(theme.color("#ffffff", 220))
    p.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
    p.restore()


class Viewer(QtWidgets.QWidget):
    """Shows a source frame and optionally a result frame, compared in one of four modes."""

    clicked = QtCore.Signal(float, float)  # frame pixel coordinates (x, y)
    target_picked = QtCore.Signal(float, float)  # frame pixels of a deliberate face pick
    picking_changed = QtCore.Signal(bool)
    wipe_moved = QtCore.Signal(float)  # split position, fraction of the frame width
    zoom_changed = QtCore.Signal(float)  # scale (widget pixels per frame pixel, vertically)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(160, 90)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)  # cursor feedback over the wipe handle
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self._images: dict[str, QtGui.QImage] = {}  # "source", "result", "difference"
        self._source_rgb: np.ndarray | None = None
        self._result_rgb: np.ndarray | None = None
        # Downscaled copies for the current size, made once per (frame, zoom): a smooth
        # area-filtered reduction per repaint would cost a full-frame resample each time.
        self._scaled: dict[str, tuple[tuple[int, int], QtGui.QPixmap]] = {}
        self._sar = 1.0
        self._scale = 1.0
        self._offset = QtCore.QPointF(0, 0)  # widget position of the frame's top-left corner
        self._fit = True
        self._mode: CompareMode = "source"
        self._wipe = 0.5
        self._gain = 4.0
        self._exact = True  # the result is the rendered picture itself, not an encoded copy
        self._overlay: dict[str, np.ndarray | None] = dict.fromkeys(OVERLAYS)
        self._visible = dict.fromkeys(OVERLAYS, True)
        self._guides: set[str] = set()  # of ui.guides.GUIDES: safe areas, centre cross
        self._drag: str | None = None  # "pan" or "wipe" while a button is held
        self._drag_from = QtCore.QPointF()
        self._space = False
        self._picking = False

    # -- data ----------------------------------------------------------------------------
    def set_frames(self, source: np.ndarray, result: np.ndarray | None = None, *,
                   exact: bool = True) -> None:
        """Show a new frame (and its processed version); converted to images once, here.

        ``exact=False``: the result is an encoded copy (a render file's frame), so the
        difference view says that its speckle is the encoder's, not the edit's."""
        if result is not None and np.shape(result) != np.shape(source):
            raise ValueError(f"result shape {np.shape(result)} differs from source "
                             f"{np.shape(source)}")
        old = self.frame_size()
        self._source_rgb, self._result_rgb = source, result
        self._exact = exact
        self._images = {"source": rgb_to_qimage(source)}
        if result is not None:
            self._images["result"] = rgb_to_qimage(result)
        self._scaled.clear()
        if self._fit or old != self.frame_size():
            self.fit()
        self.update()

    def clear(self) -> None:
        self._images.clear()
        self._scaled.clear()
        self._source_rgb = self._result_rgb = None
        self.update()

    def set_sample_aspect_ratio(self, ratio: float | Fraction) -> None:
        """Width of one frame pixel relative to its height (1 for square pixels)."""
        ratio = float(ratio) if ratio else 1.0
        if ratio != self._sar:
            self._sar = ratio
            self._scaled.clear()
            self.fit()

    def set_overlay(self, box: np.ndarray | None = None, landmarks: np.ndarray | None = None,
                    mask_polygon: np.ndarray | None = None,
                    crop_box: np.ndarray | None = None) -> None:
        """Overlay geometry in frame pixels; None (or NaN, a frame without the face) hides one."""
        self._overlay = {"box": _finite(box, (4,)), "landmarks": _finite(landmarks, (68, 2)),
                         "mask": _finite(mask_polygon), "crop": _finite(crop_box, (4,))}
        self.update()

    def set_guide_visible(self, kind: str, visible: bool) -> None:
        """Toggle one of :data:`ui.guides.GUIDES` ("safe", "centre")."""
        if kind not in GUIDES:
            raise ValueError(f"unknown guide {kind!r} (use one of: {', '.join(GUIDES)})")
        (self._guides.add if visible else self._guides.discard)(kind)
        self.update()

    def set_overlay_visible(self, kind: str, visible: bool) -> None:
        """Toggle one of :data:`OVERLAYS` ("box", "landmarks", "mask", "crop")."""
        if kind not in self._visible:
            raise ValueError(f"unknown overlay {kind!r}; one of {', '.join(OVERLAYS)}")
        self._visible[kind] = visible
        self.update()

    def overlay_visible(self, kind: str) -> bool:
        return self._visible[kind]

    def set_compare_mode(self, mode: CompareMode) -> None:
        """One of :data:`COMPARE_MODES`; without a result frame every mode shows the source."""
        if mode not in COMPARE_MODES:
            raise ValueError(f"unknown compare mode {mode!r}; one of {', '.join(COMPARE_MODES)}")
        self._mode = mode
        self.update()

    def compare_mode(self) -> CompareMode:
        return self._mode

    def set_picking(self, on: bool) -> None:
        """Arm (or disarm) a one-shot target pick: the next click on the picture picks."""
        if on != self._picking:
            self._picking = bool(on)
            if on:
                self.setCursor(Qt.CursorShape.CrossCursor)
            else:
                self.unsetCursor()
            self.picking_changed.emit(self._picking)

    def is_picking(self) -> bool:
        return self._picking

    def set_wipe(self, fraction: float) -> None:
        """Split position as a fraction of the frame width (source left, result right)."""
        self._wipe = min(max(float(fraction), 0.0), 1.0)
        self.update()

    def wipe(self) -> float:
        return self._wipe

    def set_difference_gain(self, gain: float) -> None:
        """Amplification of |source - result| in difference mode."""
        self._gain = float(gain)
        self._images.pop("difference", None)
        self._scaled.pop("difference", None)
        self.update()

    # -- view ----------------------------------------------------------------------------
    def frame_size(self) -> tuple[int, int] | None:
        """(width, height) of the frame in pixels, None when empty."""
        image = self._images.get("source")
        return None if image is None else (image.width(), image.height())

    def scale(self) -> float:
        return self._scale

    def is_fit(self) -> bool:
        return self._fit

    def fit(self) -> None:
        """Zoom so the whole frame fits, centred (and keep fitting as the widget resizes)."""
        self._fit = True
        size = self.frame_size()
        if size is None:
            return
        w, h = size
        scale = min(self.width() / (w * self._sar), self.height() / h)
        self._set_view(scale, QtCore.QPointF((self.width() - w * self._sar * scale) / 2,
                                             (self.height() - h * scale) / 2), fit=True)

    def actual_size(self) -> None:
        """100 %: one frame row per physical screen pixel, around the widget's centre."""
        self.zoom_to(1.0 / self.devicePixelRatioF(), self._centre())

    def zoom_by(self, factor: float, anchor: QtCore.QPointF | None = None) -> None:
        self.zoom_to(self._scale * factor, anchor)

    def zoom_to(self, scale: float, anchor: QtCore.QPointF | None = None) -> None:
        """Set the scale keeping the frame point under ``anchor`` (widget pixels) in place."""
        size = self.frame_size()
        if size is None:
            return
        anchor = self._centre() if anchor is None else QtCore.QPointF(anchor)
        lowest = min(self._fit_scale(), 1.0) / 4
        scale = min(max(scale, lowest), _MAX_SCALE)
        k = scale / self._scale
        self._set_view(scale, anchor - (anchor - self._offset) * k)

    def pan_by(self, dx: float, dy: float) -> None:
        self._set_view(self._scale, self._offset + QtCore.QPointF(dx, dy))

    def map_to_frame(self, pos: QtCore.QPointF) -> tuple[float, float]:
        """Frame pixel coordinates of a widget point."""
        sx, sy = self._scale * self._sar, self._scale
        return ((pos.x() - self._offset.x()) / sx - 0.5,
                (pos.y() - self._offset.y()) / sy - 0.5)

    def map_from_frame(self, x: float, y: float) -> QtCore.QPointF:
        """Widget point of frame pixel coordinates."""
        return QtCore.QPointF(self._offset.x() + (x + 0.5) * self._scale * self._sar,
                              self._offset.y() + (y + 0.5) * self._scale)

    def image_rect(self) -> QtCore.QRectF:
        """Where the frame lies in the widget."""
        size = self.frame_size() or (0, 0)
        return QtCore.QRectF(self._offset, QtCore.QSizeF(size[0] * self._sar * self._scale,
                                                         size[1] * self._scale))

    def _fit_scale(self) -> float:
        w, h = self.frame_size()
        return min(self.width() / (w * self._sar), self.height() / h)

    def _centre(self) -> QtCore.QPointF:
        return QtCore.QPointF(self.width() / 2, self.height() / 2)

    def _set_view(self, scale: float, offset: QtCore.QPointF, fit: bool = False) -> None:
        self._fit = fit
        rect = QtCore.QRectF(offset, self.image_rect().size() * (scale / self._scale))
        # Keep the picture's centre on screen, so it cannot be lost by panning.
        dx = min(max(rect.center().x(), 0), self.width()) - rect.center().x()
        dy = min(max(rect.center().y(), 0), self.height()) - rect.center().y()
        changed = scale != self._scale
        self._scale, self._offset = scale, offset + QtCore.QPointF(dx, dy)
        if changed:
            self._scaled.clear()
            self.zoom_changed.emit(scale)
        self.update()

    # -- painting ------------------------------------------------------------------------
    def paintEvent(self, event: QtGui.QPaintEvent) -> None:
        p = QtGui.QPainter(self)
        p.fillRect(self.rect(), theme.color(theme.BASE))
        if "source" not in self._images:
            p.setPen(theme.color(theme.TEXT_DIM))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "No frame")
            return
        rect = self.image_rect()
        mode = self._mode if "result" in self._images else "source"
        if mode == "split":
            wipe_x = rect.left() + self._wipe * rect.width()
            p.save()
            p.setClipRect(QtCore.QRectF(0, 0, wipe_x, self.height()))
            self._draw_image(p, "source", rect)
            p.setClipRect(QtCore.QRectF(wipe_x, 0, self.width() - wipe_x, self.height()))
            self._draw_image(p, "result", rect)
            p.restore()
        else:
            self._draw_image(p, mode, rect)
        self._draw_overlays(p)
        draw_guides(p, rect, self._guides)
        if mode == "split":
            self._draw_wipe(p, rect)
        self._draw_hud(p, mode)

    def _image(self, name: str) -> QtGui.QImage:
        if name == "difference" and name not in self._images:
            # Computed on first use per frame pair, not on every repaint.
            diff = np.abs(self._source_rgb.astype(np.int16) - self._result_rgb)
            self._images[name] = rgb_to_qimage(np.minimum(diff * self._gain, 255).astype(np.uint8))
        return self._images[name]

    def _draw_image(self, p: QtGui.QPainter, name: str, rect: QtCore.QRectF) -> None:
        image = self._image(name)
        sx, sy = self._scale * self._sar, self._scale
        if sx <= 1 and sy <= 1:
            size = (max(1, round(rect.width())), max(1, round(rect.height())))
            cached = self._scaled.get(name)
            if cached is None or cached[0] != size:
                small = image.scaled(*size, Qt.AspectRatioMode.IgnoreAspectRatio,
                                     Qt.TransformationMode.SmoothTransformation)
                cached = self._scaled[name] = (size, QtGui.QPixmap.fromImage(small))
            p.drawPixmap(rect.topLeft(), cached[1])
            return
        # Magnified: draw only the part of the frame on screen.
        visible = rect.intersected(QtCore.QRectF(self.rect()))
        if visible.isEmpty():
            return
        x0 = max(int((visible.left() - rect.left()) / sx), 0)
        y0 = max(int((visible.top() - rect.top()) / sy), 0)
        x1 = min(int(np.ceil((visible.right() - rect.left()) / sx)), image.width())
        y1 = min(int(np.ceil((visible.bottom() - rect.top()) / sy)), image.height())
        target = QtCore.QRectF(rect.left() + x0 * sx, rect.top() + y0 * sy,
                               (x1 - x0) * sx, (y1 - y0) * sy)
        p.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform,
                        min(sx, sy) < _NEAREST_FROM)
        p.drawImage(target, image, QtCore.QRectF(x0, y0, x1 - x0, y1 - y0))

    def _draw_overlays(self, p: QtGui.QPainter) -> None:
        shown = {k: v for k, v in self._overlay.items() if v is not None and self._visible[k]}
        if not shown:
            return
        p.save()
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        # Frame coordinates (pixel centres at integers) to widget pixels.
        p.setTransform(QtGui.QTransform(self._scale * self._sar, 0, 0, self._scale,
                                        self._offset.x() + 0.5 * self._scale * self._sar,
                                        self._offset.y() + 0.5 * self._scale))

        def pen(colour: str, width: float, style: Qt.PenStyle = Qt.PenStyle.SolidLine,
                alpha: int = 255) -> QtGui.QPen:
            result = QtGui.QPen(theme.color(colour, alpha), width, style)
            result.setCosmetic(True)  # widths in screen pixels at any zoom
            return result

        if "crop" in shown:
            x0, y0, x1, y1 = shown["crop"]
            p.setPen(pen(theme.OVERLAY_CROP, 1.0, Qt.PenStyle.DashLine, 200))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawRect(QtCore.QRectF(x0, y0, x1 - x0, y1 - y0))
        if "mask" in shown:
            poly = QtGui.QPolygonF([QtCore.QPointF(x, y) for x, y in shown["mask"]])
            p.setPen(pen(theme.OVERLAY_MASK, 1.5))
            p.setBrush(theme.color(theme.OVERLAY_MASK, 40))
            p.drawPolygon(poly)
        if "box" in shown:
            x0, y0, x1, y1 = shown["box"]
            p.setPen(pen(theme.OVERLAY_BOX, 1.5))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawRect(QtCore.QRectF(x0, y0, x1 - x0, y1 - y0))
        if "landmarks" in shown:
            dot = pen(theme.OVERLAY_LANDMARKS, 3.5)
            dot.setCapStyle(Qt.PenCapStyle.RoundCap)
            p.setPen(dot)
            p.drawPoints(QtGui.QPolygonF([QtCore.QPointF(x, y) for x, y in shown["landmarks"]]))
        p.restore()

    def _draw_wipe(self, p: QtGui.QPainter, rect: QtCore.QRectF) -> None:
        x = rect.left() + self._wipe * rect.width()
        top, bottom = max(rect.top(), 0.0), min(rect.bottom(), float(self.height()))
        p.save()
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        p.setPen(QtGui.QPen(theme.color("#000000", 120), 3))
        p.drawLine(QtCore.QPointF(x, top), QtCore.QPointF(x, bottom))
        p.setPen(QtGui.QPen(theme.color("#ffffff", 230), 1))
        p.drawLine(QtCore.QPointF(x, top), QtCore.QPointF(x, bottom))
        # A grip in the middle shows the line can be dragged.
        mid = (top + bottom) / 2
        p.setPen(QtGui.QPen(theme.color("#ffffff"), 1))
        p.setBrush(theme.color(theme.ACCENT))
        p.drawRoundedRect(QtCore.QRectF(x - 5, mid - 14, 10, 28), 4, 4)
        p.restore()
        draw_tag(p, "SOURCE", QtCore.QPointF(x - 8, top + 8), Qt.AlignmentFlag.AlignRight)
        draw_tag(p, "RESULT", QtCore.QPointF(x + 8, top + 8), Qt.AlignmentFlag.AlignLeft)

    def _draw_hud(self, p: QtGui.QPainter, mode: str) -> None:
        if mode == "difference":
            note = "" if self._exact else " · ENCODED RESULT: NOISE IS THE ENCODER'S"
            draw_tag(p, f"DIFFERENCE ×{self._gain:g}{note}", QtCore.QPointF(8, 8),
                      Qt.AlignmentFlag.AlignLeft)
        elif mode != "split":
            label = "RESULT" if mode == "result" else "SOURCE"
            if self._mode != "source" and "result" not in self._images:
                label = "SOURCE (no result for this frame)"
            draw_tag(p, label, QtCore.QPointF(8, 8), Qt.AlignmentFlag.AlignLeft)
        zoom = f"{self._scale * self.devicePixelRatioF() * 100:.0f}%"
        draw_tag(p, f"Fit {zoom}" if self._fit else zoom,
                  QtCore.QPointF(self.width() - 8, self.height() - 26), Qt.AlignmentFlag.AlignRight)

    # -- interaction ---------------------------------------------------------------------
    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        super().resizeEvent(event)
        if self.frame_size() is None:
            return
        if self._fit:
            self.fit()
        else:  # keep the picture where it was relative to the widget's centre
            d = QtCore.QSizeF(event.size() - event.oldSize()) / 2
            if event.oldSize().isValid():
                self.pan_by(d.width(), d.height())

    def wheelEvent(self, event: QtGui.QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120
        if steps:
            self.zoom_by(_WHEEL_STEP ** steps, event.position())
        event.accept()

    def mousePressEvent(self, event: QtGui.QMouseEvent) -> None:
        pos = event.position()
        button = event.button()
        if self.frame_size() is None:
            return
        if button == Qt.MouseButton.MiddleButton or (button == Qt.MouseButton.LeftButton
                                                     and self._space):
            self._drag, self._drag_from = "pan", pos
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
        elif button == Qt.MouseButton.LeftButton and self._on_wipe(pos):
            self._drag = "wipe"
        elif button == Qt.MouseButton.LeftButton:
            x, y = self.map_to_frame(pos)
            w, h = self.frame_size()
            if -0.5 <= x < w - 0.5 and -0.5 <= y < h - 0.5:
                if self._picking or event.modifiers() & Qt.KeyboardModifier.AltModifier:
                    self.set_picking(False)
                    self.target_picked.emit(x, y)
                else:
                    self.clicked.emit(x, y)
        event.accept()

    def mouseMoveEvent(self, event: QtGui.QMouseEvent) -> None:
        pos = event.position()
        if self._drag == "pan":
            delta = pos - self._drag_from
            self._drag_from = pos
            self.pan_by(delta.x(), delta.y())
        elif self._drag == "wipe":
            rect = self.image_rect()
            self.set_wipe((pos.x() - rect.left()) / rect.width())
            self.wipe_moved.emit(self._wipe)
        else:
            self._update_cursor(pos)

    def mouseReleaseEvent(self, event: QtGui.QMouseEvent) -> None:
        self._drag = None
        self._update_cursor(event.position())

    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:
        key, mods = event.key(), event.modifiers()
        if key == Qt.Key.Key_Space:
            if not event.isAutoRepeat():
                self._space = True
                self.setCursor(Qt.CursorShape.OpenHandCursor)
            event.ignore()  # let the window use Space too (play/pause)
        elif key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.zoom_by(_KEY_STEP)
        elif key == Qt.Key.Key_Minus:
            self.zoom_by(1 / _KEY_STEP)
        elif key == Qt.Key.Key_F or (key == Qt.Key.Key_Z
                                     and mods & Qt.KeyboardModifier.ShiftModifier):
            self.fit()
        elif key == Qt.Key.Key_1:
            self.actual_size()
        elif key == Qt.Key.Key_Escape and self._picking:
            self.set_picking(False)
        else:
            super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QtGui.QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
            self.unsetCursor()
        event.ignore()

    def focusOutEvent(self, event: QtGui.QFocusEvent) -> None:
        self._space = False  # the release may go to another widget
        super().focusOutEvent(event)

    def _on_wipe(self, pos: QtCore.QPointF) -> bool:
        if self._mode != "split" or "result" not in self._images:
            return False
        rect = self.image_rect()
        x = rect.left() + self._wipe * rect.width()
        return abs(pos.x() - x) <= _WIPE_GRAB_PX and rect.top() <= pos.y() <= rect.bottom()

    def _update_cursor(self, pos: QtCore.QPointF) -> None:
        if self._picking:
            self.setCursor(Qt.CursorShape.CrossCursor)
        elif self._space:
            self.setCursor(Qt.CursorShape.OpenHandCursor)
        elif self._on_wipe(pos):
            self.setCursor(Qt.CursorShape.SplitHCursor)
        else:
            self.unsetCursor()
