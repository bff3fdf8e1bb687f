"""File > Open Timeline in the editor (issue 17): the Shots dock, a shot opened in the editor,
missing media, Render All and Export Timeline.

The engine's timeline modules are played by fakes here (their own tests cover them): what is
tested is what the desktop does with what they return.
"""
from __future__ import annotations

import importlib
import threading
import types
from pathlib import Path

import pytest
from PySide6 import QtCore, QtWidgets
from PySide6.QtTest import QTest

from desktop import timeline_panel
from desktop.timeline_panel import (FORMAT_FILTERS, Batch, MissingMediaDialog,
                                    ensure_shot_project, shot_project_path, shot_stage)
from engine.media.probe import probe
from engine.project import Project
from engine.timeline.batch import ShotResult
from engine.timeline.shots import Shot
from tests.editor_window import window  # noqa: F401 (fixture)
from tests.media_factory import make_video, write_tone_wav

Qt = QtCore.Qt
RATE = 25


def fake_engine_module(monkeypatch, name: str, **functions) -> None:
    """``engine.timeline.<name>``'s ``functions`` replaced by fakes."""
    module = importlib.import_module(f"engine.timeline.{name}")
    for function, fake in functions.items():
        monkeypatch.setattr(module, function, fake)


@pytest.fixture
def media(tmp_path):
    video = make_video(tmp_path / "reel_a.mp4", frames=40)
    dub = write_tone_wav(tmp_path / "dub_fr.wav", seconds=3.0)
    return video, dub


def two_shots(video: Path, dub: Path) -> list[Shot]:
    # The second shot starts 10 s into the timeline, 12 frames into its media, and hears the
    # dub from 1.5 s into the file.
    return [Shot(1, "A001_C003", 1, 0, video, RATE, 4, 20, 100, 116, dub, 0.2, "dub_fr", 0),
            Shot(2, "A001_C007", 1, 2, video, RATE, 12, 30, 250, 268, dub, 1.5, "dub_fr", 0)]


def batch_of(tmp_path: Path, shots: list[Shot], fmt: str = "fcp_xml") -> Batch:
    return Batch(tmp_path / "edit.xml", timeline=object(), fmt=fmt, shots=shots, notes=[],
                 folder=tmp_path / "edit_redub", start_frame=RATE * 3600)


def test_the_dock_lists_shots_with_their_columns(qtbot, window, media, tmp_path):
    video, dub = media
    shots = two_shots(video, dub)
    window.batch.show_batch(batch_of(tmp_path, shots))
    panel, model = window.batch.panel, window.batch.panel.model
    assert window.batch.dock.isVisible()
    header = [model.headerData(c, Qt.Orientation.Horizontal) for c in range(model.columnCount())]
    assert header == ["", "Shot / Dub", "Record In / Out", "Duration", "Status"]
    text = [[model.index(r, c).data() for c in range(1, 5)] for r in range(model.rowCount())]
    # Record timecode from the timeline's start (01:00:00:00), duration of the overlap.
    assert text == [["A001_C003\ndub_fr", "01:00:04:00\n01:00:04:16", "00:00:00:16", "pending"],
                    ["A001_C007\ndub_fr", "01:00:10:00\n01:00:10:18", "00:00:00:18", "pending"]]
    assert model.index(1, 1).data(Qt.ItemDataRole.ToolTipRole) == f"{shots[1].media}\ndub: {dub}"
    assert panel.render_button.isEnabled() and not panel.export_button.isEnabled()
    (action,) = [a for a in window.menuBar().actions()[0].menu().actions()
                 if a.text() == "Open &Timeline…"]
    assert action.shortcut().toString() == "Ctrl+Shift+O"
    # Thumbnails: the first frame of each shot, decoded in the background.
    qtbot.waitUntil(lambda: all(r.thumbnail is not None for r in model.rows), timeout=10000)
    icon = model.index(1, 0).data(Qt.ItemDataRole.DecorationRole)
    assert icon.height() == timeline_panel.THUMB_HEIGHT


