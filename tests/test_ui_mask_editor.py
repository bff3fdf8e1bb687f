"""Mask editing driven through the widgets: mouse and key events on the mask editor, its tool
bar and the keyframe lane; checks of the stored keyframes and of the rendered pixels."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PySide6 import QtCore, QtGui

from desktop.mask_editing import MaskEditing, PreviewSpec
from engine.face import geometry as geo
from engine.face.analysis import analyze_range
from engine.mask import face_scale
from engine.maskedit import Corrections
from engine.media.reader import VideoReader
from engine.pipeline import SyncSettings
from engine.project import MediaRef, Project
from tests.conftest import shared_clip
from ui.keyframe_lane import KeyframeLane
from ui.viewer import Viewer

Qt = QtCore.Qt
SPAN = (4.2, 5.8)  # seconds: the previewed range (frames 105..144), also the training footage
FRAME = 120


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mask-cache")


@pytest.fixture(autouse=True)
def _shared_cache(cache, monkeypatch):
    # One face analysis of the clip serves every test here (the preview finds it cached).
    monkeypatch.setenv("REDUB_CACHE_DIR", str(cache))


@pytest.fixture(scope="module")
def clip():
    return shared_clip("talk_d12_512.mp4")


@pytest.fixture(scope="module")
def media(clip, cache):
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before the autouse one
        mp.setenv("REDUB_CACHE_DIR", str(cache))
        analysis = analyze_range(clip, 0.0, SPAN[1])
    with VideoReader(clip) as reader:
        frames = {i: reader.frame(i).rgb() for i in (110, FRAME, 130)}
        times = np.array(reader.times)
        duration = reader.info.duration
    return analysis, frames, times, duration


@pytest.fixture
def editing(qtbot, clip, media):
    analysis, frames, times, duration = media
    viewer = Viewer()
    qtbot.addWidget(viewer)
    viewer.resize(640, 640)
    viewer.show()
    qtbot.waitExposed(viewer)
    stack = QtGui.QUndoStack()
    me = MaskEditing(viewer, stack)
    qtbot.addWidget(me.lane)
    me.lane.resize(900, me.lane.minimumHeight())
    me.lane.show()
    me.set_project(Project(MediaRef.from_file(clip)))
    me.set_clip(times, duration)
    me.lane.set_view(0.8, 2.8)
    me.set_analysis(analysis)
    me.set_context(PreviewSpec(str(clip), str(shared_clip("speech_radio31_16k.wav")), 0.0,
                               (SPAN,), SyncSettings(train_range=(0.0, SPAN[1]))))
    go_to(me, frames, FRAME)
    me.set_editing(True)
    qtbot.waitUntil(lambda: me.result(FRAME) is not None, timeout=30000)
    yield me
    me.shutdown()


def go_to(me: MaskEditing, frames, index: int) -> None:
    me.viewer.set_frames(frames[index])
    me.set_frame(index)


def at(me: MaskEditing, frame_xy) -> QtCore.QPoint:
    """Widget point of frame coordinates (the editor lies exactly over the viewer)."""
    return me.viewer.map_from_frame(*frame_xy).toPoint()


def drag(qtbot, widget, a: QtCore.QPoint, b: QtCore.QPoint, steps: int = 5) -> None:
    qtbot.mousePress(widget, Qt.MouseButton.LeftButton, pos=a)
    for i in range(1, steps + 1):
        qtbot.mouseMove(widget, a + (b - a) * (i / steps))
    qtbot.mouseRelease(widget, Qt.MouseButton.LeftButton, pos=b)


def fresh_result(qtbot, me: MaskEditing, frame: int, before: np.ndarray | None) -> np.ndarray:
    """The frame's render after an edit (a new array, not ``before``)."""
    qtbot.waitUntil(lambda: me.result(frame) is not None and me.result(frame) is not before,
                    timeout=20000)
    return me.result(frame)


def outline_key(me: MaskEditing, frame: int) -> np.ndarray:
    return me.corrections.outline().keys[frame].points


def to_face(me: MaskEditing, frame: int) -> np.ndarray:
    return me.analysis.transforms[frame - me.analysis.start]


