"""The editor's controls (issue 13, faults 10, 11 and 13): one value per setting with one name,
drawn arrows and readable list entries; fine and typed curve keys; save folders apart from
the footage."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PySide6 import QtCore, QtGui, QtWidgets

from desktop.export_dialog import ExportDialog
from desktop.inspector import Inspector
from engine.maskedit import Corrections
from engine.project import RangeSettings
from tests.test_editor_day import engine, media, open_clip, mark, window  # noqa: F401
from ui import theme
from ui.keyframe_lane import ROW_LABELS, KeyframeLane

Qt = QtCore.Qt
SHIFT = Qt.KeyboardModifier.ShiftModifier


def type_into(qtbot, spin: QtWidgets.QAbstractSpinBox, text: str) -> None:
    spin.setFocus()
    spin.selectAll()
    qtbot.keyClicks(spin, text)
    qtbot.keyClick(spin, Qt.Key.Key_Return)


# -- fault 10: the inspector -------------------------------------------------------------
def _light_pixels(widget: QtWidgets.QWidget, rect: QtCore.QRect) -> int:
    image = widget.grab(rect).toImage().convertToFormat(QtGui.QImage.Format.Format_RGB888)
    bits = np.frombuffer(image.constBits(), np.uint8)
    rows = bits.reshape(image.height(), image.bytesPerLine())[:, :image.width() * 3]
    return int((rows.reshape(image.height(), image.width(), 3).min(axis=2) > 150).sum())


def test_themed_lists_and_spin_boxes_draw_their_arrows(qtbot):
    panel = QtWidgets.QWidget()
    panel.setStyleSheet(theme.style_sheet())
    layout = QtWidgets.QVBoxLayout(panel)
    combo, spin = QtWidgets.QComboBox(), QtWidgets.QDoubleSpinBox()
    combo.addItem("")  # no text: only the arrow can be light
    spin.setRange(-1.0, 1.0)
    spin.setValue(0.0)
    spin.lineEdit().setStyleSheet("color: #161616")  # hide the digits, keep the frame
    for w in (combo, spin):
        w.setFixedWidth(140)
        layout.addWidget(w)
    qtbot.addWidget(panel)
    panel.show()
    qtbot.waitExposed(panel)
    for w in (combo, spin):
        arrows = QtCore.QRect(w.width() - 20, 0, 20, w.height())
        assert _light_pixels(w, arrows) >= 8, type(w).__name__
        # Inside the box's frame, not beside it.
        assert w.grab(QtCore.QRect(w.width() - 1, w.height() // 2, 1, 1)).toImage() \
            .pixelColor(0, 0).name() != "#bdbdbd"


def test_inspector_lists_show_names_and_keep_identifiers(qtbot, window, engine, media):
    video, dub, _ = media
    open_clip(qtbot, window, video, dub)
    mark(qtbot, window, 5, 20)
    insp = window.inspector
    shown = {insp.backend.itemText(i): insp.backend.itemData(i)
             for i in range(insp.backend.count())}
    assert shown["Wav2Lip GAN"] == "wav2lip_gan"
    assert insp.mask_kind.currentText() == "Lower face"
    assert all("_" not in insp.backend.itemText(i) for i in range(insp.backend.count()))
    insp.mask_kind.setFocus()
    qtbot.keyClick(insp.mask_kind, Qt.Key.Key_Down)  # Lower face -> Lips
    assert window.project.ranges[0].settings.mask_kind == "lips"
    assert insp.mask_kind.currentText() == "Lips"
    # The neural backends' face crops: LivePortrait closes the mouth first.
    stabilizers = {insp.stabilizer.itemText(i): insp.stabilizer.itemData(i)
                   for i in range(insp.stabilizer.count())}
    assert stabilizers["LivePortrait (mouth closed)"] == "liveportrait"
    insp.stabilizer.setCurrentIndex(insp.stabilizer.findData("liveportrait"))
    settings = window.project.ranges[0].settings
    assert settings.stabilizer == "liveportrait"
    assert settings.to_sync_settings().stabilizer == "liveportrait"


def test_mouth_timing_is_named_apart_from_the_dub_offset(qtbot):
    insp = Inspector()
    qtbot.addWidget(insp)
    labels = [insp.form.layout().labelForField(w).text() for w in (insp.gain, insp.offset)]
    assert labels == ["Openness", "Mouth timing"]
    assert "dub" in insp.offset.toolTip().lower()
    assert "Audio offset" not in [label.text() for label in insp.findChildren(QtWidgets.QLabel)]
    assert ROW_LABELS["audio_offset_ms"] == "Mouth timing"


def test_toolbar_sizes_are_the_inspectors(qtbot, window, engine, media):
    video, dub, _ = media
    open_clip(qtbot, window, video, dub)
    mark(qtbot, window, 5, 20)
    bar, insp = window.mask_editing.toolbar, window.inspector
    assert (bar.dilation.value(), bar.feather.value()) == \
        pytest.approx((insp.dilation.value(), insp.feather.value()))
    # One setting, one range: a value one control takes, the other takes too.
    for a, b in ((bar.dilation, insp.dilation), (bar.feather, insp.feather)):
        assert (a.minimum(), a.maximum()) == (b.minimum(), b.maximum())
    type_into(qtbot, insp.dilation, "-0.1")
    type_into(qtbot, insp.feather, "0.2")
    assert window.project.ranges[0].settings.mask_dilation == pytest.approx(-0.1)
    assert (bar.dilation.value(), bar.feather.value()) == pytest.approx((-0.1, 0.2))


def test_a_keyed_curve_is_the_one_openness_shown(qtbot, window, engine, media):
    video, dub, _ = media
    open_clip(qtbot, window, video, dub)
    mark(qtbot, window, 5, 20)
    insp = window.inspector
    type_into(qtbot, insp.gain, "1.5")
    assert window.project.ranges[0].settings.openness_gain == pytest.approx(1.5)
    lane = window.mask_editing.lane
    assert lane._defaults["openness_gain"] == pytest.approx(1.5)  # the lane's unkeyed value
    assert not insp.gain.isReadOnly()
    window.mask_editing.set_editing(True)  # shows the keyframe lane
    qtbot.waitUntil(lane.isVisible)
    at = QtCore.QPoint(int(lane.x_of(12)), int(lane.y_of("openness_gain", 1.8)))
    qtbot.mouseDClick(lane, Qt.MouseButton.LeftButton, pos=at)  # a key at frame 12
    keyed = window.mask_editing.corrections.curves.openness_gain.keys[12]
    assert keyed != pytest.approx(1.5)
    assert insp.gain.value() == pytest.approx(keyed) and insp.gain.isReadOnly()
    window.undo_stack.undo()
    assert insp.gain.value() == pytest.approx(1.5) and not insp.gain.isReadOnly()


# -- fault 11: curve keys -----------------------------------------------------------------
@pytest.fixture
def lane(qtbot):
    lane = KeyframeLane()
    qtbot.addWidget(lane)
    lane.resize(700, lane.minimumHeight())
    lane.set_clip(np.arange(50) / 25.0, 2.0)
    c = Corrections()
    c.curves.openness_gain.keys[20] = 1.5
    lane.set_corrections(c, {"openness_gain": 1.0, "audio_offset_ms": 0.0})
    lane.show()
    qtbot.waitExposed(lane)
    return lane


def _drag(lane: KeyframeLane, start: QtCore.QPointF, dy: float, modifiers) -> None:
    def send(kind, pos, button, buttons):
        event = QtGui.QMouseEvent(kind, pos, lane.mapToGlobal(pos), button, buttons, modifiers,
                                  QtGui.QPointingDevice.primaryPointingDevice())
        QtWidgets.QApplication.sendEvent(lane, event)
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    send(QtCore.QEvent.Type.MouseButtonPress, start, left, left)
    for step in range(1, int(abs(dy)) + 1):
        send(QtCore.QEvent.Type.MouseMove, start + QtCore.QPointF(0, np.sign(dy) * step), none,
             left)
    send(QtCore.QEvent.Type.MouseButtonRelease, start + QtCore.QPointF(0, dy), left, none)


def test_shift_drag_moves_a_curve_key_finely(qtbot, lane):
    moved = []
    lane.curve_key_moved.connect(lambda *a: moved.append(a))
    key = QtCore.QPointF(lane.x_of(20), lane.y_of("openness_gain", 1.5))
    _drag(lane, key, -12, SHIFT)
    name, src, dst, value = moved[-1]
    assert (name, src, dst) == ("openness_gain", 20, 20)
    assert 1.52 <= value <= 1.6  # a tenth of a plain drag: not the top of the lane
    _drag(lane, key, -4, Qt.KeyboardModifier.NoModifier)  # plain: by the travel, not to it
    assert 1.6 < moved[-1][3] < 1.9


def test_double_click_on_a_curve_key_types_its_value(qtbot, lane):
    typed = []
    lane.curve_key_set.connect(lambda *a: typed.append(a))
    key = QtCore.QPoint(int(lane.x_of(20)), int(lane.y_of("openness_gain", 1.5)))
    qtbot.mouseDClick(lane, Qt.MouseButton.LeftButton, pos=key)
    assert lane.entry is not None and lane.entry.hasFocus()
    assert lane.entry.value() == pytest.approx(1.5)
    lane.entry.selectAll()
    qtbot.keyClicks(lane.entry, "1.23")
    qtbot.keyClick(lane.entry, Qt.Key.Key_Return)
    assert typed == [("openness_gain", 20, pytest.approx(1.23))]
    assert lane.entry is None
    # Enter on the selected key opens it again; Escape leaves the key as it was.
    lane.setFocus()
    qtbot.keyClick(lane, Qt.Key.Key_Return)
    assert lane.entry is not None
    qtbot.keyClicks(lane.entry, "9")
    qtbot.keyClick(lane.entry, Qt.Key.Key_Escape)
    assert lane.entry is None and len(typed) == 1


# -- fault 13: save folders ---------------------------------------------------------------
def test_save_and_export_open_in_the_project_folder_not_the_footage(qtbot, window, engine,
                                                                    media, tmp_path,
                                                                    monkeypatch):
    video, dub, _ = media
    open_clip(qtbot, window, video, dub)
    footage = os.path.dirname(os.path.abspath(video))
    projects = tmp_path / "projects"
    projects.mkdir()
    asked = []

    def save_dialog(parent, caption, start, *a, **k):
        asked.append(start)
        return str(projects / "scene.redub"), ""
    monkeypatch.setattr(QtWidgets.QFileDialog, "getSaveFileName", save_dialog)
    exports = []

    def export_exec(dialog):
        exports.append(dialog.output.text())
        return QtWidgets.QDialog.DialogCode.Rejected
    monkeypatch.setattr(ExportDialog, "exec", export_exec)

    window.activateWindow()
    qtbot.keyClick(window, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    assert os.path.dirname(exports[-1]) != footage  # no project saved yet, no folder used
    qtbot.keyClick(window, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    assert os.path.dirname(asked[-1]) != footage
    assert window.project_path == str(projects / "scene.redub")
    qtbot.keyClick(window, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    assert os.path.dirname(exports[-1]) == str(projects)
    # A new project's Save starts in the folder last used.
    window.new_project()
    open_clip(qtbot, window, video, dub)
    qtbot.keyClick(window, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    assert os.path.dirname(asked[-1]) == str(projects)


def test_inspector_reads_a_project_with_an_unlisted_backend(qtbot):
    insp = Inspector()
    qtbot.addWidget(insp)
    insp.show_range(RangeSettings(backend="future_model"))
    assert insp.backend.currentData() == "future_model"