def test_the_empty_viewers_hint_fits_beside_the_shots_dock(qtbot, window, media, tmp_path):
    window.resize(1280, 720)
    window.batch.show_batch(batch_of(tmp_path, two_shots(*media)))
    window.resizeDocks([window.batch.dock], [700], Qt.Orientation.Horizontal)
    hint, viewer = window.empty_hint, window.viewer
    metrics = hint.fontMetrics()
    # The dock narrows the viewer (below the hint's one line) without resizing the window:
    # the hint follows it.
    qtbot.waitUntil(lambda: viewer.width() < metrics.horizontalAdvance(hint.text()),
                    timeout=5000)
    qtbot.waitUntil(lambda: hint.geometry() == viewer.rect(), timeout=5000)
    assert hint.isVisible()
    room = hint.contentsRect().adjusted(hint.margin(), hint.margin(), -hint.margin(),
                                        -hint.margin())
    needed = metrics.boundingRect(room, int(Qt.TextFlag.TextWordWrap), hint.text())
    assert needed.width() <= room.width() and needed.height() <= room.height()


def test_double_click_opens_the_shot_with_its_range_and_dub(qtbot, window, media, tmp_path):
    video, dub = media
    shots = two_shots(video, dub)
    window.batch.show_batch(batch_of(tmp_path, shots))
    table = window.batch.panel.table
    centre = table.visualRect(table.model().index(1, 1)).center()
    # A double-click as the view sees it: the press of the first click names the row.
    QTest.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=centre)
    QTest.mouseDClick(table.viewport(), Qt.MouseButton.LeftButton, pos=centre)
    qtbot.waitUntil(lambda: window.project is not None and window.clip is not None,
                    timeout=10000)
    times = probe(video).video[0].index_data.times
    project = window.project
    assert project.media.path == str(video)
    assert len(project.ranges) == 1
    assert project.ranges[0].start == pytest.approx(times[12])
    assert project.ranges[0].end == pytest.approx(times[30])
    # Frame 12 of the media (the shot's first) hears the dub 1.5 s into its file.
    assert project.dubs[0].media.path == str(dub)
    assert project.dubs[0].offset == pytest.approx(times[12] - 1.5)
    assert window.selected == 0
    # The playhead waits on the shot's first frame.
    qtbot.waitUntil(lambda: window.frame_index == 12, timeout=10000)
    assert window.time == pytest.approx(times[12])
    path = shot_project_path(tmp_path / "edit_redub", shots[1])
    assert window.project_path == str(path) and path.exists()

    # An edit made in the shot is kept in its project and found when it is opened again.
    window.set_range_setting("openness_gain", 1.4)
    assert window.save()
    window.new_project()
    assert window.project is None
    window.batch.open_shot(1)
    qtbot.waitUntil(lambda: window.project is not None, timeout=10000)
    assert window.project.ranges[0].settings.openness_gain == pytest.approx(1.4)


def test_missing_media_dialog_names_the_clips_and_searches_a_folder(qtbot, monkeypatch,
                                                                    tmp_path):
    missing = ["A001_C003", "A001_C007"]
    searched: list[list[str]] = []

    def relink(timeline, path, folders):
        searched.append(folders)
        missing.remove("A001_C003")
        return 1

    fake_engine_module(monkeypatch, "io", relink=relink,
                       missing_media=lambda timeline, path: list(missing))
    dialog = MissingMediaDialog(tmp_path / "edit.xml", object(), list(missing))
    qtbot.addWidget(dialog)
    names = [dialog.clips.item(i).text() for i in range(dialog.clips.count())]
    assert names == ["A001_C003", "A001_C007"]
    assert "2 clips of edit.xml" in dialog.intro.text()
    monkeypatch.setattr(QtWidgets.QFileDialog, "getExistingDirectory",
                        lambda *a, **k: str(tmp_path / "media"))
    dialog.search_button.click()
    assert searched == [[str(tmp_path / "media")]]
    assert [dialog.clips.item(i).text() for i in range(dialog.clips.count())] == ["A001_C007"]
    ok = dialog.buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Ok)
    assert ok.text() == "Open Anyway"


def test_open_timeline_asks_about_missing_media_first(qtbot, window, media, monkeypatch,
                                                      tmp_path):
    path = tmp_path / "edit.otio"
    path.write_text("{}")
    shots = two_shots(*media)
    timeline = types.SimpleNamespace(global_start_time=None)
    written: list[tuple[Path, str]] = []
    fake_engine_module(monkeypatch, "io", format_of=lambda p: "otio",
                       read_timeline=lambda p, fmt=None, rate=None: timeline,
                       missing_media=lambda t, p: ["A001_C007"],
                       write_timeline=lambda t, p, fmt=None: written.append((Path(p), fmt)))
    fake_engine_module(monkeypatch, "shots", find_shots=lambda t, p, **k: (shots, []))
    asked: list[list[str]] = []
    monkeypatch.setattr(timeline_panel, "ask_missing",
                        lambda p, t, missing, parent: asked.append(missing) or True)
    window.batch.open(str(path))
    qtbot.waitUntil(lambda: window.batch.batch is not None, timeout=10000)
    assert asked == [["A001_C007"]]
    assert window.batch.panel.model.rowCount() == 2
    # Opened anyway: Render All renders the timeline as read (and relinked) in memory; no
    # copy of it is written.
    assert written == []
    assert window.batch.batch.timeline is timeline and window.batch.batch.path == path


