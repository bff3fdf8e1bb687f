"""Mask editing in the editor: edits from the viewer and the keyframe lane become undoable
changes of the project's corrections, and the frames they touch are re-rendered.

:class:`MaskEditing` owns the mask editor drawn over the viewer, its tool bar and the keyframe
lane. Every edit is a :class:`CorrectionsCommand` on the window's undo stack holding the
corrections before and after it, so undo and redo restore the exact state. Shapes drawn in
frame pixels are stored in the face's canonical coordinates of the frame they were drawn on,
through the face analysis, so they follow the head.

:class:`PreviewRenderer` (a ``QThread``) holds a prepared :class:`engine.pipeline.SyncSession`
for the selected range. Given new corrections it asks the session which frames change and
renders them nearest the playhead first, one at a time, taking any newer corrections before
each frame: during a drag only the playhead's frame keeps being rendered, and the rest follow
once the edit settles. Results carry the corrections' version, so a frame rendered before a
later edit is never shown as current.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PySide6 import QtCore, QtGui

from engine.errors import RedubError
from engine.face import geometry as geo
from engine.face.analysis import FaceAnalysis
from engine.mask import face_scale, landmark_polygon
from engine.maskedit import Corrections
from engine.media.reader import VideoReader
from engine.pipeline import SyncSession, SyncSettings, prepare_sync
from engine.project import Project
from ui.keyframe_lane import KeyframeLane
from ui.mask_editor import MaskEditor, MaskToolBar
from ui.timeline import Timeline
from ui.viewer import Viewer

MERGE_S = 0.6  # repeated edits of one number (spin box steps) closer than this: one undo step
RESULT_BYTES = 384 << 20  # rendered frames kept for display


@dataclass(frozen=True)
class PreviewSpec:
    """What the preview session renders: the selected range of the project, with its dub."""

    video: str
    dub: str
    dub_offset: float
    ranges: tuple[tuple[float, float], ...]
    settings: SyncSettings


class PreviewRenderer(QtCore.QThread):
    """Renders frames of a prepared sync session on demand, off the UI thread."""

    prepared = QtCore.Signal(object, object)  # PreviewSpec, notes (list of str)
    failed = QtCore.Signal(object, str)  # PreviewSpec, message
    invalidated = QtCore.Signal(int, object)  # corrections version, frame indices (ndarray)
    rendered = QtCore.Signal(int, int, object, float)  # version, frame, RGB, seconds since edit

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._cond = threading.Condition()
        self._spec: PreviewSpec | None = None  # to prepare
        self._corrections: tuple[int, Corrections, float] | None = None  # to apply
        self._pending: set[int] = set()  # frames to render
        self._urgent: int | None = None  # rendered before anything else
        self._edited_at: dict[int, float] = {}  # frame -> when the edit reaching it was made
        self._playhead = 0
        self._version = 0  # of the newest corrections given
        self._applied = 0  # of the corrections the session renders with (worker thread)
        self._stopping = False
        self.session: SyncSession | None = None
        self._reader: VideoReader | None = None

    # -- UI thread ---------------------------------------------------------------------
    def prepare(self, spec: PreviewSpec, corrections: Corrections) -> None:
        with self._cond:
            self._spec = spec
            self._pending.clear()
            self._urgent = None
            self._queue_corrections(corrections)
            self._cond.notify()
        if not self.isRunning():
            self.start()

    def update_corrections(self, corrections: Corrections, playhead: int) -> None:
        """Render what ``corrections`` change, nearest ``playhead`` first."""
        with self._cond:
            self._playhead = playhead
            self._queue_corrections(corrections)
            self._cond.notify()

    def request(self, frame: int) -> None:
        """Render ``frame`` next (the playhead moved to a frame without a result)."""
        with self._cond:
            self._playhead = frame
            self._urgent = frame
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self.wait()

    def _queue_corrections(self, corrections: Corrections) -> None:
        self._version += 1
        self._corrections = (self._version, corrections.copy(), time.monotonic())

    # -- worker thread -------------------------------------------------------------------
    def run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not (self._stopping or self._spec or self._corrections
                               or (self.session and (self._pending or self._urgent is not None))):
                        self._cond.wait()
                    if self._stopping:
                        return
                    spec, self._spec = self._spec, None
                    update, self._corrections = self._corrections, None
                if spec is not None and not self._prepare(spec, update):
                    continue
                if update is not None and self.session is not None:
                    self._apply(*update)
                self._render_next()
        finally:
            self._close()

    def _prepare(self, spec: PreviewSpec, update: tuple | None) -> bool:
        self._close()
        try:
            corrections = update[1] if update else None
            self.session = prepare_sync(spec.video, spec.dub, dub_offset=spec.dub_offset,
                                        ranges=spec.ranges, settings=spec.settings,
                                        corrections=corrections)
            self._reader = VideoReader(spec.video, cache_bytes=192 << 20)
        except (RedubError, OSError) as exc:
            self._close()
            self.failed.emit(spec, str(exc))
            return False
        self.prepared.emit(spec, list(self.session.notes))
        if update is not None:
            self._applied = update[0]
            with self._cond:
                self._pending.update(self.session.edited_frames().tolist())
            self.invalidated.emit(update[0], self.session.edited_frames())
        return True

    def _apply(self, version: int, corrections: Corrections, at: float) -> None:
        changed = self.session.set_corrections(corrections)
        self._applied = version
        self.invalidated.emit(version, changed)
        with self._cond:
            for frame in changed.tolist():
                self._edited_at[frame] = at
            self._pending.update(changed.tolist())

    def _render_next(self) -> None:
        with self._cond:
            if self._urgent is not None:
                frame, self._urgent = self._urgent, None
            elif self._pending and self._corrections is None:
                frame = min(self._pending, key=lambda f: abs(f - self._playhead))
            else:
                return
            self._pending.discard(frame)
            at = self._edited_at.pop(frame, None)
        if self.session is None or self._reader is None or not self.session.edits(frame):
            return  # nothing to render: the frame passes through
        try:
            rgb = self.session.render_frame(self._reader.frame(frame)).rgb()
        except (RedubError, OSError) as exc:
            self.failed.emit(None, str(exc))
            return
        self.rendered.emit(self._applied, frame, rgb, time.monotonic() - at if at else 0.0)

    def _close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class CorrectionsCommand(QtGui.QUndoCommand):
    """One edit of the corrections, as the states before and after it."""

    ID = 0x6D61  # "ma"

    def __init__(self, editing: MaskEditing, text: str, kind: str, before: Corrections,
                 after: Corrections) -> None:
        super().__init__(text)
        self.editing, self.kind, self.before, self.after = editing, kind, before, after
        self.at = time.monotonic()

    def id(self) -> int:
        return self.ID

    def mergeWith(self, other: QtGui.QUndoCommand) -> bool:
        if not isinstance(other, CorrectionsCommand) or other.kind != self.kind \
                or not self.kind.startswith("size:") or other.at - self.at > MERGE_S:
            return False
        self.after, self.at = other.after, other.at
        return True

    def redo(self) -> None:
        self.editing.apply(self.after)

    def undo(self) -> None:
        self.editing.apply(self.before)


class MaskEditing(QtCore.QObject):
    """The mask editor, tool bar and keyframe lane around the project's corrections."""

    result_ready = QtCore.Signal(int)  # a frame's rendered picture is new
    changed = QtCore.Signal()  # the corrections changed (an edit, undo or redo)
    message = QtCore.Signal(str)  # for the status bar
    editing_changed = QtCore.Signal(bool)
    curves_shown = QtCore.Signal(dict)  # keyed curve name -> its value at the frame

    def __init__(self, viewer: Viewer, undo_stack: QtGui.QUndoStack,
                 parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.undo_stack = undo_stack
        self.editor = MaskEditor(viewer)
        self.toolbar = MaskToolBar()
        self.lane = KeyframeLane()
        self.renderer = PreviewRenderer()
        self.project: Project | None = None
        self.analysis: FaceAnalysis | None = None
        self.spec: PreviewSpec | None = None
        self.ready_spec: PreviewSpec | None = None
        self.frame = 0
        self.marked: tuple[int, int] | None = None
        self.editing = False
        # The viewer compares pixel for pixel (the difference view): the playhead's frame is
        # rendered through the prepared session, as while editing, not read from the encoded
        # render file.
        self.exact_wanted = False
        self._live: Corrections | None = None  # the state during a drag (not yet a command)
        self._invalid: dict[int, int] = {}  # frame -> version from which its result is valid
        self._results: OrderedDict[int, tuple[int, np.ndarray]] = OrderedDict()
        self._overlay_mask = viewer.overlay_visible("mask")
        self._timeline: Timeline | None = None

        self.editor.outline_edited.connect(self._on_outline)
        self.editor.size_edited.connect(self._on_size)
        self.editor.stroke_drawn.connect(self._on_stroke)
        self.editor.brush_changed.connect(lambda r: self.toolbar.brush.setValue(r))
        self.toolbar.editing_toggled.connect(self.set_editing)
        self.toolbar.tool_changed.connect(self.editor.set_tool)
        self.toolbar.brush_changed.connect(self.editor.set_brush_radius)
        self.toolbar.size_edited.connect(self._on_size)
        self.toolbar.key_requested.connect(lambda: self.add_key(self.frame))
        self.toolbar.reset_requested.connect(self.reset_frame)
        lane = self.lane
        lane.mask_key_selected.connect(lambda layer, frame: self.message.emit(
            f"{self._layer_name(layer)} keyframe at frame {frame}"))
        lane.mask_key_moved.connect(lambda layer, a, b: self._edit(
            "Move Mask Keyframe", "key", lambda c: c.move_key(layer, a, b)))
        lane.mask_key_deleted.connect(lambda layer, f: self._edit(
            "Delete Mask Keyframe", "key", lambda c: c.delete_key(layer, f)))
        lane.mask_key_added.connect(self.add_key)
        lane.mask_key_copied.connect(self.copy_key_to_marked)
        lane.mask_key_reset.connect(lambda layer, f: self._edit(
            "Reset Mask to Automatic", "key", lambda c: c.reset_to_automatic(layer, [f])))
        lane.curve_key_set.connect(self.set_curve_key)
        lane.curve_key_moved.connect(self._on_curve_moved)
        lane.curve_key_deleted.connect(lambda name, f: self._edit(
            "Delete Curve Key", "curve", lambda c: c.curves.curve(name).keys.pop(f, None)))
        lane.keep_set.connect(lambda a, b, i: self._edit(
            "Keep Original", "keep", lambda c: c.set_keep(a, b, None if i < 0 else i)))
        lane.keep_deleted.connect(lambda i: self._edit(
            "Remove Keep-Original Span", "keep", lambda c: c.delete_keep(i)))
        self.renderer.prepared.connect(self._on_prepared)
        self.renderer.failed.connect(self._on_failed)
        self.renderer.invalidated.connect(self._on_invalidated)
        self.renderer.rendered.connect(self._on_rendered)

    # -- context from the window -------------------------------------------------------
    def set_project(self, project: Project | None) -> None:
        self.project = project
        self.analysis = None
        self.spec = self.ready_spec = None
        self._results.clear()
        self._invalid.clear()
        self.refresh()

    def set_clip(self, times: np.ndarray, duration: float) -> None:
        self.lane.set_clip(times, duration)

    def follow(self, timeline: Timeline) -> None:
        """Keep the lane's time axis on ``timeline``'s visible span."""
        self._timeline = timeline
        timeline.canvas().installEventFilter(self)

    def eventFilter(self, obj: QtCore.QObject, event: QtCore.QEvent) -> bool:
        # The timeline's canvas repaints whenever its view moves: follow it then.
        if self._timeline is not None and obj is self._timeline.canvas() \
                and event.type() == QtCore.QEvent.Type.Paint:
            self.lane.set_view(*self._timeline.visible_range())
        return False

    def set_analysis(self, analysis: FaceAnalysis | None) -> None:
        self.analysis = analysis
        self._maybe_prepare()
        self.refresh()

    def set_context(self, spec: PreviewSpec | None) -> None:
        """The selected range to preview (None: no range or no dub)."""
        if spec != self.spec:
            self.spec = spec
            self._results.clear()
            self._maybe_prepare()
            self.refresh()  # the lane's curves and the tool bar's sizes read the range's settings

    def set_frame(self, frame: int) -> None:
        self.frame = int(frame)
        self.lane.set_playhead(self.frame)
        if (self.editing or self.exact_wanted) and self.ready_spec is not None \
                and self.result(self.frame) is None:
            self.renderer.request(self.frame)
        self.refresh()

    def set_marked(self, span: tuple[int, int] | None) -> None:
        self.marked = span
        self.lane.set_marked(span)

    def set_editing(self, on: bool) -> None:
        if on == self.editing:
            return
        self.editing = on
        if self.toolbar.edit_action.isChecked() != on:
            self.toolbar.edit_action.setChecked(on)
        self.editor.setVisible(on)
        if on:
            self._overlay_mask = self.viewer.overlay_visible("mask")
            self.viewer.set_overlay_visible("mask", False)  # the editor draws it
            self.editor.setFocus()
            self._maybe_prepare()
        else:
            self.viewer.set_overlay_visible("mask", self._overlay_mask)
        self.editing_changed.emit(on)
        self.refresh()

    def set_exact_wanted(self, on: bool) -> None:
        """Render the playhead's frame exactly (see ``exact_wanted``) from now on, or not."""
        if on != self.exact_wanted:
            self.exact_wanted = on
            self._maybe_prepare()
            self.set_frame(self.frame)

    def result(self, frame: int) -> np.ndarray | None:
        """The newest rendered picture of ``frame`` with the current corrections, if any."""
        entry = self._results.get(frame)
        if entry is None or entry[0] < self._invalid.get(frame, 0):
            return None
        return entry[1]

    def shutdown(self) -> None:
        if self.renderer.isRunning():
            self.renderer.stop()

    # -- edits ---------------------------------------------------------------------------
    @property
    def corrections(self) -> Corrections:
        return self.project.corrections if self.project is not None else Corrections()

    def apply(self, state: Corrections) -> None:
        """Make ``state`` the project's corrections (commands call this) and re-render."""
        if self.project is None:
            return
        self._live = None
        self.project.corrections = state.copy()
        self._update_renderer(state)
        self.refresh()
        self.changed.emit()

    def _edit(self, text: str, kind: str, change: Callable[[Corrections], object]) -> None:
        if self.project is None:
            return
        dragged, self._live = self._live is not None, None
        before = self.project.corrections.copy()
        after = before.copy()
        try:
            change(after)
        except (KeyError, ValueError, RedubError) as exc:
            after = before
            self.message.emit(str(exc))
        if after == before:
            if dragged:  # the drag's previews showed a state that is not kept
                self._update_renderer(before)
            self.refresh()
            return
        self.undo_stack.push(CorrectionsCommand(self, text, kind, before, after))

    def _live_edit(self, change: Callable[[Corrections], object]) -> None:
        """A step of a drag: shown and rendered at the playhead, not yet an undo step."""
        state = self.corrections.copy()
        change(state)
        self._live = state
        self._update_renderer(state)
        self.refresh()

    def add_key(self, frame: int) -> None:
        """Key the outline on ``frame`` as it is there now."""
        self._edit("Add Mask Keyframe", "key",
                   lambda c: c.set_outline(frame, self._outline_face(frame, c)))

    def reset_frame(self) -> None:
        """Back to the automatic mask on this frame (a key there, so a correction ends)."""
        f = self.frame
        layer = self.corrections.outline()
        if layer is None:
            self.message.emit("The mask is automatic here")
        elif f in layer.keys:
            self._edit("Reset Mask to Automatic", "key",
                       lambda c: c.reset_to_automatic(layer.id, [f]))
        else:
            self._edit("Reset Mask to Automatic", "key",
                       lambda c: c.set_outline(f, None, dilation=None, feather=None))

    def copy_key_to_marked(self, layer_id: str, frame: int) -> None:
        if self.marked is None:
            self.message.emit("Mark an in/out range (I, O) to copy the keyframe over")
            return
        first, last = self.marked
        auto = self._auto_face(frame)
        self._edit("Copy Mask Keyframe to Range", "key",
                   lambda c: c.copy_key(layer_id, frame, first, last,
                                        None if auto is None else (lambda: auto)))

    def set_curve_key(self, name: str, frame: int, value: float) -> None:
        self._edit("Set Curve Key", "curve",
                   lambda c: c.curves.curve(name).keys.__setitem__(frame, float(value)))

    def _on_curve_moved(self, name: str, src: int, dst: int, value: float) -> None:
        def change(c: Corrections) -> None:
            keys = c.curves.curve(name).keys
            keys.pop(src, None)
            keys[dst] = float(value)
        self._edit("Move Curve Key", "curve", change)

    def _on_outline(self, points: np.ndarray, final: bool) -> None:
        k = self._face_index(self.frame)
        if k is None:
            return
        face = geo.apply(self.analysis.transforms[k], np.asarray(points, np.float64))
        frame = self.frame
        if final:
            self._edit("Edit Mask Outline", "outline", lambda c: c.set_outline(frame, face))
        else:
            self._live_edit(lambda c: c.set_outline(frame, face))

    def _on_size(self, name: str, value: float, final: bool) -> None:
        frame = self.frame

        def change(c: Corrections) -> None:  # the outline stays as it is on this frame
            c.set_outline(frame, self._outline_face(frame, c), **{name: float(value)})
        if final:
            self._edit(f"Change Mask {name.title()}", f"size:{name}", change)
        else:
            self._live_edit(change)

    def _on_stroke(self, role: str, points: np.ndarray, radius: float) -> None:
        k = self._face_index(self.frame)
        if k is None:
            self.message.emit("No face on this frame to paint on")
            return
        to_face = self.analysis.transforms[k]
        face = geo.apply(to_face, np.asarray(points, np.float64))
        radius_face = float(radius * geo.scale_of(to_face))
        label = {"add": "Paint Mask", "erase": "Erase Mask", "exclude": "Paint Exclusion"}[role]
        frame = self.frame
        self._edit(label, "stroke", lambda c: c.add_shape(role, frame, face, radius_face))

    # -- display -------------------------------------------------------------------------
    def refresh(self) -> None:
        """Bring the editor, tool bar and lane in line with the corrections at the frame."""
        shown = self._live if self._live is not None else self.corrections
        settings = self._settings()
        self.lane.set_corrections(shown, {"openness_gain": settings.openness_gain,
                                          "audio_offset_ms": settings.audio_offset_ms})
        self.curves_shown.emit({name: shown.curves.curve(name).value_at(self.frame, 0.0)
                                for name in shown.curves.NAMES
                                if shown.curves.curve(name).keys})
        k = self._face_index(self.frame)
        if k is None:
            self.editor.set_outline(None)
            self.editor.set_shapes([])
            # Without a face the sizes still read as the frame's (any outline serves).
            mask = shown.at(self.frame).mask_settings(settings.mask)
            self.toolbar.set_sizes(mask.dilation, mask.feather)
            return
        a = self.analysis
        to_frame = geo.invert(a.transforms[k])
        fixes = shown.at(self.frame, lambda: self._auto_face(self.frame))
        mask = fixes.mask_settings(settings.mask)
        layer = shown.outline()
        if layer is not None and self.frame in layer.keys:
            state = "key"
        elif fixes.outline is not None:
            state = "interpolated"
        else:
            state = "automatic"
        outline = landmark_polygon(a.landmarks[k], mask.kind) if fixes.outline is None \
            else geo.apply(to_frame, fixes.outline)
        self.editor.set_outline(outline, state=state, face_scale=face_scale(a.landmarks[k]),
                                dilation=mask.dilation, feather=mask.feather)
        scale = float(geo.scale_of(to_frame))
        self.editor.set_shapes([(o.mode, geo.apply(to_frame, o.polygon),
                                 None if o.radius is None else o.radius * scale)
                                for o in fixes.overrides])
        self.toolbar.set_sizes(mask.dilation, mask.feather)

    def _settings(self) -> SyncSettings:
        return self.spec.settings if self.spec is not None else SyncSettings()

    def _layer_name(self, layer_id: str) -> str:
        try:
            role = self.corrections.layer(layer_id).role
        except KeyError:
            return "Mask"
        return {"outline": "Outline", "add": "Add brush", "erase": "Erase brush",
                "exclude": "Exclusion"}[role]

    def _face_index(self, frame: int) -> int | None:
        a = self.analysis
        if a is None or not a.start <= frame < a.stop or not a.found[frame - a.start]:
            return None
        return frame - a.start

    def _auto_face(self, frame: int) -> np.ndarray | None:
        """The frame's automatic outline in face coordinates."""
        k = self._face_index(frame)
        if k is None:
            return None
        a = self.analysis
        return geo.apply(a.transforms[k], landmark_polygon(a.landmarks[k],
                                                           self._settings().mask.kind))

    def _outline_face(self, frame: int, corrections: Corrections) -> np.ndarray | None:
        """The outline on ``frame`` in face coordinates (None: automatic). ValueError when it
        is interpolated towards an automatic key on a frame without the face."""
        layer = corrections.outline()
        if layer is None:
            return None
        auto = self._auto_face(frame)
        return layer.at(frame, None if auto is None else (lambda: auto)).points

    # -- rendering -----------------------------------------------------------------------
    def _maybe_prepare(self) -> None:
        if (self.editing or self.exact_wanted) and self.spec is not None \
                and self.analysis is not None and self.spec != self.ready_spec:
            self.message.emit("Preparing the mask preview…")
            self.renderer.prepare(self.spec, self.corrections)

    def _update_renderer(self, state: Corrections) -> None:
        if self.ready_spec is not None:
            self.renderer.update_corrections(state, self.frame)

    def _on_prepared(self, spec: PreviewSpec, notes: list) -> None:
        if spec != self.spec:
            return
        self.ready_spec = spec
        self.message.emit("Mask preview ready" + (f" ({'; '.join(notes)})" if notes else ""))
        self.renderer.request(self.frame)

    def _on_failed(self, spec: PreviewSpec | None, message: str) -> None:
        self.message.emit(f"Mask preview: {message}")

    def _on_invalidated(self, version: int, frames: np.ndarray) -> None:
        for frame in np.asarray(frames).tolist():
            self._invalid[frame] = version

    def _on_rendered(self, version: int, frame: int, rgb: np.ndarray, seconds: float) -> None:
        if self.ready_spec != self.spec:
            return  # the session of a range left since: its pictures are not this range's
        if version < self._invalid.get(frame, 0):
            return  # an edit made since reaches this frame: its render is on the way
        self._results[frame] = (version, rgb)
        self._results.move_to_end(frame)
        while sum(r[1].nbytes for r in self._results.values()) > RESULT_BYTES:
            self._results.popitem(last=False)
        self.result_ready.emit(frame)
