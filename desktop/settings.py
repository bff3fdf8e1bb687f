"""Per-user editor settings kept with QSettings: window layout, recent files, last folders."""
from __future__ import annotations

import os

from PySide6 import QtCore

MAX_RECENT = 10


class Settings:
    """Typed access to the app's QSettings (organisation "Redub", application "Redub Studio")."""

    def __init__(self, settings: QtCore.QSettings | None = None) -> None:
        self._s = settings or QtCore.QSettings("Redub", "Redub Studio")

    # -- window --------------------------------------------------------------------------
    def geometry(self) -> QtCore.QByteArray | None:
        value = self._s.value("window/geometry")
        return value if isinstance(value, QtCore.QByteArray) else None

    def state(self) -> QtCore.QByteArray | None:
        value = self._s.value("window/state")
        return value if isinstance(value, QtCore.QByteArray) else None

    def save_window(self, geometry: QtCore.QByteArray, state: QtCore.QByteArray) -> None:
        self._s.setValue("window/geometry", geometry)
        self._s.setValue("window/state", state)

    # -- recent files --------------------------------------------------------------------
    def recent_files(self) -> list[str]:
        value = self._s.value("recent/files", [])
        # QSettings returns a bare string for a one-item list on some backends.
        items = [value] if isinstance(value, str) else list(value or [])
        return [str(p) for p in items if p]

    def add_recent(self, path: str) -> list[str]:
        path = os.path.abspath(path)
        items = [path] + [p for p in self.recent_files() if p != path]
        self._s.setValue("recent/files", items[:MAX_RECENT])
        return items[:MAX_RECENT]

    def clear_recent(self) -> None:
        self._s.setValue("recent/files", [])

    # -- folders -------------------------------------------------------------------------
    def last_folder(self, kind: str) -> str:
        """The folder last used for ``kind`` ("video", "audio", "project", "export")."""
        return str(self._s.value(f"folders/{kind}", "") or "")

    def save_folder(self, kind: str, project_path: str | None = None) -> str:
        """Where a save dialog for ``kind`` ("project", "export") opens: the saved project's
        folder, else the last one used for ``kind``, else the last project folder, else the
        user's documents. Never the footage's folder: media often sits on read-only or shared
        volumes, and editors keep work files apart from it."""
        if project_path:
            return os.path.dirname(os.path.abspath(project_path))
        for folder in (self.last_folder(kind), self.last_folder("project")):
            if folder and os.path.isdir(folder):
                return folder
        docs = QtCore.QStandardPaths.writableLocation(
            QtCore.QStandardPaths.StandardLocation.DocumentsLocation)
        return docs if docs and os.path.isdir(docs) else os.path.expanduser("~")

    def set_last_folder(self, kind: str, path: str) -> None:
        folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
        self._s.setValue(f"folders/{kind}", folder)

    def sync(self) -> None:
        self._s.sync()
