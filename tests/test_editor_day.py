"""The editor used for a day (issue 13): New Project, replacing the dub, rendering."""
from __future__ import annotations


import numpy as np
import pytest
from PySide6 import QtCore, QtGui, QtWidgets

from tests.editor_window import go_to_frame, mark, open_clip, stub_engine
from tests.editor_window import window  # noqa: F401 (fixture)
from tests.media_factory import make_video, write_tone_wav

Qt = QtCore.Qt
CTRL, SHIFT = Qt.KeyboardModifier.ControlModifier, Qt.KeyboardModifier.ShiftModifier


@pytest.fixture
def engine(window, monkeypatch):
    return stub_engine(window, monkeypatch)


@pytest.fixture
def media(tmp_path):
    return (make_video(tmp_path / "v.mp4", frames=50, size=(160, 96), audio_rate=16000),
            write_tone_wav(tmp_path / "dub.wav", 2.5),
            write_tone_wav(tmp_path / "other.wav", 1.5))


def preview_image(value: int) -> QtGui.QImage:
    image = QtGui.QImage(160, 96, QtGui.QImage.Format.Format_RGB888)
    image.fill(QtGui.QColor(value, value, value))
    return image


def test_new_project_resets_the_timeline_playback_and_jobs(qtbot, window, engine, media):
    video, dub, _ = media
    open_clip(qtbot, window, video, dub)
    tl = window.timeline
    mark(qtbot, window, 10, 30)
    qtbot.keyClick(window, Qt.Key.Key_R)
    job = window.renders[0].job
    window.bridge.unplaced.emit(job, [(12, 14)])
    window.bridge.preview.emit(job, 30, preview_image(200))
    qtbot.waitUntil(lambda: tl._source_peaks is not None and bool(tl._thumbs), timeout=10000)
    assert tl.range is not None and tl._states and tl.unplaced == [(12, 14)]
    states: list[str] = []
    window.playback.state_changed.connect(states.append)
    qtbot.keyClick(window, Qt.Key.Key_Space)
    assert states == ["playing"]

    qtbot.keyClick(window, Qt.Key.Key_N, CTRL)

    assert window.project is None and window.clip is None
    assert states == ["playing", "paused"] and window.playback.state == "paused"
    assert tl._duration == 0 and not tl._thumbs and tl._thumb_path is None
    assert tl._source_peaks is None and tl._dub_peaks is None and tl.dub_offset == 0
    assert tl.range is None and tl._ranges == [] and tl._states == [] and tl.unplaced == []
    assert tl.playhead == 0
    assert window.status_time.text() == "--:--:--:--"
    assert list(window.renders) == [] and window.renders.previews == {} \
        and window.renders.result_rgb is None
    assert job in engine  # the old project's render is cancelled
    assert not window.empty_hint.isHidden() and window.viewer._source_rgb is None
    # Without a clip the transport keys do nothing, and no old frame comes back.
    qtbot.wait(100)
    for key in (Qt.Key.Key_Space, Qt.Key.Key_L, Qt.Key.Key_Right, Qt.Key.Key_End):
        qtbot.keyClick(window, key)
    qtbot.wait(200)
    assert states == ["playing", "paused"] and window.playback.state == "paused"
    assert window._source_rgb is None and tl.playhead == 0 and window.time == 0

    # And the next clip opens on a clean timeline.
    open_clip(qtbot, window, video, dub)
    assert tl._duration > 0 and tl._states == [] and tl.range is None
    assert window.undo_stack.count() == 1 and window.undo_stack.undoText() == "Import Dub"


def test_replacing_the_dub_is_undoable_and_keeps_the_history(qtbot, window, engine, media,
                                                               monkeypatch):
    video, dub, other = media
    open_clip(qtbot, window, video, dub)
    mark(qtbot, window, 10, 30)
    window.set_dub_offset(0.2)
    go_to_frame(qtbot, window, 20)
    history = window.undo_stack.count()
    assert history == 4  # the first dub, in, out, the dub's move

    monkeypatch.setattr(QtWidgets.QFileDialog, "getOpenFileName",
                        lambda *a, **k: (str(other), ""))
    qtbot.keyClick(window, Qt.Key.Key_I, CTRL | SHIFT)
    qtbot.waitUntil(lambda: window.project.dubs[0].media.path == str(other), timeout=10000)
    tl = window.timeline
    assert window.undo_stack.count() == history + 1
    assert window.undo_stack.undoText() == "Replace Dub"
    assert tl._dub_name == "other.wav" and tl._dub_duration == pytest.approx(1.5)
    assert window.playback._dub_path == str(other)
    assert tl.playhead == pytest.approx(float(window.clip.times[20]))  # not sent to the start

    qtbot.keyClick(window, Qt.Key.Key_Z, CTRL)
    assert window.project.dubs[0].media.path == str(dub)
    assert window.project.dubs[0].offset == pytest.approx(0.2)
    assert tl._dub_name == "dub.wav" and tl._dub_duration == pytest.approx(2.5)
    assert tl._dub_peaks is not None and tl.dub_offset == pytest.approx(0.2)
    assert window.playback._dub_path == str(dub)
    assert tl.playhead == pytest.approx(float(window.clip.times[20]))
    assert window._dirty

    # The edits before the replacement are still there to undo.
    qtbot.keyClick(window, Qt.Key.Key_Z, CTRL)
    assert window.project.dubs[0].offset == 0.0 and tl.dub_offset == 0.0
    qtbot.keyClick(window, Qt.Key.Key_Z, CTRL | SHIFT)
    qtbot.keyClick(window, Qt.Key.Key_Z, CTRL | SHIFT)
    assert window.project.dubs[0].media.path == str(other) and tl._dub_name == "other.wav"
    assert window.project.dubs[0].offset == 0.0
    assert (window.project.ranges[0].start, window.project.ranges[0].end) == \
        pytest.approx((0.4, 1.24))
    # All the way back: the clip as opened, before any dub.
    for _ in range(history + 1):
        qtbot.keyClick(window, Qt.Key.Key_Z, CTRL)
    assert not window.undo_stack.canUndo()
    assert window.project.dubs == [] and window.project.ranges == []
    assert tl._dub_peaks is None and tl._dub_duration == 0 and window.playback._dub_path is None


def test_a_render_leaves_the_playhead_where_the_editor_parked_it(qtbot, window, engine,
                                                                media):
    video, dub, _ = media
    open_clip(qtbot, window, video, dub)
    mark(qtbot, window, 10, 30)
    go_to_frame(qtbot, window, 20)
    parked = window.timeline.playhead
    qtbot.keyClick(window, Qt.Key.Key_R)
    job = window.renders[0].job
    assert window.range_states() == [(0.4, 1.24, "rendering")]
    for index in range(10, 31):  # the engine's previews, frame by frame
        window.bridge.preview.emit(job, index, preview_image(8 * index % 256))
        qtbot.wait(5)
    qtbot.wait(200)
    assert window.frame_index == 20 and window.timeline.playhead == parked
    assert window.time == parked
    # The parked frame shows its result as it was rendered, beside the source.
    assert window.viewer.compare_mode() == "result"
    result = window.viewer._result_rgb
    assert result is not None and np.all(result == 8 * 20 % 256)
