"""Crash recovery at start: offer the work a crashed session left in its autosave.

Autosaves and their locks are :class:`engine.project.Recovery`'s; a clean end removes them,
so an autosave no running editor holds would otherwise be lost.
"""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from PySide6 import QtWidgets

from engine.project import Recovery

if TYPE_CHECKING:
    from desktop.main_window import MainWindow


def offer_recovery(window: MainWindow) -> bool:
    """Ask whether to restore the newest autosave a crash left; True when it is being opened.

    Declined, it is discarded: asked again at every start, it would only be in the way.
    """
    if window.project is not None or window.tasks.pending:
        return False  # a file opened at start comes first; its own autosave is offered then
    left = Recovery.left_behind()
    if not left:
        return False
    recovery = left[0]
    name = "an untitled project" if recovery.project_path is None \
        else os.path.basename(recovery.project_path)
    saved_at = time.strftime("%Y-%m-%d %H:%M", time.localtime(recovery.path.stat().st_mtime))
    buttons = QtWidgets.QMessageBox.StandardButton
    answer = QtWidgets.QMessageBox.question(
        window, "Recover", f"Redub Studio quit unexpectedly with unsaved changes to {name} "
        f"(autosaved {saved_at}). Restore them?", buttons.Yes | buttons.No, buttons.Yes)
    if answer != buttons.Yes:
        recovery.discard()
        return False
    window.open_project(None if recovery.project_path is None else str(recovery.project_path),
                        recover=True)
    return True
