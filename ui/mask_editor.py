"""Mask editing on the viewer: the frame's mask outline with handles, brushes and a tool bar.

:class:`MaskEditor` is a transparent layer over a :class:`ui.viewer.Viewer` (same geometry,
frame coordinates through the viewer's mapping). It shows the mask outline of the frame at the
playhead and lets the user edit it; it holds no project data and reports every edit as a
signal, in frame pixels, for the controller to store as keyframes:

- outline tool: drag a vertex; double-click an edge to insert a vertex; select a vertex and
  press Delete (or Backspace) to remove it; drag inside the outline to move it; drag a corner
  of its bounding box to scale it (about the box's centre) and the round handle above the box
  to rotate it. Under the chin, the diamond handle drags the dilation (where the mask's edge
  lies) and the round one the feather (how soft the edge is).
- brush tools (add, erase, exclude): drag to paint a stroke; ``[`` and ``]`` change the size.

Wheel, middle-drag and Space+drag go through to the viewer (zoom and pan), as do the keys the
editor does not use. :class:`MaskToolBar` holds the tools, the brush size and the numeric
dilation and feather fields.
"""
from __future__ import annotations

import math

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from engine.mask import DILATION_RANGE, FEATHER_RANGE
from ui import theme
from ui.viewer import Viewer, draw_tag

Qt = QtCore.Qt

TOOLS: tuple[str, ...] = ("outline", "add", "erase", "exclude")
TOOL_LABELS = {"outline": "Outline", "add": "Add Brush", "erase": "Erase Brush",
               "exclude": "Exclude Brush"}
TOOL_KEYS = {"outline": "V", "add": "B", "erase": "E", "exclude": "X"}
# Shape colours by role (distinct from the accent, readable on skin).
ROLE_COLORS = {"outline": theme.OVERLAY_MASK, "add": "#5fd068", "erase": "#c58cff",
               "exclude": "#ff4a3d"}

_GRAB_PX = 7  # how close to a vertex or handle a press grabs it
_EDGE_PX = 6  # how close to an edge a double-click inserts a vertex
_HANDLE_PX = 4.5  # half-size of the drawn handles
_ROTATE_PX = 26  # rotation handle distance above the bounding box
_SIDE_PX = 16  # dilation and feather handles sit this far either side of the chin
_MIN_BRUSH_PX = 1.0
_BRUSH_STEP = 1.25  # [ and ] change the brush size by this factor


def offset_outline(points: np.ndarray, distance: float) -> np.ndarray:
    """The closed outline moved ``distance`` outwards along its vertex normals (for display)."""
    pts = np.asarray(points, np.float64)
    if len(pts) < 3 or distance == 0:
        return pts.copy()
    edges = np.roll(pts, -1, axis=0) - pts
    lengths = np.maximum(np.linalg.norm(edges, axis=1, keepdims=True), 1e-9)
    normals = np.column_stack([edges[:, 1], -edges[:, 0]]) / lengths
    if _area(pts) < 0:  # normals of a clockwise outline (image y down) point inwards
        normals = -normals
    vertex = normals + np.roll(normals, 1, axis=0)
    vertex /= np.maximum(np.linalg.norm(vertex, axis=1, keepdims=True), 1e-9)
    # Miter length, limited so sharp corners do not shoot out.
    cos_half = np.clip((vertex * normals).sum(1, keepdims=True), 0.35, 1.0)
    return pts + vertex * (distance / cos_half)


def _area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def nearest_edge(points: np.ndarray, p: np.ndarray) -> tuple[int, float, np.ndarray]:
    """The closed outline's edge nearest ``p``: (index of its first vertex, distance, foot)."""
    a = np.asarray(points, np.float64)
    b = np.roll(a, -1, axis=0)
    ab = b - a
    t = np.clip(((p - a) * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-12), 0, 1)
    feet = a + t[:, None] * ab
    dist = np.linalg.norm(feet - p, axis=1)
    i = int(np.argmin(dist))
    return i, float(dist[i]), feet[i]