def test_render_all_updates_each_shot_and_the_overall_progress(qtbot, window, media,
                                                               monkeypatch, tmp_path):
    shots = two_shots(*media)
    window.batch.show_batch(batch_of(tmp_path, shots))
    # The editor opened the second shot and changed its mouth's openness.
    path = ensure_shot_project(tmp_path / "edit_redub", shots[1])
    project = Project.load(path)
    project.ranges[0].settings.openness_gain = 1.4
    project.save(path)
    calls: list[dict] = []
    go, first_done = threading.Event(), threading.Event()

    def run_batch(timeline, folder, **kw):
        calls.append(dict(kw, timeline=timeline, folder=folder))
        progress = kw["progress"]
        done = ShotResult(shots[0], "done", Path(folder) / "a.mov", 16, [])
        failed = ShotResult(shots[1], "failed", None, 0, ["reel_a.mp4: cannot decode frame 14"])
        progress("batch", 0, 2)
        progress("shot 1/2 export", 8, 16)
        go.wait(10)
        kw["on_shot"](done)
        progress("batch", 1, 2)
        progress("shot 2/2 faces", 3, 10)
        first_done.wait(10)
        kw["on_shot"](failed)
        progress("batch", 2, 2)
        return types.SimpleNamespace(shots=[done, failed], timeline=Path(folder) / "edit.xml",
                                     notes=[])

    fake_engine_module(monkeypatch, "batch", run_batch=run_batch)
    panel, model = window.batch.panel, window.batch.panel.model
    job = window.batch.render_all()
    assert job is not None and not panel.render_button.isEnabled()
    assert panel.cancel_button.isEnabled()
    assert job in window.jobs.rows  # the Jobs dock shows it too, with its own Cancel
    qtbot.waitUntil(lambda: model.rows[0].status == "rendering", timeout=10000)
    assert model.index(0, 4).data() == "rendering 50%"
    assert model.index(1, 4).data() == "pending"
    assert panel.progress.isVisible() and panel.progress.value() == 250
    assert panel.progress.format() == "shot 1 of 2: rendering 50%"
    go.set()
    # Shot 1's row shows its result as soon as it is known, while shot 2 renders.
    qtbot.waitUntil(lambda: model.rows[1].status == "rendering", timeout=10000)
    assert model.index(0, 4).data() == "done" and window.batch.running
    assert model.index(1, 4).data() == "analysing faces 30%"
    first_done.set()
    qtbot.waitUntil(lambda: not window.batch.running, timeout=10000)
    assert [model.index(r, 4).data() for r in range(2)] == ["done", "failed"]
    assert model.index(1, 4).data(Qt.ItemDataRole.ToolTipRole) == \
        "reel_a.mp4: cannot decode frame 14"
    assert model.index(0, 4).data(Qt.ItemDataRole.ToolTipRole) is None
    assert panel.export_button.isEnabled() and not panel.progress.isVisible()
    assert "1 of 2 shots failed" in window.statusBar().currentMessage()
    # The timeline as opened, named by its file; the batch folder, the input's format, and
    # the project of the shot the editor opened (the engine renders it as that says).
    (call,) = calls
    batch = window.batch.batch
    assert call["timeline"] is batch.timeline and call["path"] == str(batch.path)
    assert call["folder"] == str(tmp_path / "edit_redub") and call["fmt"] == "fcp_xml"
    assert call["projects"] == {2: path}
    assert [r.status for r in window.batch.batch.results] == ["done", "failed"]


def test_batch_stages_name_the_shot():
    assert shot_stage("shot 3/12 export") == (2, "export")
    assert shot_stage("batch") is None


