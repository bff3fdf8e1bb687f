"""The editor's timeline: ruler, thumbnail strip, source and dub waveforms, playhead, in/out range.

Built on pyqtgraph: one :class:`pyqtgraph.ViewBox` whose x axis is seconds on the clip timeline
and whose y axis is pixels from the top (lanes keep their pixel heights at any zoom). The lane
items paint in device pixels from the view transform, so pictures and waveforms stay crisp and
are sized in screen pixels, and every draw covers only the visible span:

- waveforms are :meth:`PeakPyramid.query` results for the visible span at the lane's pixel
  width (cached per view), so an hour-long file draws as fast as a short one;
- thumbnails are decoded for the visible span only (plus half a screen either side), on a
  worker thread, in slots of a power-of-two number of frames so zooming re-uses them.

Mouse (on the canvas): click or drag in the ruler or on an empty lane moves the playhead
(frame-snapped); a click on an unplaced-frames mark in the state lane moves it to the mark's first
frame; drag the in/out brackets in the ruler to change the range; drag the dub clip to
change its offset (whole frames, snapping to the playhead, in/out, clip and range-state edges
within a few pixels); middle-drag pans; the wheel zooms around the cursor; Shift+wheel or a
horizontal wheel scrolls. Lanes taller than the timeline scroll vertically (the scroll bar, or
the wheel over the track headers). Signals are emitted for user actions only, never for API
calls.
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from engine.errors import RedubError
from engine.media.peaks import PeakPyramid
from engine.media.probe import VideoStreamInfo, probe
from engine.media.thumbnails import thumbnails
from engine.timecode import format_timecode
from ui.images import rgb_to_qimage
from ui import theme

Qt = QtCore.Qt

RANGE_STATES = ("rendered", "stale", "rendering")
# Frames that keep their own mouth: a warning red-orange, apart from the stale bars' amber.
UNPLACED = "#ff5530"
UNPLACED_MIN_PX = 3  # a single frame stays visible and clickable zoomed out
UNPLACED_RISE = 4  # marks stand this far above the state lane, into the ruler

RULER_H = 30  # timecode ruler: labels on top, in/out brackets and ticks beneath them
LABEL_H = 16  # the ruler's label band: brackets stay below it, so no label is covered
STATE_H = 5  # render-state bar under the ruler
VIDEO_H = 54
AUDIO_MIN_H = 40
AUDIO_MAX_H = 110
AUDIO_PREF_H = 64  # the audio lanes' height in the timeline's preferred size
WAVE_MAX_GAIN = 16.0  # waveforms are scaled to their loudest peak, by at most this much
GAP = 3
HEADER_W = 92
SNAP_PX = 8  # snapping distance
DRAG_START_PX = 3  # a press on the dub must move this far to become a drag
MAX_PX_PER_FRAME = 60  # deepest zoom
_THUMB_CACHE = 1500  # thumbnails kept (about 17 KB each at the default height)


@dataclass(frozen=True)
class _Layout:
    """Lane extents (top, bottom) in pixels from the top of the canvas."""

    ruler: tuple[float, float]
    states: tuple[float, float]
    video: tuple[float, float]
    source: tuple[float, float]
    dub: tuple[float, float]

    @property
    def head(self) -> float:
        """Bottom of the ruler area (ruler and state bar)."""
        return self.states[1]

    @property
    def bottom(self) -> float:
        """Height of the lanes' content: below it, only scrolling shows more."""
        return self.dub[1] + GAP

    @staticmethod
    def for_height(height: float) -> _Layout:
        """Audio lanes share the height, within their limits (shorter: the lanes scroll)."""
        video = (RULER_H + STATE_H + GAP, RULER_H + STATE_H + GAP + VIDEO_H)
        audio = min(max((height - video[1] - 3 * GAP) / 2, AUDIO_MIN_H), AUDIO_MAX_H)
        source = (video[1] + GAP, video[1] + GAP + audio)
        dub = (source[1] + GAP, source[1] + GAP + audio)
        return _Layout((0, RULER_H), (RULER_H, RULER_H + STATE_H), video, source, dub)


@dataclass(frozen=True)
class _Device:
    """The view's mapping to device pixels: x' = sx * t + tx, y' = sy * y + ty."""

    sx: float
    tx: float
    sy: float
    ty: float

    @staticmethod
    def of(painter: QtGui.QPainter) -> _Device:
        t = painter.transform()
        return _Device(t.m11(), t.m31(), t.m22(), t.m32())

    def x(self, t: float) -> float:
        return self.sx * t + self.tx

    def y(self, y: float) -> float:
        return self.sy * y + self.ty


# -- thumbnails off the UI thread ----------------------------------------------------------
class _ThumbLoader(QtCore.QObject):
    """Decodes thumbnails on one worker thread; a newer request supersedes the running one.

    Deliberately parentless: a running job keeps it alive, so results emitted after the timeline
    is gone go nowhere instead of to a deleted object.
    """

    loaded = QtCore.Signal(int, int, bool, QtGui.QImage)  # generation, frame, exact, picture
    probed = QtCore.Signal(str, object)  # path, VideoStreamInfo

    def __init__(self) -> None:
        super().__init__()
        self.pool = QtCore.QThreadPool()
        self.pool.setMaxThreadCount(1)  # decoding is multithreaded itself; keep the UI's core
        self.generation = 0
        self._pending: tuple | None = None

    def probe(self, path: str) -> None:
        self.pool.start(_ProbeJob(self, path))

    def request(self, path: str, info: VideoStreamInfo, frames: list[int], exact: bool,
                height: int) -> None:
        key = (path, tuple(frames), exact, height)
        if key == self._pending:
            return  # the running job already covers these
        self._pending = key
        self.generation += 1
        if frames:
            self.pool.start(_ThumbJob(self, self.generation, path, info, frames, exact, height))

    def stop(self) -> None:
        self.generation += 1
        self._pending = None
        self.pool.clear()
        self.pool.waitForDone()


class _ProbeJob(QtCore.QRunnable):
    def __init__(self, loader: _ThumbLoader, path: str) -> None:
        super().__init__()
        self.loader, self.path = loader, path

    def run(self) -> None:
        try:
            media = probe(self.path)
        except RedubError:  # a clip that cannot be read simply gets no thumbnails
            return
        if media.video:
            self.loader.probed.emit(self.path, media.video[0])


class _ThumbJob(QtCore.QRunnable):
    def __init__(self, loader: _ThumbLoader, generation: int, path: str, info: VideoStreamInfo,
                 frames: list[int], exact: bool, height: int) -> None:
        super().__init__()
        self.loader, self.generation = loader, generation
        self.path, self.info, self.frames, self.exact, self.height = (
            path, info, frames, exact, height)

    def run(self) -> None:
        times = self.info.index_data.times
        try:
            pictures = thumbnails(self.path, [float(times[i]) for i in self.frames], self.height,
                                  exact=self.exact, info=self.info)
            for frame, thumb in zip(self.frames, pictures):
                if self.loader.generation != self.generation:
                    return  # superseded: the view moved on
                self.loader.loaded.emit(self.generation, frame, self.exact,
                                        rgb_to_qimage(thumb.image))
        except RedubError:  # a damaged stretch: keep the thumbnails decoded so far
            return


