"""The editor used for a while: ranges that never overlap, transport keys after typing a value,
and target faces picked on purpose only."""
from __future__ import annotations

import pytest
from PySide6 import QtCore, QtWidgets

from desktop.main_window import MainWindow
from engine.project import ExportPrefs, SyncRange
from tests.editor_window import close_window, new_window, quiet_dialogs
from tests.media_factory import make_video, write_tone_wav
from tests.test_desktop_app import go_to_frame, make_playback, open_clip

Qt = QtCore.Qt


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    warnings = quiet_dialogs(monkeypatch)
    win = new_window(qtbot, tmp_path, make_playback())
    win.warnings = warnings
    # 50 frames at 25 fps: frame n starts at n * 0.04 s, 00:00:00:n in timecode.
    open_clip(qtbot, win, make_video(tmp_path / "v.mp4", frames=50, size=(160, 96)),
              write_tone_wav(tmp_path / "dub.wav", 2.5))
    win.activateWindow()
    yield win
    close_window(win)


def key_at(qtbot, win: MainWindow, frame: int, key: Qt.Key) -> None:
    go_to_frame(qtbot, win, frame)
    qtbot.keyClick(win, key)


def spans(win: MainWindow) -> list[tuple[float, float]]:
    return [(round(r.start, 6), round(r.end, 6)) for r in win.project.ranges]


def test_new_ranges_start_at_the_playhead_and_never_overlap(qtbot, window):
    key_at(qtbot, window, 5, Qt.Key.Key_I)
    key_at(qtbot, window, 14, Qt.Key.Key_O)
    assert spans(window) == [(0.2, 0.6)]
    # N then O later: the new range runs from where N was pressed, not from the clip's start.
    key_at(qtbot, window, 25, Qt.Key.Key_N)
    assert "00:00:01:00" in window.statusBar().currentMessage()
    key_at(qtbot, window, 34, Qt.Key.Key_O)
    assert spans(window) == [(0.2, 0.6), (1.0, 1.4)]
    assert window.selected == 1

    # An in point inside range 1 is refused, saying where in timecode; nothing changes.
    key_at(qtbot, window, 10, Qt.Key.Key_I)
    message = window.statusBar().currentMessage()
    assert "00:00:00:10" in message and "range 1 (00:00:00:05 – 00:00:00:14)" in message
    assert " s " not in message and spans(window)[1] == (1.0, 1.4)
    # An in point before range 1 would swallow it: refused too.
    key_at(qtbot, window, 2, Qt.Key.Key_I)
    assert "would overlap range 1" in window.statusBar().currentMessage()
    assert spans(window)[1] == (1.0, 1.4)
    key_at(qtbot, window, 20, Qt.Key.Key_I)  # in the free stretch: taken
    assert spans(window)[1] == (0.8, 1.4)

    # N then I: the open end stops at the next range instead of running over it.
    key_at(qtbot, window, 15, Qt.Key.Key_N)
    key_at(qtbot, window, 17, Qt.Key.Key_I)
    assert spans(window)[2] == (0.68, 0.8)
    # N then O past a range: refused, the range would cover it.
    window.undo_stack.undo()  # drop range 3 again
    key_at(qtbot, window, 16, Qt.Key.Key_N)
    key_at(qtbot, window, 45, Qt.Key.Key_O)
    assert "would overlap range 2 (00:00:00:20 – 00:00:01:09)" in \
        window.statusBar().currentMessage()
    assert len(window.project.ranges) == 2
    # N with the playhead inside a range says so and starts nothing there.
    key_at(qtbot, window, 30, Qt.Key.Key_N)
    assert "inside range 2" in window.statusBar().currentMessage()
    key_at(qtbot, window, 45, Qt.Key.Key_O)
    assert spans(window)[2] == (1.4, 1.84)  # from range 2's end


def test_a_dragged_edge_stops_at_the_neighbouring_range(qtbot, window):
    window.set_range(0.2, 0.6)
    window.new_range()
    window.set_range(1.0, 1.4)
    tl, canvas = window.timeline, window.timeline.canvas()
    tl.snapping = False
    start, end = QtCore.QPoint(round(tl.x_at(1.0)) + 2, 10), QtCore.QPoint(round(tl.x_at(0.3)), 10)
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=start)
    for k in range(1, 5):
        qtbot.mouseMove(canvas, start + (end - start) * (k / 4))
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=end)
    assert spans(window) == [(0.2, 0.6), (0.6, 1.4)]


def test_overlapping_ranges_of_an_old_project_are_named_in_timecode_at_export(qtbot, window,
                                                                              tmp_path):
    # A project saved before overlaps were refused.
    window.project.ranges = [SyncRange(0.2, 0.8), SyncRange(0.6, 1.0)]
    jobs = []
    window.bridge.failed.connect(lambda *args: jobs.append(args))
    assert window.export(ExportPrefs(output=str(tmp_path / "x.mkv"), codec="ffv1")) is None
    assert window.warnings == ["Range 1 (00:00:00:05 – 00:00:00:19) and range 2 "
                               "(00:00:00:15 – 00:00:00:24) overlap from 00:00:00:15: each "
                               "frame needs one setting, so trim one of them"]
    assert not jobs


