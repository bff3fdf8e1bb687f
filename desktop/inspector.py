"""The inspector: the selected range's sync settings and its target face.

Edits are reported as ``edited(field, value)`` (field names of
:class:`engine.project.RangeSettings`); the window turns them into undoable commands and calls
:meth:`Inspector.show_range` back with the result, so the panel always shows the project.
``committed`` follows a value entered with Enter or chosen from a list: the window hands the
keyboard back to the viewer, so J/K/L, Space, I and O drive the transport again instead of
typing into the field. The target is picked deliberately: ``pick`` arms a one-shot pick in the
viewer (a stray click on the picture must not re-target the face and restart the analysis).

Lists show names (``LABELS``) and keep the identifiers as item data. Openness and mouth timing
are one value each: where the keyframe lane's curve has keys it decides, so the field shows the
curve at the playhead and is read-only (:meth:`Inspector.show_curves`). Mouth timing shifts the
mouth against the dub; the dub's own placement is moved on the timeline.
"""
from __future__ import annotations

from typing import Callable

from PySide6 import QtCore, QtWidgets

from engine.lipsync.backend import GENERATORS
from engine.mask import DILATION_RANGE, FEATHER_RANGE, MASK_KINDS
from engine.restore.backend import RESTORERS
from engine.stabilize.backend import STABILIZERS
from engine.project import RangeSettings
from ui import theme

# What the lists show for the engine's identifiers (an unknown one shows as itself).
LABELS = {"retrieval": "Retrieval (built in)", "wav2lip": "Wav2Lip", "wav2lip_gan": "Wav2Lip GAN",
          "musetalk": "MuseTalk 1.5", "musetalk_v10": "MuseTalk 1.0", "edtalk": "EDTalk",
          "sievesync": "SieveSync", "retalking": "Video ReTalking",
          "geometric": "Geometric (built in)", "liveportrait": "LivePortrait (mouth closed)",
          "neural": "Neutraliser model", "dnet": "D-Net (neutral expression)",
          "none": "None", "gfpgan": "GFPGAN 1.4", "gfpgan_1.3": "GFPGAN 1.3", "gpen": "GPEN",
          "codeformer": "CodeFormer",
          "lower_face": "Lower face", "lips": "Lips", "parsing": "Face parsing (jaw)",
          "mouth": "Face parsing (mouth)"}
CURVE_LANES = {"openness_gain": "Openness", "audio_offset_ms": "Mouth timing"}


