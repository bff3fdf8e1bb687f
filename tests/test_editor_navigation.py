"""What an editor reaches for (issue 13, "expected and missing"), driven by keys and clicks:
the shortcut sheet, typing a timecode to jump, moving among ranges and playing them, the
Ranges panel, and zooming the timeline to fit."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6 import QtCore, QtGui, QtWidgets

from desktop.main_window import MainWindow
from desktop.settings import Settings
from desktop.shortcut_sheet import unlisted_shortcuts
from tests.media_factory import make_video, set_timecode, write_tone_wav
from tests.test_desktop_app import go_to_frame, make_playback, open_clip

Qt = QtCore.Qt


def _window(qtbot, tmp_path, monkeypatch, video=None):
    monkeypatch.setattr(QtWidgets.QMessageBox, "question",
                        lambda *a, **k: QtWidgets.QMessageBox.StandardButton.Discard)
    monkeypatch.setattr(QtWidgets.QMessageBox, "warning", lambda *a, **k: None)
    settings = Settings(QtCore.QSettings(str(tmp_path / "settings.ini"),
                                         QtCore.QSettings.Format.IniFormat))
    win = MainWindow(settings, make_playback())
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    # 50 frames at 25 fps: frame n starts at n * 0.04 s.
    open_clip(qtbot, win, video or make_video(tmp_path / "v.mp4", frames=50, size=(160, 96)),
              write_tone_wav(tmp_path / "dub.wav", 2.5))
    win.activateWindow()
    return win


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    win = _window(qtbot, tmp_path, monkeypatch)
    yield win
    win.playback.pause()
    win._set_dirty(False)
    win.close()
    win.bridge.shutdown()


def key_at(qtbot, win: MainWindow, frame: int, key) -> None:
    go_to_frame(qtbot, win, frame)
    qtbot.keyClick(win, key)


def make_ranges(qtbot, win: MainWindow) -> None:
    """Range 1 over frames 30-39, range 2 over frames 5-14 (made in that order)."""
    key_at(qtbot, win, 30, Qt.Key.Key_I)
    key_at(qtbot, win, 39, Qt.Key.Key_O)
    key_at(qtbot, win, 20, Qt.Key.Key_N)
    key_at(qtbot, win, 5, Qt.Key.Key_I)
    key_at(qtbot, win, 14, Qt.Key.Key_O)
    assert [(round(r.start, 6), round(r.end, 6)) for r in win.project.ranges] == \
        [(1.2, 1.6), (0.2, 0.6)]


# -- help ------------------------------------------------------------------------------------

def test_f1_and_question_mark_show_every_shortcut_from_the_menus(qtbot, window):
    # Every key the window answers to is in a menu, the mask tool bar's keys too.
    assert unlisted_shortcuts(window) == []
    stray = QtGui.QAction("Stray", window)  # a key no menu shows is caught
    stray.setShortcut(QtGui.QKeySequence("Ctrl+Alt+Q"))
    window.addAction(stray)
    assert unlisted_shortcuts(window) == ["Stray (Ctrl+Alt+Q)"]
    window.removeAction(stray)
    stray.setParent(None)
    qtbot.keyClick(window, Qt.Key.Key_F1)
    sheet = window.shortcut_sheet
    qtbot.waitUntil(sheet.isVisible, timeout=2000)
    rows = sheet.rows()
    assert rows["Mark In"] == "I" and rows["Shuttle Back"] == "J"
    assert rows["Play In to Out"] == "/" and rows["Go to In"] == "Shift+I"
    assert rows["Edit Mask"] == "M" and rows["Add Key"] == "Shift+K"
    assert rows["Keyboard Shortcuts"] == "F1, ?" and rows["Undo"] == "Ctrl+Z"
    titles = [title for title, _ in sheet.sections]
    assert titles[:4] == ["File", "Edit", "Playback", "Render"] and "Help" in titles
    # The sheet shows what it lists: each command and its keys are labels on it.
    labels = {label.text() for label in sheet.findChildren(QtWidgets.QLabel)}
    assert {"Next Range", "Shift+Down", "Zoom Timeline to Fit", "\\"} <= labels
    sheet.close()
    qtbot.keyClick(window, "?")
    qtbot.waitUntil(lambda: window.shortcut_sheet.isVisible(), timeout=2000)
    window.shortcut_sheet.close()


# -- timecode entry --------------------------------------------------------------------------

def type_timecode(qtbot, win: MainWindow, text: str) -> None:
    entry = win.status_time
    qtbot.mouseClick(entry, Qt.MouseButton.LeftButton)
    assert entry.editing and entry.hasFocus() and entry.selectedText() == entry.text()
    qtbot.keyClicks(entry, text)
    qtbot.keyClick(entry, Qt.Key.Key_Return)


def test_click_the_timecode_and_type_a_position_or_an_offset(qtbot, window):
    entry = window.status_time
    go_to_frame(qtbot, window, 3)
    assert entry.text() == "00:00:00:03" and not entry.editing
    # An idle timecode is no trap: transport keys still work.
    qtbot.keyClick(window, Qt.Key.Key_Right)
    qtbot.waitUntil(lambda: window.frame_index == 4, timeout=3000)

    for text, frame in (("00:00:01:05", 30), ("+10", 40), ("-00:00:00:05", 35),
                        ("112", 37), ("-3f", 34), ("0.4s", 10), ("+00:00:01:00", 35)):
        type_timecode(qtbot, window, text)
        qtbot.waitUntil(lambda f=frame: window.frame_index == f, timeout=3000)
        assert entry.text() == f"00:00:{frame // 25:02d}:{frame % 25:02d}"
        assert not entry.editing and not entry.hasFocus()
    # Offsets stop at the clip's ends.
    type_timecode(qtbot, window, "+100")
    qtbot.waitUntil(lambda: window.frame_index == 49, timeout=3000)

    # Nonsense: said in one line, still editing; Esc gives up and shows the playhead again.
    type_timecode(qtbot, window, "soon")
    assert "bad time 'soon'" in window.statusBar().currentMessage() and entry.editing
    qtbot.keyClick(entry, Qt.Key.Key_Escape)
    assert not entry.editing and entry.text() == "00:00:01:24" and window.frame_index == 49
    # Keys go back to the transport after a jump.
    type_timecode(qtbot, window, "00:00:00:10")
    qtbot.waitUntil(lambda: window.frame_index == 10, timeout=3000)
    qtbot.keyClick(window.focusWidget() or window, Qt.Key.Key_I)
    assert window.project.ranges and round(window.project.ranges[0].start, 6) == 0.4


def test_typed_timecode_is_the_clip_s_source_timecode(qtbot, tmp_path, monkeypatch):
    video = set_timecode(make_video(tmp_path / "c.mp4", frames=50, size=(160, 96)),
                         tmp_path / "tc.mov", "10:00:00:00")
    win = _window(qtbot, tmp_path, monkeypatch, video)
    try:
        type_timecode(qtbot, win, "10:00:01:02")
        qtbot.waitUntil(lambda: win.frame_index == 27, timeout=3000)
        assert win.status_time.text() == "10:00:01:02"
        type_timecode(qtbot, win, "00:00:01:00")  # before the clip's first frame
        assert "before the clip's start timecode 10:00:00:00" in \
            win.statusBar().currentMessage()
        assert win.frame_index == 27
    finally:
        win._set_dirty(False)
        win.close()
        win.bridge.shutdown()


# -- ranges ----------------------------------------------------------------------------------

def test_go_to_in_and_out_and_next_and_previous_range(qtbot, window):
    make_ranges(qtbot, window)
    go_to_frame(qtbot, window, 0)
    qtbot.keyClick(window, Qt.Key.Key_Down, Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: window.frame_index == 5, timeout=3000)
    assert window.selected == 1  # time order: range 2 lies first
    qtbot.keyClick(window, Qt.Key.Key_O, Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: window.frame_index == 14, timeout=3000)  # its last frame
    qtbot.keyClick(window, Qt.Key.Key_Down, Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: window.frame_index == 30, timeout=3000)
    assert window.selected == 0
    qtbot.keyClick(window, Qt.Key.Key_Down, Qt.KeyboardModifier.ShiftModifier)
    assert window.statusBar().currentMessage() == "No later range" and window.frame_index == 30
    go_to_frame(qtbot, window, 35)
    qtbot.keyClick(window, Qt.Key.Key_Up, Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: window.frame_index == 30, timeout=3000)  # the in point it is in
    qtbot.keyClick(window, Qt.Key.Key_Up, Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: window.frame_index == 5, timeout=3000)
    assert window.selected == 1
    go_to_frame(qtbot, window, 12)
    window.select_range(0)
    qtbot.keyClick(window, Qt.Key.Key_I, Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: window.frame_index == 30, timeout=3000)  # the selected one's in


def test_range_list_shows_ranges_in_timecode_and_a_click_goes_there(qtbot, window):
    make_ranges(qtbot, window)
    table = window.range_list
    assert view_action(window, "Ranges") is window.ranges_dock.toggleViewAction()
    cells = [[table.item(r, c).text() for c in range(4)] for r in range(table.rowCount())]
    assert cells == [["2", "00:00:00:05", "00:00:00:14", "00:00:00:10"],
                     ["1", "00:00:01:05", "00:00:01:14", "00:00:00:10"]]
    assert [i.row() for i in table.selectionModel().selectedRows()] == [0]  # range 2 selected
    go_to_frame(qtbot, window, 45)
    rect = table.visualItemRect(table.item(1, 1))
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.waitUntil(lambda: window.frame_index == 30, timeout=3000)
    assert window.selected == 0
    assert [i.row() for i in table.selectionModel().selectedRows()] == [1]
    # Edits show at once: undoing range 2 leaves one row.
    window.undo_stack.undo()
    window.undo_stack.undo()
    assert table.rowCount() == 1 and table.item(0, 1).text() == "00:00:01:05"
    # A new project empties the list.
    window._set_dirty(False)
    window.new_project()
    assert table.rowCount() == 0


def test_play_in_to_out_stops_on_the_out_point_and_loops_when_asked(qtbot, window):
    make_ranges(qtbot, window)
    window.select_range(1)  # frames 5-14
    go_to_frame(qtbot, window, 40)
    seen = []
    window.playback.frame_ready.connect(lambda i, rgb: seen.append(i))
    qtbot.keyClick(window, Qt.Key.Key_Slash)
    qtbot.waitUntil(lambda: window.playback.state == "playing", timeout=2000)
    qtbot.waitUntil(lambda: window.playback.state == "paused", timeout=5000)
    qtbot.waitUntil(lambda: window.frame_index == 14, timeout=3000)
    assert seen[0] == 5 and max(seen) == 14 and 10 in seen  # played from in to out only

    # Loop on: it goes round from the in point again instead of stopping.
    qtbot.keyClick(window, Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier)
    assert window.playback.loop
    seen.clear()
    qtbot.keyClick(window, Qt.Key.Key_Slash)
    qtbot.waitUntil(lambda: seen.count(5) >= 2, timeout=5000)
    assert window.playback.state == "playing" and max(seen) == 14
    qtbot.keyClick(window, Qt.Key.Key_K)  # any transport move ends the loop
    assert window.playback.state == "paused"
    qtbot.keyClick(window, Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier)
    assert not window.playback.loop


# -- view ------------------------------------------------------------------------------------

def test_zoom_timeline_to_fit(qtbot, window):
    timeline = window.timeline
    timeline.zoom(8.0, around=1.5)  # as far in as the timeline goes
    start, end = timeline.visible_range()
    assert start > 0.5 and end - start < 1.2
    qtbot.keyClick(window, Qt.Key.Key_Backslash)
    # The whole clip (2 s) and the whole dub (2.5 s) in view, with only a margin beside them.
    start, end = timeline.visible_range()
    assert -0.1 < start <= 0.0 and 2.5 <= end < 2.6


def view_action(win: MainWindow, text: str):
    view = next(a.menu() for a in win.menuBar().actions() if a.text() == "&View")
    return next(a for a in view.actions() if a.text() == text)


def test_full_screen_viewer_and_back_with_esc(qtbot, window):
    docks = [window.timeline_dock, window.inspector_dock, window.ranges_dock]
    assert all(d.isVisible() for d in docks)
    qtbot.keyClick(window, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    assert window.full_screen.active and window.isFullScreen()
    assert not any(d.isVisible() for d in docks)
    assert not window.menuBar().isVisible() and not window.statusBar().isVisible()
    assert view_action(window, "Full-Screen Viewer").isChecked()
    # The transport still answers while full screen.
    go_to_frame(qtbot, window, 10)
    qtbot.keyClick(window, Qt.Key.Key_Right)
    qtbot.waitUntil(lambda: window.frame_index == 11, timeout=3000)
    window.viewer.setFocus()
    qtbot.keyClick(window.viewer, Qt.Key.Key_Escape)
    assert not window.full_screen.active and not window.isFullScreen()
    assert all(d.isVisible() for d in docks) and window.menuBar().isVisible()
    assert not view_action(window, "Full-Screen Viewer").isChecked()


def test_safe_area_and_centre_guides_are_drawn_on_the_picture(qtbot, window):
    viewer = window.viewer
    window.viewer.set_frames(np.full((96, 160, 3), 40, np.uint8))  # a plain dark frame

    def grab() -> np.ndarray:
        image = viewer.grab().toImage().convertToFormat(QtGui.QImage.Format.Format_RGB888)
        return np.frombuffer(image.constBits(), np.uint8).reshape(
            image.height(), image.bytesPerLine())[:, :image.width() * 3].reshape(
            image.height(), image.width(), 3).copy()

    rect = viewer.image_rect()
    cx, cy = int(rect.center().x()), int(rect.center().y())
    action_y = int(rect.top() + rect.height() * 0.035)  # the 93 % line, 3.5 % in
    mid_x = int(rect.center().x() + rect.width() * 0.25)
    plain = grab()
    assert plain[cy, cx].max() < 80 and plain[action_y, mid_x].max() < 80
    view_action(window, "Centre Guide").trigger()
    crossed = grab()
    assert crossed[cy, cx].min() > 120 and crossed[action_y, mid_x].max() < 80
    view_action(window, "Safe Areas").trigger()
    safe = grab()
    assert max(safe[action_y + d, mid_x].min() for d in (-1, 0, 1)) > 120
    view_action(window, "Centre Guide").trigger()
    view_action(window, "Safe Areas").trigger()
    assert grab()[cy, cx].max() < 80


def test_closing_full_screen_saves_the_editor_s_layout(qtbot, window):
    qtbot.keyClick(window, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    assert window.full_screen.active
    window._set_dirty(False)
    window.close()
    restored = MainWindow(window.settings, make_playback())
    qtbot.addWidget(restored)
    restored.show()
    qtbot.waitExposed(restored)
    try:
        assert not restored.isFullScreen() and restored.timeline_dock.isVisible()
        assert restored.menuBar().isVisible() and restored.ranges_dock.isVisible()
    finally:
        restored.close()
        restored.bridge.shutdown()
