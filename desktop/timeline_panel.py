"""File > Open Timeline: an editor's timeline as a list of shots to re-sync, beside the viewer.

A timeline (OTIO, FCP 7 XML, FCPXML, EDL, AAF, Kdenlive) is read and its shots found by the
engine (:mod:`engine.timeline`) off the UI thread. Missing media is named first, with a folder
search to relink it (in memory: the editor's file stays as it is). The Shots dock lists each
shot: its first frame, name, record in and out (timecode at the timeline's rate, from its
start), duration, dub clip and status (pending, rendering x%, then as each shot finishes: done,
skipped, failed with the engine's message on hover, no face).

Each shot has its own project (``engine.project``) in the batch folder, made the first time the
shot is opened (a double-click): the shot's media as the video, its overlap as the one range and
its dub placed so the first frame of the overlap hears the dub where the timeline has it. Edits
made there are saved in that file, so opening the shot again finds them; Render All hands the
projects to the batch, which renders each edited shot as its project says (settings, picked
face, corrections, dub) and again only when the project changed. Render All runs the whole
batch as one bridge job (cancellable); Export Timeline writes the conformed timeline in a
chosen format (the input's by default).
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import opentimelineio as otio
from PySide6 import QtCore, QtGui, QtWidgets

from desktop.bridge import PreviewFn, UnplacedFn
from desktop.relink_dialog import search_row
from engine.errors import RedubError
from engine.media.probe import probe
from engine.media.thumbnails import thumbnails
from engine.progress import CancelToken, ProgressFn
from engine.project import SUFFIX, DubTrack, MediaRef, Project, SyncRange
from engine.render import RenderResult
from engine.timecode import format_timecode
from engine.timeline import batch as timeline_batch
from engine.timeline import conform as timeline_conform
from engine.timeline import io as timeline_io
from engine.timeline import shots as timeline_shots
from engine.timeline.batch import ShotResult
from engine.timeline.shots import Shot
from ui import theme
from ui.images import rgb_to_qimage

Qt = QtCore.Qt

# Our format names (engine.timeline.io.FORMATS) as the save dialog offers them.
FORMAT_FILTERS = {"otio": "OpenTimelineIO (*.otio)", "fcp_xml": "Final Cut Pro 7 XML (*.xml)",
                  "fcpx_xml": "Final Cut Pro X XML (*.fcpxml)", "edl": "CMX 3600 EDL (*.edl)",
                  "aaf": "AAF (*.aaf)", "kdenlive": "Kdenlive project (*.kdenlive)"}
OPEN_FILTER = ("Timelines (*.otio *.xml *.fcpxml *.edl *.aaf *.kdenlive);;All files (*)")
# Two lines a cell where two things belong together: the columns fit a side dock.
COLUMNS = ("", "Shot / Dub", "Record In / Out", "Duration", "Status")
STATUS_COLUMN = 4
STATUS_TEXT = {"pending": "pending", "done": "done", "skipped": "skipped", "failed": "failed",
               "no-face": "no face"}
THUMB_HEIGHT = 54
# As the Jobs panel colours its rows: done green, failed red; no face and skipped dimmed.
STATUS_COLOUR = {"done": QtGui.QColor(theme.RANGE_STATE["rendered"]),
                 "failed": QtGui.QColor("#e05555"), "rendering": QtGui.QColor(theme.ACCENT),
                 "no-face": QtGui.QColor(theme.RANGE_STATE["stale"]),
                 "skipped": QtGui.QColor(theme.TEXT_DIM)}


# -- the batch as plain data ---------------------------------------------------------------

@dataclass
class Batch:
    """An opened timeline: its shots (``engine.timeline.shots.Shot``) and where renders go."""

    path: Path
    timeline: otio.schema.Timeline  # as read, or relinked in memory: what Render All renders
    fmt: str  # our format name of the file read
    shots: list[Shot]
    notes: list[str]  # the engine's one-line notes on what it refused
    folder: Path  # renders, the report, the output timeline and the shots' projects
    start_frame: int = 0  # the timeline's start timecode, in frames at its rate
    results: list[ShotResult] = field(default_factory=list)  # of the last Render All


def default_folder(timeline_path: Path) -> Path:
    return timeline_path.with_name(f"{timeline_path.stem}_redub")


def read_with_format(path: Path) -> tuple[otio.schema.Timeline, str]:
    """The timeline at ``path`` and our name of its format."""
    fmt = timeline_io.format_of(path)
    return timeline_io.read_timeline(path, fmt), fmt


def find_batch(path: Path, timeline: otio.schema.Timeline, fmt: str) -> Batch:
    """The shots of ``timeline`` (read from ``path``), rendered into the default folder."""
    found, notes = timeline_shots.find_shots(timeline, path)
    start = timeline.global_start_time
    rate = found[0].rate if found else None
    start_frame = round(start.value_rescaled_to(rate)) if start is not None and rate else 0
    return Batch(path, timeline, fmt, found, notes, default_folder(path), start_frame)


def shot_project_path(folder: Path, shot: Shot) -> Path:
    """The shot's own project in the batch folder (the name says which shot it is)."""
    name = re.sub(r"[^\w.-]+", "_", shot.name).strip("_") or "shot"
    return folder / f"shot_{shot.index:03d}_{name}{SUFFIX}"