# -- lane items ----------------------------------------------------------------------------
class _Item(pg.GraphicsObject):
    """A lane item painting in device pixels over the visible part of the timeline."""

    def __init__(self, timeline: Timeline) -> None:
        super().__init__()
        self.tl = timeline

    def boundingRect(self) -> QtCore.QRectF:
        return self.tl._view_rect()

    def paint(self, p: QtGui.QPainter, *args) -> None:
        d = _Device.of(p)
        p.resetTransform()
        self.draw(p, d)

    def draw(self, p: QtGui.QPainter, d: _Device) -> None:
        raise NotImplementedError


def _font(size: float, bold: bool = False, mono: bool = False) -> QtGui.QFont:
    font = (QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.SystemFont.FixedFont) if mono
            else QtGui.QFont())
    font.setPointSizeF(size)
    font.setBold(bold)
    return font


class _Ruler(_Item):
    """Timecode ticks and labels, and the render-state bar beneath them."""

    def draw(self, p: QtGui.QPainter, d: _Device) -> None:
        tl, lay = self.tl, self.tl._layout
        left, right = 0.0, float(tl._canvas.viewport().width())
        top, bottom = d.y(lay.ruler[0]), d.y(lay.ruler[1])
        p.fillRect(QtCore.QRectF(left, top, right, bottom - top), theme.color(theme.PANEL))
        p.fillRect(QtCore.QRectF(left, bottom, right, d.y(lay.states[1]) - bottom),
                   theme.color(theme.BASE))
        p.setPen(theme.color("#000000"))
        p.drawLine(QtCore.QPointF(left, bottom - 0.5), QtCore.QPointF(right, bottom - 0.5))
        if tl._fps <= 0:
            return
        font = _font(7.5, mono=True)
        p.setFont(font)
        text_w = QtGui.QFontMetricsF(font).horizontalAdvance("00:00:00:00")
        label_w = text_w + 28
        major, minor = _tick_steps(tl._fps, d.sx / tl._fps, label_w)
        t0, t1 = tl.visible_range()
        if minor:
            p.setPen(theme.color(theme.TEXT_DIM, 150))
            for t in _tick_times(t0, t1, minor, tl._fps):
                x = round(d.x(t)) + 0.5
                p.drawLine(QtCore.QPointF(x, bottom - 4), QtCore.QPointF(x, bottom - 1))
        shown_to = -math.inf  # right end of the last label drawn
        for t in _tick_times(t0, t1, major, tl._fps):
            x = round(d.x(t)) + 0.5
            p.setPen(theme.color(theme.TEXT_DIM))
            p.drawLine(QtCore.QPointF(x, bottom - 10), QtCore.QPointF(x, bottom - 1))
            # Whole labels only: the last one moves left of its tick rather than being cut,
            # and one that would then overlap its neighbour (or is cut on the left) is left out.
            lx = min(x + 4, right - text_w - 3)
            if lx < 0 or lx < shown_to + 8:
                continue
            p.setPen(theme.color(theme.TEXT))
            p.drawText(QtCore.QRectF(lx, top + 1, text_w + 2, LABEL_H - 1),
                       Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                       tl.timecode(t))
            shown_to = lx + text_w
        y0, y1 = d.y(lay.states[0]) + 1, d.y(lay.states[1])
        for start, end, state in tl._states:
            x0, x1 = max(d.x(start), left), min(d.x(end), right)
            if x1 > x0:
                bar = QtCore.QRectF(x0, y0, max(x1 - x0, 1.0), y1 - y0)
                p.fillRect(bar, theme.color(theme.RANGE_STATE[state]))
                if state == "rendering":  # hatched: work in progress
                    p.fillRect(bar, QtGui.QBrush(theme.color("#ffffff", 90),
                                                 Qt.BrushStyle.BDiagPattern))
        # The other ranges: outlined, so they can be seen and clicked to select them.
        p.setBrush(Qt.BrushStyle.NoBrush)
        for i, (start, end) in enumerate(tl._ranges):
            x0, x1 = max(d.x(start), left), min(d.x(end), right)
            if x1 > x0 and i != tl._selected:
                p.setPen(QtGui.QPen(theme.color(theme.ACCENT, 170), 1))
                p.drawRect(QtCore.QRectF(x0 + 0.5, y0 + 0.5, max(x1 - x0 - 1, 1.0), y1 - y0 - 1))
        # Frames that keep their own mouth, on top: each run a mark to click and fix.
        top = d.y(lay.states[0]) - UNPLACED_RISE
        for span in tl._unplaced:
            x0, x1 = tl._mark_extent(span, d.x)
            if x1 > left and x0 < right:  # on whole pixels: crisp edges
                p.fillRect(QtCore.QRectF(math.floor(x0), top, math.ceil(x1) - math.floor(x0),
                                         y1 - top), theme.color(UNPLACED))


def _tick_steps(fps: float, px_per_frame: float, label_w: float) -> tuple[int, int | None]:
    """Major (labelled) and minor tick steps in frames: whole frames, seconds, minutes, hours."""
    n = round(fps)
    steps = [1, 2, 5, 10] + ([n // 2] if n % 2 == 0 else []) + [
        n * s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 18000)]
    steps = sorted(set(steps))
    major = next((s for s in steps if s * px_per_frame >= label_w), steps[-1])
    minor = next((s for s in steps if s * px_per_frame >= 7 and major % s == 0 and s < major),
                 None)
    return major, minor


def _tick_times(t0: float, t1: float, step: int, fps: float) -> list[float]:
    first, last = math.floor(max(t0, 0) * fps / step), math.ceil(max(t1, 0) * fps / step)
    return [k * step / fps for k in range(first, last + 1)]


class _Thumbs(_Item):
    """The video lane: a strip of thumbnails, one per slot of frames."""

    def draw(self, p: QtGui.QPainter, d: _Device) -> None:
        tl = self.tl
        if tl._duration <= 0:
            return
        y0, y1 = d.y(tl._layout.video[0]), d.y(tl._layout.video[1])
        x0, x1 = _visible_span(d, 0.0, tl._duration, tl._canvas.viewport().width())
        if x1 <= x0:
            return
        body = QtCore.QRectF(x0, y0, x1 - x0, y1 - y0)
        p.fillRect(body, theme.color(theme.VIDEO_CLIP))
        if tl._thumb_path is not None:
            n, frames, exact = tl._thumb_slots(*tl.visible_range())
            for k in frames:
                # Either decoding serves while the preferred one loads.
                image = tl._thumbs.get((k, exact))
                if image is None:
                    image = tl._thumbs.get((k, not exact))
                if image is not None:
                    end = tl._frame_time(k + n) if k + n < tl._frame_count() else tl._duration
                    self._tile(p, image, QtCore.QRectF(d.x(tl._frame_time(k)), y0 + 2,
                                                       d.x(end) - d.x(tl._frame_time(k)),
                                                       y1 - y0 - 4))
        p.setPen(theme.color("#6f84b0", 160))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(body.adjusted(0.5, 0.5, -0.5, -0.5))

    @staticmethod
    def _tile(p: QtGui.QPainter, image: QtGui.QImage, slot: QtCore.QRectF) -> None:
        """Fill a slot from its left edge: cropped when narrower, repeated when wider."""
        ratio = image.devicePixelRatio()
        w = image.width() / ratio
        x = slot.left()
        while x < slot.right() - 0.5:
            part = min(w, slot.right() - x)
            p.drawImage(QtCore.QRectF(x, slot.top(), part, slot.height()), image,
                        QtCore.QRectF(0, 0, part * ratio, image.height()))
            x += part + 1  # a hairline between repeats reads as separate frames