def test_render_all_cancels(qtbot, window, media, monkeypatch, tmp_path):
    shots = two_shots(*media)
    window.batch.show_batch(batch_of(tmp_path, shots))
    started = threading.Event()

    def run_batch(timeline, folder, **kw):
        kw["progress"]("shot 1/2 faces", 1, 16)
        started.set()
        while True:
            kw["cancel"].check()
            threading.Event().wait(0.01)

    fake_engine_module(monkeypatch, "batch", run_batch=run_batch)
    window.batch.render_all()
    assert started.wait(10)
    window.batch.panel.cancel_button.click()
    qtbot.waitUntil(lambda: not window.batch.running, timeout=10000)
    model = window.batch.panel.model
    assert [model.index(r, 4).data() for r in range(2)] == ["pending", "pending"]
    assert window.batch.panel.render_button.isEnabled()
    assert window.statusBar().currentMessage() == "Render All cancelled"


def test_export_timeline_writes_the_chosen_format(qtbot, window, media, monkeypatch, tmp_path):
    shots = two_shots(*media)
    batch = batch_of(tmp_path, shots, fmt="fcp_xml")
    window.batch.show_batch(batch)
    batch.results = [ShotResult(shots[0], "done", tmp_path / "a.mov", 16, [])]
    window.batch.panel.set_running(False, has_results=True)
    offered: list[tuple[str, str]] = []

    def save_dialog(parent, title, start, filters, default):
        offered.append((start, default))
        return str(tmp_path / "out.edl"), FORMAT_FILTERS["edl"]

    monkeypatch.setattr(QtWidgets.QFileDialog, "getSaveFileName", save_dialog)
    written: list[tuple] = []
    fake_engine_module(monkeypatch, "conform",
                       conform=lambda t, p, results, out, fmt=None: written.append(
                           (t, p, list(results), out, fmt)))
    window.batch.panel.export_button.click()
    # The dialog offers the input's format first, in the batch folder.
    assert offered == [(str(tmp_path / "edit_redub" / "edit_redub.xml"),
                        FORMAT_FILTERS["fcp_xml"])]
    assert written == [(batch.timeline, batch.path, batch.results, str(tmp_path / "out.edl"),
                        "edl")]
    assert window.statusBar().currentMessage() == f"Exported {tmp_path / 'out.edl'}"


# -- with the engine's own timeline modules ------------------------------------------------

def test_a_real_timeline_opens_as_its_shots(qtbot, window, tmp_path):
    import opentimelineio as otio

    from engine.timeline.shots import find_shots
    from tests import timeline_factory as tf

    path = tmp_path / "edit.otio"
    otio.adapters.write_to_file(tf.two_shots(), str(path))
    window.batch.open(str(path))
    qtbot.waitUntil(lambda: window.batch.batch is not None, timeout=20000)
    model = window.batch.panel.model
    shots, _ = find_shots(otio.adapters.read_from_file(str(path)), path)
    assert [r.shot for r in model.rows] == shots
    # Shot 1: record frames 5-45 of a timeline starting at 01:00:00:00 (see timeline_factory).
    assert [model.index(0, c).data() for c in range(1, 4)] == \
        [f"{shots[0].name}\n{shots[0].dub_name}", "01:00:00:05\n01:00:01:20", "00:00:01:15"]
    assert window.batch.panel.title.text().startswith("edit.otio: 2 shots")
    qtbot.waitUntil(lambda: all(r.thumbnail is not None for r in model.rows), timeout=20000)


def test_missing_media_found_by_a_folder_search(qtbot, window, monkeypatch, tmp_path):
    import opentimelineio as otio

    from engine.timeline import io
    from tests import timeline_factory as tf

    (tmp_path / "cards").mkdir()
    video = make_video(tmp_path / "cards" / "A001_C003.mp4", frames=60)
    dub = write_tone_wav(tmp_path / "dub_fr.wav", seconds=3.0)
    path = tmp_path / "edit.otio"
    otio.adapters.write_to_file(tf.timeline(tf.video_track(tf.clip(video, 5, 40)),
                                            tf.audio_track(10, tf.clip(dub, 0, 20))), str(path))
    moved = tmp_path / "archive" / "day1"
    moved.mkdir(parents=True)
    (tmp_path / "cards" / "A001_C003.mp4").rename(moved / "A001_C003.mp4")
    shown: list[list[str]] = []

    def exec_(dialog):  # the editor searches the archive, then opens
        shown.append([dialog.clips.item(i).text() for i in range(dialog.clips.count())])
        dialog.search(str(tmp_path / "archive"))
        shown.append(list(dialog.missing))
        return QtWidgets.QDialog.DialogCode.Accepted

    monkeypatch.setattr(MissingMediaDialog, "exec", exec_)
    window.batch.open(str(path))
    qtbot.waitUntil(lambda: window.batch.batch is not None, timeout=20000)
    assert shown == [["A001_C003"], []]
    batch = window.batch.batch
    assert [s.media for s in batch.shots] == [moved / "A001_C003.mp4"]
    # Render All renders the timeline relinked in memory: nothing missing there, and the
    # editor's file is left as it was.
    assert io.missing_media(batch.timeline, batch.path) == []
    assert io.missing_media(io.read_timeline(path), path) == ["A001_C003"]