def test_vertex_drag_keys_the_outline_and_changes_the_mask_there(qtbot, editing, media):
    me = editing
    source = media[1][FRAME].astype(int)
    auto = me.result(FRAME)
    landmarks = me.analysis.landmarks[FRAME - me.analysis.start]
    outline = me.editor.outline()
    chin = int(np.argmax(outline[:, 1]))
    # The chin's vertex dragged up to the middle of the mouth: the chin leaves the mask.
    start, end = outline[chin], landmarks[66]
    drag(qtbot, me.editor, at(me, start), at(me, end))
    # Stored: a keyframe on this frame, in face coordinates, with the chin vertex moved.
    key = outline_key(me, FRAME)
    T = to_face(me, FRAME)
    moved = geo.apply(geo.invert(T), key)
    assert np.linalg.norm(moved[chin] - end) < 2.5  # one widget pixel is ~0.8 frame pixels
    others = np.delete(np.arange(len(outline)), chin)
    np.testing.assert_allclose(moved[others], outline[others], atol=1e-6)
    # Rendered: between the lower lip and the chin the picture is the source's again.
    edited = fresh_result(qtbot, me, FRAME, auto)
    # Nearer the lip than the chin: the new mouth keeps the target's jaw line, so the skin by
    # the chin changes little.
    x, y = np.round(landmarks[57] + 0.25 * (landmarks[8] - landmarks[57])).astype(int)
    near = (slice(y - 3, y + 4), slice(x - 3, x + 4))
    assert np.abs(auto[near] - source[near]).mean() > 3  # re-synced before the edit
    assert np.abs(edited[near] - source[near]).max() <= 2
    # The lane shows the keyframe.
    assert me.lane.selected() is None and FRAME in me.corrections.outline().keys


def test_insert_and_delete_vertices(qtbot, editing):
    me = editing
    outline = me.editor.outline()
    mid = (outline[0] + outline[1]) / 2
    qtbot.mouseDClick(me.editor, Qt.MouseButton.LeftButton, pos=at(me, mid))
    assert len(outline_key(me, FRAME)) == len(outline) + 1
    assert me.editor.selected_vertex() == 1
    # The new vertex lies on the edge it split.
    inserted = geo.apply(geo.invert(to_face(me, FRAME)), outline_key(me, FRAME))[1]
    assert np.linalg.norm(inserted - mid) < 2
    qtbot.keyClick(me.editor, Qt.Key.Key_Delete)
    np.testing.assert_allclose(geo.apply(geo.invert(to_face(me, FRAME)), outline_key(me, FRAME)),
                               outline, atol=1e-6)


def test_move_scale_and_rotate_the_whole_outline(qtbot, editing):
    me = editing
    outline = me.editor.outline()
    centre = (outline.min(0) + outline.max(0)) / 2

    def frame_key() -> np.ndarray:
        return geo.apply(geo.invert(to_face(me, FRAME)), outline_key(me, FRAME))

    drag(qtbot, me.editor, at(me, centre), at(me, centre + [20, -10]))
    shift = frame_key() - outline
    assert np.allclose(shift, shift[0], atol=1e-6) and np.linalg.norm(shift[0] - [20, -10]) < 2.5
    moved = frame_key()
    handles = me.editor.handle_positions()
    corner = handles["scale_br"]
    c = (moved.min(0) + moved.max(0)) / 2
    target = me.viewer.map_from_frame(*(c + (np.array(me.viewer.map_to_frame(corner)) - c) * 1.3))
    drag(qtbot, me.editor, corner.toPoint(), target.toPoint())
    scaled = frame_key()
    ratio = np.linalg.norm(scaled - c, axis=1) / np.linalg.norm(moved - c, axis=1)
    assert np.allclose(ratio, ratio[0], atol=1e-6) and abs(ratio[0] - 1.3) < 0.03
    rotate = me.editor.handle_positions()["rotate"]
    c = (scaled.min(0) + scaled.max(0)) / 2
    arm = np.array(me.viewer.map_to_frame(rotate)) - c
    turn = math.radians(20)
    rotated_arm = [arm[0] * math.cos(turn) - arm[1] * math.sin(turn),
                   arm[0] * math.sin(turn) + arm[1] * math.cos(turn)]
    drag(qtbot, me.editor, rotate.toPoint(), me.viewer.map_from_frame(*(c + rotated_arm)).toPoint())
    rotated = frame_key()
    before, after = scaled[0] - c, rotated[0] - c
    angle = math.degrees(math.atan2(after[1], after[0]) - math.atan2(before[1], before[0]))
    assert abs((angle + 180) % 360 - 180 - 20) < 2.5
    assert me.undo_stack.count() == 3  # one undo step per gesture