def test_transport_keys_work_after_enter_in_the_inspector(qtbot, window):
    window.set_range(0.2, 1.6)
    states = []
    window.playback.state_changed.connect(states.append)
    spin = window.inspector.gain
    qtbot.mouseClick(spin.lineEdit(), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(spin.hasFocus, timeout=2000)
    spin.lineEdit().selectAll()
    qtbot.keyClicks(spin.lineEdit(), "1.5")
    assert window.project.ranges[0].settings.openness_gain == 1.0  # still being typed
    qtbot.keyClick(spin.lineEdit(), Qt.Key.Key_Return)
    assert window.project.ranges[0].settings.openness_gain == 1.5
    # The keys go wherever the focus now is, as a user's would.
    qtbot.keyClick(QtWidgets.QApplication.focusWidget(), Qt.Key.Key_L)
    qtbot.waitUntil(lambda: window.playback.rate > 0, timeout=2000)
    qtbot.keyClick(QtWidgets.QApplication.focusWidget(), Qt.Key.Key_Space)
    qtbot.waitUntil(lambda: states[-1:] == ["paused"], timeout=2000)
    assert spin.value() == 1.5 and not spin.hasFocus()

    # So do clicks on a field's arrows: nothing was typed.
    qtbot.mouseClick(spin, Qt.MouseButton.LeftButton,
                     pos=QtCore.QPoint(spin.width() - 6, spin.height() // 4))
    assert spin.value() == pytest.approx(1.55)
    qtbot.waitUntil(lambda: not spin.hasFocus(), timeout=2000)
    qtbot.keyClick(QtWidgets.QApplication.focusWidget(), Qt.Key.Key_L)
    qtbot.waitUntil(lambda: window.playback.rate > 0, timeout=2000)
    qtbot.keyClick(QtWidgets.QApplication.focusWidget(), Qt.Key.Key_Space)
    qtbot.waitUntil(lambda: states[-1:] == ["paused"], timeout=2000)

    # A choice from a list hands the keys back as well.
    box = window.inspector.mask_kind
    box.setFocus()
    qtbot.waitUntil(box.hasFocus, timeout=2000)
    qtbot.keyClick(box, Qt.Key.Key_Down)
    assert window.project.ranges[0].settings.mask_kind == "lips"
    qtbot.waitUntil(lambda: not box.hasFocus(), timeout=2000)
    qtbot.keyClick(QtWidgets.QApplication.focusWidget(), Qt.Key.Key_L)
    qtbot.waitUntil(lambda: window.playback.rate > 0, timeout=2000)
    assert window.project.ranges[0].settings.mask_kind == "lips"


def test_a_target_is_picked_on_purpose_never_by_a_stray_click(qtbot, window):
    window.set_range(0.2, 1.6)
    viewer, inspector = window.viewer, window.inspector
    centre = viewer.map_from_frame(80, 48).toPoint()
    steps = window.undo_stack.count()
    qtbot.mouseClick(viewer, Qt.MouseButton.LeftButton, pos=centre)
    assert window.project.ranges[0].settings.target is None
    assert window.undo_stack.count() == steps

    # Pick Face arms one pick; the click after it picks, then a plain click is plain again.
    qtbot.mouseClick(inspector.pick, Qt.MouseButton.LeftButton)
    assert viewer.is_picking() and inspector.pick.isChecked()
    qtbot.mouseClick(viewer, Qt.MouseButton.LeftButton, pos=centre)
    target = window.project.ranges[0].settings.target
    assert target is not None and (target.x, target.y) == pytest.approx((80, 48), abs=1)
    assert not viewer.is_picking() and not inspector.pick.isChecked()
    assert "(00:00:00:00)" in inspector.target.text()  # the pick's time, in timecode
    elsewhere = viewer.map_from_frame(20, 20).toPoint()
    qtbot.mouseClick(viewer, Qt.MouseButton.LeftButton, pos=elsewhere)
    assert window.project.ranges[0].settings.target == target

    # Alt+click picks at once; Escape disarms an armed pick.
    qtbot.mouseClick(viewer, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.AltModifier,
                     viewer.map_from_frame(40, 30).toPoint())
    assert window.project.ranges[0].settings.target.x == pytest.approx(40, abs=1)
    qtbot.mouseClick(inspector.pick, Qt.MouseButton.LeftButton)
    qtbot.keyClick(viewer, Qt.Key.Key_Escape)
    assert not viewer.is_picking() and not inspector.pick.isChecked()
    assert "Pick Face" in " ".join(w.text() for w in inspector.findChildren(QtWidgets.QLabel))