def _visible_span(d: _Device, start: float, end: float, width: float) -> tuple[float, float]:
    return max(d.x(start), -2.0), min(d.x(end), width + 2.0)


class _AudioClip(_Item):
    """An audio clip (source or dub) with its waveform, drawn from a peak pyramid."""

    def __init__(self, timeline: Timeline, dub: bool) -> None:
        super().__init__(timeline)
        self.dub = dub
        self._path_key: tuple | None = None
        self._path: QtGui.QPainterPath | None = None

    def draw(self, p: QtGui.QPainter, d: _Device) -> None:
        tl = self.tl
        if self.dub:
            lane, (body_colour, wave_colour) = tl._layout.dub, theme.DUB_AUDIO
            start, duration, peaks, name = (tl._dub_offset, tl._dub_duration, tl._dub_peaks,
                                            tl._dub_name)
        else:
            lane, (body_colour, wave_colour) = tl._layout.source, theme.SOURCE_AUDIO
            start, duration, peaks, name = 0.0, tl._duration, tl._source_peaks, "Source audio"
        y0, y1 = d.y(lane[0]), d.y(lane[1])
        if duration <= 0:
            if self.dub:
                p.setPen(theme.color(theme.TEXT_DIM))
                p.setFont(_font(8))
                p.drawText(QtCore.QRectF(8, y0, 300, y1 - y0),
                           Qt.AlignmentFlag.AlignVCenter, "No dub loaded")
            return
        width = tl._canvas.viewport().width()
        x0, x1 = _visible_span(d, start, start + duration, width)
        if x1 <= x0:
            return
        body = QtCore.QRectF(x0, y0, x1 - x0, y1 - y0)
        p.fillRect(body, theme.color(body_colour))
        if peaks is not None:
            p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, False)
            path = self._waveform(peaks, d, start, x0, x1, y0 + 2, y1 - 2)
            p.fillPath(path, theme.color(wave_colour))
            p.setPen(QtGui.QPen(theme.color(wave_colour), 1))
            p.drawPath(path)  # the stroke keeps quiet passages visible as a line
        dragging = self.dub and tl._drag is not None and tl._drag.kind == "dub"
        p.setPen(QtGui.QPen(theme.color(theme.ACCENT if dragging else wave_colour,
                                        255 if dragging else 110), 2 if dragging else 1))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(body.adjusted(0.5, 0.5, -0.5, -0.5))
        if x1 - x0 > 60:
            font = _font(7.5, bold=True)
            p.setFont(font)
            label = name
            if self.dub:
                label = f"{name}   {tl._format_offset(start)}"
            box = QtCore.QRectF(max(x0, 0) + 2, y0 + 1, x1 - max(x0, 0) - 4, 13)
            text_w = min(QtGui.QFontMetricsF(font).horizontalAdvance(label) + 8, box.width())
            # Over the waveform, which fills the lane: on a patch of the clip's colour.
            p.fillRect(QtCore.QRectF(box.left(), box.top(), text_w, box.height()),
                       theme.color(body_colour, 210))
            p.setPen(theme.color(wave_colour))
            p.drawText(box.adjusted(4, 0, -4, 0),
                       Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, label)

    def _waveform(self, peaks: PeakPyramid, d: _Device, start: float, x0: float, x1: float,
                  top: float, bottom: float) -> QtGui.QPainterPath:
        """The min/max envelope over device pixels x0..x1, one pyramid query per view.

        Scaled to the clip's loudest peak, so a quiet recording fills the lane too (the editor
        lines up shapes; levels are the meters' job). Zoomed in past one finest bucket per
        pixel, the envelope joins the buckets' centres: pixels repeating a bucket would draw
        it as a block.
        """
        px0, px1 = math.floor(x0), math.ceil(x1)
        key = (id(peaks), px0, px1, d.sx, d.tx - start * d.sx, top, bottom)
        if key != self._path_key:
            t0, t1 = (px0 - d.tx) / d.sx - start, (px1 - d.tx) / d.sx - start
            bucket = peaks.bucket_size(0) / peaks.rate  # seconds
            if bucket * d.sx > 1:
                first = max(math.floor(t0 / bucket), 0)
                lo_all, hi_all = peaks.levels[0]
                last = min(math.ceil(t1 / bucket) + 1, len(lo_all))
                mins, maxs = lo_all[first:last], hi_all[first:last]
                xs = d.x(start + (np.arange(first, max(last, first)) + 0.5) * bucket)
            else:
                width = max(px1 - px0, 1)
                mins, maxs = peaks.query(t0, t1, width)
                xs = px0 + np.arange(width, dtype=np.float64) + 0.5
            if len(xs) == 0:
                mins = maxs = np.zeros(1, np.float32)
                xs = np.array([(px0 + px1) / 2], np.float64)
            mid, half = (top + bottom) / 2, (bottom - top) / 2
            scale = half * _gain(peaks)
            upper = mid - np.clip(maxs * scale, -half, half)
            lower = mid - np.clip(mins * scale, -half, half)
            path = pg.arrayToQPath(np.concatenate([xs, xs[::-1]]),
                                   np.concatenate([upper, lower[::-1]]), connect="all",
                                   finiteCheck=False)
            path.closeSubpath()
            self._path_key, self._path = key, path
        return self._path


def _gain(peaks: PeakPyramid) -> float:
    """The display gain bringing the loudest peak (the coarsest level's one bucket) to full."""
    lo, hi = peaks.levels[-1]
    loudest = float(max(np.max(np.abs(lo), initial=0.0), np.max(np.abs(hi), initial=0.0)))
    return min(1 / loudest, WAVE_MAX_GAIN) if loudest > 0 else 1.0


