"""The editor's main window: viewer, timeline, inspector and jobs panel around one project.

Threads: the UI thread only edits the project and paints. Probing, peaks and result-frame
decoding run on the global QThreadPool through :class:`Tasks` (latest request per
kind wins: a stale answer is dropped); picture decoding for play and scrub is the
:class:`desktop.playback.Playback` object's; face analysis (overlays), renders and exports go
through the :class:`EngineBridge`, one at a time.

Ranges: the project's ranges are the sync ranges; one is selected and shown as the timeline's
in/out. I and O move the selected range's edges (or create one); "New range" deselects so the
next range starts at the playhead (O ends it) or where I marks. Ranges never overlap
(:mod:`desktop.range_marks` refuses marks that would, and stops dragged edges at neighbours).
Renders, their states and the result pictures they give are kept by :mod:`desktop.renders`;
the window shows them (states and frames keeping their own mouth on the timeline, pictures in
the viewer).
"""
from __future__ import annotations

import copy
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from desktop.bridge import EngineBridge, ExportJob, SyncJob, UnplacedFn
from desktop.dock_layout import dock_features, fit_timeline, scrollable
from desktop.export_dialog import ExportDialog
from desktop.full_screen import FullScreenViewer
from desktop.inspector import Inspector
from desktop.jobs_panel import JobsPanel
from desktop.mask_editing import MaskEditing, PreviewSpec
from desktop.model_download import ensure_models
from desktop.range_list import RangeList, RangeNavigation
from desktop.range_marks import RangeMarks, clamp_drag
from desktop.recovery import offer_recovery
from desktop.relink_dialog import ask_relink
from desktop.renders import Render, Renders
from desktop.settings import Settings
from desktop.shortcut_sheet import ShortcutSheet
from desktop.timeline_panel import TimelineBatch
from engine.errors import RedubError
from engine.face.analysis import FaceAnalysis, Target, analyze_range
from engine.mask import landmark_polygon
from engine.media.peaks import PeakPyramid, cached_peaks
from engine.media.probe import VideoStreamInfo
from engine.media.reader import VideoReader
from engine.paths import cache_dir
from engine.pipeline import SyncSettings, required_models
from engine.project import (SUFFIX, DubTrack, ExportPrefs, MediaRef, Project, Recovery,
                            RelinkReport, SyncRange)
from engine.progress import CancelToken, ProgressFn
from engine.render import ExportSettings, RenderResult
from ui.timecode_entry import TimecodeEntry, clip_resolver
from ui.timeline import Timeline
from ui.viewer import Viewer

Qt = QtCore.Qt

VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".mxf", ".avi", ".m4v", ".webm", ".mts"}
AUDIO_EXTS = {".wav", ".mp3", ".aac", ".m4a", ".flac", ".ogg", ".opus", ".aif", ".aiff"}
AUTOSAVE_MS = 30_000
MERGE_S = 0.6  # edits of one kind closer than this (a drag, a spin) are one undo step
MERGEABLE = {"drag", "offset", "setting"}
# Renders to the cache are for looking at: fast to encode, visually lossless.
RENDER_QUALITY = {"crf": "14", "preset": "veryfast"}


# -- background tasks --------------------------------------------------------------------

class _Relay(QtCore.QObject):
    done = QtCore.Signal(str, int, object, object)  # kind, generation, result, error


class _Task(QtCore.QRunnable):
    def __init__(self, relay: _Relay, kind: str, generation: int,
                 fn: Callable[[], Any]) -> None:
        super().__init__()
        self.relay, self.kind, self.generation, self.fn = relay, kind, generation, fn

    def run(self) -> None:
        try:
            result, error = self.fn(), None
        except Exception as exc:  # reported on the UI thread, like the engine's messages
            result, error = None, exc
        self.relay.done.emit(self.kind, self.generation, result, error)


class Tasks(QtCore.QObject):
    """Runs functions on the global thread pool; per kind, only the newest request answers."""

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._generation: dict[str, int] = {}
        self._callbacks: dict[str, tuple[int, Callable, Callable | None]] = {}
        # Parentless and kept: a task finishing after the window closed still has a receiver.
        self._relay = _Relay()
        self._relay.done.connect(self._on_done)
        self.pending: set[str] = set()

    def run(self, kind: str, fn: Callable[[], Any], on_result: Callable[[Any], None],
           on_error: Callable[[Exception], None] | None = None) -> None:
        generation = self._generation.get(kind, 0) + 1
        self._generation[kind] = generation
        self._callbacks[kind] = (generation, on_result, on_error)
        self.pending.add(kind)
        QtCore.QThreadPool.globalInstance().start(_Task(self._relay, kind, generation, fn))

    def forget(self, kind: str) -> None:
        """Drop the answer of any request of ``kind`` still running."""
        self._generation[kind] = self._generation.get(kind, 0) + 1
        self._callbacks.pop(kind, None)
        self.pending.discard(kind)

    @QtCore.Slot(str, int, object, object)
    def _on_done(self, kind: str, generation: int, result: Any, error: Any) -> None:
        entry = self._callbacks.get(kind)
        if entry is None or entry[0] != generation:
            return  # superseded
        del self._callbacks[kind]
        self.pending.discard(kind)
        if error is None:
            entry[1](result)
        elif entry[2] is not None:
            entry[2](error)


# -- project state -----------------------------------------------------------------------

@dataclass
class ClipInfo:
    ref: MediaRef
    info: VideoStreamInfo
    times: np.ndarray  # frame start times
    has_audio: bool

    @property
    def fps(self) -> float:
        return float(self.info.frame_rate)

    @property
    def duration(self) -> float:
        return float(self.info.duration)

    def index_at(self, t: float) -> int:
        return self.info.index_data.index_at(t)

    def frame_end(self, index: int) -> float:
        return float(self.times[index + 1]) if index + 1 < len(self.times) else self.duration


def _load_clip(path: str) -> ClipInfo:
    ref = MediaRef.from_file(path)
    with VideoReader(path) as reader:
        return ClipInfo(ref, reader.info, np.array(reader.times, dtype=np.float64),
                        bool(reader.media.audio))


def _load_dub(path: str) -> tuple[MediaRef, PeakPyramid]:
    return MediaRef.from_file(path), cached_peaks(path)


def _rgb(image: QtGui.QImage) -> np.ndarray:
    """A bridge picture as an (h, w, 3) uint8 RGB array of its own."""
    image = image.convertToFormat(QtGui.QImage.Format.Format_RGB888)
    return np.frombuffer(image.constBits(), np.uint8).reshape(
        image.height(), image.bytesPerLine())[:, :image.width() * 3].reshape(
        image.height(), image.width(), 3).copy()


@dataclass
class AnalysisJob:
    """Face analysis of the whole clip as an engine job (the result stays on the job)."""

    video: str
    target: Target | None
    analysis: FaceAnalysis | None = None

    def run(self, progress: ProgressFn, cancel: CancelToken, preview: Any,
            unplaced: UnplacedFn) -> RenderResult:
        self.analysis = analyze_range(self.video, target=self.target, progress=progress,
                                      cancel=cancel)
        return RenderResult(path="", frames=len(self.analysis), seconds=0.0, notes=[])