def test_brushes_add_erase_and_exclusion_keeps_source_pixels(qtbot, editing, media):
    me = editing
    frames = media[1]
    landmarks = me.analysis.landmarks[FRAME - me.analysis.start]
    mouth = landmarks[48:68].mean(0)
    auto = me.result(FRAME)
    qtbot.keyClick(me.editor, Qt.Key.Key_BracketRight)  # a bigger brush: 12 -> 15 px
    assert me.editor.brush_radius() == pytest.approx(15.0)
    assert me.toolbar.brush.value() == pytest.approx(15.0)
    me.toolbar.tool_actions["exclude"].trigger()
    assert me.editor.tool() == "exclude"
    drag(qtbot, me.editor, at(me, mouth - [18, 0]), at(me, mouth + [18, 0]), steps=8)
    layer = me.corrections.layers[-1]
    assert layer.role == "exclude" and list(layer.keys) == [FRAME]
    T = to_face(me, FRAME)
    assert layer.radius == pytest.approx(15.0 * geo.scale_of(T))
    edited = fresh_result(qtbot, me, FRAME, auto)
    x, y = np.round(mouth).astype(int)
    inner = (slice(y - 6, y + 7), slice(x - 14, x + 15))  # well inside the painted stroke
    assert (auto[inner] != frames[FRAME][inner]).any()  # re-synced without the exclusion
    # RGB from 4:2:0 planes: exact luma, chroma within rounding of the source's.
    assert np.abs(edited[inner].astype(int) - frames[FRAME][inner]).max() <= 2
    me.toolbar.tool_actions["add"].trigger()
    cheek = landmarks[13] + [-25.0, -25.0]
    drag(qtbot, me.editor, at(me, cheek), at(me, cheek + [0, 12]))
    me.toolbar.tool_actions["erase"].trigger()
    drag(qtbot, me.editor, at(me, landmarks[8] + [0, -5]), at(me, landmarks[8] + [10, -5]))
    assert [l.role for l in me.corrections.layers] == ["exclude", "add", "erase"]
    assert [o.mode for o in me.corrections.at(FRAME).overrides] == ["add", "erase", "exclude"]


def test_dilation_and_feather_handles_and_fields(qtbot, editing):
    me = editing
    scale = face_scale(me.analysis.landmarks[FRAME - me.analysis.start])
    base = me.toolbar.dilation.value()
    handle = me.editor.handle_positions()["dilation"]
    # Dragging the handle down by a tenth of the face dilates the mask by 0.1.
    target = me.viewer.map_from_frame(*(np.array(me.viewer.map_to_frame(handle)) + [0, 0.1 * scale]))
    drag(qtbot, me.editor, handle.toPoint(), target.toPoint())
    key = me.corrections.outline().keys[FRAME]
    assert key.points is None  # the outline stays automatic, its edge moves
    assert key.dilation == pytest.approx(base + 0.1, abs=0.01)
    assert me.toolbar.dilation.value() == pytest.approx(key.dilation, abs=1e-3)
    handle = me.editor.handle_positions()["feather"]
    target = me.viewer.map_from_frame(*(np.array(me.viewer.map_to_frame(handle)) + [0, 0.05 * scale]))
    drag(qtbot, me.editor, handle.toPoint(), target.toPoint())
    assert me.corrections.outline().keys[FRAME].feather == pytest.approx(0.12 + 0.1, abs=0.01)
    # The numeric field: typed and committed with Enter.
    me.toolbar.feather.lineEdit().selectAll()
    qtbot.keyClicks(me.toolbar.feather.lineEdit(), "0.05")
    qtbot.keyClick(me.toolbar.feather.lineEdit(), Qt.Key.Key_Return)
    assert me.corrections.outline().keys[FRAME].feather == pytest.approx(0.05)
    assert me.corrections.outline().keys[FRAME].dilation == pytest.approx(key.dilation)


def lane_point(lane: KeyframeLane, row: str, frame: int, y: float | None = None) -> QtCore.QPoint:
    rect = lane.row_rect(row)
    return QtCore.QPointF(lane.x_of(frame), rect.center().y() if y is None else y).toPoint()