class MaskEditor(QtWidgets.QWidget):
    """An editable mask outline (and brush strokes) drawn over a viewer."""

    # Frame pixels (K, 2); False while a drag goes on, True when it ends (one undo step).
    outline_edited = QtCore.Signal(object, bool)
    # "dilation" or "feather", as a fraction of the face's size; final as above.
    size_edited = QtCore.Signal(str, float, bool)
    # Role ("add", "erase", "exclude"), stroke points (N, 2) and radius, in frame pixels.
    stroke_drawn = QtCore.Signal(str, object, float)
    brush_changed = QtCore.Signal(float)  # radius, frame pixels

    def __init__(self, viewer: Viewer) -> None:
        super().__init__(viewer)
        self.viewer = viewer
        self.setAttribute(Qt.WidgetAttribute.WA_NoSystemBackground)
        self.setAttribute(Qt.WidgetAttribute.WA_TranslucentBackground)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.setMouseTracking(True)
        self.setGeometry(viewer.rect())
        viewer.installEventFilter(self)
        self._tool = "outline"
        self._points: np.ndarray | None = None  # the outline on this frame, frame pixels
        self._state = "automatic"  # "automatic", "interpolated" or "key"
        self._scale = 1.0  # face size in frame pixels (dilation and feather are fractions of it)
        self._dilation = 0.0
        self._feather = 0.0
        self._shapes: list[tuple[str, np.ndarray, float | None]] = []
        self._selected: int | None = None  # selected vertex
        self._brush = 12.0  # radius, frame pixels
        self._drag: dict | None = None
        self._hover: QtCore.QPointF | None = None
        self._space = False
        self.hide()

    # -- state from the controller -------------------------------------------------------
    def set_outline(self, points: np.ndarray | None, *, state: str = "automatic",
                    face_scale: float = 1.0, dilation: float = 0.0,
                    feather: float = 0.0) -> None:
        """The outline on the frame shown (frame pixels; None: no face), and how it is drawn.

        ``state``: "key" (a keyframe here), "interpolated" or "automatic".
        """
        if self._drag is not None and self._drag["kind"] != "brush":
            return  # the drag owns the outline until it ends
        self._points = None if points is None else np.array(points, np.float64)
        if self._points is None or (self._selected is not None
                                    and self._selected >= len(self._points)):
            self._selected = None
        self._state = state
        self._scale = max(float(face_scale), 1e-6)
        self._dilation, self._feather = float(dilation), float(feather)
        self.update()

    def set_shapes(self, shapes: list[tuple[str, np.ndarray, float | None]]) -> None:
        """Brush strokes and regions active on this frame: (role, points, radius or None)."""
        self._shapes = [(role, np.asarray(p, np.float64), r) for role, p, r in shapes]
        self.update()

    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(f"unknown mask tool {tool!r}; one of {', '.join(TOOLS)}")
        self._tool = tool
        self._drag = None
        self._update_cursor()
        self.update()

    def tool(self) -> str:
        return self._tool

    def set_brush_radius(self, radius: float) -> None:
        self._brush = max(float(radius), _MIN_BRUSH_PX)
        self.update()

    def brush_radius(self) -> float:
        return self._brush

    def outline(self) -> np.ndarray | None:
        return None if self._points is None else self._points.copy()

    def selected_vertex(self) -> int | None:
        return self._selected

    def handle_positions(self) -> dict[str, QtCore.QPointF]:
        """Widget positions of the outline's handles (for tests and tooltips)."""
        if self._points is None:
            return {}
        frame = self._handles()
        return {name: self.viewer.map_from_frame(*xy) for name, xy in frame.items()}

    # -- geometry ------------------------------------------------------------------------
    def _widget(self, points: np.ndarray) -> np.ndarray:
        return np.array([[q.x(), q.y()] for q in (self.viewer.map_from_frame(x, y)
                                                 for x, y in points)]).reshape(-1, 2)

    def _frame(self, pos: QtCore.QPointF) -> np.ndarray:
        return np.array(self.viewer.map_to_frame(pos), np.float64)

    def _px_per_frame(self) -> float:
        return max(self.viewer.scale(), 1e-6)

    def _handles(self) -> dict[str, np.ndarray]:
        """Handle positions in frame pixels."""
        pts = self._points
        lo, hi = pts.min(0), pts.max(0)
        centre = (lo + hi) / 2
        handles = {"scale_tl": lo, "scale_tr": np.array([hi[0], lo[1]]), "scale_br": hi,
                   "scale_bl": np.array([lo[0], hi[1]]),
                   "rotate": np.array([centre[0], lo[1] - _ROTATE_PX / self._px_per_frame()])}
        # Dilation and feather under the outline's lowest point (the chin), either side of it
        # so neither hides the chin's vertex.
        bottom = pts[int(np.argmax(pts[:, 1]))]
        edge = bottom[1] + self._dilation * self._scale
        side = _SIDE_PX / self._px_per_frame()
        handles["dilation"] = np.array([bottom[0] - side, edge])
        handles["feather"] = np.array([bottom[0] + side, edge + self._feather * self._scale / 2])
        return handles

    def _hit(self, pos: QtCore.QPointF) -> tuple[str, int | None]:
        """What a press at ``pos`` grabs: ("vertex", i), a handle, ("inside", None) or none."""
        if self._points is None:
            return "none", None
        p = np.array([pos.x(), pos.y()])
        handles = self._handles()
        for name in ("dilation", "feather"):
            if np.linalg.norm(self._widget(handles[name][None])[0] - p) <= _GRAB_PX:
                return name, None
        verts = self._widget(self._points)
        d = np.linalg.norm(verts - p, axis=1)
        if d.min() <= _GRAB_PX:
            return "vertex", int(np.argmin(d))
        for name, xy in handles.items():
            if name.startswith(("scale", "rotate")) and \
                    np.linalg.norm(self._widget(xy[None])[0] - p) <= _GRAB_PX:
                return name, None
        if QtGui.QPolygonF([QtCore.QPointF(x, y) for x, y in verts]).containsPoint(
                pos, Qt.FillRule.OddEvenFill):
            return "inside", None
        return "none", None

    # -- events --------------------------------------------------------------------------
    def eventFilter(self, obj: QtCore.QObject, event: QtCore.QEvent) -> bool:
        if obj is self.viewer and event.type() == QtCore.QEvent.Type.Resize:
            self.setGeometry(self.viewer.rect())
        return False

    def mousePressEvent(self, event: QtGui.QMouseEvent) -> None:
        if event.button() != Qt.MouseButton.LeftButton or self._space \
                or self.viewer.frame_size() is None:
            event.ignore()  # pan and the rest: the viewer's
            return
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        pos = event.position()
        if self._tool != "outline":
            self._drag = {"kind": "brush", "points": [self._frame(pos)]}
            self.update()
            return
        kind, index = self._hit(pos)
        if kind == "none":
            self._selected = None
            self.update()
            return
        if kind == "vertex":
            self._selected = index
        self._drag = {"kind": kind, "index": index, "start": self._frame(pos),
                      "points": self._points.copy(), "dilation": self._dilation,
                      "feather": self._feather, "moved": False}
        self.update()

    def mouseMoveEvent(self, event: QtGui.QMouseEvent) -> None:
        pos = event.position()
        self._hover = pos
        drag = self._drag
        if drag is None:
            self._update_cursor(pos)
            if self._tool != "outline":
                self.update()  # the brush cursor follows
            return
        p = self._frame(pos)
        if drag["kind"] == "brush":
            last = drag["points"][-1]
            # Samples a third of a radius apart are as smooth as the mask can show.
            if np.linalg.norm(p - last) >= self._brush / 3:
                drag["points"].append(p)
            self.update()
            return
        drag["moved"] = True
        self._apply_drag(drag, p)
        self.update()

    def mouseReleaseEvent(self, event: QtGui.QMouseEvent) -> None:
        drag, self._drag = self._drag, None
        if drag is None:
            event.ignore()
            return
        if drag["kind"] == "brush":
            points = np.array(drag["points"])
            self.stroke_drawn.emit(self._tool, points, self._brush)
        elif drag["moved"]:
            self._apply_drag(drag, self._frame(event.position()))
            self._emit(drag["kind"], final=True)
        self._update_cursor(event.position())
        self.update()

    def mouseDoubleClickEvent(self, event: QtGui.QMouseEvent) -> None:
        if self._tool != "outline" or self._points is None \
                or event.button() != Qt.MouseButton.LeftButton:
            event.ignore()
            return
        pos = event.position()
        verts = self._widget(self._points)
        i, dist, foot = nearest_edge(verts, np.array([pos.x(), pos.y()]))
        if dist > _EDGE_PX:
            return
        at = self._frame(QtCore.QPointF(*foot))
        self._points = np.insert(self._points, i + 1, at, axis=0)
        self._selected = i + 1
        self.outline_edited.emit(self._points.copy(), True)
        self.update()

    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:
        key = event.key()
        if key == Qt.Key.Key_Space:
            self._space = not event.isAutoRepeat() or self._space
            event.ignore()  # the viewer pans, the window plays
        elif key in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace) and self._tool == "outline" \
                and self._selected is not None and self._points is not None:
            if len(self._points) > 3:
                self._points = np.delete(self._points, self._selected, axis=0)
                self._selected = None
                self.outline_edited.emit(self._points.copy(), True)
                self.update()
        elif key in (Qt.Key.Key_BracketLeft, Qt.Key.Key_BracketRight):
            factor = _BRUSH_STEP if key == Qt.Key.Key_BracketRight else 1 / _BRUSH_STEP
            self.set_brush_radius(self._brush * factor)
            self.brush_changed.emit(self._brush)
        else:
            event.ignore()

    def keyReleaseEvent(self, event: QtGui.QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
        event.ignore()

    def leaveEvent(self, event: QtCore.QEvent) -> None:
        self._hover = None
        self.update()

    def _apply_drag(self, drag: dict, p: np.ndarray) -> None:
        kind, start, base = drag["kind"], drag["start"], drag["points"]
        if kind == "vertex":
            self._points = base.copy()
            self._points[drag["index"]] = p
        elif kind == "inside":
            self._points = base + (p - start)
        elif kind.startswith("scale"):
            centre = (base.min(0) + base.max(0)) / 2
            factor = np.linalg.norm(p - centre) / max(np.linalg.norm(start - centre), 1e-6)
            self._points = centre + (base - centre) * factor
        elif kind == "rotate":
            centre = (base.min(0) + base.max(0)) / 2
            angle = math.atan2(*(p - centre)[::-1]) - math.atan2(*(start - centre)[::-1])
            c, s = math.cos(angle), math.sin(angle)
            self._points = centre + (base - centre) @ np.array([[c, s], [-s, c]])
        elif kind == "dilation":
            self._dilation = drag["dilation"] + (p[1] - start[1]) / self._scale
        elif kind == "feather":
            self._feather = max(drag["feather"] + 2 * (p[1] - start[1]) / self._scale, 0.0)
        self._emit(kind, final=False)

    def _emit(self, kind: str, final: bool) -> None:
        if kind in ("dilation", "feather"):
            self.size_edited.emit(kind, self._dilation if kind == "dilation" else self._feather,
                                  final)
        else:
            self.outline_edited.emit(self._points.copy(), final)

    def _update_cursor(self, pos: QtCore.QPointF | None = None) -> None:
        if self._tool != "outline":
            self.setCursor(Qt.CursorShape.CrossCursor)
            return
        kind = self._hit(pos)[0] if pos is not None else "none"
        shapes = {"vertex": Qt.CursorShape.PointingHandCursor,
                  "inside": Qt.CursorShape.SizeAllCursor,
                  "rotate": Qt.CursorShape.CrossCursor,
                  "dilation": Qt.CursorShape.SizeVerCursor,
                  "feather": Qt.CursorShape.SizeVerCursor,
                  "scale_tl": Qt.CursorShape.SizeFDiagCursor,
                  "scale_br": Qt.CursorShape.SizeFDiagCursor,
                  "scale_tr": Qt.CursorShape.SizeBDiagCursor,
                  "scale_bl": Qt.CursorShape.SizeBDiagCursor}
        if kind in shapes:
            self.setCursor(shapes[kind])
        else:
            self.unsetCursor()

    # -- painting ------------------------------------------------------------------------
    def paintEvent(self, event: QtGui.QPaintEvent) -> None:
        if self.viewer.frame_size() is None:
            return
        p = QtGui.QPainter(self)
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        for role, points, radius in self._shapes:
            self._draw_shape(p, role, points, radius)
        if self._drag is not None and self._drag["kind"] == "brush":
            self._draw_shape(p, self._tool, np.array(self._drag["points"]), self._brush)
        if self._points is not None:
            self._draw_outline(p)
        if self._tool != "outline" and self._hover is not None:
            r = self._brush * self._px_per_frame()
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.setPen(QtGui.QPen(theme.color("#000000", 160), 3))
            p.drawEllipse(self._hover, r, r)
            p.setPen(QtGui.QPen(theme.color(ROLE_COLORS[self._tool]), 1.5))
            p.drawEllipse(self._hover, r, r)
        self._draw_badge(p)

    def _draw_shape(self, p: QtGui.QPainter, role: str, points: np.ndarray,
                    radius: float | None) -> None:
        colour = ROLE_COLORS[role]
        pts = [QtCore.QPointF(x, y) for x, y in self._widget(points)]
        path = QtGui.QPainterPath(pts[0])
        if radius is not None:  # a stroke: the outline of a round brush along it
            for q in pts[1:]:
                path.lineTo(q)
            if len(pts) == 1:
                path.lineTo(pts[0] + QtCore.QPointF(0.01, 0))
            stroker = QtGui.QPainterPathStroker()
            stroker.setWidth(max(2 * radius * self._px_per_frame(), 1.0))
            stroker.setCapStyle(Qt.PenCapStyle.RoundCap)
            stroker.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
            path = stroker.createStroke(path).simplified()
        else:
            path.addPolygon(QtGui.QPolygonF(pts))
            path.closeSubpath()
        p.setPen(Qt.PenStyle.NoPen)
        p.fillPath(path, theme.color(colour, 55))
        if role == "exclude":  # hatched: the source shows through here
            p.fillPath(path, QtGui.QBrush(theme.color(colour, 150), Qt.BrushStyle.BDiagPattern))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.setPen(QtGui.QPen(theme.color(colour, 230), 1.3))
        p.drawPath(path)

    def _draw_outline(self, p: QtGui.QPainter) -> None:
        colour = ROLE_COLORS["outline"]
        pts = self._points
        edge = offset_outline(pts, self._dilation * self._scale)
        half = self._feather * self._scale / 2
        inner, outer = offset_outline(edge, -half), offset_outline(edge, half)

        def poly(frame_points: np.ndarray) -> QtGui.QPolygonF:
            return QtGui.QPolygonF([QtCore.QPointF(x, y) for x, y in self._widget(frame_points)])

        p.setBrush(Qt.BrushStyle.NoBrush)
        # The feather band, then the mask's edge (where it is one half), then the outline.
        band = QtGui.QPainterPath()
        band.addPolygon(poly(outer))
        band.closeSubpath()
        band.addPolygon(poly(inner))
        band.closeSubpath()
        band.setFillRule(Qt.FillRule.OddEvenFill)
        p.fillPath(band, theme.color(colour, 28))
        p.setPen(QtGui.QPen(theme.color(colour, 150), 1, Qt.PenStyle.DotLine))
        p.drawPolygon(poly(inner))
        p.drawPolygon(poly(outer))
        p.setPen(QtGui.QPen(theme.color(colour, 220), 1.2, Qt.PenStyle.DashLine))
        p.drawPolygon(poly(edge))
        automatic = self._state == "automatic"
        p.setPen(QtGui.QPen(theme.color("#000000", 140), 3.2))
        p.drawPolygon(poly(pts))
        p.setPen(QtGui.QPen(theme.color(colour), 1.6,
                            Qt.PenStyle.DashDotLine if automatic else Qt.PenStyle.SolidLine))
        p.drawPolygon(poly(pts))
        if self._tool != "outline":
            return
        handles = self._handles()
        # Bounding box with scale corners and the rotation handle.
        lo, hi = self._widget(np.array([pts.min(0), pts.max(0)]))
        p.setPen(QtGui.QPen(theme.color("#ffffff", 90), 1, Qt.PenStyle.DashLine))
        p.drawRect(QtCore.QRectF(QtCore.QPointF(*lo), QtCore.QPointF(*hi)))
        rot = self._widget(handles["rotate"][None])[0]
        p.drawLine(QtCore.QPointF(rot[0], rot[1]), QtCore.QPointF(rot[0], lo[1]))
        self._handle(p, rot, "circle", "#ffffff", theme.RAISED)
        for name in ("scale_tl", "scale_tr", "scale_br", "scale_bl"):
            self._handle(p, self._widget(handles[name][None])[0], "square", "#ffffff",
                         theme.RAISED)
        for i, v in enumerate(self._widget(pts)):
            fill = theme.ACCENT if i == self._selected else "#ffffff"
            self._handle(p, v, "square", "#101010", fill)
        self._handle(p, self._widget(handles["dilation"][None])[0], "diamond", "#101010",
                     colour)
        self._handle(p, self._widget(handles["feather"][None])[0], "circle", "#101010",
                     "#ffd0e0")
        if self._drag is not None and self._drag["kind"] in ("dilation", "feather"):
            kind = self._drag["kind"]
            value = self._dilation if kind == "dilation" else self._feather
            at = self._widget(handles[kind][None])[0]
            draw_tag(p, f"{kind.title()} {value:+.3f}" if kind == "dilation"
                     else f"Feather {value:.3f}", QtCore.QPointF(at[0] + 10, at[1] - 8))

    def _handle(self, p: QtGui.QPainter, at: np.ndarray, shape: str, line: str,
                fill: str) -> None:
        r = _HANDLE_PX
        c = QtCore.QPointF(float(at[0]), float(at[1]))
        p.setPen(QtGui.QPen(theme.color(line), 1))
        p.setBrush(theme.color(fill))
        if shape == "circle":
            p.drawEllipse(c, r, r)
        elif shape == "diamond":
            p.drawPolygon(QtGui.QPolygonF([c + QtCore.QPointF(0, -r - 1), c + QtCore.QPointF(r + 1, 0),
                                           c + QtCore.QPointF(0, r + 1), c + QtCore.QPointF(-r - 1, 0)]))
        else:
            p.drawRect(QtCore.QRectF(c.x() - r + 0.5, c.y() - r + 0.5, 2 * r - 1, 2 * r - 1))

    def _draw_badge(self, p: QtGui.QPainter) -> None:
        text = {"key": "MASK KEYFRAME", "interpolated": "MASK INTERPOLATED",
                "automatic": "MASK AUTOMATIC"}[self._state] if self._points is not None \
            else "NO FACE ON THIS FRAME"
        if self._tool != "outline":
            text += f"  ·  {TOOL_LABELS[self._tool].upper()} {self._brush:.0f} px"
        draw_tag(p, text, QtCore.QPointF(8, 30))


class MaskToolBar(QtWidgets.QToolBar):
    """Mask tools, brush size, and the numeric dilation and feather fields."""

    editing_toggled = QtCore.Signal(bool)
    tool_changed = QtCore.Signal(str)
    brush_changed = QtCore.Signal(float)  # radius, frame pixels
    size_edited = QtCore.Signal(str, float, bool)  # "dilation"/"feather", value, final
    key_requested = QtCore.Signal()  # key the mask on this frame as it is
    reset_requested = QtCore.Signal()  # back to the automatic mask on this frame

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__("Mask", parent)
        self.setObjectName("toolbar-mask")
        self.setMovable(False)
        self.setIconSize(QtCore.QSize(14, 14))
        self.edit_action = self.addAction("Edit Mask")
        self.edit_action.setCheckable(True)
        self.edit_action.setShortcut(QtGui.QKeySequence("M"))
        self.edit_action.setToolTip("Edit the mask on the viewer (M)")
        self.edit_action.toggled.connect(self._on_editing)
        self.addSeparator()
        group = QtGui.QActionGroup(self)
        self.tool_actions: dict[str, QtGui.QAction] = {}
        for tool in TOOLS:
            action = self.addAction(TOOL_LABELS[tool])
            action.setCheckable(True)
            action.setShortcut(QtGui.QKeySequence(TOOL_KEYS[tool]))
            action.setToolTip(f"{TOOL_LABELS[tool]} ({TOOL_KEYS[tool]})")
            action.triggered.connect(lambda checked=False, t=tool: self._on_tool(t))
            group.addAction(action)
            self.tool_actions[tool] = action
        self.tool_actions["outline"].setChecked(True)
        self.brush = self._spin("Size", 1, 400, 1, 0, " px", "Brush radius in frame pixels ([ ])")
        self.brush.setValue(12)
        self.brush.valueChanged.connect(lambda v: self.brush_changed.emit(float(v)))
        self.addSeparator()
        self.dilation = self._spin("Dilation", *DILATION_RANGE, 0.01, 3, "",
                                   "Where the mask's edge lies, as a fraction of the face")
        self.feather = self._spin("Feather", *FEATHER_RANGE, 0.01, 3, "",
                                  "Width of the mask's soft edge, as a fraction of the face")
        for name, spin in (("dilation", self.dilation), ("feather", self.feather)):
            spin.valueChanged.connect(lambda v, n=name: self._on_size(n, v))
        self.addSeparator()
        self.key_action = self.addAction("Add Key")
        self.key_action.setToolTip("Keyframe the mask on this frame (Shift+K)")
        self.key_action.setShortcut(QtGui.QKeySequence("Shift+K"))
        self.key_action.triggered.connect(lambda: self.key_requested.emit())
        self.reset_action = self.addAction("Automatic")
        self.reset_action.setToolTip("Back to the automatic mask on this frame")
        self.reset_action.triggered.connect(lambda: self.reset_requested.emit())
        self._quiet = False
        self._on_editing(False)

    def _spin(self, label: str, lo: float, hi: float, step: float, decimals: int, suffix: str,
              tip: str) -> QtWidgets.QDoubleSpinBox:
        caption = QtWidgets.QLabel(f" {label} ")
        caption.setStyleSheet("background: transparent; color: #8a8a8a")
        self.addWidget(caption)
        spin = QtWidgets.QDoubleSpinBox()
        spin.setRange(lo, hi)
        spin.setSingleStep(step)
        spin.setDecimals(decimals)
        spin.setSuffix(suffix)
        spin.setToolTip(tip)
        spin.setKeyboardTracking(False)  # one edit per committed number, not per digit
        spin.setFixedWidth(76)
        self.addWidget(spin)
        return spin

    def set_sizes(self, dilation: float, feather: float) -> None:
        """Show the frame's values (no signal)."""
        self._quiet = True
        self.dilation.setValue(dilation)
        self.feather.setValue(feather)
        self._quiet = False

    def _on_tool(self, tool: str) -> None:
        self.tool_changed.emit(tool)

    def _on_size(self, name: str, value: float) -> None:
        if not self._quiet:
            self.size_edited.emit(name, float(value), True)

    def _on_editing(self, on: bool) -> None:
        for action in self.actions():
            if action is not self.edit_action:
                action.setEnabled(on)
        self.editing_toggled.emit(on)