def shot_project(shot: Shot) -> Project:
    """A project on the shot's media: the overlap as its one range, the dub placed so that the
    overlap's first frame hears ``dub_start`` seconds into the dub file."""
    info = probe(shot.media).video[0]
    times = info.index_data.times
    start = float(times[shot.source_in])
    end = float(times[shot.source_out]) if shot.source_out < len(times) else info.duration
    return Project(media=MediaRef.from_file(shot.media),
                   dubs=[DubTrack(MediaRef.from_file(shot.dub), offset=start - shot.dub_start)],
                   ranges=[SyncRange(start, end)])


def ensure_shot_project(folder: Path, shot: Shot) -> str:
    """The shot's project file, made on first use; later edits are kept in it."""
    path = shot_project_path(folder, shot)
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        shot_project(shot).save(path)
    return str(path)


def shot_thumbnail(shot: Shot) -> np.ndarray:
    """The shot's first frame (exact: a keyframe before it would show the wrong picture)."""
    info = probe(shot.media).video[0]
    t = float(info.index_data.times[shot.source_in])
    return next(thumbnails(shot.media, [t], THUMB_HEIGHT, exact=True, info=info)).image


# -- Render All as a bridge job --------------------------------------------------------------

@dataclass
class BatchJob:
    """Every shot of a timeline, rendered by ``engine.timeline.batch.run_batch`` (an EngineJob).

    Its progress reaches the UI as the bridge's: stage "batch" counts shots, "shot K/N
    <stage>" is the K-th shot's own (:func:`shot_stage` reads them).
    """

    timeline: otio.schema.Timeline
    path: str  # the file it was read from: relative media, the outputs' names
    folder: str
    fmt: str  # of the output timeline
    projects: dict[int, str] = field(default_factory=dict)  # shot index -> its own project
    on_shot: Callable[[ShotResult], None] | None = None  # on the worker thread
    results: list[ShotResult] = field(default_factory=list)

    def run(self, progress: ProgressFn, cancel: CancelToken, preview: PreviewFn,
            unplaced: UnplacedFn) -> RenderResult:
        began = time.monotonic()
        result = timeline_batch.run_batch(self.timeline, self.folder, path=self.path,
                                          fmt=self.fmt, projects=self.projects,
                                          progress=progress, cancel=cancel,
                                          on_shot=self.on_shot)
        self.results = list(result.shots)
        failed = sum(r.status == "failed" for r in self.results)
        notes = [f"{failed} of {len(self.results)} shots failed"] if failed else []
        return RenderResult(path=str(result.timeline), frames=sum(r.frames for r in self.results),
                            seconds=time.monotonic() - began, notes=list(result.notes) + notes)


_SHOT_STAGE = re.compile(r"shot (\d+)/(\d+) (.+)")
STAGE_TEXT = {"faces": "analysing faces", "placement": "checking the face",
              "audio": "reading audio", "plan": "planning", "export": "rendering"}