def test_keyframe_lane_add_drag_copy_reset_and_delete(qtbot, editing):
    me = editing
    lane = me.lane
    me.set_marked((110, 135))
    qtbot.mouseDClick(lane, Qt.MouseButton.LeftButton, pos=lane_point(lane, "mask", 125))
    layer = me.corrections.outline()
    assert layer is not None and list(layer.keys) == [125]
    assert layer.keys[125].points is None  # keyed as it was: automatic
    qtbot.mouseClick(lane, Qt.MouseButton.LeftButton, pos=lane_point(lane, "mask", 125))
    assert lane.selected() == ("mask", layer.id, 125)
    drag(qtbot, lane, lane_point(lane, "mask", 125), lane_point(lane, "mask", 130))
    assert list(me.corrections.outline().keys) == [130]
    # An edited key, copied over the marked span, then reset to automatic on its own frame.
    me.corrections.outline()  # the layer id is stable across edits
    me._edit("Edit", "outline", lambda c: c.set_outline(130, me._auto_face(130) + [0, 0.03]))
    qtbot.mouseClick(lane, Qt.MouseButton.LeftButton, pos=lane_point(lane, "mask", 130))
    qtbot.keyClick(lane, Qt.Key.Key_C)
    keys = me.corrections.outline().keys
    assert sorted(keys) == [110, 130, 135]
    np.testing.assert_array_equal(keys[110].points, keys[130].points)
    qtbot.keyClick(lane, Qt.Key.Key_A)
    assert me.corrections.outline().keys[130].points is None
    qtbot.mouseClick(lane, Qt.MouseButton.LeftButton, pos=lane_point(lane, "mask", 110))
    qtbot.keyClick(lane, Qt.Key.Key_Delete)
    assert sorted(me.corrections.outline().keys) == [130, 135]


def test_curves_and_keep_spans_in_the_lane(qtbot, editing, media):
    me = editing
    lane = me.lane
    y = lane.y_of("openness_gain", 0.5)
    qtbot.mouseDClick(lane, Qt.MouseButton.LeftButton, pos=lane_point(lane, "openness_gain", 115, y))
    keys = me.corrections.curves.openness_gain.keys
    assert list(keys) == [115] and keys[115] == pytest.approx(0.5, abs=0.06)
    drag(qtbot, lane, lane_point(lane, "openness_gain", 115, y),
         lane_point(lane, "openness_gain", 118, lane.y_of("openness_gain", 1.5)))
    keys = me.corrections.curves.openness_gain.keys
    assert list(keys) == [118] and keys[118] == pytest.approx(1.5, abs=0.06)  # a pixel: 0.05
    before = me.result(FRAME)
    drag(qtbot, lane, lane_point(lane, "keep", 119), lane_point(lane, "keep", 122))
    assert me.corrections.keep == [(119, 122)]
    kept = fresh_result(qtbot, me, FRAME, before)
    np.testing.assert_array_equal(kept, media[1][FRAME])  # the source, untouched
    qtbot.mouseClick(lane, Qt.MouseButton.LeftButton, pos=lane_point(lane, "keep", 120))
    qtbot.keyClick(lane, Qt.Key.Key_Delete)
    assert me.corrections.keep == []


def test_interpolated_outline_follows_the_face_between_keys(qtbot, editing, media):
    me = editing
    frames = media[1]
    for index, lower in ((110, 0.0), (130, 0.12)):
        go_to(me, frames, index)
        outline = me.editor.outline()
        chin = int(np.argmax(outline[:, 1]))
        scale = face_scale(me.analysis.landmarks[index - me.analysis.start])
        drag(qtbot, me.editor, at(me, outline[chin]), at(me, outline[chin] + [0, lower * scale
                                                                              + 1e-3]))
    layer = me.corrections.outline()
    assert sorted(layer.keys) == [110, 130]
    # Between the keys the chin vertex moves in even steps (face coordinates) ...
    chin_y = np.array([layer.at(f).points[:, 1].max() for f in range(110, 131)])
    steps = np.diff(chin_y)
    assert (steps > 0).all() and steps.max() - steps.min() < 1e-9
    # ... and on the frame between, the editor shows it on that frame's face.
    go_to(me, frames, FRAME)
    T = to_face(me, FRAME)
    np.testing.assert_allclose(me.editor.outline(), geo.apply(geo.invert(T), layer.at(FRAME).points),
                               atol=1e-6)
    assert "interpolated" == me.editor._state


def test_undo_and_redo_restore_the_exact_state(qtbot, editing):
    me = editing
    auto = me.result(FRAME)
    states = [me.corrections.to_dict()]
    outline = me.editor.outline()
    drag(qtbot, me.editor, at(me, outline[5]), at(me, outline[5] + [6, 30]))
    states.append(me.corrections.to_dict())
    me.toolbar.tool_actions["exclude"].trigger()
    mouth = me.analysis.landmarks[FRAME - me.analysis.start][48:68].mean(0)
    drag(qtbot, me.editor, at(me, mouth), at(me, mouth + [10, 0]))
    states.append(me.corrections.to_dict())
    drag(qtbot, me.lane, lane_point(me.lane, "keep", 140), lane_point(me.lane, "keep", 142))
    states.append(me.corrections.to_dict())
    edited = fresh_result(qtbot, me, FRAME, auto)
    for state in reversed(states[:-1]):
        me.undo_stack.undo()
        assert me.corrections.to_dict() == state
    assert me.corrections == Corrections()
    # Back to the automatic mask: the render is the first one again, pixel for pixel.
    again = fresh_result(qtbot, me, FRAME, edited)
    np.testing.assert_array_equal(again, auto)
    for state in states[1:]:
        me.undo_stack.redo()
        assert me.corrections.to_dict() == state
    np.testing.assert_array_equal(fresh_result(qtbot, me, FRAME, again), edited)


