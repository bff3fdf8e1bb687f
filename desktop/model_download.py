"""Model downloads in the desktop app: the engine's download on a thread, a cancellable dialog.

``ensure_models(model_ids, parent)`` is what a window calls before a job needs models: the
verified paths straight away when they are installed, else one progress dialog while the
missing ones download, and, for models without a public ONNX file (MuseTalk), while their
official checkpoints download and convert (``None`` when the user cancels). The part files of
a cancelled download are kept, so asking again resumes it. When downloads are off
(``REDUB_OFFLINE``) or one failed, a :class:`MissingModelDialog` says so in a sentence and
offers what can be done: import a file the user has (checked against the model's contract,
then copied in, with its external data file) or download anyway.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from PySide6 import QtCore, QtWidgets
from PySide6.QtCore import Signal

from engine.errors import Cancelled, RedubError
from engine.models.download import install_models, offline_requested
from engine.models.manifest import ModelEntry, get_entry
from engine.models.mirror import mirror_url
from engine.models.store import ModelMissingError, import_model, model_state, models_dir
from engine.progress import CancelToken

log = logging.getLogger(__name__)

_STEPS = 1000  # the bar counts per mille: byte counts overflow the dialog's int range
_running: set[ModelDownloadDialog] = set()


class DownloadThread(QtCore.QThread):
    """Runs ``install_models`` (downloads, and conversions of models made from checkpoints);
    signals arrive in the thread that owns this object."""

    phase = Signal(str)  # what runs now: a model id or checkpoint path, or "convert <id>"
    progressed = Signal(float, float)  # done, total of the phase: bytes, or networks converted
    succeeded = Signal(str)  # the first model's path
    failed = Signal(str)  # the engine's one-line message
    cancelled = Signal()

    def __init__(self, model_ids: str | list[str], directory: str | os.PathLike | None = None,
                 parent: QtCore.QObject | None = None, min_interval: float = 0.05) -> None:
        super().__init__(parent)
        self.model_ids = [model_ids] if isinstance(model_ids, str) else list(model_ids)
        self.directory = directory
        self.token = CancelToken()
        self.paths: list[Path] = []
        self._min_interval = min_interval
        self._last = 0.0
        self._stage = ""

    def cancel(self) -> None:
        self.token.cancel()

    def run(self) -> None:
        try:
            self.paths = install_models(self.model_ids, self.directory, progress=self._progress,
                                        cancel=self.token)
        except Cancelled:
            self.cancelled.emit()
        except RedubError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # a bug must still end the dialog, not leave it spinning
            log.exception("model download crashed")
            self.failed.emit(f"download of '{', '.join(self.model_ids)}' failed: {exc}")
        else:
            self.succeeded.emit(str(self.paths[0]))

    def _progress(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage != self._stage:
            self._stage = stage
            self.phase.emit(stage)
        elif not (now - self._last >= self._min_interval or (total and done >= total)):
            return
        self._last = now
        self.progressed.emit(float(done), float(total))


class ModelDownloadDialog(QtWidgets.QProgressDialog):
    """A progress dialog for one job that installs models: each download, then each network
    of a conversion, as its phase; Cancel stops it within a chunk (a conversion, at the next
    network)."""

    downloaded = Signal(str)
    download_failed = Signal(str)
    download_cancelled = Signal()

    def __init__(self, model_ids: str | list[str], directory: str | os.PathLike | None = None,
                 parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        ids = [model_ids] if isinstance(model_ids, str) else list(model_ids)
        self.entry = get_entry(ids[0])
        self.paths: list[Path] = []
        self.path: Path | None = None
        self.error: str | None = None
        self._stage = self.entry.id
        self.setWindowTitle("Downloading models" if len(ids) > 1 else "Downloading a model")
        self.setLabelText(f"Downloading {', '.join(ids)} ({self.entry.stage})…")
        self.setRange(0, 0)  # busy until the size is known
        self.setAutoClose(False)
        self.setAutoReset(False)
        self.setMinimumDuration(0)
        self.setWindowModality(QtCore.Qt.WindowModality.WindowModal)
        self.thread_ = DownloadThread(ids, directory, self)
        self.thread_.phase.connect(self._on_phase)
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

    def _on_phase(self, stage: str) -> None:
        self._stage = stage

    def _on_progress(self, done: float, total: float) -> None:
        if self._stage.startswith("convert "):
            # Networks convert one at a time (minutes for a UNet): count them.
            self.setRange(0, max(int(total), 1))
            self.setValue(int(done))
            name = self._stage[len("convert "):]
            self.setLabelText(f"Converting the official checkpoints: {name} "
                              f"({min(int(done) + 1, int(total))} of {int(total)})"
                              if done < total else "Converting the official checkpoints: done")
        elif total > 0:
            self.setRange(0, _STEPS)
            self.setValue(min(_STEPS, int(done / total * _STEPS)))
            self.setLabelText(f"Downloading {self._stage}: {done / 1e6:.1f} of "
                              f"{total / 1e6:.1f} MB")
        else:
            self.setLabelText(f"Downloading {self._stage}: {done / 1e6:.1f} MB")

    def _on_succeeded(self, path: str) -> None:
        self.paths = list(self.thread_.paths)
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
        fetchable = downloadable(entry)
        self.download_button.setEnabled(fetchable)
        if not fetchable:
            self.download_button.setToolTip("This model has no public download")
        elif not entry.urls:
            self.download_button.setToolTip("Downloads the official checkpoints and converts "
                                            "them (needs the export tools)")
        self.addButton(QtWidgets.QMessageBox.StandardButton.Cancel)
        self.setDefaultButton(self.download_button if fetchable else self.import_button)
        self.buttonClicked.connect(self._clicked)

    def _clicked(self, button: QtWidgets.QAbstractButton) -> None:
        self.choice = {self.import_button: "import",
                       self.download_button: "download"}.get(button)


def downloadable(entry: ModelEntry) -> bool:
    """Whether "Download" can get ``entry``: a public file, a mirror, or a conversion."""
    return bool(entry.urls or entry.convert or mirror_url())


def ensure_model(model_id: str, parent: QtWidgets.QWidget | None = None,
                 directory: str | os.PathLike | None = None) -> Path | None:
    """The model's verified path, as :func:`ensure_models` gets it."""
    paths = ensure_models([model_id], parent, directory)
    return paths[0] if paths else None


