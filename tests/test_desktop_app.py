"""The main window: opening media, marking ranges, undo, the dub, render, export, projects."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
from PySide6 import QtCore, QtGui, QtWidgets

from desktop.main_window import MainWindow
from desktop.relink_dialog import RelinkDialog
from engine.face.analysis import Target
from engine.project import Project, Recovery
from tests.conftest import shared_clip
from tests.editor_window import close_window, new_window, quiet_dialogs
from tests.media_factory import make_video, write_tone_wav

Qt = QtCore.Qt

try:
    from desktop.playback import Playback

    def make_playback():
        return Playback(audio_device=None)  # no sound device in tests: picture on the timer
except ImportError:  # playback not written yet: a stand-in that shows frames on demand
    from engine.media.reader import VideoReader

    class Playback(QtCore.QObject):
        frame_ready = QtCore.Signal(int, object)
        position_changed = QtCore.Signal(float)
        state_changed = QtCore.Signal(str)
        notice = QtCore.Signal(str)
        rate = 0.0

        def set_media(self, video_path, **kwargs):
            self.reader, self.i = VideoReader(video_path), 0
            self.seek(0.0)

        def seek(self, t):
            self._show(self.reader.index_at(t))

        def scrub(self, t):
            self.seek(t)

        def step(self, n):
            self._show(min(max(self.i + n, 0), self.reader.frame_count - 1))

        def _show(self, i):
            self.i = i
            self.position_changed.emit(float(self.reader.times[i]))
            self.frame_ready.emit(i, self.reader.frame(i).rgb())

        def set_dub_offset(self, s): ...
        def set_ranges(self, ranges): self.ranges = list(ranges)
        def set_audio(self, which): ...
        def shuttle(self, rate): ...
        def toggle(self): ...
        def close(self): ...

    def make_playback():
        return Playback()


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    warnings = quiet_dialogs(monkeypatch)  # modal boxes would wait for a click forever
    win = new_window(qtbot, tmp_path, make_playback())
    win.warnings = warnings
    yield win
    close_window(win)  # also when a test left the window refusing to close


def open_clip(qtbot, win: MainWindow, video: Path, dub: Path | None = None) -> None:
    win.open_video(str(video), dub=str(dub) if dub else None)
    qtbot.waitUntil(lambda: win._source_rgb is not None, timeout=10000)
    if dub:
        qtbot.waitUntil(lambda: bool(win.project.dubs), timeout=10000)


def go_to_frame(qtbot, win: MainWindow, index: int) -> None:
    win.playback.seek(float(win.clip.times[index]))
    qtbot.waitUntil(lambda: win.frame_index == index, timeout=5000)


@pytest.fixture
def synthetic(tmp_path):
    return (make_video(tmp_path / "v.mp4", frames=50, size=(160, 96)),
            write_tone_wav(tmp_path / "dub.wav", 2.5))


def test_empty_window_and_settings_round_trip(window, tmp_path):
    assert window.windowTitle() == "Redub Studio"
    assert not window.inspector.form.isEnabled()
    assert not window.render_action.isEnabled()
    window.settings.add_recent(str(tmp_path / "a.mp4"))
    window.settings.add_recent(str(tmp_path / "b.mp4"))
    window.settings.add_recent(str(tmp_path / "a.mp4"))
    assert window.settings.recent_files() == [str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")]


def test_keys_mark_in_and_out_and_undo_redo(qtbot, window, synthetic):
    video, dub = synthetic
    open_clip(qtbot, window, video, dub)
    assert window.timeline.set_dub is not None and window.project.media.path == str(video)
    go_to_frame(qtbot, window, 10)
    window.activateWindow()
    qtbot.keyClick(window, Qt.Key.Key_I)
    qtbot.keyClick(window, Qt.Key.Key_Right, Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: window.frame_index == 20, timeout=5000)
    qtbot.keyClick(window, Qt.Key.Key_O)
    r = window.project.ranges[0]
    assert (r.start, r.end) == pytest.approx((0.4, 0.84))  # out includes frame 20
    assert window.timeline.range == pytest.approx((0.4, 0.84))
    assert window.inspector.form.isEnabled()
    assert window.inspector.heading.text().endswith("00:00:00:10 – 00:00:00:20")

    window.inspector.gain.setValue(1.5)
    assert window.project.ranges[0].settings.openness_gain == 1.5
    window.set_dub_offset(0.2)
    assert window.timeline.dub_offset == pytest.approx(0.2)
    window.undo_stack.undo()
    assert window.project.dubs[0].offset == 0.0 and window.timeline.dub_offset == 0.0
    window.undo_stack.undo()
    assert window.project.ranges[0].settings.openness_gain == 1.0
    assert window.inspector.gain.value() == 1.0
    window.undo_stack.undo()  # the out point
    assert window.project.ranges[0].end == pytest.approx(2.0)
    window.undo_stack.undo()  # the range itself
    assert window.project.ranges == [] and window.timeline.range is None
    for _ in range(4):
        window.undo_stack.redo()
    assert window.project.dubs[0].offset == pytest.approx(0.2)
    assert window.project.ranges[0].settings.openness_gain == 1.5
    qtbot.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert window.project.dubs[0].offset == 0.0
    qtbot.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier
                   | Qt.KeyboardModifier.ShiftModifier)
    assert window.project.dubs[0].offset == pytest.approx(0.2)
    qtbot.keyClick(window, Qt.Key.Key_Home)
    qtbot.waitUntil(lambda: window.frame_index == 0, timeout=5000)
    qtbot.keyClick(window, Qt.Key.Key_End)
    qtbot.waitUntil(lambda: window.frame_index == 49, timeout=5000)


def test_space_toggles_playback_through_the_viewer(qtbot, window, synthetic):
    open_clip(qtbot, window, synthetic[0])
    window.viewer.setFocus()
    states = []
    window.playback.state_changed.connect(states.append)
    qtbot.keyClick(window.viewer, Qt.Key.Key_Space)
    qtbot.keyClick(window.viewer, Qt.Key.Key_Space)
    assert states[:2] == ["playing", "paused"]


def test_timeline_drags_change_the_project(qtbot, window, synthetic):
    video, dub = synthetic
    open_clip(qtbot, window, video, dub)
    tl = window.timeline
    canvas = tl.canvas()
    # Scrub: a click in the ruler moves the playhead and the picture.
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton,
                     pos=QtCore.QPoint(round(tl.x_at(1.0)) + 1, 8))
    qtbot.waitUntil(lambda: window.frame_index == 25, timeout=5000)
    window.set_range(0.4, 1.2)

    def drag(start: QtCore.QPoint, end: QtCore.QPoint) -> None:
        qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=start)
        for k in range(1, 5):
            qtbot.mouseMove(canvas, start + (end - start) * (k / 4))
        qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=end)

    tl.snapping = False
    drag(QtCore.QPoint(round(tl.x_at(0.4)) + 2, 10), QtCore.QPoint(round(tl.x_at(0.6)) + 2, 10))
    assert window.project.ranges[0].start == pytest.approx(0.6, abs=0.041)
    y = round(tl.lane_rect("dub").center().y())
    drag(QtCore.QPoint(round(tl.x_at(1.0)), y), QtCore.QPoint(round(tl.x_at(1.4)), y))
    assert window.project.dubs[0].offset == pytest.approx(0.4, abs=0.041)
    window.undo_stack.undo()  # one drag is one undo step
    assert window.project.dubs[0].offset == 0.0


def test_drop_video_and_audio(qtbot, window, synthetic):
    video, dub = synthetic
    mime = QtCore.QMimeData()
    mime.setUrls([QtCore.QUrl.fromLocalFile(str(video)), QtCore.QUrl.fromLocalFile(str(dub))])
    event = QtGui.QDropEvent(QtCore.QPointF(50, 50), Qt.DropAction.CopyAction, mime,
                             Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    qtbot.waitUntil(lambda: window.project is not None and bool(window.project.dubs),
                    timeout=10000)
    assert window.project.media.path == str(video)
    assert window.settings.recent_files()[0] == str(video)


def test_save_and_reload_the_project(qtbot, window, synthetic, tmp_path, monkeypatch):
    video, dub = synthetic
    open_clip(qtbot, window, video, dub)
    window.set_range(0.2, 1.0)
    window.set_range_setting("mask_feather", 0.2)
    window.set_dub_offset(0.12)
    window.autosave()
    assert window.recovery.path.exists()
    target = tmp_path / "p.redub"
    monkeypatch.setattr(QtWidgets.QFileDialog, "getSaveFileName",
                        lambda *a, **k: (str(target), ""))
    qtbot.keyClick(window, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    assert target.exists() and not window._dirty
    saved = Project.load(target)
    assert saved.ranges[0].settings.mask_feather == 0.2 and saved.dubs[0].offset == 0.12

    window.new_project()
    assert window.project is None
    window.open_project(str(target))
    qtbot.waitUntil(lambda: window.project is not None and window._source_rgb is not None,
                    timeout=10000)
    assert window.project.ranges[0].start == 0.2
    assert window.timeline.range == pytest.approx((0.2, 1.0))
    assert window.timeline.dub_offset == pytest.approx(0.12)
    assert window.inspector.feather.value() == pytest.approx(0.2)


def test_recovery_is_offered_for_a_newer_autosave(qtbot, window, synthetic, tmp_path,
                                                  monkeypatch):
    video, dub = synthetic
    open_clip(qtbot, window, video, dub)
    target = tmp_path / "p.redub"
    window._save_to(str(target))
    window.set_range(0.2, 1.0)
    crashed = copy.deepcopy(window.project)
    window.new_project()  # (saving nothing: Discard)
    Recovery(target).write(crashed)  # what a session that then crashed leaves
    asked = []
    monkeypatch.setattr(QtWidgets.QMessageBox, "question",
                        lambda *a, **k: asked.append(a[2]) or
                        QtWidgets.QMessageBox.StandardButton.Yes)
    before = window.project
    window.open_project(str(target))
    qtbot.waitUntil(lambda: window.project is not before, timeout=10000)
    assert window.project.ranges[0].start == 0.2
    assert "autosave" in asked[0]
    assert window._dirty


# -- the real engine on a shared clip ----------------------------------------------------

def test_render_preview_cancel_and_export_on_a_shared_clip(qtbot, window, tmp_path,
                                                              monkeypatch):
    video = shared_clip("hdtf_aoc_512.mp4")
    dub = shared_clip("speech_radio31_16k.wav")
    open_clip(qtbot, window, video, dub)
    go_to_frame(qtbot, window, 25)
    qtbot.keyClick(window, Qt.Key.Key_I)
    go_to_frame(qtbot, window, 49)
    qtbot.keyClick(window, Qt.Key.Key_O)
    assert (window.project.ranges[0].start, window.project.ranges[0].end) == \
        pytest.approx((1.0, 2.0))

    previews = []
    window.bridge.preview.connect(lambda job, i, image: previews.append(i))
    ids = []

    def is_job(job_id, *args):
        return job_id in ids

    with qtbot.waitSignal(window.bridge.finished, timeout=120000, check_params_cb=is_job):
        ids.append(window.render_range())
        assert window.range_states() == [(1.0, 2.0, "rendering")]
    assert previews and all(0 <= i < 200 for i in previews)
    assert window.range_states() == [(1.0, 2.0, "rendered")]
    assert window.viewer.compare_mode() == "result"
    # The result side shows the rendered frame (from the preview or the rendered file).
    qtbot.waitUntil(lambda: window.viewer._result_rgb is not None, timeout=5000)
    window.set_compare_mode("split")
    assert window.compare_actions["split"].isChecked()
    # The face analysis (through the bridge) feeds the overlays.
    qtbot.waitUntil(lambda: window.analysis is not None, timeout=60000)
    go_to_frame(qtbot, window, 30)
    assert window.viewer._overlay["box"] is not None

    # Target picking: a deliberate pick on a face sets the range's target (at the playhead).
    window.viewer.target_picked.emit(256.0, 250.0)
    assert window.project.ranges[0].settings.target == Target(256.0, 250.0, 1.2)
    assert "256" in window.inspector.target.text()
    window.undo_stack.undo()

    window.set_range_setting("openness_gain", 1.3)
    assert window.range_states() == [(1.0, 2.0, "stale")]
    window.undo_stack.undo()
    assert window.range_states() == [(1.0, 2.0, "rendered")]

    # Cancel: a second render, cancelled from its row in the jobs panel.
    window.set_range_setting("openness_gain", 1.3)
    with qtbot.waitSignal(window.bridge.cancelled, timeout=60000, check_params_cb=is_job):
        second = window.render_range()
        ids[:] = [second]
        window.jobs.rows[second].cancel.click()
    assert window.jobs.rows[second].state == "cancelled"
    assert window.range_states() == [(1.0, 2.0, "stale")]

    # Export of the marked ranges; the folder is revealed when done.
    revealed = []
    monkeypatch.setattr(QtGui.QDesktopServices, "openUrl", lambda url: revealed.append(url))
    from engine.project import ExportPrefs
    out = tmp_path / "out.mov"
    with qtbot.waitSignal(window.bridge.finished, timeout=120000, check_params_cb=is_job):
        ids[:] = [window.export(ExportPrefs(output=str(out), codec="prores",
                                            quality={"profile": "0"}))]
    export = ids[0]
    assert out.exists() and window.jobs.rows[export].state == "done"
    assert revealed and revealed[0].toLocalFile() == str(tmp_path)


def test_a_failed_job_shows_the_engine_message(qtbot, window, synthetic, tmp_path):
    video, dub = synthetic
    open_clip(qtbot, window, video, dub)
    window.set_range(0.2, 1.0)
    from engine.project import ExportPrefs
    with qtbot.waitSignal(window.bridge.failed, timeout=60000) as failed:
        job = window.export(ExportPrefs(output=str(tmp_path / "x.mp4"), codec="ffv1"))
    assert failed.args[0] == job
    row = window.jobs.rows[job]
    assert row.state == "failed" and row.message.text() == failed.args[1]
    assert row.message.text()


def test_export_dialog_presets(qtbot, tmp_path):
    from desktop.export_dialog import ExportDialog
    from engine.project import ExportPrefs

    dialog = ExportDialog(ExportPrefs(), str(tmp_path / "clip_redub.mp4"), has_ranges=False)
    qtbot.addWidget(dialog)
    assert dialog.whole.isChecked() and not dialog.ranges.isEnabled()
    dialog.codec.setCurrentIndex(dialog.codec.findData("prores"))
    assert dialog.output.text().endswith(".mov")
    choice = dialog.choice()
    assert choice.prefs.codec == "prores" and choice.prefs.quality == {"profile": "3"}
    assert not choice.ranges_only


def test_clicking_a_range_in_the_state_lane_selects_it(qtbot, window, synthetic):
    video, dub = synthetic
    open_clip(qtbot, window, video, dub)
    window.set_range(0.2, 0.6)
    window.new_range()
    window.set_range(1.0, 1.4)
    assert window.selected == 1 and window.timeline.range == pytest.approx((1.0, 1.4))
    tl = window.timeline
    y = round(tl.lane_rect("states").center().y())
    qtbot.mouseClick(tl.canvas(), Qt.MouseButton.LeftButton,
                     pos=QtCore.QPoint(round(tl.x_at(0.4)), y))
    assert window.selected == 0 and tl.range == pytest.approx((0.2, 0.6))
    if hasattr(window.playback, "ranges"):  # the result audio plays the dub in every range
        assert window.playback.ranges == [(0.2, 0.6), (1.0, 1.4)]
    assert window.inspector.heading.text().startswith("Range 1 of 2")
    # I and O now edit the range that was picked, not the last one made.
    go_to_frame(qtbot, window, 2)
    window.activateWindow()
    qtbot.keyClick(window, Qt.Key.Key_I)
    assert (window.project.ranges[0].start, window.project.ranges[1].start) == \
        pytest.approx((0.08, 1.0))


def test_moved_media_is_relinked_through_the_dialog(qtbot, window, synthetic, tmp_path,
                                                    monkeypatch):
    video, dub = synthetic
    open_clip(qtbot, window, video, dub)
    window.set_range(0.2, 1.0)
    target = tmp_path / "p.redub"
    window._save_to(str(target))
    window.new_project()
    # Renamed, in another folder: the automatic search by name cannot find it.
    moved = tmp_path / "elsewhere" / "renamed.mp4"
    moved.parent.mkdir()
    video.rename(moved)
    monkeypatch.setattr(QtWidgets.QFileDialog, "getOpenFileName",
                        lambda *a, **k: (str(moved), ""))
    seen = []

    def relink(project, folder, missing):
        dialog = RelinkDialog(project, folder, missing, window)
        qtbot.addWidget(dialog)
        ok = dialog.buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Ok)
        seen.append((list(dialog.missing), ok.isEnabled()))
        qtbot.mouseClick(dialog.locate_buttons[0], Qt.MouseButton.LeftButton)
        seen.append((list(dialog.missing), ok.isEnabled()))
        return ok.isEnabled()

    monkeypatch.setattr(window, "relink", relink)
    window.open_project(str(target))
    qtbot.waitUntil(lambda: window.project is not None and window._source_rgb is not None,
                    timeout=10000)
    assert seen == [([str(video)], False), ([], True)]
    assert window.project.media.path == str(moved) and window._dirty
    assert window.project.ranges[0].start == 0.2


def test_render_with_a_missing_model_says_which_file_to_put_where(qtbot, window, synthetic,
                                                                   monkeypatch):
    from desktop.model_download import MissingModelDialog
    video, dub = synthetic
    open_clip(qtbot, window, video, dub)
    window.set_range(0.2, 1.0)
    window.set_range_setting("backend", "wav2lip")
    # The tests run offline (REDUB_OFFLINE): no download is tried, the missing-model dialog
    # (answered with Cancel here) names the file under its details.
    shown = []
    monkeypatch.setattr(MissingModelDialog, "exec",
                        lambda self: shown.append(self.detailedText()) or 0)
    assert window.render_action.isEnabled() and window.render_range() is None
    assert list(window.renders) == [] and len(shown) == 1
    assert "model 'wav2lip_96' (generator) is missing" in shown[0]
