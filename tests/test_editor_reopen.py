"""The editor used for a day (issue 13): a saved project reopened, and crash recovery."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6 import QtCore, QtWidgets

from desktop.main_window import MainWindow
from engine.project import MediaRef, Project, Recovery, autosave_path
from tests.editor_window import go_to_frame, new_window
from tests.face_clip import write_face_clip
from tests.media_factory import make_video, write_tone_wav

Qt = QtCore.Qt
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def asked(monkeypatch):
    """The questions the app asks; "Recover" is answered Yes, the rest Discard."""
    questions: list[tuple[str, str]] = []
    buttons = QtWidgets.QMessageBox.StandardButton

    def question(parent, title, text, *args, **kwargs):
        questions.append((title, text))
        return buttons.Yes if title == "Recover" else buttons.Discard

    monkeypatch.setattr(QtWidgets.QMessageBox, "question", question)
    monkeypatch.setattr(QtWidgets.QMessageBox, "warning", lambda *a, **k: None)
    return questions


@pytest.fixture
def start(qtbot, tmp_path, asked):
    """Start a main window (as the app does at launch); closed cleanly at the end."""
    windows: list[MainWindow] = []

    def started() -> MainWindow:
        win = new_window(qtbot, tmp_path)
        qtbot.wait(50)  # the start-up checks run once the window is up
        windows.append(win)
        return win

    yield started
    for win in windows:
        win._set_dirty(False)
        win.close()
        win.bridge.shutdown()


def open_recent(qtbot, win: MainWindow, path: Path) -> None:
    """File > Open Recent > the project."""
    action = next(a for a in win.recent_menu.actions() if a.toolTip() == str(path))
    action.trigger()
    qtbot.waitUntil(lambda: win.project_path == str(path) and win._source_rgb is not None,
                    timeout=10000)


def test_a_reopened_project_shows_its_mask_key_at_once(qtbot, tmp_path, start, monkeypatch):
    video = write_face_clip(tmp_path / "face.mp4", frames=12)
    dub = write_tone_wav(tmp_path / "dub.wav", 0.5)
    win = start()
    win.open_video(str(video), dub=str(dub))
    qtbot.waitUntil(lambda: win.project is not None and bool(win.project.dubs)
                    and win._source_rgb is not None, timeout=10000)
    go_to_frame(qtbot, win, 2)
    win.activateWindow()
    qtbot.keyClick(win, Qt.Key.Key_I)
    go_to_frame(qtbot, win, 10)
    qtbot.keyClick(win, Qt.Key.Key_O)
    qtbot.waitUntil(lambda: win.analysis is not None, timeout=60000)
    go_to_frame(qtbot, win, 6)
    me = win.mask_editing
    qtbot.keyClick(win, Qt.Key.Key_M)
    assert me.editing and me.editor.outline() is not None
    me.toolbar.key_action.trigger()  # Add Key (Shift+K)
    assert 6 in me.corrections.outline().keys and me.editor._state == "key"
    path = tmp_path / "keyed.redub"
    monkeypatch.setattr(QtWidgets.QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), ""))
    qtbot.keyClick(win, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    assert path.exists()

    qtbot.keyClick(win, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert win.project is None and not me.editing
    open_recent(qtbot, win, path)
    go_to_frame(qtbot, win, 6)
    qtbot.keyClick(win, Qt.Key.Key_M)
    assert me.editing
    # No edit needed to bring the face back: the cached analysis is loaded with the project.
    qtbot.waitUntil(lambda: me.editor.outline() is not None, timeout=10000)
    assert me.editor._state == "key" and me.editor.handle_positions()
    assert not win._dirty


def _crashing_session(video: Path, project: Path | None, *, killed: bool) -> subprocess.Popen:
    """Another editor process that autosaves ``project`` (None: untitled) with a range added,
    then dies by SIGKILL (``killed``) or keeps running until the test kills it."""
    code = (
        "import os, signal, sys, time\n"
        "from engine.project import MediaRef, Project, Recovery, SyncRange\n"
        f"project = Project(MediaRef.from_file({str(video)!r}), ranges=[SyncRange(0.2, 1.0)])\n"
        f"Recovery({None if project is None else str(project)!r}).write(project)\n"
        "print('autosaved', flush=True)\n"
        + ("os.kill(os.getpid(), signal.SIGKILL)\n" if killed else "time.sleep(60)\n"))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env=os.environ.copy())
    assert proc.stdout.readline().strip() == "autosaved"
    return proc


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL is POSIX")
@pytest.mark.parametrize("named", [False, True], ids=["untitled", "saved"])
def test_work_left_by_a_killed_session_is_offered_at_the_next_start(qtbot, tmp_path, start,
                                                                    asked, named):
    video = make_video(tmp_path / "v.mp4", frames=30)
    path = None
    if named:
        path = tmp_path / "p.redub"
        Project(MediaRef.from_file(video)).save(path)
    # While that editor still runs, its autosave is its own work in progress: not offered.
    running = _crashing_session(video, path, killed=False)
    try:
        win = start()
        assert asked == [] and win.project is None
    finally:
        running.kill()
        running.wait()
    # kill -9: no clean-shutdown bookkeeping, the autosave stays behind.
    killed = _crashing_session(video, path, killed=True)
    assert killed.wait() == -signal.SIGKILL and autosave_path(path).exists()

    win = start()
    assert [title for title, _ in asked] == ["Recover"]  # asked once, at the start
    assert ("p.redub" if named else "untitled project") in asked[0][1]
    qtbot.waitUntil(lambda: win.project is not None and win._source_rgb is not None,
                    timeout=10000)
    assert [(r.start, r.end) for r in win.project.ranges] == [(0.2, 1.0)]
    assert win.project_path == (str(path) if named else None)
    assert win._dirty  # recovered, not yet saved
    assert win.windowTitle().startswith("p.redub •" if named else "Untitled •")
    assert Recovery.left_behind() == []  # this session keeps it now


def test_a_clean_quit_leaves_nothing_to_recover(qtbot, tmp_path, start, asked, monkeypatch):
    video = make_video(tmp_path / "v.mp4", frames=30)
    path = tmp_path / "p.redub"
    win = start()
    win.open_video(str(video))
    qtbot.waitUntil(lambda: win.project is not None and win._source_rgb is not None,
                    timeout=10000)
    monkeypatch.setattr(QtWidgets.QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), ""))
    qtbot.keyClick(win, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    # An edit, autosaved, then undone: the project is as saved again, the autosave newer.
    win.set_range(0.2, 1.0)
    win.autosave()
    assert autosave_path(path).exists()
    qtbot.keyClick(win, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert not win._dirty
    win.close()  # a clean quit: nothing unsaved, nothing asked
    assert asked == [] and not autosave_path(path).exists()

    win = start()
    assert asked == []
    open_recent(qtbot, win, path)
    assert asked == [] and win.project.ranges == Project.load(path).ranges == []