def shot_stage(stage: str) -> tuple[int, str] | None:
    """(position of the shot in the batch, from 0; its stage) of a batch progress stage."""
    m = _SHOT_STAGE.fullmatch(stage)
    return (int(m.group(1)) - 1, m.group(3)) if m else None


def shot_projects(folder: Path, shots: list[Shot]) -> dict[int, str]:
    """The projects of the shots the editor opened, by shot index, for ``run_batch``."""
    paths = {shot.index: shot_project_path(folder, shot) for shot in shots}
    return {index: str(path) for index, path in paths.items() if path.exists()}


# -- the shot list ---------------------------------------------------------------------------

@dataclass
class ShotRow:
    shot: Shot
    status: str = "pending"
    fraction: float = 0.0
    stage: str = ""  # what the rendering shot is doing
    message: str = ""
    thumbnail: QtGui.QPixmap | None = None


class ShotListModel(QtCore.QAbstractTableModel):
    """One row per shot: thumbnail, name, record in/out, duration, dub clip, status."""

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.rows: list[ShotRow] = []
        self.start_frame = 0

    def set_shots(self, shots: list[Shot], start_frame: int = 0) -> None:
        self.beginResetModel()
        self.rows = [ShotRow(s) for s in shots]
        self.start_frame = start_frame
        self.endResetModel()

    def row_of(self, index: int) -> int | None:
        return next((i for i, r in enumerate(self.rows) if r.shot.index == index), None)

    def update(self, row: int, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(self.rows[row], name, value)
        self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    def timecode(self, frames: int, rate: float) -> str:
        return format_timecode(frames / rate, rate, start_frame=self.start_frame)

    def status_text(self, row: ShotRow) -> str:
        if row.status == "rendering":
            return f"{row.stage or 'rendering'} {row.fraction:.0%}"
        return STATUS_TEXT.get(row.status, row.status)

    def rowCount(self, parent: QtCore.QModelIndex = QtCore.QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QtCore.QModelIndex = QtCore.QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: QtCore.QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row, column = self.rows[index.row()], index.column()
        shot = row.shot
        if role == Qt.ItemDataRole.DecorationRole and column == 0:
            return row.thumbnail
        if role == Qt.ItemDataRole.DisplayRole:
            return [None, f"{shot.name}\n{shot.dub_name}",
                    f"{self.timecode(shot.record_in, shot.rate)}\n"
                    f"{self.timecode(shot.record_out, shot.rate)}",
                    format_timecode((shot.record_out - shot.record_in) / shot.rate, shot.rate),
                    self.status_text(row)][column]
        if role == Qt.ItemDataRole.ForegroundRole and column == STATUS_COLUMN:
            return STATUS_COLOUR.get(row.status)
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == STATUS_COLUMN and row.message:
                return row.message
            if column == 1:
                return f"{shot.media}\ndub: {shot.dub}"
        return None


class ShotList(QtWidgets.QWidget):
    """The Shots dock: the list, overall progress and the batch's buttons."""

    shot_opened = QtCore.Signal(int)  # row
    render_requested = QtCore.Signal()
    cancel_requested = QtCore.Signal()
    export_requested = QtCore.Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = ShotListModel(self)
        self.title = QtWidgets.QLabel("No timeline")
        self.title.setWordWrap(True)
        self.table = QtWidgets.QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(THUMB_HEIGHT + 6)
        self.table.setIconSize(QtCore.QSize(round(THUMB_HEIGHT * 16 / 9), THUMB_HEIGHT))
        # Names give way (elided) so timecodes and the status stay in a narrow dock.
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.setWordWrap(False)
        self.table.doubleClicked.connect(lambda index: self.shot_opened.emit(index.row()))
        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.render_button = QtWidgets.QPushButton("Render All")
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.export_button = QtWidgets.QPushButton("Export Timeline…")
        self.render_button.clicked.connect(self.render_requested)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.export_button.clicked.connect(self.export_requested)
        buttons = QtWidgets.QHBoxLayout()
        for b in (self.render_button, self.cancel_button, self.export_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.title)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.progress)
        layout.addLayout(buttons)
        self.set_running(False, has_results=False)

    def set_running(self, running: bool, has_results: bool) -> None:
        rows = bool(self.model.rows)
        self.render_button.setEnabled(rows and not running)
        self.cancel_button.setEnabled(running)
        self.export_button.setEnabled(has_results and not running)
        self.progress.setVisible(running)

    def set_overall(self, fraction: float, text: str) -> None:
        self.progress.setValue(round(max(0.0, min(1.0, fraction)) * 1000))
        self.progress.setFormat(text)


class MissingMediaDialog(QtWidgets.QDialog):
    """The clips whose media the timeline cannot find; Search Folder… relinks by file name."""

    def __init__(self, batch_path: Path, timeline: otio.schema.Timeline, missing: list[str],
                 parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Missing Media")
        self.setMinimumWidth(520)
        self.path, self.timeline, self.missing = batch_path, timeline, missing
        self.intro = QtWidgets.QLabel()
        self.intro.setWordWrap(True)
        self.clips = QtWidgets.QListWidget()
        self.search_button, self.buttons, bottom = search_row(self, self.search_folder)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.intro)
        layout.addWidget(self.clips)
        layout.addLayout(bottom)
        self._update()

    def _update(self) -> None:
        self.clips.clear()
        self.clips.addItems(self.missing)
        ok = self.buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Ok)
        if self.missing:
            self.intro.setText(f"{len(self.missing)} clips of {self.path.name} have no media "
                               "where the timeline says. Search a folder for them, or open "
                               "anyway (their shots will fail).")
            ok.setText("Open Anyway")
        else:
            self.intro.setText(f"Every clip of {self.path.name} has its media.")
            ok.setText("Open Timeline")

    def search_folder(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Search folder for media",
                                                            str(self.path.parent))
        if folder:
            self.search(folder)

    def search(self, folder: str) -> int:
        """Relink what ``folder`` (and its subfolders) holds by file name; how many were."""
        found = timeline_io.relink(self.timeline, self.path, [folder])
        self.missing = timeline_io.missing_media(self.timeline, self.path)
        self._update()
        return found