def ensure_models(model_ids: list[str], parent: QtWidgets.QWidget | None = None,
                  directory: str | os.PathLike | None = None) -> list[Path] | None:
    """The verified paths of ``model_ids``, the missing ones downloaded (or converted) first
    in one progress dialog; None when one cannot be had and the user gave up. When the job
    cannot run or fails, the user may import a file for the first missing model or try again."""
    folder = models_dir(directory)
    entries = [get_entry(model_id) for model_id in dict.fromkeys(model_ids)]
    reason = "Downloads are turned off (REDUB_OFFLINE)." if offline_requested() else None
    while True:
        missing = [e for e in entries if model_state(e, folder) != "verified"]
        if not missing:
            return [folder / e.file for e in entries]
        if reason is not None:
            ask = MissingModelDialog(missing[0], folder, reason, parent)
            ask.exec()
            if ask.choice is None:
                return None
            if ask.choice == "import":
                path, why = _import(missing[0], folder, parent)
                if path is None:
                    reason = why
                continue  # imported: the next missing model, asked about the same way
        dialog = ModelDownloadDialog([e.id for e in missing], folder, parent)
        dialog._start_thread()
        dialog.exec()  # returns on success, failure or Cancel (the thread then ends on its own)
        if dialog.error is None:
            if dialog.path is None:
                return None  # cancelled
            continue  # installed: the loop returns every path
        reason = f"The download failed: {dialog.error}"


def _import(entry: ModelEntry, folder: Path,
            parent: QtWidgets.QWidget | None) -> tuple[Path | None, str]:
    """Ask for a file and import it as ``entry`` (its external data file travels with it):
    its path, or None and why not."""
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
