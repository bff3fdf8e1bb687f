"""The widgets on real footage with the theme applied: a smoke test of the whole look.

Set ``REDUB_UI_SHOTS`` to a folder to keep the screenshots (e.g. ``/tmp/ui_shots``).
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6 import QtWidgets

from engine.face.analysis import analyze_range
from engine.mask import landmark_polygon
from engine.media.peaks import PeakPyramid
from engine.media.reader import VideoReader
from tests.conftest import shared_clip
from ui.theme import THEME_QSS, apply_theme, style_sheet
from ui.timeline import Timeline
from ui.viewer import Viewer

CLIP = "talk_s18_720p.mp4"
DUB = "speech_retalk2.wav"


@pytest.fixture
def themed(qapp):
    style, palette, sheet = qapp.style().name(), qapp.palette(), qapp.styleSheet()
    apply_theme(qapp)
    yield qapp
    qapp.setStyleSheet(sheet)
    qapp.setPalette(palette)
    if style:
        qapp.setStyle(style)


def save(widget: QtWidgets.QWidget, name: str) -> None:
    image = widget.grab().toImage()
    # Dark and not blank: mostly dark greys, with some detail.
    grey = np.array([[image.pixelColor(x, y).lightness()
                      for x in range(0, image.width(), 7)]
                     for y in range(0, image.height(), 7)])
    assert grey.std() > 10
    folder = os.environ.get("REDUB_UI_SHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        assert image.save(str(Path(folder) / f"{name}.png"))


def test_theme_loads(themed):
    assert themed.styleSheet() == style_sheet()
    assert "url(icons/" in THEME_QSS.read_text(encoding="utf-8")  # made absolute when applied
    assert "url(icons/" not in themed.styleSheet()
    assert themed.palette().window().color().lightness() < 40
    button = QtWidgets.QPushButton("Render")
    button.ensurePolished()
    assert button.palette().button().color().lightness() < 60


def test_viewer_with_overlays_on_a_real_clip(qtbot, themed):
    path = shared_clip(CLIP)
    analysis = analyze_range(path, 2.0, 2.1)
    face = analysis.frame(analysis.start)
    with VideoReader(path) as reader:
        source = reader.frame(face.index).rgb()
        sar = reader.info.sample_aspect_ratio
    polygon = landmark_polygon(face.landmarks, "lower_face")
    # A stand-in result: the lower face softened inside the mask polygon.
    mask = np.zeros(source.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 255)
    result = np.where(mask[..., None] > 0, cv2.GaussianBlur(source, (0, 0), 3), source)
    v = Viewer()
    qtbot.addWidget(v)
    v.resize(960, 560)
    v.show()
    v.set_sample_aspect_ratio(sar)
    v.set_frames(source, result)
    v.set_overlay(face.box, face.landmarks, polygon, face.crop_box)
    save(v, "viewer_overlays")
    v.set_compare_mode("split")
    v.zoom_to(1.5, v.map_from_frame(*face.landmarks[33]))
    v.set_wipe(float(face.landmarks[57, 0]) / source.shape[1])
    v.set_overlay_visible("crop", False)
    save(v, "viewer_split")
    v.set_compare_mode("difference")
    save(v, "viewer_difference")


def test_timeline_with_a_clip_and_dub(qtbot, themed):
    path = shared_clip(CLIP)
    with VideoReader(path) as reader:
        info = reader.info
    tl = Timeline()
    qtbot.addWidget(tl)
    tl.resize(1280, 260)
    tl.show()
    tl.set_clip(info.duration, info.frame_rate, path, PeakPyramid.build(path), video_info=info)
    tl.set_dub(PeakPyramid.build(shared_clip(DUB)), offset=1.6, name=DUB)
    tl.set_range(2.0, 7.5)
    tl.set_range_states([(2.0, 4.0, "rendered"), (4.0, 5.2, "rendering"), (5.2, 7.5, "stale")])
    tl.set_unplaced([(75, 80), (150, 150), (200, 211)])  # frames keeping their own mouth
    tl.set_playhead(3.3)
    qtbot.waitUntil(tl.thumbnails_ready, timeout=15000)
    save(tl, "timeline")
    tl.set_view(3.0, 4.6)
    qtbot.waitUntil(tl.thumbnails_ready, timeout=15000)
    save(tl, "timeline_zoomed")