def ask_missing(batch_path: Path, timeline: otio.schema.Timeline, missing: list[str],
                parent: QtWidgets.QWidget) -> bool:
    """The missing-media dialog; True to go on (media found, or opened anyway)."""
    return MissingMediaDialog(batch_path, timeline, missing, parent).exec() \
        == QtWidgets.QDialog.DialogCode.Accepted


# -- the controller the main window wires --------------------------------------------------

# A timeline read: its path, itself, its format, clips missing media, its batch when none are.
_Read = tuple[Path, otio.schema.Timeline, str, list[str], Batch | None]


class TimelineBatch(QtCore.QObject):
    """The window's timeline batch: its dock, File > Open Timeline, Render All, Export
    Timeline. ``window`` is the editor (its tasks, bridge, settings, status bar, projects)."""

    # A shot's result as Render All finishes it, from the worker thread (queued to this one).
    shot_finished = QtCore.Signal(object)

    def __init__(self, window: Any) -> None:
        super().__init__(window)
        self.w = window
        self.batch: Batch | None = None
        self.job: tuple[int, BatchJob] | None = None
        self.panel = ShotList()
        self.dock = QtWidgets.QDockWidget("Shots", window)
        self.dock.setObjectName("dock-shots")
        self.dock.setWidget(self.panel)
        self.dock.setFeatures(QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetMovable
                              | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetFloatable
                              | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetClosable)
        window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.dock)
        self.dock.hide()  # until a timeline is opened
        self.panel.shot_opened.connect(self.open_shot)
        self.panel.render_requested.connect(self.render_all)
        self.panel.cancel_requested.connect(self.cancel)
        self.panel.export_requested.connect(self.choose_export)
        self.shot_finished.connect(self._on_shot)
        bridge = window.bridge
        bridge.progress.connect(self._on_progress)
        bridge.finished.connect(self._on_finished)
        bridge.failed.connect(lambda job_id, message: self._on_ended(job_id, message))
        bridge.cancelled.connect(lambda job_id: self._on_ended(job_id, "Render All cancelled"))

    @property
    def running(self) -> bool:
        return self.job is not None

    # -- opening ---------------------------------------------------------------------------
    def choose_open(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self.w, "Open timeline", self.w.settings.last_folder("timeline"), OPEN_FILTER)
        if path:
            self.open(path)

    def open(self, path: str) -> None:
        """Read ``path`` in the background; missing media asked about, then the shot list."""
        if self.running:  # its results belong to the timeline it is rendering
            self.w.statusBar().showMessage("Render All is running: cancel it before opening "
                                           "another timeline", 5000)
            return
        self.w.settings.set_last_folder("timeline", path)
        self.w.statusBar().showMessage(f"Reading {os.path.basename(path)}…")
        self.w.tasks.run("timeline", lambda: self._read(path), self._opened,
                         self._error("Cannot open timeline"))

    def _read(self, path: str) -> _Read:
        p = Path(path).resolve()
        timeline, fmt = read_with_format(p)
        missing = timeline_io.missing_media(timeline, p)
        return p, timeline, fmt, missing, None if missing else find_batch(p, timeline, fmt)

    def _opened(self, result: _Read) -> None:
        path, timeline, fmt, missing, batch = result
        if batch is not None:
            self.show_batch(batch)
        elif ask_missing(path, timeline, missing, self.w):  # relinked in memory, or not
            self.w.tasks.run("timeline", lambda: find_batch(path, timeline, fmt),
                             self.show_batch, self._error("Cannot open timeline"))
        else:
            self.w.statusBar().showMessage("Timeline not opened: media missing", 5000)

    def show_batch(self, batch: Batch) -> None:
        """List ``batch``'s shots in the dock (thumbnails follow in the background)."""
        self.batch = batch
        self.panel.model.set_shots(batch.shots, batch.start_frame)
        text = f"{batch.path.name}: {len(batch.shots)} shots → {batch.folder}"
        if batch.notes:
            text += "\n" + "\n".join(batch.notes)
        self.panel.title.setText(text)
        self.panel.title.setToolTip(text)
        self.panel.set_running(False, has_results=False)
        self.dock.show()
        self.dock.raise_()
        self.w.statusBar().showMessage(f"Opened {batch.path.name}: {len(batch.shots)} shots",
                                       4000)
        shots = list(batch.shots)
        self.w.tasks.run("shot-thumbnails", lambda: [shot_thumbnail(s) for s in shots],
                         lambda images: self._thumbnails(batch, images), lambda exc: None)

    def _thumbnails(self, batch: Batch, images: list[np.ndarray]) -> None:
        if batch is not self.batch:
            return
        for row, rgb in enumerate(images):
            self.panel.model.update(row, thumbnail=QtGui.QPixmap.fromImage(rgb_to_qimage(rgb)))

    # -- a shot in the editor --------------------------------------------------------------
    def open_shot(self, row: int) -> None:
        """Open shot ``row`` in the editor, from its own project (made the first time), the
        playhead on its range's in point."""
        if self.batch is None:
            return
        shot, folder = self.batch.shots[row], self.batch.folder
        self.w.tasks.run("shot-project", lambda: ensure_shot_project(folder, shot),
                         lambda path: self.w.open_project(path, then=self.w.range_nav.go_in),
                         self._error("Cannot open shot"))

    # -- Render All ------------------------------------------------------------------------
    def render_all(self) -> int | None:
        """Render every shot (those up to date are skipped by the engine); the job's id."""
        if self.batch is None or self.running:
            return None
        batch = self.batch
        shot_files = {str(shot_project_path(batch.folder, s)) for s in batch.shots}
        if self.w.project_path in shot_files and self.w._dirty:
            self.w.save()  # the open shot's edits are what Render All should use
        job = BatchJob(batch.timeline, str(batch.path), str(batch.folder), batch.fmt,
                       shot_projects(batch.folder, batch.shots), self.shot_finished.emit)
        job_id = self.w.bridge.submit(job)
        self.job = (job_id, job)
        self.w.jobs.add(job_id, f"Render All · {batch.path.name}", str(batch.folder))
        for row in range(len(self.panel.model.rows)):
            self.panel.model.update(row, status="pending", fraction=0.0, stage="", message="")
        self.panel.set_running(True, has_results=False)
        self.panel.set_overall(0.0, f"0 of {len(batch.shots)} shots")
        return job_id

    def cancel(self) -> None:
        if self.job is not None:
            self.w.bridge.cancel(self.job[0])

    def _on_progress(self, job_id: int, stage: str, fraction: float, rate: float,
                     left: float) -> None:
        if self.job is None or job_id != self.job[0]:
            return
        model, n = self.panel.model, len(self.panel.model.rows)
        if stage == "batch":  # each shot's own row is set by its result (_on_shot)
            k = round(fraction * n) if fraction >= 0 else 0
            self.panel.set_overall(k / n if n else 1.0, f"{k} of {n} shots")
        elif (found := shot_stage(stage)) is not None and found[0] < n:
            row, name = found
            fraction = max(fraction, 0.0)
            model.update(row, status="rendering", fraction=fraction,
                         stage=STAGE_TEXT.get(name, name))
            self.panel.set_overall((row + fraction) / n, f"shot {row + 1} of {n}: "
                                   f"{STAGE_TEXT.get(name, name)} {fraction:.0%}")

    def _on_shot(self, result: ShotResult) -> None:
        if self.job is not None:
            self._show_result(result)

    def _show_result(self, result: ShotResult) -> None:
        model = self.panel.model
        if (row := model.row_of(result.shot.index)) is not None:
            model.update(row, status=result.status, fraction=1.0,
                         message="\n".join(result.notes))

    def _on_finished(self, job_id: int, path: str, notes: list) -> None:
        if self.job is None or job_id != self.job[0]:
            return
        job = self.job[1]
        self.job = None
        if self.batch is not None:
            self.batch.results = job.results
        for result in job.results:
            self._show_result(result)
        self.panel.set_running(False, has_results=True)
        self.panel.set_overall(1.0, f"{len(job.results)} shots")
        self.w.statusBar().showMessage(
            "Render All: " + ("; ".join(notes) if notes else f"done, timeline {path}"), 8000)

    def _on_ended(self, job_id: int, message: str) -> None:
        if self.job is None or job_id != self.job[0]:
            return
        self.job = None
        for row, r in enumerate(self.panel.model.rows):
            if r.status == "rendering":
                self.panel.model.update(row, status="pending", fraction=0.0)
        self.panel.set_running(False, has_results=bool(self.batch and self.batch.results))
        self.w.statusBar().showMessage(message, 8000)

    # -- Export Timeline -------------------------------------------------------------------
    def choose_export(self) -> None:
        if self.batch is None or not self.batch.results:
            self.w.statusBar().showMessage("Export Timeline: open a timeline and Render All "
                                           "first", 5000)
            return
        batch = self.batch
        fmt = batch.fmt if batch.fmt in FORMAT_FILTERS else "otio"
        suffix = re.search(r"\*(\.\w+)", FORMAT_FILTERS[fmt]).group(1)
        start = str(batch.folder / f"{batch.path.stem}_redub{suffix}")
        path, chosen = QtWidgets.QFileDialog.getSaveFileName(
            self.w, "Export timeline", start, ";;".join(FORMAT_FILTERS.values()),
            FORMAT_FILTERS[fmt])
        if path:
            self.export(path, next(k for k, v in FORMAT_FILTERS.items() if v == chosen))

    def export(self, path: str, fmt: str) -> bool:
        """Write the conformed timeline (each rendered shot's clip on its new media) to
        ``path`` in ``fmt`` (``conform`` writes it)."""
        batch = self.batch
        try:
            timeline_conform.conform(batch.timeline, batch.path, batch.results, path, fmt)
        except RedubError as exc:
            QtWidgets.QMessageBox.warning(self.w, "Cannot export timeline", str(exc))
            return False
        self.w.statusBar().showMessage(f"Exported {path}", 5000)
        return True

    def _error(self, title: str) -> Callable[[Exception], None]:
        def show(exc: Exception) -> None:
            self.w.statusBar().clearMessage()
            QtWidgets.QMessageBox.warning(self.w, title, str(exc))
        return show
