"""The inspector: the selected range's sync settings and its target face.

Edits are reported as ``edited(field, value)`` (field names of
:class:`engine.project.RangeSettings`); the window turns them into undoable commands and calls
:meth:`Inspector.show_range` back with the result, so the panel always shows the project.
``committed`` follows a value entered with Enter or chosen from a list: the window hands the
keyboard back to the viewer, so J/K/L, Space, I and O drive the transport again instead of
typing into the field. The target is picked deliberately: ``pick`` arms a one-shot pick in the
viewer (a stray click on the picture must not re-target the face and restart the analysis).
"""
from __future__ import annotations

from typing import Callable

from PySide6 import QtCore, QtWidgets

from engine.lipsync.backend import GENERATORS
from engine.restore.backend import RESTORERS
from engine.project import RangeSettings
from ui import theme

MASK_KINDS = ("lower_face", "lips")


class Inspector(QtWidgets.QWidget):
    edited = QtCore.Signal(str, object)  # RangeSettings field, new value
    target_cleared = QtCore.Signal()
    committed = QtCore.Signal()  # a value entered (Enter) or chosen: typing is over

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self._updating = False
        self.timecode: Callable[[float], str] = lambda seconds: f"{seconds:.2f} s"
        self.heading = QtWidgets.QLabel("No range")
        self.heading.setStyleSheet("font-weight: bold")
        self.backend = self._combo("backend", tuple(GENERATORS))
        self.restorer = self._combo("restorer", tuple(RESTORERS))
        self.strength = self._spin("restorer_strength", 0.0, 1.0, 0.05, 2)
        self.mask_kind = self._combo("mask_kind", MASK_KINDS)
        self.dilation = self._spin("mask_dilation", -0.3, 0.3, 0.01, 3)
        self.feather = self._spin("mask_feather", 0.0, 0.5, 0.01, 3)
        self.gain = self._spin("openness_gain", 0.0, 3.0, 0.05, 2)
        self.offset = self._spin("audio_offset_ms", -500.0, 500.0, 5.0, 0, " ms")
        self.target = QtWidgets.QLabel()
        self.clear_target = QtWidgets.QPushButton("Largest face")
        self.clear_target.setToolTip("Forget the picked face: sync the largest face")
        self.clear_target.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
        self.clear_target.clicked.connect(self.target_cleared)
        self.pick = QtWidgets.QPushButton("Pick Face")
        self.pick.setCheckable(True)
        self.pick.setToolTip("Then click a face in the viewer to make it the target")
        self.pick.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
        hint = QtWidgets.QLabel("Pick Face, then click a face in the viewer (or Alt+click a "
                                "face) to make it the target.")
        hint.setWordWrap(True)
        hint.setStyleSheet(f"color: {theme.TEXT_DIM}")

        self.form = QtWidgets.QWidget()
        form = QtWidgets.QFormLayout(self.form)
        form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        form.addRow("Backend", self.backend)
        form.addRow("Restorer", self.restorer)
        form.addRow("Strength", self.strength)
        form.addRow("Mask", self.mask_kind)
        form.addRow("Dilation", self.dilation)
        form.addRow("Feather", self.feather)
        form.addRow("Openness", self.gain)
        form.addRow("Audio offset", self.offset)
        form.addRow("Target", self.target)
        target_row = QtWidgets.QHBoxLayout()
        target_row.addWidget(self.pick)
        target_row.addWidget(self.clear_target)
        target_row.addStretch(1)
        form.addRow("", target_row)
        form.addRow(hint)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.heading)
        layout.addWidget(self.form)
        layout.addStretch(1)
        self.show_range(None)

    def _combo(self, name: str, items: tuple[str, ...]) -> QtWidgets.QComboBox:
        box = QtWidgets.QComboBox()
        box.addItems(list(items))
        box.currentTextChanged.connect(lambda text: self._emit(name, text))
        # After the popup closes, which gives the box the focus back.
        box.activated.connect(lambda: QtCore.QTimer.singleShot(0, self.committed.emit))
        return box

    def _spin(self, name: str, lo: float, hi: float, step: float, decimals: int,
              suffix: str = "") -> QtWidgets.QDoubleSpinBox:
        spin = QtWidgets.QDoubleSpinBox()
        spin.setRange(lo, hi)
        spin.setSingleStep(step)
        spin.setDecimals(decimals)
        spin.setSuffix(suffix)
        spin.setKeyboardTracking(False)  # one edit per committed value, not per keystroke
        spin.valueChanged.connect(lambda value: self._emit(name, float(value)))
        # Enter, not leaving the field: both finish the edit, only Enter keeps the focus here.
        spin.editingFinished.connect(lambda: spin.hasFocus() and self.committed.emit())
        return spin

    def _emit(self, name: str, value: object) -> None:
        if not self._updating:
            self.edited.emit(name, value)

    def show_range(self, settings: RangeSettings | None, title: str = "") -> None:
        """Show ``settings`` (None: no range selected, the form is disabled)."""
        self._updating = True
        try:
            self.form.setEnabled(settings is not None)
            self.heading.setText(title or ("Range" if settings else
                                           "No range: mark one with I and O"))
            s = settings or RangeSettings()
            for box, value in ((self.backend, s.backend), (self.restorer, s.restorer),
                               (self.mask_kind, s.mask_kind)):
                box.setCurrentText(value)
            for spin, value in ((self.strength, s.restorer_strength),
                                (self.dilation, s.mask_dilation), (self.feather, s.mask_feather),
                                (self.gain, s.openness_gain), (self.offset, s.audio_offset_ms)):
                spin.setValue(value)
            if s.target is None:
                self.target.setText("largest face")
            else:
                self.target.setText(f"face at {s.target.x:.0f}, {s.target.y:.0f} "
                                    f"({self.timecode(s.target.time)})")
            self.clear_target.setEnabled(s.target is not None)
        finally:
            self._updating = False