class _RangeOverlay(_Item):
    """The in/out range (shade outside, brackets in the ruler) and the snap indicator."""

    def draw(self, p: QtGui.QPainter, d: _Device) -> None:
        tl, lay = self.tl, self.tl._layout
        width = float(tl._canvas.viewport().width())
        lanes_top, bottom = d.y(lay.head), d.y(lay.dub[1])
        if tl._range is not None:
            xi, xo = round(d.x(tl._range[0])), round(d.x(tl._range[1]))
            shade = theme.color("#000000", 110)
            if xi > 0:
                p.fillRect(QtCore.QRectF(0, lanes_top, xi, bottom - lanes_top), shade)
            if xo < width:
                p.fillRect(QtCore.QRectF(xo, lanes_top, width - xo, bottom - lanes_top), shade)
            ruler_top, ruler_bottom = d.y(lay.ruler[0]), d.y(lay.ruler[1])
            p.fillRect(QtCore.QRectF(xi, ruler_top, xo - xi, ruler_bottom - ruler_top),
                       theme.color("#ffffff", 22))
            p.setPen(QtGui.QPen(theme.color(theme.ACCENT, 140), 1))
            for x in (xi + 0.5, xo - 0.5):
                p.drawLine(QtCore.QPointF(x, lanes_top), QtCore.QPointF(x, bottom))
            # Brackets: "[" at the in point, "]" at the out point, under the ruler's labels.
            p.setPen(QtGui.QPen(theme.color(theme.ACCENT), 2))
            bracket_top = d.y(lay.ruler[0] + LABEL_H) + 1
            for x, sign in ((xi + 1, 1), (xo - 1, -1)):
                p.drawPolyline(QtGui.QPolygonF([
                    QtCore.QPointF(x + 6 * sign, bracket_top), QtCore.QPointF(x, bracket_top),
                    QtCore.QPointF(x, ruler_bottom - 1),
                    QtCore.QPointF(x + 6 * sign, ruler_bottom - 1)]))
        if tl._snap_at is not None:
            x = round(d.x(tl._snap_at)) + 0.5
            p.setPen(QtGui.QPen(theme.color("#ffffff", 220), 1, Qt.PenStyle.DashLine))
            p.drawLine(QtCore.QPointF(x, d.y(lay.ruler[0])), QtCore.QPointF(x, bottom))


class _Playhead(_Item):
    """The playhead: a tab in the ruler and a line through every lane (tight bounds, so
    moving it during playback repaints a sliver, not the lanes)."""

    def boundingRect(self) -> QtCore.QRectF:
        pw = self.tl._seconds_per_pixel()
        return QtCore.QRectF(self.tl._playhead - 8 * pw, 0, 16 * pw,
                             self.tl._view_rect().height())

    def draw(self, p: QtGui.QPainter, d: _Device) -> None:
        lay = self.tl._layout
        x = round(d.x(self.tl._playhead)) + 0.5
        accent = theme.color(theme.ACCENT)
        p.setPen(QtGui.QPen(accent, 1))
        p.drawLine(QtCore.QPointF(x, d.y(lay.ruler[0]) + 12), QtCore.QPointF(x, d.y(lay.dub[1])))
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(accent)
        top = d.y(lay.ruler[0])
        p.drawPolygon(QtGui.QPolygonF([QtCore.QPointF(x - 6, top), QtCore.QPointF(x + 6, top),
                                       QtCore.QPointF(x + 6, top + 8),
                                       QtCore.QPointF(x, top + 14),
                                       QtCore.QPointF(x - 6, top + 8)]))


class _Headers(QtWidgets.QWidget):
    """Track headers beside the lanes, and the playhead's timecode above them."""

    def __init__(self, timeline: Timeline) -> None:
        super().__init__(timeline)
        self.tl = timeline
        self.setFixedWidth(HEADER_W)

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:
        tl, lay = self.tl, self.tl._layout
        p = QtGui.QPainter(self)
        p.fillRect(self.rect(), theme.color(theme.BASE))
        p.translate(0, -tl._top)  # scrolled with the lanes
        head = QtCore.QRectF(0, 0, self.width(), lay.head)
        p.fillRect(head, theme.color(theme.PANEL))
        if tl._fps > 0:
            p.setFont(_font(9, bold=True, mono=True))
            p.setPen(theme.color(theme.ACCENT))
            p.drawText(head.adjusted(6, 0, -4, 0), Qt.AlignmentFlag.AlignVCenter,
                       tl.timecode(tl._playhead))
        for (y0, y1), tag, name in ((lay.video, "V1", "Video"), (lay.source, "A1", "Source"),
                                    (lay.dub, "A2", "Dub")):
            box = QtCore.QRectF(0, y0, self.width() - 1, y1 - y0)
            p.fillRect(box, theme.color(theme.RAISED))
            p.setPen(theme.color(theme.TEXT))
            p.setFont(_font(8, bold=True))
            p.drawText(box.adjusted(8, 0, 0, 0), Qt.AlignmentFlag.AlignVCenter, tag)
            p.setPen(theme.color(theme.TEXT_DIM))
            p.setFont(_font(8))
            p.drawText(box.adjusted(32, 0, -4, 0), Qt.AlignmentFlag.AlignVCenter, name)
        p.resetTransform()
        p.setPen(theme.color("#000000"))
        p.drawLine(self.width() - 1, 0, self.width() - 1, self.height())

    def wheelEvent(self, event: QtGui.QWheelEvent) -> None:
        # The canvas's wheel zooms; over the headers it scrolls the lanes.
        QtWidgets.QApplication.sendEvent(self.tl._vscroll, event)


@dataclass
class _Drag:
    kind: str  # "playhead", "in", "out", "dub-pending", "dub", "pan"
    x: float  # press position (canvas pixels)
    offset: float = 0.0  # the dub's offset at the press
    view: tuple[float, float] = (0.0, 0.0)  # the visible span at the press


