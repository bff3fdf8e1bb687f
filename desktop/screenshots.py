"""PNGs of the main window's main states, rendered offscreen (docs, visual review).

``redub-studio --screenshots DIR [VIDEO] [--audio DUB]``: empty window, clip loaded, rendering
with a preview, split-wipe compare, export dialog, mask editing (keyframed outline with its
handles, an exclusion region, curves and a keep-original span in the keyframe lane) and a
close-up of the editor on the mouth; then a render of the fast head swings of the shared clip
``talk_d12_512.mp4``: the frames it leaves with their own mouth (the face could not be placed)
marked on the timeline, the playhead on the first mark; then several ranges on one timeline,
the window at 1280x720 and 1440x900 (every lane in view), the timeline at its deepest zoom
(waveforms there join the peaks' buckets rather than drawing blocks), and File > Open
Timeline: the Shots dock of a three-shot timeline and a shot opened from it. The default clip
and dub are the shared test media (the other clips are looked for beside the clip given).
Settings go to a temporary file, so the user's layout and recent files are untouched.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable

SHARED_MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"


def mask_editing_shots(window, mid: int, wait: Callable, settle: Callable,
                       shot: Callable) -> None:
    """The mask editor in use, made through its widgets' signals as a user's gestures are."""
    import numpy as np

    clip, editing = window.clip, window.mask_editing
    wait(lambda: window.analysis is not None, 300)
    window.viewer.set_overlay_visible("box", False)
    window.set_compare_mode("result")
    editing.set_editing(True)
    first, last = editing.marked

    def go(frame: int) -> None:
        window.playback.seek(float(clip.times[frame]))
        wait(lambda: window.frame_index == frame)

    # Two outline keys: the chin's edge pulled down on the second, interpolated between.
    for frame, drop in ((first + 8, 0.0), (mid, 0.1)):
        go(frame)
        outline = editing.editor.outline()
        chin = int(np.argmax(outline[:, 1]))
        scale = outline[:, 1].max() - outline[:, 1].min()
        for i, weight in ((chin - 1, 0.6), (chin, 1.0), (chin + 1, 0.6)):
            outline[i % len(outline), 1] += weight * drop * scale
        editing.editor.outline_edited.emit(outline, True)
    # An exclusion painted over the mouth's corner, as over a microphone in front of it.
    landmarks = window.analysis.landmarks[mid - window.analysis.start]
    corner = landmarks[54]
    editing.toolbar.tool_actions["exclude"].trigger()
    editing.editor.stroke_drawn.emit("exclude", np.array([corner + [-6, 4], corner + [10, 22],
                                                          corner + [20, 40]]), 9.0)
    editing.toolbar.tool_actions["outline"].trigger()
    editing.lane.curve_key_set.emit("openness_gain", first + 10, 1.3)
    editing.lane.curve_key_set.emit("openness_gain", mid + 6, 0.85)
    editing.lane.curve_key_set.emit("audio_offset_ms", mid - 4, -40.0)
    editing.lane.keep_set.emit(last - 9, last - 4, -1)
    editing.lane.select_mask_key(editing.corrections.outline().id, mid)
    wait(lambda: editing.result(mid) is not None, 300)
    settle(1.0)
    shot("6-mask-editor")
    viewer = window.viewer
    viewer.zoom_to(viewer.scale() * 2.2)
    centre = viewer.map_from_frame(*(landmarks[57] + landmarks[8]) / 2)
    viewer.pan_by(viewer.width() / 2 - centre.x(), viewer.height() / 2 - centre.y())
    settle(0.4)
    shot("7-mask-editor-detail", viewer)


def unplaced_shots(window, video: str, dub: str, wait: Callable, settle: Callable,
                   shot: Callable) -> None:
    """A render leaving frames with their own mouth: the marks, and a click on the first."""
    from PySide6 import QtCore
    from PySide6.QtTest import QTest

    window.mask_editing.set_editing(False)
    window._set_dirty(False)  # no "save changes?" question for the clip before
    window.open_video(video, dub=dub)
    wait(lambda: window.project is not None and window.project.media.path == video
         and bool(window.project.dubs) and window.frame_index == 0)
    window.set_range(0.8, 4.0)
    window.render_range()
    wait(lambda: window.renders[-1].done, 300)
    window.set_compare_mode("result")
    window.viewer.fit()
    # The face box and landmarks: on a marked frame they show why no mouth could be placed.
    for kind in ("box", "landmarks"):
        window.viewer.set_overlay_visible(kind, True)
    wait(lambda: window.analysis is not None, 300)
    timeline = window.timeline
    if timeline.unplaced:  # none where every face could be placed: the marks are not drawn
        first = timeline.unplaced[0][0]
        y = timeline.lane_rect("states").center().y()
        x = timeline.x_at(float(window.clip.times[first]) + 0.5 / window.clip.fps)
        QTest.mouseClick(timeline.canvas(), QtCore.Qt.MouseButton.LeftButton,
                         pos=QtCore.QPoint(round(x), round(y)))
        wait(lambda: window.frame_index == first)
    settle(1.0)
    shot("8-unplaced-frames")
    shot("9-unplaced-frames-timeline", timeline)


def result_in_hand(window, index: int) -> bool:
    """Whether the viewer shows frame ``index``'s result for good: a preview, or the finished
    render's frame decoded (it comes in the background; nothing to wait for where no finished
    render covers the frame), and no other picture still on its way."""
    t = float(window.clip.times[index])
    return (window.renders.result_file(index, t) is None or window.renders.result_at == index) \
        and not window.tasks.pending


def layout_shots(window, wait: Callable, settle: Callable, shot: Callable) -> None:
    """Several ranges on the timeline, the window at the sizes editors work at, and the
    timeline at its deepest zoom."""
    window.mask_editing.set_editing(False)
    duration = window.clip.duration
    # Ranges where the clip has room (an overlapping one is refused, as in the editor).
    for a, b in ((0.02, 0.09), (0.62, 0.72), (0.85, 0.95)):
        window.new_range()
        window.set_range(round(a * duration, 2), round(b * duration, 2))
    window.select_range(0)
    window.statusBar().clearMessage()
    window.playback.seek(duration * 0.5)
    middle = window.clip.index_at(duration * 0.5)
    wait(lambda: window.frame_index == middle and result_in_hand(window, middle))
    window.timeline.fit_view()
    settle(0.5)
    shot("10-several-ranges")
    for width, height in ((1280, 720), (1440, 900)):
        window.resize(width, height)
        settle(0.5)
        shot(f"11-window-{width}x{height}")
    timeline = window.timeline
    t = timeline.playhead
    timeline.set_view(t - 0.01, t + 0.01)  # widened to the deepest zoom
    settle(0.5)
    shot("12-timeline-full-zoom", timeline)


def shortcut_sheet_shot(window, settle: Callable, shot: Callable) -> None:
    """Help > Keyboard Shortcuts (F1): every key, read from the menus."""
    window.show_shortcuts()
    settle(0.3)
    shot("13-shortcut-sheet", window.shortcut_sheet)
    window.shortcut_sheet.close()


def timeline_shots(window, media: Path, folder: str, wait: Callable, settle: Callable,
                   shot: Callable) -> None:
    """File > Open Timeline: the Shots dock for a timeline of three shared clips with their
    dubs, then a shot opened in the editor (its range and dub placed)."""
    import opentimelineio as otio
    from PySide6 import QtCore

    from engine.media.probe import probe

    rate = 25
    edit = otio.schema.Timeline(name="ep101 dub")
    edit.global_start_time = otio.opentime.from_timecode("01:00:00:00", rate)
    video = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    dubs = otio.schema.Track(name="Dub FR", kind=otio.schema.TrackKind.Audio)

    def clip(name: str, first: int, frames: int) -> otio.schema.Clip:
        info = probe(media / name)
        count = info.video[0].frame_count if info.video else round(info.duration * rate)
        ref = otio.schema.ExternalReference(
            target_url=str(media / name),
            available_range=otio.opentime.TimeRange(otio.opentime.RationalTime(0, rate),
                                                    otio.opentime.RationalTime(count, rate)))
        return otio.schema.Clip(name=Path(name).stem, media_reference=ref,
                                source_range=otio.opentime.TimeRange(
                                    otio.opentime.RationalTime(first, rate),
                                    otio.opentime.RationalTime(frames, rate)))

    for name, first in (("hdtf_aoc_512.mp4", 40), ("retalk_face5_524.mp4", 10),
                        ("talk_d12_512.mp4", 100)):
        video.append(clip(name, first, 60))
    for name, first in (("speech_radio31_16k.wav", 0), ("speech_retalk1.wav", 25),
                        ("speech_retalk2.wav", 0)):
        dubs.append(otio.schema.Gap(source_range=otio.opentime.TimeRange(
            otio.opentime.RationalTime(0, rate), otio.opentime.RationalTime(10, rate))))
        dubs.append(clip(name, first, 45))
    edit.tracks.extend([video, dubs])
    path = os.path.join(folder, "ep101_dub.otio")
    otio.adapters.write_to_file(edit, path)
    window._set_dirty(False)
    window.batch.open(path)
    model = window.batch.panel.model
    wait(lambda: window.batch.batch is not None and model.rowCount() > 0
         and all(r.thumbnail is not None for r in model.rows))
    window.resizeDocks([window.batch.dock], [560], QtCore.Qt.Orientation.Horizontal)
    window.batch.panel.table.selectRow(1)
    settle(0.5)
    shot("14-timeline-shots")
    shot("15-timeline-shots-dock", window.batch.dock)
    window.batch.open_shot(1)
    shot_media = str(model.rows[1].shot.media)
    wait(lambda: window.project is not None and window.project.media.path == shot_media
         and window._source_rgb is not None)
    window.range_nav.go_in()
    settle(1.0)
    shot("16-timeline-shot-opened")


def write_screenshots(folder: str | os.PathLike, video: str | None = None,
                      dub: str | None = None) -> list[Path]:
    """Write the PNGs to ``folder``; returns their paths."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtCore, QtWidgets

    from desktop.export_dialog import ExportDialog
    from desktop.main_window import MainWindow
    from desktop.playback import Playback
    from desktop.settings import Settings
    from ui.theme import apply_theme

    # The other shared clips the later states use are looked for beside the clip given.
    media = Path(video).resolve().parent if video else SHARED_MEDIA
    video = video or str(SHARED_MEDIA / "hdtf_aoc_512.mp4")
    dub = dub or str(SHARED_MEDIA / "speech_radio31_16k.wav")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    apply_theme(app)
    temp = tempfile.TemporaryDirectory()
    settings = Settings(QtCore.QSettings(os.path.join(temp.name, "settings.ini"),
                                         QtCore.QSettings.Format.IniFormat))
    window = MainWindow(settings, Playback(audio_device=None))
    window.resize(1440, 900)
    window.show()
    written: list[Path] = []

    def wait(condition: Callable[[], bool], seconds: float = 60.0) -> None:
        end = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > end:
                raise TimeoutError("the window did not reach the state to capture")
            app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 20)
            time.sleep(0.005)

    def settle(seconds: float = 0.3) -> None:
        wait(window.timeline.thumbnails_ready)  # a loaded machine decodes them late
        end = time.monotonic() + seconds  # repaints land
        while time.monotonic() < end:
            app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 20)

    def shot(name: str, widget: QtWidgets.QWidget | None = None) -> None:
        path = out / f"{name}.png"
        (widget or window).grab().save(str(path))
        written.append(path)

    try:
        settle()
        shot("1-empty")
        window.open_video(video, dub=dub)
        wait(lambda: window._source_rgb is not None and window.project is not None
             and bool(window.project.dubs) and window.peaks_at is not None)
        clip = window.clip
        # Past the middle: on the shared clip talk_d12 the head swings too fast in the first
        # seconds for the new mouth to be placed, and those frames keep their own.
        start = clip.duration * 0.55
        end = min(start + 2.0, clip.duration)
        window.playback.seek(start)
        wait(lambda: window.frame_index == clip.index_at(start))
        window.mark_in()
        window.playback.seek(end - 1 / clip.fps)
        wait(lambda: window.frame_index == clip.index_at(end - 1 / clip.fps))
        window.mark_out()
        window.playback.seek((start + end) / 2)
        wait(lambda: window.analysis is not None, 300)  # its face box and mask drawn
        settle(1.0)
        shot("2-clip-loaded")
        job = window.render_range()
        mid = clip.index_at((start + end) / 2)
        wait(lambda: any(i >= mid for i in window.renders.previews), 300)
        window.set_compare_mode("result")
        settle(0.2)
        shot("3-rendering-preview")
        wait(lambda: window.renders[-1].done, 300)
        window.playback.seek(float(clip.times[mid]))
        window.set_compare_mode("split")
        window.viewer.set_overlay_visible("box", False)  # nothing over the mouth compared
        window.viewer.set_overlay_visible("mask", False)
        window.viewer.set_wipe(0.5)
        wait(lambda: result_in_hand(window, mid))
        settle(0.5)
        shot("4-split-compare")
        dialog = ExportDialog(window.project.export, os.path.join(temp.name, "clip_redub.mp4"),
                              True, window)
        dialog.show()
        settle(0.3)
        shot("5-export-dialog", dialog)
        dialog.close()
        assert job is not None
        mask_editing_shots(window, mid, wait, settle, shot)
        swings = media / "talk_d12_512.mp4"  # the other states' clip
        if swings.exists():
            unplaced_shots(window, str(swings), dub, wait, settle, shot)
        layout_shots(window, wait, settle, shot)
        shortcut_sheet_shot(window, settle, shot)
        if swings.exists():
            timeline_shots(window, media, temp.name, wait, settle, shot)
    finally:
        window._set_dirty(False)
        window.close()
        temp.cleanup()
    return written
