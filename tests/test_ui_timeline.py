from __future__ import annotations

import math
import threading
import time
from fractions import Fraction

import numpy as np
import pytest
from PySide6 import QtCore, QtGui, QtWidgets

from engine.media.peaks import PeakPyramid
from tests.media_factory import make_video
from ui import timeline as timeline_module
from ui.timeline import Timeline

Qt = QtCore.Qt
FPS = 25


def make_timeline(qtbot, duration: float = 10.0, width: int = 1000) -> Timeline:
    tl = Timeline()
    qtbot.addWidget(tl)
    tl.resize(width, 260)
    tl.show()
    qtbot.waitExposed(tl)
    tl.set_clip(duration, FPS)
    return tl


def point(tl: Timeline, seconds: float, lane: str) -> QtCore.QPoint:
    return QtCore.QPoint(round(tl.x_at(seconds)), round(tl.lane_rect(lane).center().y()))


def drag(qtbot, tl: Timeline, start: QtCore.QPoint, end: QtCore.QPoint, steps: int = 4) -> None:
    canvas = tl.canvas()
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=start)
    for k in range(1, steps + 1):
        qtbot.mouseMove(canvas, start + (end - start) * (k / steps))
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=end)


def wheel(tl: Timeline, x: float, dy: int = 0, dx: int = 0,
          modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    canvas = tl.canvas()
    pos = QtCore.QPointF(x, 100)
    event = QtGui.QWheelEvent(pos, canvas.mapToGlobal(pos), QtCore.QPoint(),
                              QtCore.QPoint(dx, dy), Qt.MouseButton.NoButton, modifiers,
                              Qt.ScrollPhase.NoScrollPhase, False)
    QtWidgets.QApplication.sendEvent(canvas, event)


def pyramid(seconds: float, rate: int = 48000, base: int = 256, factor: int = 4,
            seed: int = 0) -> PeakPyramid:
    """A speech-like envelope built bucket by bucket (an hour of samples would be 700 MB)."""
    count = math.ceil(seconds * rate / base)
    rng = np.random.default_rng(seed)
    t = np.arange(count) * base / rate
    envelope = (0.15 + 0.6 * np.abs(np.sin(t * 2.1)) * (np.sin(t * 0.37) > -0.3)).astype(
        np.float32)
    hi = envelope * rng.uniform(0.5, 1, count).astype(np.float32)
    levels = [(-hi * rng.uniform(0.8, 1, count).astype(np.float32), hi)]
    while len(levels[-1][0]) > 1:
        lo, hi = levels[-1]
        pad = -len(lo) % factor
        lo = np.append(lo, np.full(pad, np.inf, np.float32)).reshape(-1, factor).min(1)
        hi = np.append(hi, np.full(pad, -np.inf, np.float32)).reshape(-1, factor).max(1)
        levels.append((lo, hi))
    return PeakPyramid(rate=rate, frames=round(seconds * rate), base=base, factor=factor,
                       levels=levels)


def test_click_moves_the_playhead_to_the_frame_under_the_cursor(qtbot):
    tl = make_timeline(qtbot)
    moved = []
    tl.playhead_moved.connect(moved.append)
    t0, t1 = tl.visible_range()
    x = 437
    qtbot.mouseClick(tl.canvas(), Qt.MouseButton.LeftButton, pos=QtCore.QPoint(x, 8))  # ruler
    expected = math.floor((t0 + x / tl.canvas().width() * (t1 - t0)) * FPS) / FPS
    assert moved == [pytest.approx(expected)] and tl.playhead == pytest.approx(expected)
    # Dragging in an empty lane scrubs, frame by frame.
    drag(qtbot, tl, point(tl, 2.0, "source"), point(tl, 6.31, "source"))
    assert tl.playhead == pytest.approx(6.28)  # pixel 6.31 s lies in frame 157 (6.28 s)
    assert all(abs(t * FPS - round(t * FPS)) < 1e-9 for t in moved)
    assert moved[-1] == tl.playhead
    # The API moves it silently and clamps to the last frame.
    tl.set_playhead(99)
    assert tl.playhead == pytest.approx(9.96) and moved[-1] != tl.playhead


def test_dragging_the_dub_changes_its_offset_by_the_dragged_time(qtbot):
    tl = make_timeline(qtbot)
    tl.set_dub(pyramid(3.0), offset=1.0)
    offsets = []
    tl.dub_offset_changed.connect(offsets.append)
    start = point(tl, 2.0, "dub")
    end = start + QtCore.QPoint(150, 0)
    dragged = tl.time_at(end.x()) - tl.time_at(start.x())
    drag(qtbot, tl, start, end)
    assert tl.dub_offset == pytest.approx(1.0 + round(dragged * FPS) / FPS)  # whole frames
    assert offsets[-1] == tl.dub_offset
    # Dragging left past the clip's start is allowed (the dub may start before the video).
    before = tl.dub_offset
    start, end = point(tl, before + 1, "dub"), point(tl, before - 2.5, "dub")
    dragged = tl.time_at(end.x()) - tl.time_at(start.x())
    drag(qtbot, tl, start, end)
    assert tl.dub_offset == pytest.approx(before + round(dragged * FPS) / FPS)
    assert tl.dub_offset < 0 and tl._scroll.minimum() < tl.dub_offset * 1000  # can scroll there


def test_dub_snaps_to_the_playhead_within_a_few_pixels(qtbot):
    tl = make_timeline(qtbot)
    tl.set_dub(pyramid(3.0), offset=1.0)  # ends at 4.0
    tl.set_playhead(5.52)
    px = 1 / (tl.time_at(1) - tl.time_at(0))
    start = point(tl, 2.0, "dub")
    end = start + QtCore.QPoint(round(1.52 * px) + 4, 0)  # the end lands 4 px past the playhead
    drag(qtbot, tl, start, end)
    assert tl.dub_offset == pytest.approx(2.52)  # end exactly on the playhead
    tl.snapping = False
    tl.set_dub_offset(1.0)
    drag(qtbot, tl, start, end)
    assert tl.dub_offset != pytest.approx(2.52)


def test_in_and_out_handles_drag_and_snap(qtbot):
    tl = make_timeline(qtbot)
    tl.set_range(2.0, 6.0)
    ranges = []
    tl.range_changed.connect(lambda a, b: ranges.append((a, b)))
    drag(qtbot, tl, point(tl, 2.0, "ruler") + QtCore.QPoint(2, 0), point(tl, 3.01, "ruler"))
    assert tl.range == (pytest.approx(3.0), 6.0) and ranges[-1] == tl.range
    end = point(tl, 8.5, "ruler")
    drag(qtbot, tl, point(tl, 6.0, "ruler") - QtCore.QPoint(2, 0), end)
    assert tl.range[1] == pytest.approx(round(tl.time_at(end.x()) * FPS) / FPS)
    # Snaps to the playhead a few pixels away; cannot cross the other handle.
    tl.set_playhead(4.4)
    drag(qtbot, tl, point(tl, 3.0, "ruler"), point(tl, 4.4, "ruler") + QtCore.QPoint(5, 0))
    assert tl.range[0] == pytest.approx(4.4)
    drag(qtbot, tl, point(tl, 4.4, "ruler"), point(tl, 9.9, "ruler"))
    assert tl.range[0] == pytest.approx(tl.range[1] - 1 / FPS)
    assert tl.range_changed is not None and len(ranges) >= 4


def test_wheel_zooms_around_the_cursor_and_scrolls(qtbot):
    tl = make_timeline(qtbot)
    x = 300
    under = tl.time_at(x)
    span = np.subtract(*tl.visible_range()[::-1])
    wheel(tl, x, dy=120)
    assert np.subtract(*tl.visible_range()[::-1]) == pytest.approx(span / 1.25)
    assert tl.time_at(x) == pytest.approx(under)
    wheel(tl, x, dy=480)
    assert tl.time_at(x) == pytest.approx(under)
    span = np.subtract(*tl.visible_range()[::-1])
    t0 = tl.visible_range()[0]
    wheel(tl, x, dy=-120, modifiers=Qt.KeyboardModifier.ShiftModifier)  # scroll later
    assert tl.visible_range()[0] == pytest.approx(t0 + 0.15 * span)
    assert np.subtract(*tl.visible_range()[::-1]) == pytest.approx(span)
    # Middle-drag pans; the scroll bar follows.
    t0 = tl.visible_range()[0]
    canvas = tl.canvas()
    qtbot.mousePress(canvas, Qt.MouseButton.MiddleButton, pos=QtCore.QPoint(500, 100))
    qtbot.mouseMove(canvas, QtCore.QPoint(400, 100))
    qtbot.mouseRelease(canvas, Qt.MouseButton.MiddleButton, pos=QtCore.QPoint(400, 100))
    assert tl.visible_range()[0] == pytest.approx(t0 + 100 * span / canvas.width())
    assert tl._scroll.value() == round(tl.visible_range()[0] * 1000)
    # Zoom is limited: the whole content at most, 60 pixels per frame at least.
    wheel(tl, x, dy=-120 * 40)
    assert tl.visible_range()[0] < 0 and tl.visible_range()[1] > 10
    wheel(tl, x, dy=120 * 60)
    assert np.subtract(*tl.visible_range()[::-1]) == pytest.approx(
        canvas.width() / 60 / FPS)


def test_drop_frame_timecode_at_ntsc_rates(qtbot):
    tl = make_timeline(qtbot)
    tl.set_clip(120, Fraction(30000, 1001))
    assert tl.drop_frame and tl.timecode(60.06) == "00:01:00;02"
    tl.set_clip(120, Fraction(30000, 1001), drop_frame=False)
    assert tl.timecode(60.06) == "00:01:00:00"
    tl.set_clip(120, 25)
    assert not tl.drop_frame and tl.timecode(61.0) == "00:01:01:00"


def test_ruler_shows_the_clip_s_source_timecode(qtbot, tmp_path):
    from engine.media.probe import probe
    from tests.media_factory import set_timecode

    clip = set_timecode(make_video(tmp_path / "c.mp4", frames=30), tmp_path / "tc.mov",
                        "10:00:00:00")
    info = probe(clip).video[0]
    tl = make_timeline(qtbot)
    tl.set_clip(info.duration, info.frame_rate, video_info=info)
    assert tl.timecode(0.0) == "10:00:00:00" and tl.timecode(1.04) == "10:00:01:01"


def test_range_states_draw_as_coloured_bars(qtbot):
    tl = make_timeline(qtbot)
    tl.set_range_states([(1, 3, "rendered"), (3, 4, "stale"), (4, 6, "rendering")])
    shot = tl.grab().toImage()
    offset = tl.canvas().mapTo(tl, QtCore.QPoint(0, 0))
    y = round(tl.lane_rect("states").center().y()) + offset.y()
    colour = [shot.pixelColor(round(tl.x_at(t)) + offset.x(), y).name()
              for t in (2, 3.5, 8)]
    assert colour[:2] == ["#3fae5a", "#d9922e"] and colour[2] not in colour[:2]
    with pytest.raises(ValueError):
        tl.set_range_states([(0, 1, "done")])


def test_thumbnails_load_off_the_ui_thread_for_the_visible_span(qtbot, tmp_path, monkeypatch):
    path = make_video(tmp_path / "v.mp4", frames=150, gop=25, size=(160, 90))
    asked: list[tuple[list[float], bool]] = []
    threads = set()
    real = timeline_module.thumbnails

    def spy(p, times, height, **kw):
        asked.append((list(times), kw["exact"]))
        threads.add(threading.get_ident())
        return real(p, times, height, **kw)

    monkeypatch.setattr(timeline_module, "thumbnails", spy)
    tl = make_timeline(qtbot, duration=6.0)
    tl.set_clip(6.0, FPS, path)  # no video_info: probed on the worker first
    qtbot.waitUntil(lambda: len(tl._thumbs) >= 8, timeout=10000)
    assert threading.get_ident() not in threads
    assert not asked[0][1]  # zoomed out: keyframes only
    # Zoom in: only the visible span (and half a screen either side) is decoded, exactly.
    asked.clear()
    tl.set_view(3.0, 3.8)
    t0, t1 = tl.visible_range()
    qtbot.waitUntil(lambda: bool(asked) and tl.thumbnails_ready(), timeout=10000)
    times = [t for batch, exact in asked for t in batch]
    assert all(exact for _, exact in asked)
    margin = (t1 - t0) / 2
    assert min(times) >= t0 - margin - 1 / FPS and max(times) < t1 + margin
    tl.hide()  # stops the worker
    assert tl._loader.pool.activeThreadCount() == 0


def test_hour_long_waveforms_draw_from_peaks_fast(qtbot):
    tl = make_timeline(qtbot, width=1600)
    hour = pyramid(3600.0)
    dub = pyramid(1800.0, seed=1)
    calls = []
    query = hour.query
    hour.query = lambda a, b, w: calls.append((a, b, w)) or query(a, b, w)
    tl.set_clip(3600.0, FPS, source_peaks=hour)
    tl.set_dub(dub, offset=600.0)
    timings = {}
    for name, view in (("whole hour", None), ("10 s at 00:30:00", (1800.0, 1810.0))):
        if view:
            tl.set_view(*view)
        start = time.perf_counter()
        tl.grab()  # a full redraw: ruler, both waveforms (one pyramid query each), overlays
        timings[name] = time.perf_counter() - start
        t0, t1 = tl.visible_range()
        a, b, width = calls[-1]
        seconds_per_px = (t1 - t0) / tl.canvas().width()
        # The query covers the visible span at one bucket per screen pixel.
        assert a == pytest.approx(max(t0, 0), abs=3 * seconds_per_px)
        assert b == pytest.approx(min(t1, 3600), abs=3 * seconds_per_px)
        assert abs(width - (min(t1, 3600) - max(t0, 0)) / seconds_per_px) <= 5
    start = time.perf_counter()
    for k in range(20):  # scrolling: every step a new span, so a new query and path
        tl.set_view(1800.0 + k, 1810.0 + k)
        tl.grab()
    timings["scroll step"] = (time.perf_counter() - start) / 20
    print("\ntimeline redraw, 1-hour source + 30-min dub, 1600 px: " +
          ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in timings.items()))
    assert max(timings.values()) < 0.25