class Timeline(QtWidgets.QWidget):
    """Timeline of one clip and its dub; see the module docstring for the interaction."""

    playhead_moved = QtCore.Signal(float)  # seconds, the start of a frame
    dub_offset_changed = QtCore.Signal(float)  # seconds the dub starts after the clip
    range_changed = QtCore.Signal(float, float)  # in, out seconds (out exclusive)
    range_selected = QtCore.Signal(int)  # index into set_ranges' list, clicked in the state lane

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.snapping = True
        self._duration = 0.0
        self._fps = 0.0
        self._drop_frame = False
        self._start_frame = 0  # the clip's start timecode, in frames
        self._times = np.zeros(0)  # frame start times
        self._info: VideoStreamInfo | None = None
        self._thumb_path: str | None = None
        self._thumbs: OrderedDict[tuple[int, bool], QtGui.QImage] = OrderedDict()
        self._source_peaks: PeakPyramid | None = None
        self._dub_peaks: PeakPyramid | None = None
        self._dub_duration = 0.0
        self._dub_offset = 0.0
        self._dub_name = "Dub"
        self._playhead = 0.0
        self._range: tuple[float, float] | None = None
        self._states: list[tuple[float, float, str]] = []
        self._ranges: list[tuple[float, float]] = []  # every sync range; the selected one is _range
        self._selected: int | None = None
        self._unplaced: list[tuple[int, int]] = []  # runs of frames (first, last) to mark
        self._snap_at: float | None = None
        self._drag: _Drag | None = None
        self._view = (0.0, 10.0)
        self._layout = _Layout.for_height(240)
        self._top = 0  # pixels the lanes are scrolled up by, where they do not fit

        self._canvas = pg.GraphicsView(background=theme.BASE)
        self._canvas.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        self._vb = pg.ViewBox(enableMouse=False, enableMenu=False, invertY=True,
                              defaultPadding=0)
        self._vb.disableAutoRange()
        self._canvas.setCentralItem(self._vb)
        self._ruler = _Ruler(self)
        self._video = _Thumbs(self)
        self._source = _AudioClip(self, dub=False)
        self._dub = _AudioClip(self, dub=True)
        self._overlay = _RangeOverlay(self)
        self._head = _Playhead(self)
        self._items = (self._ruler, self._video, self._source, self._dub, self._overlay,
                       self._head)
        for z, item in enumerate(self._items):
            item.setZValue(z)
            self._vb.addItem(item, ignoreBounds=True)
        self._vb.sigResized.connect(self._on_resized)
        viewport = self._canvas.viewport()
        viewport.setMouseTracking(True)
        viewport.installEventFilter(self)

        self._headers = _Headers(self)
        self._scroll = QtWidgets.QScrollBar(Qt.Orientation.Horizontal)
        self._scroll.valueChanged.connect(self._on_scroll)
        self._vscroll = QtWidgets.QScrollBar(Qt.Orientation.Vertical)
        self._vscroll.valueChanged.connect(self._on_vscroll)
        self._vscroll.hide()
        grid = QtWidgets.QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(0)
        grid.addWidget(self._headers, 0, 0)
        grid.addWidget(self._canvas, 0, 1)
        grid.addWidget(self._vscroll, 0, 2)
        grid.addWidget(self._scroll, 1, 1)

        self._loader = _ThumbLoader()
        self._loader.loaded.connect(self._on_thumb)
        self._loader.probed.connect(self._on_probed)
        self._probing = False
        self._clip_generation = 0
        # Thumbnail requests wait for the view to settle (wheel zooms come in bursts).
        self._thumb_timer = QtCore.QTimer(self, singleShot=True, interval=40)
        self._thumb_timer.timeout.connect(self._request_thumbs)

    def sizeHint(self) -> QtCore.QSize:
        """Every lane shown, the audio lanes at a comfortable height."""
        lanes = _Layout.for_height(0).video[1] + 3 * GAP + 2 * AUDIO_PREF_H
        return QtCore.QSize(1000, lanes + self._scroll.sizeHint().height())

    def minimumSizeHint(self) -> QtCore.QSize:
        # The ruler and the video lane; below that height the lanes scroll.
        return QtCore.QSize(300, _Layout.for_height(0).video[1] + GAP
                            + self._scroll.sizeHint().height())

    # -- content -------------------------------------------------------------------------
    def set_clip(self, duration: float, frame_rate: float | Fraction,
                 thumbnail_source: str | os.PathLike | None = None,
                 source_peaks: PeakPyramid | None = None, *,
                 video_info: VideoStreamInfo | None = None,
                 drop_frame: bool | None = None) -> None:
        """The clip: its length, rate (ruler, frame snapping) and what to draw.

        ``video_info`` (e.g. ``VideoReader.info``) gives exact frame times (variable rate) and
        spares the thumbnail worker a probe. ``drop_frame`` None: drop-frame timecode at
        29.97 and 59.94 fps, as editors default to.
        """
        if not frame_rate or float(frame_rate) <= 0:
            raise ValueError(f"frame rate must be positive, got {frame_rate}")
        self._duration = float(duration)
        self._fps = float(frame_rate)
        if drop_frame is None:
            nominal = round(self._fps)
            drop_frame = nominal in (30, 60) and abs(self._fps - nominal * 1000 / 1001) < 1e-3
        self._drop_frame = drop_frame
        self._loader.stop()
        # Results of older requests may still be queued: they belong to the previous clip.
        self._clip_generation = self._loader.generation
        self._thumbs.clear()
        self._probing = False
        self._thumb_path = None if thumbnail_source is None else os.fspath(thumbnail_source)
        self._set_info(video_info)
        self._source_peaks = source_peaks
        self._playhead = 0.0
        self._range = None
        self._states = []
        self._unplaced = []
        self.fit_view()
        self._changed()

    def clear(self) -> None:
        """No clip: empty lanes, no ranges, states or marks, the playhead at 0."""
        self._loader.stop()
        self._clip_generation = self._loader.generation  # queued thumbnails are the old clip's
        self._duration = self._fps = 0.0
        self._drop_frame, self._start_frame = False, 0
        self._times, self._info = np.zeros(0), None
        self._thumb_path, self._probing = None, False
        self._thumbs.clear()
        self._source_peaks = None
        self._dub_peaks, self._dub_duration, self._dub_offset = None, 0.0, 0.0
        self._dub_name = "Dub"
        self._playhead = 0.0
        self._range, self._ranges, self._selected = None, [], None
        self._states, self._unplaced = [], []
        self._drag = self._snap_at = None
        self.fit_view()
        self._changed()

    def set_source_peaks(self, peaks: PeakPyramid | None) -> None:
        """The source waveform, e.g. once ``cached_peaks`` has finished in the background."""
        self._source_peaks = peaks
        self._source.update()

    def set_dub(self, peaks: PeakPyramid | None, duration: float | None = None,
                offset: float = 0.0, name: str = "Dub") -> None:
        """The dub clip; ``duration`` defaults to the peaks' duration."""
        if duration is None:
            if peaks is None:
                raise ValueError("set_dub needs a duration or peaks")
            duration = peaks.duration
        self._dub_peaks, self._dub_duration, self._dub_name = peaks, float(duration), name
        self._dub_offset = float(offset)
        self._changed()

    def clear_dub(self) -> None:
        self._dub_peaks, self._dub_duration, self._dub_offset = None, 0.0, 0.0
        self._changed()

    def set_dub_offset(self, seconds: float) -> None:
        self._dub_offset = float(seconds)
        self._changed()

    def set_playhead(self, seconds: float) -> None:
        """Move the playhead (no signal); the view pages along when it leaves the screen."""
        self._move_playhead(seconds)
        t0, t1 = self._view
        if not t0 <= self._playhead <= t1:
            span = t1 - t0
            self.set_view(self._playhead - 0.05 * span, self._playhead + 0.95 * span)

    def set_range(self, start: float, end: float) -> None:
        """In and out points in seconds (out exclusive)."""
        if not end > start:
            raise ValueError(f"range needs end > start, got {start}..{end}")
        self._range = (float(start), float(end))
        self._changed()

    def clear_range(self) -> None:
        self._range = None
        self._changed()

    def set_ranges(self, ranges: Sequence[tuple[float, float]], selected: int | None) -> None:
        """Every sync range of the project, outlined in the state lane; ``selected`` is the one
        whose in/out the brackets edit (also set with :meth:`set_range`)."""
        self._ranges = [(float(a), float(b)) for a, b in ranges]
        self._selected = selected
        self._changed()

    def set_range_states(self, states: Sequence[tuple[float, float, str]]) -> None:
        """Coloured bars under the ruler: ``(start, end, "rendered" | "stale" | "rendering")``."""
        for _, _, state in states:
            if state not in RANGE_STATES:
                raise ValueError(f"unknown range state {state!r}; one of "
                                 f"{', '.join(RANGE_STATES)}")
        self._states = [(float(a), float(b), s) for a, b, s in states]
        self._changed()

    def set_unplaced(self, spans: Sequence[tuple[int, int]]) -> None:
        """Runs of clip frames (first, last, inclusive) that keep their own mouth because the
        face could not be placed: marked in the state lane, with a tooltip; a click on a mark
        moves the playhead to its first frame."""
        self._unplaced = sorted((int(a), int(b)) for a, b in spans)
        self._changed()

    @property
    def unplaced(self) -> list[tuple[int, int]]:
        return list(self._unplaced)

    def unplaced_at(self, x: float, y: float) -> tuple[int, int] | None:
        """The unplaced-frames mark under canvas pixel (x, y), if any."""
        return self._mark_at(x, y + self._top)

    def _mark_at(self, x: float, y: float) -> tuple[int, int] | None:
        """:meth:`unplaced_at` with ``y`` in lane pixels (the canvas's plus the scroll)."""
        y0, y1 = self._layout.states
        if not y0 - UNPLACED_RISE <= y < y1:
            return None
        best, distance = None, math.inf
        for span in self._unplaced:  # the nearest, where marks zoomed out touch
            x0, x1 = self._mark_extent(span, self.x_at)
            if x0 - 1 <= x <= x1 + 1 and abs((x0 + x1) / 2 - x) < distance:
                best, distance = span, abs((x0 + x1) / 2 - x)
        return best

    def unplaced_tooltip(self, span: tuple[int, int]) -> str:
        """What a mark's tooltip says: how many frames, where, why and how to fix them."""
        first, last = span
        n = last - first + 1
        where = self.timecode(self._frame_time(first))
        if n > 1:
            where += f"–{self.timecode(self._frame_time(last))}"
        whose = "s keep their" if n > 1 else " keeps its"
        return (f"{n} frame{whose} own mouth ({where}): the face could not be placed; fix "
                "with a keep-original span or the mask tools. Click to go to the first.")

    def _mark_extent(self, span: tuple[int, int],
                     x_of: Callable[[float], float]) -> tuple[float, float]:
        """Left and right pixels of a mark (``x_of``: seconds to pixels), at least
        UNPLACED_MIN_PX wide, centred on its frames."""
        x0, x1 = x_of(self._frame_time(span[0])), x_of(self._frame_time(span[1] + 1))
        grow = max(UNPLACED_MIN_PX - (x1 - x0), 0.0) / 2
        return x0 - grow, x1 + grow

    def timecode(self, seconds: float) -> str:
        """``seconds`` as the ruler shows it: source timecode at the clip's rate (drop-frame
        when it applies), from the clip's start timecode where it has one."""
        return format_timecode(seconds, self._fps, self._drop_frame, self._start_frame)

    @property
    def drop_frame(self) -> bool:
        return self._drop_frame

    @property
    def playhead(self) -> float:
        return self._playhead

    @property
    def dub_offset(self) -> float:
        return self._dub_offset

    @property
    def range(self) -> tuple[float, float] | None:
        return self._range

    # -- view ----------------------------------------------------------------------------
    def visible_range(self) -> tuple[float, float]:
        """Seconds at the canvas's left and right edges."""
        return self._view

    def set_view(self, start: float, end: float) -> None:
        """Show ``start..end`` seconds, kept within the zoom limits and the content."""
        lo, hi = self._extent()
        width = max(self._canvas.viewport().width(), 1)
        shortest = width / MAX_PX_PER_FRAME / (self._fps or 25.0)
        span = min(max(end - start, shortest), hi - lo)
        start = min(max(start, lo), hi - span)
        self._view = (start, start + span)
        self._vb.setXRange(start, start + span, padding=0)
        for item in self._items:
            item.prepareGeometryChange()
        self._sync_scrollbar()
        self._thumb_timer.start()
        self._canvas.viewport().update()

    def fit_view(self) -> None:
        lo, hi = self._extent()
        self.set_view(lo, hi)

    def zoom(self, factor: float, around: float | None = None) -> None:
        """Zoom in by ``factor`` (> 1) or out (< 1), keeping the time ``around`` in place."""
        t0, t1 = self._view
        around = (t0 + t1) / 2 if around is None else around
        self.set_view(around - (around - t0) / factor, around + (t1 - around) / factor)

    def time_at(self, x: float) -> float:
        """Seconds at canvas viewport pixel ``x``."""
        t0, t1 = self._view
        return t0 + x / max(self._canvas.viewport().width(), 1) * (t1 - t0)

    def x_at(self, seconds: float) -> float:
        """Canvas viewport pixel of ``seconds``."""
        t0, t1 = self._view
        return (seconds - t0) / (t1 - t0) * max(self._canvas.viewport().width(), 1)

    def canvas(self) -> QtWidgets.QWidget:
        """The widget receiving the timeline's mouse events (its coordinates: :meth:`x_at`)."""
        return self._canvas.viewport()

    def lane_rect(self, lane: str) -> QtCore.QRectF:
        """A lane ("ruler", "states", "video", "source", "dub") in canvas pixels (scrolled
        lanes: partly or wholly outside the canvas)."""
        y0, y1 = getattr(self._layout, lane)
        return QtCore.QRectF(0, y0 - self._top, self._canvas.viewport().width(), y1 - y0)

    def lanes_scroll(self) -> QtWidgets.QScrollBar:
        """The lanes' vertical scroll bar (shown only where they do not fit)."""
        return self._vscroll

    def _extent(self) -> tuple[float, float]:
        """The span worth showing: the clip and the dub, with a little room either side."""
        lo, hi = 0.0, max(self._duration, 1.0)
        offsets = [self._dub_offset]
        if self._drag is not None and self._drag.kind == "dub":
            offsets.append(self._drag.offset)  # no shrinking under a drag: the view would jump
        if self._dub_duration > 0:
            lo, hi = min(lo, *offsets), max(hi, max(offsets) + self._dub_duration)
        pad = 0.02 * (hi - lo)
        return lo - pad, hi + pad

    def _view_rect(self) -> QtCore.QRectF:
        t0, t1 = self._view
        return QtCore.QRectF(t0, 0, t1 - t0, max(self._canvas.viewport().height(),
                                                 self._layout.bottom, 1))

    def _seconds_per_pixel(self) -> float:
        t0, t1 = self._view
        return (t1 - t0) / max(self._canvas.viewport().width(), 1)

    def _on_resized(self) -> None:
        height = self._canvas.viewport().height()
        self._layout = _Layout.for_height(height)
        hidden = max(math.ceil(self._layout.bottom - height), 0)
        bar = self._vscroll
        bar.blockSignals(True)
        bar.setRange(0, hidden)
        bar.setPageStep(max(height, 1))
        bar.setSingleStep(20)
        bar.blockSignals(False)
        bar.setVisible(hidden > 0)
        self._on_vscroll(bar.value())

    def _on_vscroll(self, value: int) -> None:
        self._top = value
        height = self._canvas.viewport().height()
        self._vb.setYRange(value, value + height, padding=0)
        t0, t1 = self._view
        self.set_view(t0, t1)
        self._headers.update()

    def _sync_scrollbar(self) -> None:
        lo, hi = self._extent()
        t0, t1 = self._view
        ms = 1000.0
        bar = self._scroll
        bar.blockSignals(True)
        bar.setRange(round(lo * ms), round((hi - (t1 - t0)) * ms))
        bar.setPageStep(max(round((t1 - t0) * ms), 1))
        bar.setSingleStep(max(round((t1 - t0) * ms / 20), 1))
        bar.setValue(round(t0 * ms))
        bar.blockSignals(False)

    def _on_scroll(self, value: int) -> None:
        t0, t1 = self._view
        self.set_view(value / 1000.0, value / 1000.0 + (t1 - t0))

    def _changed(self) -> None:
        """Content changed: the extent (scroll range) and every lane may differ."""
        t0, t1 = self._view
        self.set_view(t0, t1)
        self._headers.update()

    # -- frames --------------------------------------------------------------------------
    def _set_info(self, info: VideoStreamInfo | None) -> None:
        # Without its packet index a stream info is no help (frame times, keyframes).
        self._info = info if info is not None and info.index_data is not None else None
        self._start_frame = info.clock.start_frame if info is not None else 0
        if self._info is not None:
            self._times = self._info.index_data.times
        else:
            self._times = np.arange(max(round(self._duration * self._fps), 1)) / self._fps

    def _frame_count(self) -> int:
        return len(self._times)

    def _frame_time(self, i: int) -> float:
        return float(self._times[i]) if i < len(self._times) else self._duration

    def _frame_floor(self, t: float) -> float:
        """Start of the frame shown at ``t`` (the playhead's snapping)."""
        i = int(np.searchsorted(self._times, t + 1e-9, side="right")) - 1
        return float(self._times[min(max(i, 0), len(self._times) - 1)])

    def _frame_edge(self, t: float) -> float:
        """The frame boundary nearest ``t`` (in/out points sit between frames)."""
        edges = np.append(self._times, self._duration)
        i = int(np.searchsorted(edges, t))
        near = [j for j in (i - 1, i) if 0 <= j < len(edges)]
        return float(edges[min(near, key=lambda j: abs(edges[j] - t))])

    def _format_offset(self, seconds: float) -> str:
        sign = "+" if seconds >= 0 else "-"
        return sign + format_timecode(abs(seconds), self._fps, self._drop_frame)  # a length

    # -- thumbnails ----------------------------------------------------------------------
    def _thumb_height(self) -> int:
        return round((VIDEO_H - 4) * self.devicePixelRatioF())

    def _thumb_slots(self, t0: float, t1: float) -> tuple[int, list[int], bool]:
        """Frames per slot, the slots' first frames over ``t0..t1``, and whether to decode
        exact frames (slots a good deal shorter than a GOP) or just keyframes."""
        info = self._info
        aspect = (info.width / info.height * float(info.sample_aspect_ratio or 1)
                  if info is not None else 16 / 9)
        thumb_w = (VIDEO_H - 4) * aspect
        px_per_frame = 1 / (self._seconds_per_pixel() * self._fps)
        need = thumb_w / px_per_frame
        n = 2 ** math.floor(math.log2(need)) if need >= 1 else 1
        count = self._frame_count()
        first = int(np.searchsorted(self._times, max(t0, 0), side="right")) - 1
        last = int(np.searchsorted(self._times, min(t1, self._duration), side="left")) - 1
        frames = list(range(max(first, 0) // n * n, min(last, count - 1) + 1, n))
        gop = count / max(len(info.index_data.key_pts), 1) if info is not None else 1
        return n, frames, n * 4 <= gop

    def thumbnails_ready(self) -> bool:
        """Whether every slot in view holds its own picture (True without a clip to show):
        what screenshots and tests wait for."""
        if self._thumb_path is None:
            return True
        if self._info is None:
            return False
        _, visible, exact = self._thumb_slots(*self._view)
        return all((k, exact) in self._thumbs for k in visible)

    def _request_thumbs(self) -> None:
        if self._thumb_path is None or self._duration <= 0:
            return
        if self._info is None:
            if not self._probing:
                self._probing = True
                self._loader.probe(self._thumb_path)
            return
        t0, t1 = self._view
        span = t1 - t0
        _, visible, exact = self._thumb_slots(t0, t1)
        _, around, _ = self._thumb_slots(t0 - span / 2, t1 + span / 2)
        # Visible slots first, then the ones half a screen away (scrolling ahead).
        wanted = visible + sorted(set(around) - set(visible))
        missing = [k for k in wanted if (k, exact) not in self._thumbs]
        self._loader.request(self._thumb_path, self._info, missing, exact, self._thumb_height())

    def _on_thumb(self, generation: int, frame: int, exact: bool, image: QtGui.QImage) -> None:
        if generation <= self._clip_generation:
            return
        image.setDevicePixelRatio(self.devicePixelRatioF())
        self._thumbs[(frame, exact)] = image
        while len(self._thumbs) > _THUMB_CACHE:
            self._thumbs.popitem(last=False)
        self._video.update()

    def _on_probed(self, path: str, info: VideoStreamInfo) -> None:
        if self._probing and path == self._thumb_path:
            self._set_info(info)
            self._request_thumbs()

    def showEvent(self, event: QtGui.QShowEvent) -> None:
        super().showEvent(event)
        self._thumb_timer.start()

    def hideEvent(self, event: QtGui.QHideEvent) -> None:
        # Children are hidden when their window closes: no decoding outlives the window.
        self._loader.stop()
        super().hideEvent(event)

    # -- interaction ---------------------------------------------------------------------
    def eventFilter(self, obj: QtCore.QObject, event: QtCore.QEvent) -> bool:
        if obj is self._canvas.viewport():
            kind = event.type()
            if kind == QtCore.QEvent.Type.MouseButtonPress:
                self._press(event)
                return True
            if kind == QtCore.QEvent.Type.MouseMove:
                self._move(event)
                return True
            if kind == QtCore.QEvent.Type.MouseButtonRelease:
                self._release(event)
                return True
            if kind == QtCore.QEvent.Type.MouseButtonDblClick:
                return True
            if kind == QtCore.QEvent.Type.Wheel:
                self._wheel(event)
                return True
            if kind == QtCore.QEvent.Type.ToolTip:
                mark = self.unplaced_at(event.pos().x(), event.pos().y())
                if mark is None:
                    QtWidgets.QToolTip.hideText()
                else:
                    QtWidgets.QToolTip.showText(event.globalPos(), self.unplaced_tooltip(mark),
                                                obj)
                return True
        return super().eventFilter(obj, event)

    def _press(self, event: QtGui.QMouseEvent) -> None:
        if self._duration <= 0:
            return
        x, y = event.position().x(), event.position().y() + self._top
        if event.button() == Qt.MouseButton.MiddleButton:
            self._drag = _Drag("pan", x, view=self._view)
            self.canvas().setCursor(Qt.CursorShape.ClosedHandCursor)
            return
        if event.button() != Qt.MouseButton.LeftButton:
            return
        mark = self._mark_at(x, y)
        if mark is not None:
            before = self._playhead
            self._move_playhead(self._frame_time(mark[0]))
            if self._playhead != before:
                self.playhead_moved.emit(self._playhead)
            return
        handle = self._handle_at(x, y)
        picked = self._range_at(x, y) if handle is None else None
        if handle is not None:
            self._drag = _Drag(handle, x)
        elif picked is not None:
            self._selected = picked
            self.range_selected.emit(picked)
        elif self._on_dub(x, y):
            self._drag = _Drag("dub-pending", x, offset=self._dub_offset)
        else:
            self._drag = _Drag("playhead", x)
            self._scrub(x)

    def _move(self, event: QtGui.QMouseEvent) -> None:
        x, y = event.position().x(), event.position().y() + self._top
        drag = self._drag
        if drag is None:
            self._hover(x, y)
            return
        if drag.kind == "dub-pending" and abs(x - drag.x) >= DRAG_START_PX:
            drag.kind = "dub"
            self.canvas().setCursor(Qt.CursorShape.ClosedHandCursor)
        if drag.kind == "dub":
            self._drag_dub(drag, x)
        elif drag.kind in ("in", "out"):
            self._drag_handle(drag.kind, x)
        elif drag.kind == "playhead":
            self._scrub(x)
        elif drag.kind == "pan":
            t0, t1 = drag.view
            shift = (drag.x - x) * (t1 - t0) / max(self.canvas().width(), 1)
            self.set_view(t0 + shift, t1 + shift)

    def _release(self, event: QtGui.QMouseEvent) -> None:
        drag, self._drag = self._drag, None
        if drag is not None and drag.kind == "dub-pending":
            self._scrub(event.position().x())  # a click on the dub still moves the playhead
        self._snap_at = None
        self._hover(event.position().x(), event.position().y() + self._top)
        self.canvas().update()

    def _wheel(self, event: QtGui.QWheelEvent) -> None:
        dx, dy = event.angleDelta().x(), event.angleDelta().y()
        t0, t1 = self._view
        if dx or event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            shift = -(dx or dy) / 120 * 0.15 * (t1 - t0)
            self.set_view(t0 + shift, t1 + shift)
        elif dy:
            self.zoom(1.25 ** (dy / 120), self.time_at(event.position().x()))

    def _hover(self, x: float, y: float) -> None:
        if self._mark_at(x, y) is not None:
            self.canvas().setCursor(Qt.CursorShape.PointingHandCursor)
        elif self._handle_at(x, y) is not None:
            self.canvas().setCursor(Qt.CursorShape.SizeHorCursor)
        elif self._on_dub(x, y):
            self.canvas().setCursor(Qt.CursorShape.OpenHandCursor)
        else:
            self.canvas().unsetCursor()

    def _handle_at(self, x: float, y: float) -> str | None:
        """"in" or "out" when (x, y) is on a range bracket in the ruler."""
        if self._range is None or y >= self._layout.head:
            return None
        xi, xo = self.x_at(self._range[0]), self.x_at(self._range[1])
        # Inside-biased, so touching brackets (a one-frame range) stay separable.
        if -SNAP_PX / 2 <= x - xi <= SNAP_PX and abs(x - xi) <= abs(x - xo):
            return "in"
        if -SNAP_PX <= x - xo <= SNAP_PX / 2:
            return "out"
        return None

    def _range_at(self, x: float, y: float) -> int | None:
        """The unselected range under (x, y) in the state lane, if any."""
        y0, y1 = self._layout.states
        if not y0 <= y < y1:
            return None
        t = self.time_at(x)
        hits = [i for i, (a, b) in enumerate(self._ranges) if a <= t < b and i != self._selected]
        return hits[-1] if hits else None

    def _on_dub(self, x: float, y: float) -> bool:
        y0, y1 = self._layout.dub
        t = self.time_at(x)
        return (self._dub_duration > 0 and y0 <= y < y1
                and self._dub_offset <= t < self._dub_offset + self._dub_duration)

    def _scrub(self, x: float) -> None:
        before = self._playhead
        self._move_playhead(self.time_at(x))
        if self._playhead != before:
            self.playhead_moved.emit(self._playhead)

    def _move_playhead(self, seconds: float) -> None:
        self._head.prepareGeometryChange()
        self._playhead = self._frame_floor(min(max(seconds, 0.0), self._duration))
        self._head.update()
        self._headers.update()

    def _snap_targets(self, dub: bool) -> list[float]:
        targets = [0.0, self._duration, self._playhead]
        if self._range is not None:
            targets += list(self._range)
        if dub and self._dub_duration > 0:
            targets += [self._dub_offset, self._dub_offset + self._dub_duration]
        for start, end, _ in self._states:
            targets += [start, end]
        return targets

    def _snap(self, edges: list[float], targets: list[float]) -> tuple[float, float] | None:
        """(shift, target) bringing the nearest edge onto a target within SNAP_PX, if any."""
        if not self.snapping:
            return None
        reach = SNAP_PX * self._seconds_per_pixel()
        best = min(((t - e, t) for e in edges for t in targets), key=lambda c: abs(c[0]))
        return best if abs(best[0]) <= reach else None

    def _drag_dub(self, drag: _Drag, x: float) -> None:
        dt = self.time_at(x) - self.time_at(drag.x)
        offset = drag.offset + round(dt * self._fps) / self._fps  # whole frames
        snap = self._snap([offset, offset + self._dub_duration], self._snap_targets(dub=False))
        self._snap_at = None
        if snap is not None:
            offset += snap[0]
            self._snap_at = snap[1]
        if offset != self._dub_offset:
            self._dub_offset = offset
            self.dub_offset_changed.emit(offset)
            self._changed()
        else:
            self.canvas().update()

    def _drag_handle(self, which: str, x: float) -> None:
        start, end = self._range
        t = self._frame_edge(self.time_at(x))
        targets = [v for v in self._snap_targets(dub=True) if v not in (start, end)]
        snap = self._snap([self.time_at(x)], targets)
        self._snap_at = None
        if snap is not None:
            t = snap[1]
            self._snap_at = t
        one = 1 / self._fps
        if which == "in":
            start = min(max(t, 0.0), end - one)
        else:
            end = max(min(t, self._duration), start + one)
        if (start, end) != self._range:
            self._range = (start, end)
            self.range_changed.emit(start, end)
        self.canvas().update()
