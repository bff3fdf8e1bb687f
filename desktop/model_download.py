"""Model downloads in the desktop app: the engine's download on a thread, a cancellable dialog.

``ensure_model(model_id, parent)`` is what a window calls before a stage needs a model: the
verified path straight away when it is installed, else a progress dialog while it downloads
(``None`` when the user cancels). The part file of a cancelled download is kept, so asking
again resumes it. When downloads are off (``REDUB_OFFLINE``) or one failed, a
:class:`MissingModelDialog` says so in a sentence and offers what can be done: import a file
the user has (checked against the model's contract, then copied in) or download anyway.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from PySide6 import QtCore, QtWidgets
from PySide6.QtCore import Signal

from engine.errors import Cancelled, RedubError
from engine.models.download import download_model, offline_requested
from engine.models.manifest import ModelEntry, get_entry
from engine.models.store import ModelMissingError, import_model, model_state, models_dir
from engine.progress import CancelToken

log = logging.getLogger(__name__)

_STEPS = 1000  # the bar counts per mille: byte counts overflow the dialog's int range
_running: set[ModelDownloadDialog] = set()


class DownloadThread(QtCore.QThread):
    """Runs ``download_model``; signals arrive in the thread that owns this object."""

    progressed = Signal(float, float)  # done, total bytes (total 0: unknown); floats: > 2 GiB
    succeeded = Signal(str)  # the model's path
    failed = Signal(str)  # the engine's one-line message
    cancelled = Signal()

    def __init__(self, model_id: str, directory: str | os.PathLike | None = None,
                 parent: QtCore.QObject | None = None, min_interval: float = 0.05) -> None:
        super().__init__(parent)
        self.model_id = model_id
        self.directory = directory
        self.token = CancelToken()
        self._min_interval = min_interval
        self._last = 0.0

    def cancel(self) -> None:
        self.token.cancel()

    def run(self) -> None:
        try:
            path = download_model(self.model_id, self.directory, progress=self._progress,
                                  cancel=self.token)
        except Cancelled:
            self.cancelled.emit()
        except RedubError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # a bug must still end the dialog, not leave it spinning
            log.exception("model download crashed")
            self.failed.emit(f"download of '{self.model_id}' failed: {exc}")
        else:
            self.succeeded.emit(str(path))

    def _progress(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last >= self._min_interval or (total and done >= total):
            self._last = now
            self.progressed.emit(float(done), float(total))


class ModelDownloadDialog(QtWidgets.QProgressDialog):
    """A progress dialog for one model's download; Cancel stops it within a chunk."""

    downloaded = Signal(str)
    download_failed = Signal(str)
    download_cancelled = Signal()

    def __init__(self, model_id: str, directory: str | os.PathLike | None = None,
                 parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.entry = get_entry(model_id)
        self.path: Path | None = None
        self.error: str | None = None
        self.setWindowTitle("Downloading a model")
        self.setLabelText(f"Downloading {self.entry.id} ({self.entry.stage})…")
        self.setRange(0, 0)  # busy until the size is known
        self.setAutoClose(False)
        self.setAutoReset(False)
        self.setMinimumDuration(0)
        self.setWindowModality(QtCore.Qt.WindowModality.WindowModal)
        self.thread_ = DownloadThread(model_id, directory, self)
        self.thread_.progressed.connect(self._on_progress)
        self.thread_.succeeded.connect(self._on_succeeded)
        self.thread_.failed.connect(self._on_failed)
        self.thread_.cancelled.connect(self._on_cancelled)
        self.canceled.connect(self.thread_.cancel)
        # A QThread destroyed while running aborts the process: the dialog stays referenced
        # until its thread has ended, even when the caller has let go of it.
        self.thread_.finished.connect(lambda: _running.discard(self))

    def start(self) -> None:
        """Show the dialog and begin; the outcome arrives as a signal."""
        self.show()
        self._start_thread()

    def done(self, result: int) -> None:
        self.thread_.cancel()  # closing the dialog (Esc, window close) cancels too
        super().done(result)

    def _start_thread(self) -> None:
        _running.add(self)
        self.thread_.start()

    def _on_progress(self, done: float, total: float) -> None:
        if total > 0:
            self.setRange(0, _STEPS)
            self.setValue(min(_STEPS, int(done / total * _STEPS)))
            self.setLabelText(f"Downloading {self.entry.id}: {done / 1e6:.1f} of "
                              f"{total / 1e6:.1f} MB")
        else:
            self.setLabelText(f"Downloading {self.entry.id}: {done / 1e6:.1f} MB")

    def _on_succeeded(self, path: str) -> None:
        self.path = Path(path)
        self.downloaded.emit(path)
        self.accept()

    def _on_failed(self, message: str) -> None:
        self.error = message
        self.download_failed.emit(message)
        self.reject()

    def _on_cancelled(self) -> None:
        self.download_cancelled.emit()
        self.reject()


class MissingModelDialog(QtWidgets.QMessageBox):
    """A model is not installed: why, in a sentence (the paths and commands under Details),
    and the ways out: "Import model file…", "Download" (when the model has a public download),
    Cancel. ``choice`` is "import", "download" or None after ``exec``."""

    def __init__(self, entry: ModelEntry, folder: Path, reason: str,
                 parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.choice: str | None = None
        self.setIcon(QtWidgets.QMessageBox.Icon.Warning)
        self.setWindowTitle("Model missing")
        self.setText(f"The {entry.stage} model \u201c{entry.id}\u201d is not installed.")
        self.setInformativeText(f"{reason}\n\nImport a copy of {entry.file} you have, or "
                                "download it.")
        self.setDetailedText(str(ModelMissingError(entry, folder / entry.file)))
        self.import_button = self.addButton("Import model file…",
                                            QtWidgets.QMessageBox.ButtonRole.ActionRole)
        self.download_button = self.addButton("Download",
                                              QtWidgets.QMessageBox.ButtonRole.AcceptRole)
        self.download_button.setEnabled(bool(entry.urls))
        if not entry.urls:
            self.download_button.setToolTip("This model has no public download")
        self.addButton(QtWidgets.QMessageBox.StandardButton.Cancel)
        self.setDefaultButton(self.download_button if entry.urls else self.import_button)
        self.buttonClicked.connect(self._clicked)

    def _clicked(self, button: QtWidgets.QAbstractButton) -> None:
        self.choice = {self.import_button: "import",
                       self.download_button: "download"}.get(button)


def ensure_model(model_id: str, parent: QtWidgets.QWidget | None = None,
                 directory: str | os.PathLike | None = None) -> Path | None:
    """The model's verified path, downloading it with a progress dialog first if needed;
    when it cannot be downloaded the user may import a file or try the download again."""
    entry = get_entry(model_id)
    folder = models_dir(directory)
    if model_state(entry, folder) == "verified":
        return folder / entry.file
    reason = "Downloads are turned off (REDUB_OFFLINE)." if offline_requested() else None
    while True:
        if reason is not None:
            ask = MissingModelDialog(entry, folder, reason, parent)
            ask.exec()
            if ask.choice is None:
                return None
            if ask.choice == "import":
                path, reason = _import(entry, folder, parent)
                if path is not None:
                    return path
                continue
        dialog = ModelDownloadDialog(model_id, folder, parent)
        dialog._start_thread()
        dialog.exec()  # returns on success, failure or Cancel (the thread then ends on its own)
        if dialog.error is None:
            return dialog.path
        reason = f"The download failed: {dialog.error}"


def _import(entry: ModelEntry, folder: Path,
            parent: QtWidgets.QWidget | None) -> tuple[Path | None, str]:
    """Ask for a file and import it as ``entry``: its path, or None and why not."""
    file, _ = QtWidgets.QFileDialog.getOpenFileName(
        parent, f"Import {entry.file}", str(Path.home()), "ONNX models (*.onnx);;All files (*)")
    if not file:
        return None, "No file was chosen."
    QtWidgets.QApplication.setOverrideCursor(QtCore.Qt.CursorShape.WaitCursor)  # loads the model
    try:
        return import_model(file, entry.id, folder), ""
    except RedubError as exc:
        return None, f"The file was not imported: {exc}"
    finally:
        QtWidgets.QApplication.restoreOverrideCursor()
