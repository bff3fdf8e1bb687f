"""The relink dialog: a project whose media moved is pointed at the files again.

Opening a project first looks for moved files by name and fingerprint next to the project
(:meth:`engine.project.Project.relink`); what is still missing is listed here. The editor
locates each file by hand, or names a folder to search; a file whose fingerprint (size,
duration, frame rate) differs is accepted only when the editor confirms it.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from PySide6 import QtWidgets
from PySide6.QtCore import Qt

from engine.project import Project


class RelinkDialog(QtWidgets.QDialog):
    def __init__(self, project: Project, project_dir: str, missing: list[str],
                 parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Relink Media")
        self.setMinimumWidth(640)
        self.project, self.project_dir = project, project_dir
        self._refs = [ref for ref in project.media_refs() if ref.path in missing]
        self._original = {id(ref): ref.path for ref in self._refs}

        intro = QtWidgets.QLabel("These files of the project are not where it expects them. "
                                 "Locate each one, or search a folder for all of them.")
        intro.setWordWrap(True)
        self.table = QtWidgets.QTableWidget(len(self._refs), 3)
        self.table.setHorizontalHeaderLabels(["File", "Status", ""])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        self.locate_buttons: list[QtWidgets.QPushButton] = []
        for row, ref in enumerate(self._refs):
            button = QtWidgets.QPushButton("Locate…")
            button.clicked.connect(lambda _=False, r=row: self.locate(r))
            self.table.setCellWidget(row, 2, button)
            self.locate_buttons.append(button)
        self.search_button, self.buttons, bottom = search_row(self, self.search_folder)
        self.buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Ok).setText("Open Project")
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.table)
        layout.addLayout(bottom)
        self._update()

    @property
    def missing(self) -> list[str]:
        """Original paths of the files not found yet."""
        return [self._original[id(ref)] for ref in self._refs if not ref.exists]

    def locate(self, row: int) -> None:
        ref = self._refs[row]
        name = os.path.basename(self._original[id(ref)])
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, f"Locate {name}", self.project_dir, f"{name} ({name});;All files (*)")
        if path:
            self.use(row, path)

    def use(self, row: int, path: str) -> bool:
        """Point row ``row`` at ``path``; a different fingerprint needs the editor's word."""
        ref = self._refs[row]
        if not ref.matches(path) and QtWidgets.QMessageBox.question(
                self, "Different File",
                f"{os.path.basename(path)} differs from the file the project was made with "
                "(size, length or frame rate). Use it anyway?") \
                != QtWidgets.QMessageBox.StandardButton.Yes:
            return False
        ref.path = os.path.abspath(path)
        self._update()
        return True

    def search_folder(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Search Folder",
                                                            self.project_dir)
        if folder:
            self.project.relink(self.project_dir, [folder])
            self._update()

    def _update(self) -> None:
        for row, ref in enumerate(self._refs):
            found = ref.exists
            item = QtWidgets.QTableWidgetItem(ref.path if found else self._original[id(ref)])
            item.setToolTip(item.text())
            self.table.setItem(row, 0, item)
            status = QtWidgets.QTableWidgetItem("Found" if found else "Missing")
            status.setForeground(Qt.GlobalColor.green if found else Qt.GlobalColor.red)
            self.table.setItem(row, 1, status)
        done = all(ref.exists for ref in self._refs)
        self.buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Ok).setEnabled(done)


def ask_relink(project: Project, project_dir: str, missing: list[str],
               parent: QtWidgets.QWidget | None = None) -> bool:
    """Run the dialog; True when every file was found and the editor chose to open."""
    dialog = RelinkDialog(project, project_dir, missing, parent)
    return dialog.exec() == QtWidgets.QDialog.DialogCode.Accepted


def search_row(dialog: QtWidgets.QDialog, search: Callable[[], None]
               ) -> tuple[QtWidgets.QPushButton, QtWidgets.QDialogButtonBox,
                          QtWidgets.QHBoxLayout]:
    """A missing-media dialog's bottom row: Search Folder… on the left (calls ``search``),
    OK and Cancel on the right (accept and reject ``dialog``)."""
    button = QtWidgets.QPushButton("Search Folder…")
    button.clicked.connect(search)
    buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Ok
                                         | QtWidgets.QDialogButtonBox.StandardButton.Cancel)
    buttons.accepted.connect(dialog.accept)
    buttons.rejected.connect(dialog.reject)
    row = QtWidgets.QHBoxLayout()
    row.addWidget(button)
    row.addStretch(1)
    row.addWidget(buttons)
    return button, buttons, row
