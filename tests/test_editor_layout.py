"""The editor's layout (issue 13, faults 9 and 14): a timeline dock that shows every lane, lanes
that scroll, docks shown and hidden from View and remembered; a ruler whose labels are whole
and uncovered, and waveforms that fill their lane and stay smooth at the deepest zoom."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6 import QtCore, QtGui, QtWidgets

from desktop.main_window import MainWindow
from desktop.playback import Playback
from desktop.settings import Settings
from engine.media.peaks import PeakPyramid
from ui import theme
from ui.timeline import LABEL_H, Timeline

Qt = QtCore.Qt


def make_settings(path) -> Settings:
    return Settings(QtCore.QSettings(str(path), QtCore.QSettings.Format.IniFormat))


def open_window(qtbot, settings: Settings, size: tuple[int, int] = (1440, 900)) -> MainWindow:
    win = MainWindow(settings, Playback(audio_device=None))
    qtbot.addWidget(win)
    win.resize(*size)
    win.show()
    qtbot.waitExposed(win)
    qtbot.wait(50)
    return win


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "settings.ini")


def every_lane_shown(win: MainWindow) -> bool:
    tl = win.timeline
    return (tl.lane_rect("dub").bottom() <= tl.canvas().height()
            and not tl.lanes_scroll().isVisible())


@pytest.mark.parametrize("size", [(1280, 720), (1440, 900)])
def test_every_lane_is_in_view_at_editor_window_sizes(qtbot, settings, size):
    win = open_window(qtbot, settings, size)
    assert (win.width(), win.height()) == size  # the side docks no longer force it taller
    assert every_lane_shown(win)
    assert win.timeline.lane_rect("dub").height() >= 40
    win.close()


def test_short_dock_scrolls_lanes_and_grows_back_with_the_window(qtbot, settings):
    win = open_window(qtbot, settings)
    tl = win.timeline
    win.resizeDocks([win.timeline_dock], [120], Qt.Orientation.Vertical)  # dragged short
    qtbot.waitUntil(lambda: tl.lanes_scroll().isVisible())
    assert tl.lane_rect("dub").bottom() > tl.canvas().height()
    # The wheel over the track headers scrolls the lanes down to the dub.
    headers = tl.childAt(5, tl.canvas().height() // 2)
    for _ in range(10):
        event = QtGui.QWheelEvent(QtCore.QPointF(5, 20), QtCore.QPointF(5, 20),
                                  QtCore.QPoint(0, 0), QtCore.QPoint(0, -120),
                                  Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                                  Qt.ScrollPhase.NoScrollPhase, False)
        QtWidgets.QApplication.sendEvent(headers, event)
    dub = tl.lane_rect("dub")
    assert tl.lanes_scroll().value() == tl.lanes_scroll().maximum() > 0
    assert 0 <= dub.top() and dub.bottom() <= tl.canvas().height()
    # The window resized: the dock takes the height its lanes need again.
    win.resize(1500, 950)
    qtbot.waitUntil(lambda: every_lane_shown(win))
    assert tl.lane_rect("ruler").top() == 0
    win.close()


def view_action(win: MainWindow, title: str) -> QtGui.QAction:
    view = next(a.menu() for a in win.menuBar().actions() if a.text() == "&View")
    return next(a for a in view.actions() if a.text() == title)


def test_view_menu_hides_and_shows_the_docks(qtbot, settings):
    win = open_window(qtbot, settings)
    for title, dock in (("Timeline", win.timeline_dock), ("Inspector", win.inspector_dock),
                        ("Jobs", win.jobs_dock)):
        action = view_action(win, title)
        assert action.isEnabled() and action.isChecked()
        action.trigger()
        assert dock.isHidden() and not action.isChecked()
        action.trigger()
        assert dock.isVisible() and action.isChecked()
    win.close()


def test_the_layout_is_remembered(qtbot, tmp_path):
    win = open_window(qtbot, make_settings(tmp_path / "s.ini"))
    win.resizeDocks([win.timeline_dock], [380], Qt.Orientation.Vertical)
    qtbot.waitUntil(lambda: win.timeline_dock.height() == 380)
    view_action(win, "Jobs").trigger()
    win.close()
    again = open_window(qtbot, make_settings(tmp_path / "s.ini"))
    assert again.timeline_dock.height() == 380
    assert again.jobs_dock.isHidden() and not view_action(again, "Jobs").isChecked()
    again.close()


# -- the ruler and the waveforms (fault 14) ---------------------------------------------------
@pytest.fixture
def timeline(qtbot):
    tl = Timeline()
    qtbot.addWidget(tl)
    tl.resize(900, 300)
    tl.show()
    qtbot.waitExposed(tl)
    return tl


def canvas_image(tl: Timeline) -> QtGui.QImage:
    QtWidgets.QApplication.processEvents()
    return tl.canvas().grab().toImage().convertToFormat(QtGui.QImage.Format.Format_RGB888)


def pixels(image: QtGui.QImage) -> np.ndarray:
    ptr = image.constBits()
    rows = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine())
    return rows[:, :image.width() * 3].reshape(image.height(), image.width(), 3).astype(int)


def near(rgb: np.ndarray, colour: str, tolerance: int = 40) -> np.ndarray:
    c = QtGui.QColor(colour)
    return np.abs(rgb - np.array([c.red(), c.green(), c.blue()])).sum(axis=-1) < tolerance


def test_range_brackets_leave_the_timecode_labels_uncovered(timeline):
    timeline.set_clip(10.0, 25)
    timeline.set_playhead(8.0)  # its tab is accent coloured too: keep it away
    timeline.set_range(2.0, 4.0)  # the in point on a labelled second
    image = pixels(canvas_image(timeline))
    x_in, x_out = round(timeline.x_at(2.0)), round(timeline.x_at(4.0))
    label_band = image[:LABEL_H]
    for x in (x_in, x_out):
        assert not near(label_band[:, x - 8:x + 9], theme.ACCENT).any()
    # ... and the brackets are still drawn, beneath the labels.
    ruler = image[LABEL_H:round(timeline.lane_rect("ruler").bottom())]
    assert near(ruler[:, x_in:x_in + 8], theme.ACCENT).sum() >= 10


def test_every_ruler_label_is_whole_the_last_one_too(timeline):
    timeline.set_clip(10.0, 25)
    timeline.set_playhead(5.0)
    width = timeline.canvas().width()
    # The fitted view ends 0.2 s past 00:00:10:00: too little room right of that tick.
    assert width - timeline.x_at(10.0) < 60
    image = pixels(canvas_image(timeline))
    ink = image[:LABEL_H].sum(axis=-1) > 250  # light text on the dark ruler, antialiased too
    columns = np.flatnonzero(ink.any(axis=0))
    assert columns.max() < width - 1  # nothing runs off the right edge
    # The last label is drawn (moved left of its tick), not left out: ink up to near the edge.
    assert columns.max() > width - 30


def audio_lane_rows(tl: Timeline) -> tuple[int, int]:
    lane = tl.lane_rect("source")
    return round(lane.top()), round(lane.bottom())


def test_quiet_source_waveform_fills_its_lane(timeline):
    rate = 16000
    t = np.arange(rate * 4) / rate
    quiet = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)  # peaks at a fifth of full
    timeline.set_clip(4.0, 25, source_peaks=PeakPyramid.from_samples(quiet, rate))
    timeline.set_playhead(3.9)
    image = pixels(canvas_image(timeline))
    top, bottom = audio_lane_rows(timeline)
    wave = near(image[top:bottom, 200:700], theme.SOURCE_AUDIO[1])
    rows = np.flatnonzero(wave.any(axis=1))
    assert rows.max() - rows.min() >= 0.85 * (bottom - top)


def test_waveform_at_the_deepest_zoom_is_smooth_not_blocks(timeline):
    rate = 16000
    t = np.arange(rate * 4) / rate
    # A 1 kHz tone whose loudness swells and fades 8 times a second.
    swell = 0.05 + 0.95 * (0.5 + 0.5 * np.sin(2 * np.pi * 8 * t))
    signal = (swell * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    timeline.set_clip(4.0, 25, source_peaks=PeakPyramid.from_samples(signal, rate))
    timeline.set_playhead(3.9)
    timeline.set_view(1.0, 1.001)  # widened to the deepest zoom
    t0, t1 = timeline.visible_range()
    assert (t1 - t0) * 25 * 60 == pytest.approx(timeline.canvas().width(), rel=0.01)
    image = pixels(canvas_image(timeline))
    top, bottom = audio_lane_rows(timeline)
    wave = near(image[top:bottom, 150:850], theme.SOURCE_AUDIO[1])
    upper = np.array([np.flatnonzero(col)[0] for col in wave.T if col.any()])
    assert len(upper) > 600
    assert upper.max() - upper.min() >= 15  # the swell is drawn...
    assert np.abs(np.diff(upper)).max() <= 2  # ... as a slope, with no steps between blocks