class Inspector(QtWidgets.QWidget):
    edited = QtCore.Signal(str, object)  # RangeSettings field, new value
    target_cleared = QtCore.Signal()
    committed = QtCore.Signal()  # a value entered (Enter) or chosen: typing is over

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self._updating = False
        self._curves: dict[str, float] = {}  # keyed curves: their value at the playhead
        self._shown = RangeSettings()
        self.timecode: Callable[[float], str] = lambda seconds: f"{seconds:.2f} s"
        self.heading = QtWidgets.QLabel("No range")
        self.heading.setStyleSheet("font-weight: bold")
        self.backend = self._combo("backend", tuple(GENERATORS))
        self.stabilizer = self._combo("stabilizer", tuple(STABILIZERS))
        self.stabilizer.setToolTip("The face crops neural backends draw on; LivePortrait "
                                   "closes the mouth first, so the old one does not show "
                                   "through; D-Net (Video ReTalking's) re-renders the face with "
                                   "a neutral expression")
        self.restorer = self._combo("restorer", tuple(RESTORERS))
        self.strength = self._spin("restorer_strength", 0.0, 1.0, 0.05, 2)
        self.mask_kind = self._combo("mask_kind", MASK_KINDS)
        self.dilation = self._spin("mask_dilation", *DILATION_RANGE, 0.01, 3)
        self.feather = self._spin("mask_feather", *FEATHER_RANGE, 0.01, 3)
        self.gain = self._spin("openness_gain", 0.0, 3.0, 0.05, 2)
        self.offset = self._spin("audio_offset_ms", -500.0, 500.0, 5.0, 0, " ms")
        self._tips = {"openness_gain": "How far the mouth opens, times the generated motion",
                      "audio_offset_ms": "Shifts the mouth against the dub (ms; positive: "
                                         "later). The dub's placement is moved on the timeline."}
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
        form.addRow("Face crops", self.stabilizer)
        form.addRow("Restorer", self.restorer)
        form.addRow("Strength", self.strength)
        form.addRow("Mask", self.mask_kind)
        form.addRow("Dilation", self.dilation)
        form.addRow("Feather", self.feather)
        form.addRow("Openness", self.gain)
        form.addRow("Mouth timing", self.offset)
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
        for item in items:
            box.addItem(LABELS.get(item, item), item)
        box.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding,
                          QtWidgets.QSizePolicy.Policy.Fixed)
        box.currentIndexChanged.connect(lambda i: self._emit(name, box.itemData(i)))
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
        spin.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding,
                           QtWidgets.QSizePolicy.Policy.Fixed)
        spin.valueChanged.connect(lambda value: self._emit(name, float(value)))
        # Enter, not leaving the field: both finish the edit, only Enter keeps the focus here.
        spin.editingFinished.connect(lambda: spin.hasFocus() and self.committed.emit())
        spin.installEventFilter(_ArrowClicks(spin, self.committed.emit))
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
            s = self._shown = settings or RangeSettings()
            for box, value in ((self.backend, s.backend), (self.stabilizer, s.stabilizer),
                               (self.restorer, s.restorer), (self.mask_kind, s.mask_kind)):
                if box.findData(value) < 0:  # e.g. a backend this build does not list
                    box.addItem(LABELS.get(value, value), value)
                box.setCurrentIndex(box.findData(value))
            for spin, value in ((self.strength, s.restorer_strength),
                                (self.dilation, s.mask_dilation), (self.feather, s.mask_feather)):
                spin.setValue(value)
            self._show_keyed()  # openness and mouth timing: the range's, or their curves'
            if s.target is None:
                self.target.setText("largest face")
            else:
                self.target.setText(f"face at {s.target.x:.0f}, {s.target.y:.0f} "
                                    f"({self.timecode(s.target.time)})")
            self.clear_target.setEnabled(s.target is not None)
        finally:
            self._updating = False

    def show_curves(self, keyed: dict[str, float]) -> None:
        """The curves that have keys, with their value at the playhead: they decide there."""
        self._curves = dict(keyed)
        self._updating = True
        try:
            self._show_keyed()
        finally:
            self._updating = False

    def _show_keyed(self) -> None:
        for name, spin in (("openness_gain", self.gain), ("audio_offset_ms", self.offset)):
            keyed = name in self._curves
            spin.setReadOnly(keyed)  # its arrows dim: nothing to step
            spin.setValue(self._curves[name] if keyed else getattr(self._shown, name))
            if keyed:
                spin.setToolTip(f"Keyed in the {CURVE_LANES[name]} lane: this is its value at "
                                "the playhead. Edit the keys there (double-click a key to type "
                                "a value), or delete them to use one value for the range.")
            else:
                spin.setToolTip(self._tips[name])


class _ArrowClicks(QtCore.QObject):
    """A click on a spin box's arrows steps the value without keeping the keys from the
    transport: nothing is being typed, so the focus goes back once the button is released.

    Clicks on the text go to the box's line edit; the box itself receives only the ones on its
    arrows and frame.
    """

    def __init__(self, spin: QtWidgets.QAbstractSpinBox, done: Callable[[], None]) -> None:
        super().__init__(spin)
        self._done = done

    def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:
        if event.type() == QtCore.QEvent.Type.MouseButtonRelease:
            QtCore.QTimer.singleShot(0, self._done)
        return False
