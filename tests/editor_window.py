"""The editor's main window, shown and driven as a user would: shared by the desktop tests."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from PySide6 import QtCore, QtWidgets

from desktop.main_window import MainWindow
from desktop.playback import Playback
from desktop.settings import Settings

Qt = QtCore.Qt


def new_window(qtbot, tmp_path: Path, playback: Playback | None = None) -> MainWindow:
    """A main window with its own settings file, shown (as the app starts one)."""
    settings = Settings(QtCore.QSettings(str(tmp_path / "settings.ini"),
                                         QtCore.QSettings.Format.IniFormat))
    win = MainWindow(settings, playback or Playback(audio_device=None))
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    return win


def quiet_dialogs(monkeypatch) -> list[str]:
    """"Discard" answers the unsaved-changes question; warnings, which would wait for a click,
    are kept in the list returned instead."""
    warnings: list[str] = []
    monkeypatch.setattr(QtWidgets.QMessageBox, "question",
                        lambda *a, **k: QtWidgets.QMessageBox.StandardButton.Discard)
    monkeypatch.setattr(QtWidgets.QMessageBox, "warning", lambda *a, **k: warnings.append(a[2]))
    return warnings


def close_window(win: MainWindow) -> None:
    win._set_dirty(False)
    win.close()
    win.bridge.shutdown()


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    """A shown main window whose dialogs answer themselves; closed after the test."""
    quiet_dialogs(monkeypatch)
    win = new_window(qtbot, tmp_path)
    yield win
    close_window(win)


def stub_engine(win: MainWindow, monkeypatch) -> list[int]:
    """The bridge takes jobs without running them (the test plays the engine's part through
    the bridge's signals); returns the job ids it was asked to cancel."""
    ids = itertools.count(1000)
    cancelled: list[int] = []
    monkeypatch.setattr(win.bridge, "submit", lambda job: next(ids))
    monkeypatch.setattr(win.bridge, "cancel", cancelled.append)
    return cancelled


def open_clip(qtbot, win: MainWindow, video: Path, dub: Path | None = None) -> None:
    win.open_video(str(video), dub=str(dub) if dub else None)
    qtbot.waitUntil(lambda: win._source_rgb is not None and win.project is not None,
                    timeout=10000)
    if dub:
        qtbot.waitUntil(lambda: bool(win.project.dubs), timeout=10000)


def go_to_frame(qtbot, win: MainWindow, index: int) -> None:
    win.playback.seek(float(win.clip.times[index]))
    qtbot.waitUntil(lambda: win.frame_index == index, timeout=5000)


def mark(qtbot, win: MainWindow, first: int, last: int) -> None:
    """I on ``first``, O on ``last``, with the keys."""
    go_to_frame(qtbot, win, first)
    win.activateWindow()
    qtbot.keyClick(win, Qt.Key.Key_I)
    go_to_frame(qtbot, win, last)
    qtbot.keyClick(win, Qt.Key.Key_O)