def test_save_and_reload_keep_the_edits(qtbot, editing, tmp_path):
    me = editing
    outline = me.editor.outline()
    drag(qtbot, me.editor, at(me, outline[3]), at(me, outline[3] + [-8, 10]))
    me.set_curve_key("audio_offset_ms", 113, -60.0)
    me._edit("Keep", "keep", lambda c: c.set_keep(138, 140))
    path = tmp_path / "p.redub"
    me.project.save(path)
    loaded = Project.load(path)
    assert loaded.corrections == me.corrections
    np.testing.assert_array_equal(loaded.corrections.outline().keys[FRAME].points,
                                  outline_key(me, FRAME))


def test_in_the_main_window(qtbot, tmp_path, clip, media):
    from tests.editor_window import new_window

    win = new_window(qtbot, tmp_path)
    try:
        win.open_video(str(clip), dub=str(shared_clip("speech_radio31_16k.wav")))
        qtbot.waitUntil(lambda: win.project is not None and bool(win.project.dubs), timeout=20000)
        win.set_range(*SPAN)
        qtbot.waitUntil(lambda: win.analysis is not None, timeout=60000)
        me = win.mask_editing
        qtbot.keyClick(win, Qt.Key.Key_M)  # Edit Mask
        assert me.editing and me.lane.isVisible() and win.viewer.compare_mode() == "result"
        win.playback.seek(float(win.clip.times[FRAME]))
        qtbot.waitUntil(lambda: win.frame_index == FRAME and me.result(FRAME) is not None,
                        timeout=30000)
        auto = me.result(FRAME)
        outline = me.editor.outline()
        drag(qtbot, me.editor, at(me, outline[4]), at(me, outline[4] + [0, 25]))
        edited = fresh_result(qtbot, me, FRAME, auto)
        qtbot.waitUntil(lambda: win.viewer._result_rgb is edited)  # shown at once
        assert win.windowTitle().startswith("Untitled •")  # unsaved
        path = tmp_path / "edited.redub"
        assert win._save_to(str(path))
        assert Project.load(path).corrections == me.corrections
        qtbot.keyClick(win, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
        assert me.corrections == Corrections()
    finally:
        win._set_dirty(False)
        win.close()


def test_difference_view_compares_with_the_exact_result_on_any_frame(qtbot, tmp_path, clip):
    """Not the encoded render file: untouched pixels read exactly zero, whatever the frame and
    whichever range holds it."""
    from tests.editor_window import new_window

    win = new_window(qtbot, tmp_path)
    try:
        win.open_video(str(clip), dub=str(shared_clip("speech_radio31_16k.wav")))
        qtbot.waitUntil(lambda: win.project is not None and bool(win.project.dubs), timeout=20000)
        win.set_range(1.0, 2.0)  # a second range, never selected
        win.new_range()
        win.set_range(*SPAN)
        qtbot.waitUntil(lambda: win.analysis is not None, timeout=60000)
        win.compare_actions["difference"].trigger()
        for frame in (FRAME, FRAME + 3):
            win.playback.seek(float(win.clip.times[frame]))
            qtbot.waitUntil(lambda: win.frame_index == frame
                            and win.mask_editing.result(frame) is not None, timeout=30000)
            qtbot.waitUntil(lambda: win.viewer._result_rgb is win.mask_editing.result(frame))
            assert win.viewer._exact
            changed = np.any(win.viewer._result_rgb != win._source_rgb, axis=2)
            assert 0 < changed.mean() < 0.2  # the mouth, and nothing else
        # The other range, not the selected one: its frames compare exactly too.
        other = 37  # 1.48 s
        win.playback.seek(float(win.clip.times[other]))
        qtbot.waitUntil(lambda: win.frame_index == other
                        and win.mask_editing.result(other) is not None, timeout=60000)
        qtbot.waitUntil(lambda: win.viewer._result_rgb is win.mask_editing.result(other))
        assert win.viewer._exact and win._range().start == SPAN[0]
        changed = np.any(win.viewer._result_rgb != win._source_rgb, axis=2)
        assert 0 < changed.mean() < 0.2
        win.compare_actions["result"].trigger()
        assert not win.mask_editing.exact_wanted
    finally:
        win._set_dirty(False)
        win.close()
        win.bridge.shutdown()
