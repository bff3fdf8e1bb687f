"""PNGs of the main window's main states, rendered offscreen (docs, visual review).

``redub-studio --screenshots DIR [VIDEO] [--audio DUB]``: empty window, clip loaded, rendering
with a preview, split-wipe compare, export dialog. The default clip and dub are the shared test
media. Settings go to a temporary file, so the user's layout and recent files are untouched.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable

SHARED_MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"


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
        end = time.monotonic() + seconds  # thumbnails and repaints land
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
        start = min(1.0, clip.duration / 4)
        end = min(start + 2.0, clip.duration)
        window.playback.seek(start)
        wait(lambda: window.frame_index == clip.index_at(start))
        window.mark_in()
        window.playback.seek(end - 1 / clip.fps)
        wait(lambda: window.frame_index == clip.index_at(end - 1 / clip.fps))
        window.mark_out()
        window.playback.seek((start + end) / 2)
        settle(1.0)
        shot("2-clip-loaded")
        job = window.render_range()
        mid = clip.index_at((start + end) / 2)
        wait(lambda: any(i >= mid for i in window._previews), 300)
        window.set_compare_mode("result")
        settle(0.2)
        shot("3-rendering-preview")
        wait(lambda: window.renders[-1].done, 300)
        window.playback.seek(float(clip.times[mid]))
        window.set_compare_mode("split")
        window.viewer.set_overlay_visible("box", False)  # nothing over the mouth compared
        window.viewer.set_overlay_visible("mask", False)
        window.viewer.set_wipe(0.5)
        wait(lambda: window._result_at == mid or mid in window._previews)
        settle(0.5)
        shot("4-split-compare")
        dialog = ExportDialog(window.project.export, os.path.join(temp.name, "clip_redub.mp4"),
                              True, window)
        dialog.show()
        settle(0.3)
        shot("5-export-dialog", dialog)
        dialog.close()
        assert job is not None
    finally:
        window._set_dirty(False)
        window.close()
        temp.cleanup()
    return written