def test_unplaced_frames_are_marked_in_the_state_lane(qtbot):
    tl = make_timeline(qtbot)
    tl.set_range_states([(1, 3, "rendered")])
    tl.set_unplaced([(50, 59), (200, 200)])  # 2.00-2.36 s, and one frame at 8.00 s
    shot = tl.grab().toImage()
    offset = tl.canvas().mapTo(tl, QtCore.QPoint(0, 0))
    lane = tl.lane_rect("states")
    mark = QtGui.QColor(timeline_module.UNPLACED).name()

    def colour(x: float, y: float) -> str:
        return shot.pixelColor(round(x) + offset.x(), round(y) + offset.y()).name()

    y = lane.center().y()
    assert colour(tl.x_at(2.18), y) == mark  # inside the run
    assert colour(tl.x_at(2.0) + 1, y) == mark and colour(tl.x_at(2.4) - 1, y) == mark
    assert colour(tl.x_at(2.0) - 2, y) == "#3fae5a"  # the rendered bar around it
    assert colour(tl.x_at(2.4) + 2, y) == "#3fae5a"
    assert colour(tl.x_at(2.18), lane.top() - 2) == mark  # standing above the lane
    assert colour(tl.x_at(8.02), y) == mark  # a single frame
    assert colour(tl.x_at(6.0), y) != mark
    # Zoomed out over an hour, one frame is still a mark a few pixels wide.
    tl.set_clip(3600.0, FPS)
    tl.set_unplaced([(25000, 25000)])  # 1000 s
    shot = tl.grab().toImage()
    x = tl.x_at(1000.02)
    assert {colour(x + dx, y) for dx in (-1, 0, 1)} == {mark}
    assert colour(x - 4, y) != mark and colour(x + 4, y) != mark
    assert tl.unplaced_at(x + 1, y) == (25000, 25000)
    tl.set_clip(10.0, FPS)
    assert tl.unplaced == []  # a new clip has none


