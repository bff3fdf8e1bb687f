from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import pytest
from PySide6 import QtCore, QtGui, QtWidgets

from ui import viewer as viewer_module
from ui.viewer import Viewer

Qt = QtCore.Qt


def coordinate_frame(width: int = 200, height: int = 120) -> np.ndarray:
    """Each pixel says where it is: red = x, green = y."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x, y, np.full_like(x, 77)], -1).astype(np.uint8)


def make_viewer(qtbot, size=(500, 400)) -> Viewer:
    v = Viewer()
    qtbot.addWidget(v)
    v.resize(*size)
    v.show()
    qtbot.waitExposed(v)
    return v


def wheel(widget: QtWidgets.QWidget, pos: QtCore.QPointF, notches: float,
          modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    event = QtGui.QWheelEvent(pos, widget.mapToGlobal(pos), QtCore.QPoint(),
                              QtCore.QPoint(0, round(120 * notches)), Qt.MouseButton.NoButton,
                              modifiers, Qt.ScrollPhase.NoScrollPhase, False)
    QtWidgets.QApplication.sendEvent(widget, event)


def pixel(image: QtGui.QImage, x: float, y: float) -> tuple[int, int, int]:
    c = image.pixelColor(int(x), int(y))
    return c.red(), c.green(), c.blue()


def test_true_aspect_and_fit(qtbot):
    v = make_viewer(qtbot)
    v.set_sample_aspect_ratio(Fraction(4, 3))
    v.set_frames(coordinate_frame())
    rect = v.image_rect()
    assert rect.width() / rect.height() == pytest.approx(200 * 4 / 3 / 120)
    # Fit: the frame touches both sides (it is the wider shape) and is centred vertically.
    assert rect.left() == pytest.approx(0) and rect.right() == pytest.approx(500)
    assert rect.center().y() == pytest.approx(200)
    v.resize(900, 300)
    assert v.image_rect().height() == pytest.approx(300)  # still fitting, now by height
    assert v.image_rect().center().x() == pytest.approx(450)


def test_click_maps_to_frame_pixels_under_zoom_pan_and_non_square_pixels(qtbot):
    v = make_viewer(qtbot)
    v.set_sample_aspect_ratio(Fraction(4, 3))
    v.set_frames(coordinate_frame())
    anchor = QtCore.QPointF(180, 150)
    under = v.map_to_frame(anchor)
    wheel(v, anchor, 3)  # zoom in around the cursor
    assert v.scale() > 3 and not v.is_fit()
    assert v.map_to_frame(anchor) == pytest.approx(under)  # the point under the cursor stays
    # Middle-button pan.
    qtbot.mousePress(v, Qt.MouseButton.MiddleButton, pos=QtCore.QPoint(300, 300))
    qtbot.mouseMove(v, QtCore.QPoint(263, 323))
    qtbot.mouseRelease(v, Qt.MouseButton.MiddleButton, pos=QtCore.QPoint(263, 323))
    assert v.map_to_frame(anchor) == pytest.approx((under[0] + 37 / (v.scale() * 4 / 3),
                                                    under[1] - 23 / v.scale()))
    clicks = []
    v.clicked.connect(lambda x, y: clicks.append((x, y)))
    shot = v.grab().toImage()
    for pos in (QtCore.QPoint(231, 187), QtCore.QPoint(20, 390), QtCore.QPoint(470, 60)):
        qtbot.mouseClick(v, Qt.MouseButton.LeftButton, pos=pos)
        x, y = clicks[-1]
        # The pixel drawn under the cursor is the one reported (red = x, green = y), up to
        # half a screen pixel: the event is at the screen pixel's corner, the sample at its
        # centre.
        r, g, _ = pixel(shot, pos.x(), pos.y())
        sx, sy = v.scale() * 4 / 3, v.scale()
        assert abs(x - r) <= 0.5 + 0.5 / sx and abs(y - g) <= 0.5 + 0.5 / sy
    qtbot.mouseClick(v, Qt.MouseButton.LeftButton, pos=QtCore.QPoint(470, 12))  # off the frame
    assert len(clicks) == 3


def test_space_drag_pans_without_clicking(qtbot):
    v = make_viewer(qtbot)
    v.set_frames(coordinate_frame())
    v.zoom_by(2)
    clicks = []
    v.clicked.connect(lambda x, y: clicks.append((x, y)))
    before = v.image_rect().topLeft()
    qtbot.keyPress(v, Qt.Key.Key_Space)
    qtbot.mousePress(v, Qt.MouseButton.LeftButton, pos=QtCore.QPoint(250, 200))
    qtbot.mouseMove(v, QtCore.QPoint(270, 190))
    qtbot.mouseRelease(v, Qt.MouseButton.LeftButton, pos=QtCore.QPoint(270, 190))
    qtbot.keyRelease(v, Qt.Key.Key_Space)
    assert v.image_rect().topLeft() - before == QtCore.QPointF(20, -10)
    assert clicks == []
    qtbot.keyClick(v, Qt.Key.Key_1)
    assert v.scale() == pytest.approx(1 / v.devicePixelRatioF())
    qtbot.keyClick(v, Qt.Key.Key_F)
    assert v.is_fit()


def solid(colour: tuple[int, int, int], size=(90, 160)) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (*size, 3)).copy()


def test_split_wipe_shows_source_left_and_result_right(qtbot):
    v = make_viewer(qtbot, (480, 270))
    red, blue = (200, 40, 40), (40, 40, 200)
    v.set_frames(solid(red), solid(blue))
    v.set_compare_mode("split")
    v.set_wipe(0.3)
    rect = v.image_rect()
    y = rect.top() + rect.height() * 0.8  # below the labels

    def at(fraction: float) -> tuple[int, int, int]:
        return pixel(v.grab().toImage(), rect.left() + fraction * rect.width(), y)

    assert at(0.25) == red and at(0.35) == blue and at(0.9) == blue
    moved = []
    v.wipe_moved.connect(moved.append)
    line = QtCore.QPoint(round(rect.left() + 0.3 * rect.width()), round(y))
    qtbot.mousePress(v, Qt.MouseButton.LeftButton, pos=line)
    qtbot.mouseMove(v, QtCore.QPoint(round(rect.left() + 0.7 * rect.width()), round(y)))
    qtbot.mouseRelease(v, Qt.MouseButton.LeftButton,
                       pos=QtCore.QPoint(round(rect.left() + 0.7 * rect.width()), round(y)))
    assert moved and moved[-1] == pytest.approx(0.7, abs=1 / rect.width())
    assert at(0.6) == red and at(0.75) == blue
    v.set_compare_mode("result")
    assert at(0.1) == blue
    v.set_compare_mode("source")
    assert at(0.9) == red


def test_difference_mode_amplifies(qtbot):
    v = make_viewer(qtbot, (480, 270))
    source = solid((100, 100, 100))
    result = source.copy()
    result[:, 80:] = (110, 100, 90)
    v.set_frames(source, result)
    v.set_compare_mode("difference")
    rect = v.image_rect()
    shot = v.grab().toImage()
    y = rect.top() + rect.height() * 0.7
    assert pixel(shot, rect.left() + rect.width() * 0.25, y) == (0, 0, 0)
    assert pixel(shot, rect.left() + rect.width() * 0.75, y) == (40, 0, 40)  # x4 gain
    v.set_difference_gain(10)
    assert pixel(v.grab().toImage(), rect.left() + rect.width() * 0.75, y) == (100, 0, 100)


def test_without_result_every_mode_shows_the_source(qtbot):
    v = make_viewer(qtbot, (320, 180))
    v.set_frames(solid((10, 200, 10)))
    for mode in ("result", "split", "difference"):
        v.set_compare_mode(mode)
        assert pixel(v.grab().toImage(), 160, 150) == (10, 200, 10)
    with pytest.raises(ValueError):
        v.set_compare_mode("overlay")
    with pytest.raises(ValueError):
        v.set_frames(solid((0, 0, 0)), solid((0, 0, 0), size=(10, 10)))


def test_overlays_draw_and_toggle(qtbot):
    v = make_viewer(qtbot, (320, 180))
    v.set_frames(solid((0, 0, 0)))  # 160x90 at scale 2
    box = np.array([20.0, 20.0, 100.0, 70.0])
    v.set_overlay(box=box)
    edge = v.map_from_frame(60, 20)

    def box_drawn() -> bool:
        r, g, b = pixel(v.grab().toImage(), edge.x(), edge.y())
        return r > 150 and g > 100 and b < 120  # the amber box colour

    assert box_drawn()
    v.set_overlay_visible("box", False)
    assert not box_drawn()
    v.set_overlay_visible("box", True)
    v.set_overlay(box=np.full(4, np.nan), landmarks=np.full((68, 2), np.nan))  # face lost
    assert not box_drawn()
    with pytest.raises(ValueError):
        v.set_overlay_visible("halo", True)


def test_frames_are_converted_once_and_repaint_is_cheap(qtbot, monkeypatch):
    v = make_viewer(qtbot, (960, 540))
    calls = []
    convert = viewer_module.rgb_to_qimage
    monkeypatch.setattr(viewer_module, "rgb_to_qimage",
                        lambda rgb: calls.append(1) or convert(rgb))
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (1080, 1920, 3), np.uint8)
    v.set_frames(frame, frame[::-1].copy())
    v.set_compare_mode("split")
    v.set_overlay(box=np.array([800.0, 300, 1100, 700]),
                  landmarks=rng.uniform(800, 1100, (68, 2)))
    v.grab()  # the first paint makes the screen-sized copies
    start = time.perf_counter()
    for _ in range(20):
        v.grab()  # a full paint into a fresh pixmap
    per_paint = (time.perf_counter() - start) / 20
    assert len(calls) == 2  # source and result, once each
    print(f"\nviewer repaint, 1080p split with overlays at fit: {per_paint * 1000:.1f} ms")
    assert per_paint < 0.05