def test_render_all_and_export_with_the_engine(qtbot, window, monkeypatch, tmp_path):
    """A faceless shot (a test pattern) through the real batch: its status, then the
    timeline exported as Kdenlive and read back."""
    import opentimelineio as otio

    from engine.timeline import io
    from tests import timeline_factory as tf

    video = make_video(tmp_path / "pattern.mp4", frames=30)
    dub = write_tone_wav(tmp_path / "dub_fr.wav", seconds=2.0)
    path = tmp_path / "edit.otio"
    otio.adapters.write_to_file(tf.timeline(tf.video_track(tf.clip(video, 2, 20)),
                                            tf.audio_track(4, tf.clip(dub, 0, 10))), str(path))
    window.batch.open(str(path))
    qtbot.waitUntil(lambda: window.batch.batch is not None, timeout=20000)
    window.batch.render_all()
    qtbot.waitUntil(lambda: not window.batch.running, timeout=60000)
    model = window.batch.panel.model
    assert model.index(0, 4).data() == "no face"
    assert model.index(0, 4).data(Qt.ItemDataRole.ToolTipRole)  # the engine says why
    assert (tmp_path / "edit_redub" / "edit_redub_report.csv").exists()
    out = tmp_path / "edit_redub" / "edit_redub.kdenlive"
    monkeypatch.setattr(QtWidgets.QFileDialog, "getSaveFileName",
                        lambda *a, **k: (str(out), FORMAT_FILTERS["kdenlive"]))
    window.batch.panel.export_button.click()
    back = io.read_timeline(out)
    # The faceless shot keeps its original clip: same media, same record range.
    (clip,) = [c for c in back.find_clips() if io.media_path(c, out) == video]
    assert clip.range_in_parent().duration.value == 20


def test_render_all_rerenders_only_the_shot_edited_in_the_editor(qtbot, window, tmp_path):
    """With the engine and the shared clips: after a Render All, a shot opened in the editor
    and left as it was is skipped, and the one given a keep-original span renders again."""
    from engine.timeline import io
    from tests import timeline_factory as tf

    path = tmp_path / "edit.otio"
    io.write_timeline(tf.two_shots(), path)
    window.batch.open(str(path))
    qtbot.waitUntil(lambda: window.batch.batch is not None, timeout=20000)
    model, shots = window.batch.panel.model, window.batch.batch.shots
    window.batch.render_all()
    qtbot.waitUntil(lambda: not window.batch.running, timeout=120000)
    assert [r.status for r in model.rows] == ["done", "done"]
    outputs = [r.output for r in window.batch.batch.results]
    stamps = [p.stat().st_mtime_ns for p in outputs]

    for row in (1, 0):  # shot 2 opened and left alone, then shot 1 edited
        window.batch.open_shot(row)
        project = str(shot_project_path(window.batch.batch.folder, shots[row]))
        qtbot.waitUntil(lambda: window.project_path == project and window.clip is not None,
                        timeout=10000)
    qtbot.waitUntil(lambda: window.frame_index == shots[0].source_in, timeout=10000)
    first = shots[0].source_in + 10
    window.mask_editing.lane.keep_set.emit(first, first + 9, -1)
    assert window.project.corrections.keep == [(first, first + 9)]
    seen: list[tuple[int, str]] = []
    window.batch.shot_finished.connect(
        lambda result: seen.append((result.shot.index, result.status)))
    window.batch.render_all()  # saves the open shot's edit first
    qtbot.waitUntil(lambda: not window.batch.running, timeout=120000)
    assert sorted(seen) == [(1, "done"), (2, "skipped")]  # the skipped one is known first
    assert [r.status for r in model.rows] == ["done", "skipped"]
    assert Project.load(project).corrections.keep == [(first, first + 9)]
    assert outputs[0].stat().st_mtime_ns != stamps[0]
    assert outputs[1].stat().st_mtime_ns == stamps[1]