def test_clicking_an_unplaced_mark_moves_the_playhead_to_its_first_frame(qtbot):
    tl = make_timeline(qtbot)
    tl.set_ranges([(1.0, 3.0), (5.0, 6.0)], selected=1)
    tl.set_unplaced([(50, 59)])
    moved, selected = [], []
    tl.playhead_moved.connect(moved.append)
    tl.range_selected.connect(selected.append)
    y = round(tl.lane_rect("states").center().y())
    qtbot.mouseClick(tl.canvas(), Qt.MouseButton.LeftButton,
                     pos=QtCore.QPoint(round(tl.x_at(2.3)), y))
    assert moved == [pytest.approx(2.0)] and tl.playhead == pytest.approx(2.0)
    assert selected == []  # the mark, not the range under it
    # Beside the mark, the state lane still selects the range.
    qtbot.mouseClick(tl.canvas(), Qt.MouseButton.LeftButton,
                     pos=QtCore.QPoint(round(tl.x_at(1.5)), y))
    assert selected == [0] and moved == [pytest.approx(2.0)]
    # Its tooltip says what happened and how to fix it.
    def hover(seconds: float) -> None:
        pos = QtCore.QPoint(round(tl.x_at(seconds)), y)
        QtWidgets.QApplication.sendEvent(tl.canvas(), QtGui.QHelpEvent(
            QtCore.QEvent.Type.ToolTip, pos, tl.canvas().mapToGlobal(pos)))

    hover(2.1)
    text = QtWidgets.QToolTip.text()
    assert text.startswith("10 frames keep their own mouth (00:00:02:00–00:00:02:09)")
    assert "keep-original span or the mask tools" in text
    hover(5.5)
    qtbot.waitUntil(lambda: not QtWidgets.QToolTip.isVisible())  # none away from the marks
    assert tl.unplaced_at(tl.x_at(2.1), tl.lane_rect("video").center().y()) is None
    assert tl.unplaced_tooltip((3, 3)).startswith("1 frame keeps its own mouth (00:00:00:03)")
