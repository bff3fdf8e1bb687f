"""Help > Keyboard Shortcuts (F1 or ?): every shortcut, read from the menus themselves.

The sheet is generated from the menu bar's actions, so it cannot drift from what the keys do;
:func:`unlisted_shortcuts` names any shortcut that no menu shows (a key nobody can discover).
"""
from __future__ import annotations

import re

from PySide6 import QtCore, QtGui, QtWidgets

Qt = QtCore.Qt
_NATIVE = QtGui.QKeySequence.SequenceFormat.NativeText


def _label(text: str) -> str:
    # "&Mark In" -> "Mark In"; "Stop (K)" -> "Stop": the key has its own column; "Undo Set
    # Range" -> "Undo": the undo stack names its next command in the action's text.
    text = text.replace("&&", "\0").replace("&", "").replace("\0", "&")
    text = re.sub(r"^(Undo|Redo)\b.*", r"\1", text)
    return re.sub(r"\s*\([^)]*\)$", "", text).rstrip("…").strip()


def _keys(action: QtGui.QAction) -> str:
    # A standard key the platform does not define (Quit on some) is an empty sequence.
    return ", ".join(k.toString(_NATIVE) for k in action.shortcuts() if not k.isEmpty())


def menu_shortcuts(bar: QtWidgets.QMenuBar) -> list[tuple[str, list[tuple[str, str]]]]:
    """(menu title, [(command, keys)]) for every menu action with a shortcut, in menu order;
    submenus are listed under their parent's title."""
    sections: list[tuple[str, list[tuple[str, str]]]] = []

    def walk(menu: QtWidgets.QMenu, rows: list[tuple[str, str]]) -> None:
        for action in menu.actions():
            if action.menu() is not None:
                walk(action.menu(), rows)
            elif not action.isSeparator() and _keys(action):
                rows.append((_label(action.text()), _keys(action)))

    for action in bar.actions():
        if action.menu() is None:
            continue
        rows: list[tuple[str, str]] = []
        walk(action.menu(), rows)
        if rows:
            sections.append((_label(action.text()), rows))
    return sections


def unlisted_shortcuts(window: QtWidgets.QMainWindow) -> list[str]:
    """Shortcuts of the window's actions and QShortcuts that no menu lists."""
    listed: set[int] = set()

    def walk(menu: QtWidgets.QMenu) -> None:
        for action in menu.actions():
            listed.add(id(action))
            if action.menu() is not None:
                walk(action.menu())

    for action in window.menuBar().actions():
        if action.menu() is not None:
            walk(action.menu())
    missing = [f"{a.text()} ({a.shortcut().toString()})"
               for a in window.findChildren(QtGui.QAction)
               if _keys(a) and id(a) not in listed]
    # A QShortcut has no menu entry by its nature: every key should be an action instead.
    missing += [f"QShortcut {s.key().toString()}"
                for s in window.findChildren(QtGui.QShortcut)]
    return missing


class ShortcutSheet(QtWidgets.QDialog):
    """The shortcuts of ``bar``'s menus, one table per menu, side by side in columns."""

    def __init__(self, bar: QtWidgets.QMenuBar, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ShortcutSheet")
        self.setWindowTitle("Keyboard Shortcuts")
        self.sections = menu_shortcuts(bar)
        grid = QtWidgets.QGridLayout(self)
        grid.setHorizontalSpacing(28)
        columns = 3
        # Fill columns in turn, each section whole, so the sheet reads down like a card.
        per_column = sum(len(rows) + 2 for _, rows in self.sections) / columns
        column, used = 0, 0
        boxes = [QtWidgets.QVBoxLayout() for _ in range(columns)]
        for title, rows in self.sections:
            if used and used + len(rows) / 2 > per_column and column < columns - 1:
                column, used = column + 1, 0
            heading = QtWidgets.QLabel(title)
            heading.setStyleSheet("font-weight: bold; color: #e0e0e0; padding-top: 6px")
            boxes[column].addWidget(heading)
            form = QtWidgets.QFormLayout()
            form.setHorizontalSpacing(16)
            form.setVerticalSpacing(2)
            for command, keys in rows:
                key = QtWidgets.QLabel(keys)
                key.setFont(QtGui.QFontDatabase.systemFont(
                    QtGui.QFontDatabase.SystemFont.FixedFont))
                key.setStyleSheet("color: #f0b85a")
                form.addRow(command, key)
            boxes[column].addLayout(form)
            used += len(rows) + 2
        for i, box in enumerate(boxes):
            box.addStretch(1)
            grid.addLayout(box, 0, i, Qt.AlignmentFlag.AlignTop)
        close = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        grid.addWidget(close, 1, 0, 1, columns)

    def rows(self) -> dict[str, str]:
        """Command -> keys over all sections (for a quick look-up)."""
        return {command: keys for _, rows in self.sections for command, keys in rows}
