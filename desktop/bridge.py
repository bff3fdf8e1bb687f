"""The engine bridge: engine jobs run on one worker thread and report to the UI by signals.

The UI thread owns an :class:`EngineBridge`; it never calls the engine itself and never waits
on it (except :meth:`EngineBridge.shutdown`, at exit). Jobs run one at a time, in submission
order, on an :class:`EngineWorker` living in a ``QThread``. Each job has a ``CancelToken``;
the engine checks it between frames, and the worker also checks it on every progress report
and preview frame, so a cancel lands within a frame's work. The engine's writer renders to a
hidden temporary file renamed only on success, so a cancelled or failed job leaves no output.

Previews go through a one-slot mailbox: the worker converts at most one frame per
``preview_interval`` to a ``QImage`` (in its own thread), replaces whatever is waiting in the
slot, and posts a notification only when the slot was empty. However slow the UI is, at most
one image is queued for it, and it is always the newest; a job's last frame is always shown.
The frame the editor is parked on (``watch_frame``) is also sent on its own (``exact``), never
dropped by the throttle, so the viewer can compare the exact result with the source there,
rather than the encoded render file's copy of it.

A lip-sync job reports, as each of its sessions is prepared, the runs of frames that keep their
own mouth because the face could not be placed (``unplaced``), so the editor can mark them
before the render ends; the job's notes list them too.
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np
from PySide6 import QtCore, QtGui
from PySide6.QtCore import Signal, Slot

from engine.errors import Cancelled, RedubError, UsageError
from engine.maskedit import Corrections
from engine.media.frame import Frame
from engine.pipeline import SyncSession, SyncSettings, sync
from engine.progress import CancelToken, ProgressFn
from engine.project import Project
from engine.render import ExportSettings, RenderResult, render
from ui.images import rgb_to_qimage

log = logging.getLogger(__name__)

PreviewFn = Callable[[Frame], None]
Spans = list[tuple[int, int]]  # runs of clip frames: (first, last), inclusive
UnplacedFn = Callable[[Spans], None]
NOTE_SPANS = 8  # runs listed by name in a job's note


class EngineJob(Protocol):
    def run(self, progress: ProgressFn, cancel: CancelToken, preview: PreviewFn,
            unplaced: UnplacedFn) -> RenderResult:
        """Do the work on the worker thread; raise RedubError (or Cancelled) on failure.

        ``unplaced`` takes, per prepared lip-sync session, its runs of frames that keep their
        own mouth (jobs without one never call it).
        """


@dataclass
class SyncJob:
    """Lip-sync ``video`` to ``dub`` inside ``ranges`` (empty: the whole clip) and export."""

    video: str
    dub: str
    export: ExportSettings
    dub_offset: float = 0.0
    ranges: list[tuple[float, float]] = field(default_factory=list)
    settings: SyncSettings = field(default_factory=SyncSettings)
    corrections: Corrections | None = None  # the project's manual mask and motion fixes
    range_settings: list[SyncSettings] | None = None  # one per range; None: ``settings`` for all

    @classmethod
    def from_project(cls, project: Project, ranges: Sequence[int] | None = None,
                     output: str | os.PathLike | None = None) -> SyncJob:
        """The render of ``project``'s ranges (indices; default all) to ``output``.

        Each range keeps its own settings (the engine prepares ranges that share settings
        together); the export has one dub track.
        """
        if len(project.dubs) != 1:
            raise UsageError(f"a render needs exactly one dub track (the project has "
                             f"{len(project.dubs)})")
        chosen = project.ranges if ranges is None else [project.ranges[i] for i in ranges]
        per_range = [project.sync_settings(r) for r in chosen]
        dub = project.dubs[0]
        return cls(video=project.media.path, dub=dub.media.path,
                   export=project.export.to_export_settings(output), dub_offset=dub.offset,
                   ranges=[(r.start, r.end) for r in chosen],
                   settings=per_range[0] if per_range else SyncSettings(),
                   range_settings=per_range or None,
                   corrections=project.corrections.copy())

    def run(self, progress: ProgressFn, cancel: CancelToken, preview: PreviewFn,
            unplaced: UnplacedFn) -> RenderResult:
        found: Spans = []

        def prepared(session: SyncSession) -> None:
            spans = frame_spans(session.unplaced_frames())
            found.extend(spans)
            unplaced(spans)

        result = sync(self.video, self.dub, self.export, dub_offset=self.dub_offset,
                      ranges=self.ranges, settings=self.settings, progress=progress,
                      cancel=cancel, preview=preview, corrections=self.corrections,
                      range_settings=self.range_settings, prepared=prepared)
        if found:
            result.notes.append(unplaced_note(found))
        return result


@dataclass
class ExportJob:
    """Export ``video`` with ``dub`` laid in (picture untouched), e.g. before any sync."""

    video: str
    export: ExportSettings
    dub: str | None = None
    dub_offset: float = 0.0
    ranges: list[tuple[float, float]] = field(default_factory=list)

    def run(self, progress: ProgressFn, cancel: CancelToken, preview: PreviewFn,
            unplaced: UnplacedFn) -> RenderResult:
        return render(self.video, self.export, dub=self.dub, dub_offset=self.dub_offset,
                      ranges=self.ranges, on_frame=preview, progress=progress, cancel=cancel)


def frame_spans(frames: np.ndarray | Sequence[int]) -> Spans:
    """Clip frame indices as runs of consecutive frames, (first, last) inclusive."""
    frames = np.unique(np.asarray(frames, np.int64))
    if not frames.size:
        return []
    breaks = np.flatnonzero(np.diff(frames) > 1)
    firsts = np.concatenate([frames[:1], frames[breaks + 1]])
    lasts = np.concatenate([frames[breaks], frames[-1:]])
    return list(zip(firsts.tolist(), lasts.tolist()))


def unplaced_note(spans: Spans) -> str:
    """The note naming the frames that keep their own mouth (the engine's says how many, why)."""
    spans = sorted(spans)
    named = [f"{a}" if a == b else f"{a}–{b}" for a, b in spans[:NOTE_SPANS]]
    if len(spans) > NOTE_SPANS:
        named.append(f"{len(spans) - NOTE_SPANS} more runs")
    if len(spans) == 1 and spans[0][0] == spans[0][1]:
        return (f"frame {named[0]} keeps its own mouth: fix it with a keep-original span or the "
                "mask tools")
    return (f"frames {', '.join(named)} keep their own mouth: fix them with a keep-original "
            "span or the mask tools")


def frame_to_qimage(frame: Frame) -> QtGui.QImage:
    """The frame as an RGB888 QImage that owns its pixels (safe to hand to another thread)."""
    return rgb_to_qimage(frame.rgb(), QtGui.QImage.Format.Format_RGB888)


class _Meter:
    """Per-stage rate and time left from ``progress(stage, done, total)`` reports."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self._t0 = 0.0
        self._done0 = 0

    def update(self, stage: str, done: int, total: int, now: float) -> tuple[float, float, float]:
        if stage != self.stage:
            self.stage, self._t0, self._done0 = stage, now, done
        elapsed = now - self._t0
        rate = (done - self._done0) / elapsed if elapsed > 0 else 0.0
        fraction = done / total if total > 0 else -1.0
        left = (total - done) / rate if total > 0 and rate > 0 else -1.0
        return fraction, rate, left


class EngineWorker(QtCore.QObject):
    """Runs queued jobs on the thread it was moved to. Use it through :class:`EngineBridge`."""

    started = Signal(int)
    # job, stage, fraction of the stage (-1: unknown), units (frames) per second,
    # seconds left in the stage (-1: unknown)
    progress = Signal(int, str, float, float, float)
    preview_ready = Signal()  # a preview waits in the mailbox: take_preview()
    exact = Signal(int, int, QtGui.QImage)  # job, the watched frame's index, its exact picture
    unplaced = Signal(int, list)  # job, runs of frames that keep their own mouth (Spans)
    finished = Signal(int, str, list)
    failed = Signal(int, str)
    cancelled = Signal(int)

    def __init__(self, preview_interval: float = 0.1, progress_interval: float = 0.1) -> None:
        super().__init__()
        self.preview_interval = preview_interval
        self.progress_interval = progress_interval
        self._lock = threading.Lock()
        self._queue: deque[tuple[int, EngineJob, CancelToken]] = deque()
        self._mailbox: tuple[int, int, QtGui.QImage] | None = None
        self._closing = False
        self.watched: int | None = None  # frame index sent exactly (set from the UI thread)

    # -- any thread ----------------------------------------------------------------------

    def enqueue(self, job_id: int, job: EngineJob, token: CancelToken) -> None:
        with self._lock:
            self._queue.append((job_id, job, token))

    def unqueue(self, job_id: int) -> bool:
        """Drop a job that has not started; False if it is running or done."""
        with self._lock:
            for item in self._queue:
                if item[0] == job_id:
                    self._queue.remove(item)
                    return True
        return False

    def close(self) -> list[int]:
        """Stop taking jobs; returns the ids of those that were still queued."""
        with self._lock:
            self._closing = True
            dropped = [item[0] for item in self._queue]
            self._queue.clear()
        return dropped

    def take_preview(self) -> tuple[int, int, QtGui.QImage] | None:
        with self._lock:
            item, self._mailbox = self._mailbox, None
        return item

    # -- worker thread -------------------------------------------------------------------

    @Slot()
    def run_queue(self) -> None:
        while True:
            with self._lock:
                if self._closing or not self._queue:
                    return
                job_id, job, token = self._queue.popleft()
            self._run(job_id, job, token)

    def _run(self, job_id: int, job: EngineJob, token: CancelToken) -> None:
        if token.cancelled:
            self.cancelled.emit(job_id)
            return
        self.started.emit(job_id)
        meter = _Meter()
        reported_at, reported_stage = 0.0, None  # the last progress report sent
        shown_at = 0.0  # when the last preview was posted
        held: Frame | None = None  # the newest frame not posted yet

        def progress(stage: str, done: int, total: int) -> None:
            nonlocal reported_at, reported_stage
            token.check()  # stages without their own checks cancel here too
            now = time.monotonic()
            fraction, rate, left = meter.update(stage, done, total, now)
            if (stage != reported_stage or 0 < total <= done
                    or now - reported_at >= self.progress_interval):
                reported_at, reported_stage = now, stage
                self.progress.emit(job_id, stage, fraction, rate, left)

        def preview(frame: Frame) -> None:
            nonlocal shown_at, held
            token.check()
            if frame.index == self.watched:  # one attribute read: no lock needed
                self.exact.emit(job_id, frame.index, frame_to_qimage(frame))
            now = time.monotonic()
            if now - shown_at >= self.preview_interval:
                shown_at, held = now, None
                self._post(job_id, frame)
            else:
                held = frame

        def unplaced(spans: Spans) -> None:
            token.check()
            self.unplaced.emit(job_id, list(spans))

        try:
            result = job.run(progress, token, preview, unplaced)
        except Cancelled:
            self.cancelled.emit(job_id)
        except RedubError as exc:
            self.failed.emit(job_id, str(exc))
        except Exception as exc:  # a bug: report it and keep the worker alive
            log.exception("engine job %d failed", job_id)
            lines = str(exc).splitlines()
            self.failed.emit(job_id, ": ".join(["internal error", type(exc).__name__,
                                                  *lines[:1]]))
        else:
            if held is not None:
                self._post(job_id, held)
            self.finished.emit(job_id, result.path, list(result.notes))

    def _post(self, job_id: int, frame: Frame) -> None:
        image = frame_to_qimage(frame)
        with self._lock:
            was_empty = self._mailbox is None
            self._mailbox = (job_id, frame.index, image)
        if was_empty:
            self.preview_ready.emit()


class EngineBridge(QtCore.QObject):
    """The UI's handle on the engine: submit jobs, cancel them, hear back through signals.

    Signals arrive in the UI thread, in order per job: ``started``, any number of ``progress``
    and ``preview`` (and for a lip-sync job one ``unplaced`` per prepared session, before its
    frames render), then exactly one of ``finished`` (path of the output, notes for the
    user), ``failed`` (the one-line error) or ``cancelled``.
    """

    started = Signal(int)
    progress = Signal(int, str, float, float, float)
    preview = Signal(int, int, QtGui.QImage)  # job, frame index, picture
    exact = Signal(int, int, QtGui.QImage)  # job, watched frame index, its exact picture
    unplaced = Signal(int, list)  # job, runs (first, last) of frames keeping their own mouth
    finished = Signal(int, str, list)
    failed = Signal(int, str)
    cancelled = Signal(int)
    _wake = Signal()

    def __init__(self, parent: QtCore.QObject | None = None, *,
                 preview_interval: float = 0.1) -> None:
        super().__init__(parent)
        self._ids = itertools.count(1)
        self._tokens: dict[int, CancelToken] = {}
        _preload_models()
        self._thread = QtCore.QThread()
        self._thread.setObjectName("redub-engine")
        self._worker = EngineWorker(preview_interval)
        self._worker.moveToThread(self._thread)
        self._wake.connect(self._worker.run_queue)
        self._worker.started.connect(self.started)
        self._worker.progress.connect(self.progress)
        self._worker.preview_ready.connect(self._deliver_preview)
        self._worker.exact.connect(self.exact)
        self._worker.unplaced.connect(self.unplaced)
        self._worker.finished.connect(self._on_finished)
        self._worker.failed.connect(self._on_failed)
        self._worker.cancelled.connect(self._on_cancelled)
        app = QtCore.QCoreApplication.instance()
        if app is not None:
            # A QThread destroyed while running aborts the process: stop it at exit at least.
            app.aboutToQuit.connect(self.shutdown)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """Whether any job is queued or running."""
        return bool(self._tokens)

    def submit(self, job: EngineJob) -> int:
        """Queue ``job``; returns its id (signals carry it). Never blocks."""
        if not self._thread.isRunning():
            raise RuntimeError("the engine bridge has been shut down")
        job_id = next(self._ids)
        token = CancelToken()
        self._tokens[job_id] = token
        self._worker.enqueue(job_id, job, token)
        self._wake.emit()
        return job_id

    def watch_frame(self, index: int | None) -> None:
        """Have running and later jobs send frame ``index`` exactly (``exact``) as they make it."""
        self._worker.watched = index

    def cancel(self, job_id: int) -> None:
        """Cancel a queued or running job; ``cancelled`` follows (unless it had just ended)."""
        token = self._tokens.get(job_id)
        if token is None:
            return
        token.cancel()
        if self._worker.unqueue(job_id):
            # Not started: nothing to stop. Emitted later, like every other signal.
            QtCore.QTimer.singleShot(0, self, lambda: self._on_cancelled(job_id))

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Cancel everything and join the worker thread; False if it did not stop in time.

        Queued jobs are dropped without signals. The only call that blocks the UI thread:
        meant for closing the app (it also runs on ``aboutToQuit``).
        """
        if not self._thread.isRunning():
            return True
        self._worker.close()
        for token in self._tokens.values():
            token.cancel()
        self._tokens.clear()
        self._thread.quit()
        return self._thread.wait(int(timeout * 1000))

    @Slot()
    def _deliver_preview(self) -> None:
        item = self._worker.take_preview()
        if item is not None:
            self.preview.emit(*item)

    @Slot(int, str, list)
    def _on_finished(self, job_id: int, path: str, notes: list) -> None:
        self._tokens.pop(job_id, None)
        self.finished.emit(job_id, path, notes)

    @Slot(int, str)
    def _on_failed(self, job_id: int, message: str) -> None:
        self._tokens.pop(job_id, None)
        self.failed.emit(job_id, message)

    @Slot(int)
    def _on_cancelled(self, job_id: int) -> None:
        self._tokens.pop(job_id, None)
        self.cancelled.emit(job_id)


def _preload_models() -> None:
    """Load the embedded face models while the application starts.

    Their loader holds the interpreter lock for about 0.4 s: done later, on the engine thread,
    it would freeze the UI at the start of the first render. A missing model is reported by
    the job that needs it, with the engine's message, so it is not an error here.
    """
    from engine.face.dlib_backend import preload
    try:
        preload()
    except RedubError:
        pass