@dataclass
class _Snapshot:
    ranges: list[SyncRange]
    dubs: list[DubTrack]
    selected: int | None


class _EditCommand(QtGui.QUndoCommand):
    """A project edit as before/after snapshots of its ranges, dubs and selection."""

    def __init__(self, window: MainWindow, text: str, kind: str, before: _Snapshot,
                 after: _Snapshot) -> None:
        super().__init__(text)
        self.window, self.kind, self.before, self.after = window, kind, before, after
        self.at = time.monotonic()

    def id(self) -> int:
        return 1

    def mergeWith(self, other: QtGui.QUndoCommand) -> bool:
        if not isinstance(other, _EditCommand) or other.kind != self.kind \
                or self.kind.split(":")[0] not in MERGEABLE or other.at - self.at > MERGE_S:
            return False
        self.after, self.at = other.after, other.at
        return True

    def redo(self) -> None:
        self.window._restore(self.after)

    def undo(self) -> None:
        self.window._restore(self.before)


# -- the window --------------------------------------------------------------------------

class MainWindow(QtWidgets.QMainWindow):
    """The editor. ``playback`` is injectable for tests; by default a Playback is made."""

    def __init__(self, settings: Settings | None = None, playback: Any = None,
                 bridge: EngineBridge | None = None) -> None:
        super().__init__()
        self.setObjectName("RedubMainWindow")
        self.settings = settings or Settings()
        self.project: Project | None = None
        self.project_path: str | None = None
        self.recovery = Recovery(None)
        self.clip: ClipInfo | None = None
        self.selected: int | None = None
        self.renders = Renders()
        self._dub_peaks: dict[str, PeakPyramid] = {}  # dub path -> waveform, for undo
        self.analysis: FaceAnalysis | None = None
        self.time = 0.0
        self.frame_index = 0
        self._source_rgb: np.ndarray | None = None
        self._dirty = False
        self.first_frame_at: float | None = None  # monotonic time of the first frame shown
        self.peaks_at: float | None = None  # ... and of the clip's waveform

        self.tasks = Tasks(self)
        self.bridge = bridge or EngineBridge(self)
        self.undo_stack = QtGui.QUndoStack(self)
        self.undo_stack.cleanChanged.connect(self._on_clean_changed)
        if playback is None:
            from desktop.playback import Playback
            playback = Playback(self)
        self.playback = playback

        self.viewer = Viewer()
        self.timeline = Timeline()
        self.inspector = Inspector()
        self.jobs = JobsPanel(self.bridge)
        self.empty_hint = QtWidgets.QLabel(
            "Open a clip (Ctrl+O) or drop a video here — drop an audio file for the dub",
            self.viewer)
        self.empty_hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_hint.setStyleSheet("color: #8a8a8a; font-size: 15px")
        # Wrapped, and laid out in the viewer: side docks (Shots) narrow it without a resize.
        self.empty_hint.setWordWrap(True)
        self.empty_hint.setMargin(12)
        hint_layout = QtWidgets.QVBoxLayout(self.viewer)
        hint_layout.setContentsMargins(0, 0, 0, 0)
        hint_layout.addWidget(self.empty_hint)
        self.setCentralWidget(self.viewer)
        # Box and mask outline by default: the 68 landmark dots hide the mouth being judged.
        for kind in ("landmarks", "crop"):
            self.viewer.set_overlay_visible(kind, False)
        # Mask editing: the editor over the viewer, its tool bar, the keyframe lane under the
        # timeline (shown while editing); its edits share the window's undo stack.
        self.mask_editing = MaskEditing(self.viewer, self.undo_stack, self)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, self.mask_editing.toolbar)
        timeline_panel = QtWidgets.QWidget()
        timeline_layout = QtWidgets.QVBoxLayout(timeline_panel)
        timeline_layout.setContentsMargins(0, 0, 0, 0)
        timeline_layout.setSpacing(0)
        timeline_layout.addWidget(self.timeline, 1)
        timeline_layout.addWidget(self.mask_editing.lane)
        self.mask_editing.lane.hide()
        self.timeline_dock = self._dock("Timeline", timeline_panel,
                                        Qt.DockWidgetArea.BottomDockWidgetArea)
        self.inspector_dock = self._dock("Inspector", self.inspector,
                                         Qt.DockWidgetArea.RightDockWidgetArea)
        self.jobs_dock = self._dock("Jobs", self.jobs, Qt.DockWidgetArea.RightDockWidgetArea)
        self.range_list = RangeList()
        self.ranges_dock = self._dock("Ranges", self.range_list,
                                      Qt.DockWidgetArea.RightDockWidgetArea)
        self.range_nav = RangeNavigation(self)
        self.range_list.chosen.connect(self.range_nav.go_to)
        self.status_time = TimecodeEntry()  # click and type to jump
        self.status_time.jump.connect(lambda t: (self.playback.seek(t), self.viewer.setFocus()))
        self.status_time.rejected.connect(lambda text: self.statusBar().showMessage(text, 6000))
        self.statusBar().addPermanentWidget(self.status_time)
        self.setAcceptDrops(True)
        self.batch = TimelineBatch(self)  # File > Open Timeline: the Shots dock, Render All
        self._build_actions()

        self.playback.frame_ready.connect(self._on_frame)
        self.playback.position_changed.connect(self._on_position)
        self.playback.notice.connect(lambda text: self.statusBar().showMessage(text, 5000))
        self.timeline.playhead_moved.connect(self.playback.scrub)
        self.timeline.range_changed.connect(self._on_timeline_range)
        self.timeline.range_selected.connect(self.select_range)
        self.timeline.dub_offset_changed.connect(self._on_timeline_offset)
        self.viewer.target_picked.connect(self._on_viewer_click)
        self.viewer.picking_changed.connect(self.inspector.pick.setChecked)
        self.inspector.pick.toggled.connect(self.viewer.set_picking)
        self.inspector.committed.connect(self.viewer.setFocus)  # keys drive the transport again
        self.inspector.timecode = self.timeline.timecode
        self.inspector.edited.connect(self._on_inspector_edit)
        self.inspector.target_cleared.connect(lambda: self._on_inspector_edit("target", None))
        self.mask_editing.follow(self.timeline)
        self.mask_editing.result_ready.connect(self._on_mask_result)
        self.mask_editing.changed.connect(self._refresh)
        self.mask_editing.message.connect(lambda text: self.statusBar().showMessage(text, 4000))
        self.mask_editing.editing_changed.connect(self._on_mask_editing)
        self.mask_editing.curves_shown.connect(self.inspector.show_curves)
        self.mask_editing.lane.seek.connect(
            lambda frame: self.playback.seek(float(self.clip.times[frame])))
        self.bridge.preview.connect(self._on_preview)
        self.bridge.exact.connect(self._on_exact)
        self.bridge.unplaced.connect(self._on_unplaced)
        self.bridge.finished.connect(self._on_job_finished)
        self.bridge.failed.connect(self._on_job_ended)
        self.bridge.cancelled.connect(self._on_job_ended)
        self._autosave = QtCore.QTimer(self, interval=AUTOSAVE_MS)
        self._autosave.timeout.connect(self.autosave)
        self._autosave.start()
        # Once the window is up: work a crashed session left behind.
        QtCore.QTimer.singleShot(0, self, lambda: offer_recovery(self))
        self._analysis_timer = QtCore.QTimer(self, singleShot=True, interval=400)
        self._analysis_timer.timeout.connect(self._analyze)
        self._exports: dict[int, str] = {}
        self._analysis_job: tuple[int, AnalysisJob] | None = None
        self._marks = RangeMarks(self.timeline.timecode, self._span)
        self._new_in: float | None = None  # where N left the playhead: the next range's in

        self.resize(1440, 900)
        self.resizeDocks([self.inspector_dock, self.jobs_dock], [420, 300],
                         Qt.Orientation.Vertical)
        self.resizeDocks([self.inspector_dock], [340], Qt.Orientation.Horizontal)
        self.resizeDocks([self.timeline_dock], [300], Qt.Orientation.Vertical)
        if (geometry := self.settings.geometry()) is not None:
            self.restoreGeometry(geometry)
        if (state := self.settings.state()) is not None:
            self.restoreState(state)
        self._refresh()

    # -- construction --------------------------------------------------------------------
    def _dock(self, title: str, widget: QtWidgets.QWidget,
              area: Qt.DockWidgetArea) -> QtWidgets.QDockWidget:
        dock = QtWidgets.QDockWidget(title, self)
        dock.setObjectName(f"dock-{title.lower()}")  # saveState needs names
        bottom = area == Qt.DockWidgetArea.BottomDockWidgetArea  # the timeline scrolls itself
        dock.setWidget(widget if bottom else scrollable(widget))
        dock.setFeatures(dock_features())
        self.addDockWidget(area, dock)
        return dock

    def _action(self, menu: QtWidgets.QMenu, text: str, slot: Callable,
                shortcut: Any = None) -> QtGui.QAction:
        action = QtGui.QAction(text, self)
        if shortcut is not None:
            action.setShortcuts(shortcut if isinstance(shortcut, list) else [shortcut])
        action.triggered.connect(lambda checked=False: slot())
        menu.addAction(action)
        self.addAction(action)  # shortcuts work with the menu bar hidden too
        return action

    def _build_actions(self) -> None:
        K, S = QtGui.QKeySequence, QtGui.QKeySequence.StandardKey
        bar = self.menuBar()
        f = bar.addMenu("&File")
        self._action(f, "&New Project", self.new_project, K(S.New))
        self._action(f, "&Open…", self.choose_open, K(S.Open))
        self.recent_menu = f.addMenu("Open &Recent")
        self._action(f, "Import &Dub Audio…", self.choose_dub, K("Ctrl+Shift+I"))
        self._action(f, "Open &Timeline…", self.batch.choose_open, K("Ctrl+Shift+O"))
        f.addSeparator()
        self.save_action = self._action(f, "&Save Project", self.save, K(S.Save))
        self._action(f, "Save Project &As…", self.save_as, K("Ctrl+Shift+S"))
        f.addSeparator()
        self.export_action = self._action(f, "&Export…", self.export_dialog, K("Ctrl+E"))
        self._action(f, "Export Ti&meline…", self.batch.choose_export)
        f.addSeparator()
        self._action(f, "&Quit", self.close, K(S.Quit))
        e = bar.addMenu("&Edit")
        undo = self.undo_stack.createUndoAction(self, "&Undo")
        undo.setShortcut(K(S.Undo))
        redo = self.undo_stack.createRedoAction(self, "&Redo")
        redo.setShortcuts([K("Ctrl+Shift+Z"), K("Ctrl+Y")])
        e.addActions([undo, redo])
        self.addActions([undo, redo])
        e.addSeparator()
        self._action(e, "Mark &In", self.mark_in, K("I"))
        self._action(e, "Mark &Out", self.mark_out, K("O"))
        self._action(e, "&New Range", self.new_range, K("N"))
        self._action(e, "&Delete Range", self.delete_range, K("Ctrl+Backspace"))
        p = bar.addMenu("&Playback")
        self._action(p, "Shuttle Back (J)", lambda: self.shuttle(-1), K("J"))
        self._action(p, "Stop (K)", lambda: self.playback.shuttle(0.0), K("K"))
        self._action(p, "Shuttle Forward (L)", lambda: self.shuttle(1), K("L"))
        self._action(p, "Previous Frame", lambda: self.playback.step(-1), K("Left"))
        self._action(p, "Next Frame", lambda: self.playback.step(1), K("Right"))
        self._action(p, "Back 10 Frames", lambda: self.playback.step(-10), K("Shift+Left"))
        self._action(p, "Forward 10 Frames", lambda: self.playback.step(10), K("Shift+Right"))
        self._action(p, "Go to Start", lambda: self.playback.seek(0.0), K("Home"))
        self._action(p, "Go to End", self.go_to_end, K("End"))
        p.addSeparator()
        audio = QtGui.QActionGroup(self)
        for i, (mode, label) in enumerate((("source", "Original Audio"), ("dub", "Dub Audio"),
                                           ("result", "Result Audio"))):
            a = self._action(p, label, lambda m=mode: self.playback.set_audio(m),
                             K(f"Alt+{i + 1}"))
            a.setCheckable(True)
            a.setChecked(mode == "source")
            audio.addAction(a)
        p.addSeparator()
        nav = self.range_nav
        self._action(p, "Play In to Out", nav.play_in_to_out, K("/"))
        loop = self._action(p, "Loop", lambda: None, K("Ctrl+L"))
        loop.setCheckable(True)
        loop.toggled.connect(self.playback.set_loop)
        self._action(p, "Go to In", nav.go_in, K("Shift+I"))
        self._action(p, "Go to Out", nav.go_out, K("Shift+O"))
        self._action(p, "Previous Range", lambda: nav.step(-1), K("Shift+Up"))
        self._action(p, "Next Range", lambda: nav.step(1), K("Shift+Down"))
        self.transport_actions = p.actions()  # enabled with a clip (_refresh)
        r = bar.addMenu("&Render")
        self.render_action = self._action(r, "&Render Range", self.render_range, K("R"))
        self._action(r, "Render &All Shots", self.batch.render_all, K("Shift+R"))
        v = bar.addMenu("&View")
        compare = QtGui.QActionGroup(self)
        self.compare_actions: dict[str, QtGui.QAction] = {}
        for i, (mode, label) in enumerate((("source", "Source"), ("result", "Result"),
                                           ("split", "Split Wipe"),
                                           ("difference", "Difference"))):
            a = self._action(v, label, lambda m=mode: self.set_compare_mode(m),
                             K(f"Ctrl+{i + 1}"))
            a.setCheckable(True)
            compare.addAction(a)
            self.compare_actions[mode] = a
        self.compare_actions["source"].setChecked(True)
        v.addSeparator()
        for kind, label in (("box", "Face Box"), ("landmarks", "Landmarks"),
                            ("mask", "Mask Outline"), ("crop", "Crop Box")):
            a = self._action(v, label, lambda k=kind: None)
            a.setCheckable(True)
            a.setChecked(self.viewer.overlay_visible(kind))
            a.toggled.connect(lambda on, k=kind: self.viewer.set_overlay_visible(k, on))
        v.addSeparator()
        self._action(v, "Fit Frame", self.viewer.fit, [K("F"), K("Shift+Z")])
        self._action(v, "Zoom In", lambda: self.viewer.zoom_by(2 ** 0.5), [K("+"), K("=")])
        self._action(v, "Zoom Out", lambda: self.viewer.zoom_by(2 ** -0.5), K("-"))
        self._action(v, "Actual Size", self.viewer.actual_size, K("1"))
        self._action(v, "Zoom Timeline to Fit", self.timeline.fit_view, K("\\"))
        self.full_screen = FullScreenViewer(self)
        full = self._action(v, "Full-Screen Viewer", lambda: None, K("Ctrl+F"))
        full.setCheckable(True)
        full.toggled.connect(self.full_screen.set_active)
        self.full_screen.toggled.connect(full.setChecked)  # Esc leaves it too
        for kind, label in (("safe", "Safe Areas"), ("centre", "Centre Guide")):
            a = self._action(v, label, lambda: None)
            a.setCheckable(True)
            a.toggled.connect(lambda on, k=kind: self.viewer.set_guide_visible(k, on))
        v.addSeparator()
        for dock in self.findChildren(QtWidgets.QDockWidget):
            v.addAction(dock.toggleViewAction())
        m = bar.addMenu("&Mask")  # the mask tool bar's keys, listed where they can be found
        bar_actions = self.mask_editing.toolbar
        m.addActions([bar_actions.edit_action, *bar_actions.tool_actions.values(),
                      bar_actions.key_action, bar_actions.reset_action])
        h = bar.addMenu("&Help")
        self._action(h, "Keyboard Shortcuts", self.show_shortcuts, [K(S.HelpContents), K("?")])
        self._update_recent_menu()

    def show_shortcuts(self) -> None:
        """Help > Keyboard Shortcuts: the sheet, made from the menus as they are now."""
        self.shortcut_sheet = ShortcutSheet(self.menuBar(), self)
        self.shortcut_sheet.show()

    # -- files ---------------------------------------------------------------------------
    def open_path(self, path: str) -> None:
        """Open a project, a video (a new project on it) or an audio file (the dub)."""
        ext = os.path.splitext(path)[1].lower()
        if ext == SUFFIX:
            self.open_project(path)
        elif ext in AUDIO_EXTS:
            self.load_dub(path)
        else:
            self.open_video(path)

    def open_video(self, path: str, *, dub: str | None = None) -> None:
        """Start a new project on ``path`` (probed in the background); ``dub`` follows."""
        if not self._maybe_keep_changes():
            return
        self.settings.set_last_folder("video", path)
        self.statusBar().showMessage(f"Opening {os.path.basename(path)}…")

        def loaded(clip: ClipInfo) -> None:
            self._set_project(Project(media=clip.ref), None, clip)
            self._remember(path)
            if dub:
                self.load_dub(dub)

        self.tasks.run("clip", lambda: _load_clip(path), loaded, self._error("Cannot open"))

    def open_project(self, path: str | None, *, recover: bool | None = None,
                     then: Callable[[], None] | None = None) -> None:
        """Open the project at ``path`` (None: the untitled one, from its autosave);
        ``recover``: from the autosave a crash left (None: ask when there is one); ``then``
        runs once it is open."""
        if not self._maybe_keep_changes():
            return
        recovery = Recovery(path)
        if recover is None:
            recover = recovery.pending() is not None and self._ask(
                "Recover", "An autosave newer than the saved project was found (the app may "
                "have quit unexpectedly). Restore it?")
        source = str(recovery.path) if recover else path
        if path is not None:
            self.settings.set_last_folder("project", path)
        folder = os.path.dirname(os.path.abspath(path or source))
        moved: list[bool] = []

        def load() -> tuple[Project, RelinkReport]:
            project = Project.load(source)
            return project, project.relink(folder)

        def relinked(result: tuple[Project, RelinkReport]) -> None:
            project, report = result
            if report.missing and not self.relink(project, folder, report.missing):
                self.statusBar().showMessage("Project not opened: media missing", 5000)
                return
            moved.append(bool(report.relinked or report.missing))
            self.tasks.run("clip", lambda: media(project), opened,
                           self._error("Cannot open project"))

        def media(project: Project) -> tuple[Project, ClipInfo, PeakPyramid | None]:
            clip = _load_clip(project.media.path)
            peaks = cached_peaks(project.dubs[0].media.path) if project.dubs else None
            return project, clip, peaks

        def opened(result: tuple[Project, ClipInfo, PeakPyramid | None]) -> None:
            project, clip, peaks = result
            self._set_project(project, path, clip)
            if source != path:
                self._set_dirty(True)  # the recovered state is not on disk yet
                self.autosave()  # ... and this session now keeps it
            if project.dubs and peaks is not None:
                self._show_dub(peaks)
            if path is not None:
                self._remember(path)
            if moved[-1]:
                self._set_dirty(True)  # the new paths of moved media are not saved yet
            if then is not None:
                then()

        self.tasks.run("clip", load, relinked, self._error("Cannot open project"))

    def relink(self, project: Project, folder: str, missing: list[str]) -> bool:
        """Ask the editor to find moved media (the relink dialog); True when all were found."""
        return ask_relink(project, folder, missing, self)

    def load_dub(self, path: str) -> None:
        """Make ``path`` the project's dub (peaks in the background)."""
        if self.project is None:
            self.statusBar().showMessage("Open a clip before adding the dub", 5000)
            return
        self.settings.set_last_folder("audio", path)

        def loaded(result: tuple[MediaRef, PeakPyramid]) -> None:
            ref, peaks = result

            def change() -> None:
                self.project.dubs = [DubTrack(ref)]
                self._show_dub(peaks)
            self._edit("Replace Dub" if self.project.dubs else "Import Dub", "dub", change)

        self.tasks.run("dub", lambda: _load_dub(path), loaded, self._error("Cannot use dub"))

    def _show_dub(self, peaks: PeakPyramid | None = None) -> None:
        """The project's dub (or none) on the timeline and in playback; ``peaks``, the new
        dub's waveform, are kept for undo and redo to bring it back."""
        dub = self.project.dubs[0] if self.project.dubs else None
        if dub is None:
            self.timeline.clear_dub()
        else:
            if peaks is not None:
                self._dub_peaks[dub.media.path] = peaks
            self.timeline.set_dub(self._dub_peaks.get(dub.media.path), dub.media.duration,
                                  dub.offset, os.path.basename(dub.media.path))
        at = self.time
        self._set_media()
        self.playback.seek(at)  # another dub is no reason to leave the frame

    def _set_media(self) -> None:
        dub = self.project.dubs[0] if self.project.dubs else None
        self.playback.set_media(self.project.media.path,
                                dub_path=dub.media.path if dub else None,
                                dub_offset=dub.offset if dub else 0.0,
                                ranges=[(r.start, r.end) for r in self.project.ranges])

    def _set_project(self, project: Project, path: str | None, clip: ClipInfo) -> None:
        self.project, self.project_path, self.clip = project, path, clip
        self.recovery = Recovery(path)
        self.renders.clear()
        self.jobs.clear_project()
        self._dub_peaks.clear()
        self.analysis = None
        self._analysis_job = None
        self.selected = 0 if project.ranges else None
        self.undo_stack.clear()
        self.timeline.set_clip(clip.duration, clip.info.frame_rate, project.media.path,
                               video_info=clip.info)
        self.viewer.set_sample_aspect_ratio(clip.info.sample_aspect_ratio or 1)
        self.mask_editing.set_project(project)
        self.mask_editing.set_clip(clip.times, clip.duration)
        self._set_dirty(False)
        self._set_media()
        media = project.media.path

        def peaks_loaded(peaks: PeakPyramid) -> None:
            self.timeline.set_source_peaks(peaks)
            self.peaks_at = time.monotonic()

        if clip.has_audio:
            self.tasks.run("source-peaks", lambda: cached_peaks(media), peaks_loaded,
                           lambda exc: None)  # no waveform is not worth a dialog
        self._refresh()
        self._analyze()  # a reopened project's mask keys need the face (cached: loads quickly)
        self.statusBar().showMessage(f"Opened {os.path.basename(media)}", 3000)

    def _remember(self, path: str) -> None:
        self.settings.add_recent(path)
        self._update_recent_menu()

    def _update_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.settings.recent_files()
        for path in recent:
            action = self.recent_menu.addAction(os.path.basename(path))
            action.setToolTip(path)
            action.triggered.connect(lambda checked=False, p=path: self.open_path(p))
        if recent:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear Recent", self._clear_recent)
        self.recent_menu.setEnabled(bool(recent))

    def _clear_recent(self) -> None:
        self.settings.clear_recent()
        self._update_recent_menu()

    def choose_open(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Open clip or project", self.settings.last_folder("video"),
            "Clips and projects (*.redub " + " ".join(f"*{e}" for e in sorted(VIDEO_EXTS))
            + ");;All files (*)")
        if path:
            self.open_path(path)

    def choose_dub(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Dub audio", self.settings.last_folder("audio"),
            "Audio (" + " ".join(f"*{e}" for e in sorted(AUDIO_EXTS)) + ");;All files (*)")
        if path:
            self.load_dub(path)

    def new_project(self) -> None:
        if not self._maybe_keep_changes():
            return
        self.playback.pause()
        for kind in list(self.tasks.pending):
            self.tasks.forget(kind)  # answers about the old project
        # The old project's renders and analysis are of no use now; exports still finish.
        jobs = self.renders.running_jobs()
        if self._analysis_job is not None:
            jobs.append(self._analysis_job[0])
        for job_id in jobs:
            self.bridge.cancel(job_id)
        self._analysis_timer.stop()
        self.project = self.clip = self.project_path = None
        self.recovery = Recovery(None)
        self.selected = self.analysis = self._analysis_job = self._new_in = None
        self.renders.clear()
        self.jobs.clear_project()
        self._dub_peaks.clear()
        self.time, self.frame_index = 0.0, 0
        self.undo_stack.clear()
        self.mask_editing.set_editing(False)
        self.mask_editing.set_project(None)
        self.viewer.clear()
        self._source_rgb = None
        self.timeline.clear()
        self.status_time.show_time("--:--:--:--")
        self._set_dirty(False)
        self._refresh()

    def save(self) -> bool:
        if self.project is None:
            return False
        if self.project_path is None:
            return self.save_as()
        return self._save_to(self.project_path)

    def save_as(self) -> bool:
        if self.project is None:
            return False
        start = self.project_path or os.path.join(self.settings.save_folder("project"),
                                                  Path(self.project.media.path).stem + SUFFIX)
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save project", start,
                                                        f"Redub project (*{SUFFIX})")
        if not path:
            return False
        if not path.endswith(SUFFIX):
            path += SUFFIX
        return self._save_to(path)

    def _save_to(self, path: str) -> bool:
        try:
            self.recovery.save(self.project, path)
        except RedubError as exc:
            QtWidgets.QMessageBox.warning(self, "Cannot save", str(exc))
            return False
        self.project_path = path
        self.settings.set_last_folder("project", path)
        self._remember(path)
        self.undo_stack.setClean()
        self._set_dirty(False)
        self.statusBar().showMessage(f"Saved {path}", 3000)
        return True

    def autosave(self) -> None:
        """Write the autosave if there are unsaved changes (small JSON: a few ms)."""
        if self.project is not None and self._dirty:
            try:
                self.recovery.write(self.project)
            except RedubError as exc:
                self.statusBar().showMessage(f"Autosave failed: {exc}", 5000)

    def _maybe_keep_changes(self) -> bool:
        """True when it is fine to replace the project (saved, discarded, or unchanged)."""
        if self.project is None:
            return True
        if not self._dirty:
            self.recovery.discard()  # as saved (an undo can get back there): nothing to recover
            return True
        buttons = QtWidgets.QMessageBox.StandardButton
        answer = QtWidgets.QMessageBox.question(
            self, "Unsaved changes", "Save the changes to this project?",
            buttons.Save | buttons.Discard | buttons.Cancel, buttons.Save)
        if answer == buttons.Save:
            return self.save()
        if answer == buttons.Discard:
            self.recovery.discard()
        return answer == buttons.Discard

    def _ask(self, title: str, text: str) -> bool:
        buttons = QtWidgets.QMessageBox.StandardButton
        return QtWidgets.QMessageBox.question(self, title, text, buttons.Yes | buttons.No,
                                              buttons.Yes) == buttons.Yes

    def _error(self, title: str) -> Callable[[Exception], None]:
        def show(exc: Exception) -> None:
            self.statusBar().clearMessage()
            QtWidgets.QMessageBox.warning(self, title, str(exc))
        return show

    @QtCore.Slot(bool)
    def _on_clean_changed(self, clean: bool) -> None:
        self._set_dirty(not clean)

    def _set_dirty(self, dirty: bool) -> None:
        self._dirty = dirty
        self._update_title()

    def _update_title(self) -> None:
        if self.project is None:
            self.setWindowTitle("Redub Studio")
            return
        name = os.path.basename(self.project_path or "Untitled")
        clip = os.path.basename(self.project.media.path)
        self.setWindowTitle(f"{name}{' •' if self._dirty else ''} — {clip} — Redub Studio")

    # -- edits (undoable) ----------------------------------------------------------------
    def _snapshot(self) -> _Snapshot:
        return _Snapshot(copy.deepcopy(self.project.ranges), copy.deepcopy(self.project.dubs),
                         self.selected)

    def _restore(self, snap: _Snapshot) -> None:
        self.project.ranges = copy.deepcopy(snap.ranges)
        swapped = [d.media for d in self.project.dubs] != [d.media for d in snap.dubs]
        self.project.dubs = copy.deepcopy(snap.dubs)
        self.selected = snap.selected
        if swapped:
            self._show_dub()
        elif self.project.dubs:
            self.timeline.set_dub_offset(self.project.dubs[0].offset)
            self.playback.set_dub_offset(self.project.dubs[0].offset)
        self._refresh()
        self._analysis_timer.start()

    def _edit(self, text: str, kind: str, change: Callable[[], None]) -> None:
        """Apply ``change`` to the project as one undoable step."""
        before = self._snapshot()
        change()
        after = self._snapshot()
        self.undo_stack.push(_EditCommand(self, text, kind, before, after))
        self._set_dirty(True)

    def set_range(self, start: float, end: float, kind: str = "range") -> None:
        """Set the selected range's edges (creating the range when none is selected); an edit
        that would overlap another range is refused, saying why."""
        if self.project is None or not end > start:
            return
        refused = self._marks.check(self._spans(), self.selected, start, end)
        if refused is not None:
            self.statusBar().showMessage(refused, 6000)
            self._refresh()  # the timeline may show the refused edges
            return
        self._new_in = None

        def change() -> None:
            if self.selected is None:
                self.project.ranges.append(SyncRange(start, end))
                self.selected = len(self.project.ranges) - 1
            else:
                r = self.project.ranges[self.selected]
                r.start, r.end = start, end
        self._edit("Set Range", kind, change)

    def mark_in(self) -> None:
        if self.clip is None:
            return
        t = float(self.clip.times[self.frame_index])
        self._set_marked(self._marks.mark_in(self._spans(), self.selected, t,
                                             self.clip.duration))

    def mark_out(self) -> None:
        if self.clip is None:
            return
        t = self.clip.frame_end(self.frame_index)  # out includes the frame under the playhead
        self._set_marked(self._marks.mark_out(self._spans(), self.selected,
                                              float(self.clip.times[self.frame_index]), t,
                                              self._new_in))

    def _set_marked(self, marked: tuple[float, float] | str) -> None:
        if isinstance(marked, str):
            self.statusBar().showMessage(marked, 6000)
        else:
            self.set_range(*marked, "mark")

    def _spans(self) -> list[tuple[float, float]]:
        return [(r.start, r.end) for r in self.project.ranges] if self.project else []

    def select_range(self, index: int) -> None:
        """Make range ``index`` the one I/O, the inspector and Render work on."""
        if self.project is None or not 0 <= index < len(self.project.ranges):
            return
        self.selected = index
        self._refresh()

    def new_range(self) -> None:
        """Deselect: the next range starts at the playhead (O ends it), or where I marks."""
        self.selected = None
        self._new_in = None
        if self.clip is not None:
            message, self._new_in = self._marks.new_range(
                self._spans(), float(self.clip.times[self.frame_index]))
            self.statusBar().showMessage(message, 6000)
        self._refresh()

    def delete_range(self) -> None:
        if self._range() is None:
            return

        def change() -> None:
            del self.project.ranges[self.selected]
            self.selected = len(self.project.ranges) - 1 if self.project.ranges else None
        self._edit("Delete Range", "delete", change)

    def set_dub_offset(self, seconds: float) -> None:
        if self.project is None or not self.project.dubs:
            return

        def change() -> None:
            self.project.dubs[0].offset = float(seconds)
        self._edit("Move Dub", "offset", change)
        self.playback.set_dub_offset(float(seconds))

    def set_range_setting(self, name: str, value: Any) -> None:
        r = self._range()
        if r is None or getattr(r.settings, name) == value:
            return

        def change() -> None:
            setattr(self.project.ranges[self.selected].settings, name, value)
        self._edit(f"Change {name.replace('_', ' ')}", f"setting:{name}", change)

    def _on_timeline_range(self, start: float, end: float) -> None:
        if self.selected is not None and self.clip is not None:  # a trim stops at a neighbour
            start, end = clamp_drag(self._spans(), self.selected, start, end, self.clip.duration)
        self.set_range(start, end, "drag")

    def _on_timeline_offset(self, seconds: float) -> None:
        self.set_dub_offset(seconds)

    def _on_inspector_edit(self, name: str, value: Any) -> None:
        self.set_range_setting(name, value)

    def _on_viewer_click(self, x: float, y: float) -> None:
        """A deliberate pick (Pick Face, then a click; or Alt+click) on the picture makes the
        face there the selected range's target."""
        if self._range() is None:
            self.statusBar().showMessage("Mark a range (I, O) to pick its target face", 4000)
            return
        self.set_range_setting("target", Target(float(x), float(y), self.time))
        self.statusBar().showMessage(f"Target: the face at {x:.0f}, {y:.0f}", 3000)

    def _span(self, start: float, end: float) -> str:
        """In and out as editors show them: the out point is the last frame inside."""
        if self.clip is None:
            return f"{self.timeline.timecode(start)} – {self.timeline.timecode(end)}"
        last = self.clip.times[self.clip.index_at(end - 0.5 / self.clip.fps)]
        return f"{self.timeline.timecode(start)} – {self.timeline.timecode(float(last))}"

    def _range(self) -> SyncRange | None:
        if self.project is None or self.selected is None \
                or self.selected >= len(self.project.ranges):
            return None
        return self.project.ranges[self.selected]

    # -- render and export ---------------------------------------------------------------
    def render_range(self) -> int | None:
        """Render the selected range to the cache (job id; None when there is nothing to do)."""
        r = self._range()
        if r is None or not self.project.dubs:
            self.statusBar().showMessage("Render needs a dub and a marked range (I, O)", 5000)
            return None
        if not self._fetch_models(r.settings.to_sync_settings()):
            return None
        key = repr((self.project.media.path, r.start, r.end, r.settings,
                    self.project.dubs[0].offset, self.project.dubs[0].media.path, time.time()))
        folder = cache_dir() / "renders"
        folder.mkdir(parents=True, exist_ok=True)
        output = str(folder / f"{Path(self.project.media.path).stem}-"
                              f"{hashlib.sha1(key.encode()).hexdigest()[:10]}.mp4")
        dub = self.project.dubs[0]
        job = SyncJob(video=self.project.media.path, dub=dub.media.path,
                      export=ExportSettings(output=output, codec="h264",
                                            quality=dict(RENDER_QUALITY)),
                      dub_offset=dub.offset, ranges=[(r.start, r.end)],
                      settings=self.project.sync_settings(r),
                      corrections=self.project.corrections.copy())
        job_id = self.bridge.submit(job)
        self.jobs.add(job_id, f"Render {self._span(r.start, r.end)}")
        self.renders.add(Render(r.start, r.end, copy.deepcopy(r.settings), dub.offset,
                                output, job_id, self.project.corrections.to_dict()))
        if self.viewer.compare_mode() == "source":
            self.set_compare_mode("result")
        self._refresh()
        return job_id

    def export_dialog(self) -> None:
        if self.project is None:
            return
        default = os.path.join(self.settings.save_folder("export", self.project_path),
                               Path(self.project.media.path).stem + "_redub.mp4")
        dialog = ExportDialog(self.project.export, default, bool(self.project.ranges), self)
        if dialog.exec() == QtWidgets.QDialog.DialogCode.Accepted:
            choice = dialog.choice()
            self.export(choice.prefs, choice.ranges_only)

    def export(self, prefs: ExportPrefs, ranges_only: bool = True) -> int | None:
        """Queue the final export with ``prefs``; returns the job id."""
        self.project.export = prefs
        self._set_dirty(True)
        self.settings.set_last_folder("export", prefs.output)
        # Projects saved before overlaps were refused may hold some: say so in timecode here
        # rather than let the engine refuse them in seconds.
        overlap = self._marks.overlap(self._spans()) if ranges_only and self.project.dubs \
            else None
        if overlap is not None:
            QtWidgets.QMessageBox.warning(self, "Cannot export", overlap)
            return None
        try:
            if self.project.dubs:
                job: SyncJob | ExportJob = SyncJob.from_project(self.project, output=prefs.output)
                if not ranges_only:
                    job.ranges = []
            else:
                job = ExportJob(video=self.project.media.path,
                                export=prefs.to_export_settings())
        except RedubError as exc:
            QtWidgets.QMessageBox.warning(self, "Cannot export", str(exc))
            return None
        if isinstance(job, SyncJob) and not self._fetch_models(job.settings):
            return None
        job_id = self.bridge.submit(job)
        self._exports[job_id] = prefs.output
        self.jobs.add_export(job_id, prefs.output, prefs.codec)
        return job_id

    def _fetch_models(self, settings: SyncSettings) -> bool:
        """Download (or convert) what the chosen backends run, with progress, in one dialog on
        first use; False when a model could not be had (the dialog said why)."""
        return ensure_models(required_models(settings), self) is not None

    def _on_preview(self, job_id: int, index: int, image: QtGui.QImage) -> None:
        if self.clip is None or index >= len(self.clip.times) \
                or not self.renders.wants_preview(job_id, float(self.clip.times[index])):
            return
        self.renders.add_preview(job_id, index, _rgb(image))
        if index == self.frame_index:
            self._show()  # the frame the editor is on, as it renders; the playhead stays put

    def _on_exact(self, job_id: int, index: int, image: QtGui.QImage) -> None:
        """The parked frame as rendered: the render file's copy is encoded (compare modes)."""
        if self.renders.of(job_id) is None:
            return  # an export's or an old project's frame
        self.renders.add_exact(job_id, index, _rgb(image))
        if index == self.frame_index:
            self._show()

    def _on_job_finished(self, job_id: int, path: str, notes: list) -> None:
        if self._analysis_job is not None and self._analysis_job[0] == job_id:
            self.analysis = self._analysis_job[1].analysis
            self.mask_editing.set_analysis(self.analysis)
            self._show_overlay()
            return
        if self.renders.finish(job_id):
            self._request_result(self.frame_index)
            self._refresh()
        if job_id in self._exports:
            self._reveal(path)
        if notes:
            self.statusBar().showMessage("; ".join(notes), 8000)

    def _on_job_ended(self, job_id: int, *args: Any) -> None:
        if self._analysis_job is not None and self._analysis_job[0] == job_id:
            self._analysis_job = None
        if self.renders.drop(job_id):
            self._refresh()

    def _reveal(self, path: str) -> None:
        QtGui.QDesktopServices.openUrl(QtCore.QUrl.fromLocalFile(os.path.dirname(path)))

    def range_states(self) -> list[tuple[float, float, str]]:
        """What the timeline shows under the ruler, newest render on top."""
        p = self.project
        return self.renders.states(p.ranges if p else [],
                                   p.dubs[0].offset if p and p.dubs else 0.0,
                                   p.corrections.to_dict() if p else None)

    def _on_unplaced(self, job_id: int, spans: list) -> None:
        if self.renders.add_unplaced(job_id, spans):
            self._refresh()

    # -- playback and pictures -----------------------------------------------------------
    def _on_frame(self, index: int, rgb: Any) -> None:
        if self.clip is None:
            return  # a frame of a clip closed since (New Project)
        if self.first_frame_at is None:
            self.first_frame_at = time.monotonic()
        self.frame_index = index
        self._source_rgb = np.asarray(rgb)
        self.empty_hint.hide()
        if self.mask_editing.exact_wanted:
            self._refresh_mask_editing(self._range())
        self.mask_editing.set_frame(index)
        self.bridge.watch_frame(index)
        if self.renders.result_at != index:
            self._request_result(index)
        self._show()
        self._show_overlay()

    def _show(self) -> None:
        if self._source_rgb is None or self.clip is None:
            return
        result, exact = self.renders.picture(self.frame_index, self.clip.times,
                                             self.mask_editing.result(self.frame_index))
        if result is not None and result.shape != self._source_rgb.shape:
            result = None
        self.viewer.set_frames(self._source_rgb, result, exact=exact)

    def _request_result(self, index: int) -> None:
        """Decode the rendered frame ``index`` in the background (when a render covers it)."""
        if self.clip is None or index >= len(self.clip.times):
            return
        output = self.renders.result_file(index, float(self.clip.times[index]))
        if output is None:
            return

        def decode() -> np.ndarray:
            with VideoReader(output) as reader:
                return reader.frame(index).rgb()

        def decoded(rgb: np.ndarray) -> None:
            self.renders.set_result(index, rgb)
            if index == self.frame_index:
                self._show()

        self.tasks.run("result", decode, decoded, lambda exc: None)

    def _on_position(self, seconds: float) -> None:
        if self.clip is None:
            return  # the clip was closed (New Project)
        self.time = float(seconds)
        self.timeline.set_playhead(self.time)
        self.status_time.show_time(self.timeline.timecode(self.time))

    def shuttle(self, direction: int) -> None:
        """J/L as in editors: each press in the same direction doubles the speed (up to 8x)."""
        rate = float(getattr(self.playback, "rate", 0.0) or 0.0)
        if rate * direction > 0:
            rate = direction * min(abs(rate) * 2, 8.0)
        else:
            rate = float(direction)
        self.playback.shuttle(rate)

    def go_to_end(self) -> None:
        if self.clip is not None:
            self.playback.seek(float(self.clip.times[-1]))

    def set_compare_mode(self, mode: str) -> None:
        self.viewer.set_compare_mode(mode)
        self.compare_actions[mode].setChecked(True)
        # The difference view must show untouched pixels as exactly zero: not the encoded file.
        self.mask_editing.set_exact_wanted(mode == "difference")
        self._refresh_mask_editing(self._range())

    def _on_mask_result(self, index: int) -> None:
        if index == self.frame_index:
            self._show()

    def _on_mask_editing(self, on: bool) -> None:
        """Mask editing shows the keyframe lane (the timeline grows to hold it) and the result
        it changes."""
        lane = self.mask_editing.lane
        lane.setVisible(on)
        self._refresh_mask_editing(self._range())  # editing previews the selected range
        height = self.timeline_dock.height() + (lane.minimumHeight() if on
                                                else -lane.minimumHeight())
        # Once the dock's layout has taken the lane in (or out).
        QtCore.QTimer.singleShot(0, lambda: self.resizeDocks([self.timeline_dock], [height],
                                                             Qt.Orientation.Vertical))
        if on and self.viewer.compare_mode() == "source":
            self.set_compare_mode("result")
        if on and self._range() is None:
            self.statusBar().showMessage("Mark a range (I, O) to preview the mask edits", 5000)

    # -- face analysis (overlays) --------------------------------------------------------
    def _analyze(self) -> None:
        """Analyse the clip's target face for the overlays, on the engine thread.

        Through the bridge, not the thread pool: the face backends are not thread-safe, and
        the span (the whole clip) and target are the render's, so the render finds it cached.
        """
        r = self._range()
        if r is None:
            return
        target = r.settings.target
        if self._analysis_job is not None:
            job_id, job = self._analysis_job
            if job.target == target and job.video == self.project.media.path:
                return
            self.bridge.cancel(job_id)
        job = AnalysisJob(self.project.media.path, target)
        job_id = self.bridge.submit(job)
        self._analysis_job = (job_id, job)
        self.jobs.add(job_id, "Face analysis")

    def _show_overlay(self) -> None:
        a = self.analysis
        r = self._range()
        if a is None or r is None or not a.start <= self.frame_index < a.stop:
            self.viewer.set_overlay()
            return
        face = a.frame(self.frame_index)
        if not face.found:
            self.viewer.set_overlay()
            return
        self.viewer.set_overlay(box=face.box, landmarks=face.landmarks,
                                mask_polygon=landmark_polygon(face.landmarks,
                                                              r.settings.mask_kind),
                                crop_box=face.crop_box)

    # -- view state ----------------------------------------------------------------------
    def _refresh(self) -> None:
        """Bring the timeline, inspector and actions in line with the project."""
        has_clip = self.project is not None
        r = self._range()
        if has_clip:
            if r is not None:
                self.timeline.set_range(r.start, r.end)
            else:
                self.timeline.clear_range()
            self.timeline.set_range_states(self.range_states())
            self.timeline.set_unplaced(self.renders.unplaced_spans(self.clip.index_at,
                                                                   self.clip.fps))
            self.timeline.set_ranges([(x.start, x.end) for x in self.project.ranges],
                                     self.selected)
            self.playback.set_ranges([(x.start, x.end) for x in self.project.ranges])
            self.range_list.show_ranges(self._spans(), self.selected, self.timeline.timecode,
                                        self.clip.times, self.clip.fps)
        else:
            self.range_list.setRowCount(0)
        self.status_time.set_resolver(clip_resolver(self.clip.info.clock, self.clip.times,
                                                    lambda: self.time)
                                      if self.clip is not None else None)
        title = ""
        if r is not None:
            title = (f"Range {self.selected + 1} of {len(self.project.ranges)}: "
                     f"{self._span(r.start, r.end)}")
        self.inspector.show_range(r.settings if r is not None else None, title)
        self.render_action.setEnabled(r is not None and bool(self.project.dubs))
        self.export_action.setEnabled(has_clip)
        self.save_action.setEnabled(has_clip)
        for action in self.transport_actions:
            action.setEnabled(has_clip)
        self.empty_hint.setVisible(self._source_rgb is None)
        self._update_title()
        self._show_overlay()
        self._refresh_mask_editing(r)

    def _refresh_mask_editing(self, r: SyncRange | None) -> None:
        """The lane shades the selected range ``r``; the mask preview renders the range
        ``_previewed_range`` names."""
        has_dub = self.project is not None and bool(self.project.dubs)
        shown = self._previewed_range(r) if has_dub else None
        if shown is None:
            self.mask_editing.set_context(None)
        else:
            dub = self.project.dubs[0]
            self.mask_editing.set_context(PreviewSpec(
                self.project.media.path, dub.media.path, dub.offset,
                ((shown.start, shown.end),), self.project.sync_settings(shown)))
        if r is None or not has_dub:
            self.mask_editing.set_marked(None)
            return
        first = self.clip.index_at(r.start)
        self.mask_editing.set_marked((first, max(self.clip.index_at(r.end - 0.5 / self.clip.fps),
                                                 first)))

    def _previewed_range(self, selected: SyncRange | None) -> SyncRange | None:
        """The selected range, except in the difference view (not editing the mask), which
        renders whichever range holds the playhead: every range's untouched pixels must read
        zero there, not only the selected one's."""
        if not self.mask_editing.exact_wanted or self.mask_editing.editing or self.clip is None:
            return selected
        t = float(self.clip.times[min(self.frame_index, len(self.clip.times) - 1)])
        return next((s for s in self.project.ranges if s.start <= t < s.end), selected)

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        super().resizeEvent(event)
        fit_timeline(self, self.timeline_dock, self.viewer)

    # -- keyboard and drops --------------------------------------------------------------
    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:
        # Space here, not as a shortcut: the viewer sees it first (Space+drag pans) and passes
        # it on, and a held key's auto-repeat must not toggle play over and over.
        if event.key() == Qt.Key.Key_Space and not event.modifiers():
            if not event.isAutoRepeat() and self.clip is not None:
                self.playback.toggle()
            event.accept()
            return
        super().keyPressEvent(event)

    def dragEnterEvent(self, event: QtGui.QDragEnterEvent) -> None:
        if any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QtGui.QDropEvent) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        videos = [p for p in paths if os.path.splitext(p)[1].lower() not in AUDIO_EXTS]
        audio = [p for p in paths if os.path.splitext(p)[1].lower() in AUDIO_EXTS]
        if videos and os.path.splitext(videos[0])[1].lower() != SUFFIX:
            self.open_video(videos[0], dub=audio[0] if audio else None)
        elif videos:
            self.open_project(videos[0])
        elif audio:
            self.load_dub(audio[0])
        event.acceptProposedAction()

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        if not self._maybe_keep_changes():
            event.ignore()
            return
        self.settings.save_window(self.saveGeometry(), self.saveState())
        self.settings.sync()
        # Timers outlive a closed (not yet deleted) window: none may reach the stopped bridge.
        self._autosave.stop()
        self._analysis_timer.stop()
        self.playback.close()
        self.mask_editing.shutdown()
        self.bridge.shutdown()
        super().closeEvent(event)
