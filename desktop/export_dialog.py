"""The export dialog: what to export (whole clip or the marked ranges), codec and quality
preset, audio mode and the output file."""
from __future__ import annotations

import os
from dataclasses import dataclass

from PySide6 import QtWidgets

from engine.media.codecs import PRESETS, available_presets
from engine.project import ExportPrefs

CODECS = ("h264", "h265", "h264_nvenc", "hevc_nvenc", "prores", "dnxhr", "ffv1")
# Named quality presets per codec: the encoder options they stand for.
QUALITY: dict[str, dict[str, dict[str, str]]] = {
    "h264": {"High (CRF 16)": {"crf": "16", "preset": "slow"},
             "Standard (CRF 18)": {"crf": "18", "preset": "medium"},
             "Small (CRF 23)": {"crf": "23", "preset": "medium"}},
    # x265's CRF runs about 4-6 higher than x264's for the same look.
    "h265": {"High (CRF 18)": {"crf": "18", "preset": "slow"},
             "Standard (CRF 20)": {"crf": "20", "preset": "medium"},
             "Small (CRF 26)": {"crf": "26", "preset": "medium"}},
    # NVENC's cq (given as crf) for about the look of the x264/x265 rows above.
    "h264_nvenc": {"High (CQ 17)": {"crf": "17", "preset": "p6"},
                   "Standard (CQ 19)": {"crf": "19", "preset": "p5"},
                   "Small (CQ 24)": {"crf": "24", "preset": "p5"}},
    "hevc_nvenc": {"High (CQ 19)": {"crf": "19", "preset": "p6"},
                   "Standard (CQ 21)": {"crf": "21", "preset": "p5"},
                   "Small (CQ 27)": {"crf": "27", "preset": "p5"}},
    "prores": {"422 HQ": {"profile": "3"}, "422": {"profile": "2"}, "422 LT": {"profile": "1"},
               "Proxy": {"profile": "0"}},
    "dnxhr": {"HQX (10-bit)": {"profile": "dnxhr_hqx"}, "HQ": {"profile": "dnxhr_hq"},
              "SQ": {"profile": "dnxhr_sq"}, "LB": {"profile": "dnxhr_lb"}},
    "ffv1": {"Lossless": {}},
}
AUDIO_MODES = {"ranges": "Dub inside the ranges, original elsewhere", "all": "Dub everywhere"}


@dataclass
class ExportChoice:
    prefs: ExportPrefs
    ranges_only: bool  # False: the whole clip is re-synced


class ExportDialog(QtWidgets.QDialog):
    def __init__(self, prefs: ExportPrefs, default_output: str, has_ranges: bool,
                 parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export")
        self.setMinimumWidth(520)
        self.ranges = QtWidgets.QRadioButton("Marked ranges (the rest passes through)")
        self.whole = QtWidgets.QRadioButton("Whole clip")
        self.ranges.setEnabled(has_ranges)
        (self.ranges if has_ranges else self.whole).setChecked(True)
        self.codec = QtWidgets.QComboBox()
        available = available_presets()  # NVENC only where its GPU and driver are
        for name in CODECS:
            if name in available:
                self.codec.addItem(PRESETS[name].label, name)
        self.quality = QtWidgets.QComboBox()
        self.audio = QtWidgets.QComboBox()
        for key, label in AUDIO_MODES.items():
            self.audio.addItem(label, key)
        self.output = QtWidgets.QLineEdit(prefs.output or default_output)
        browse = QtWidgets.QPushButton("Browse…")
        browse.clicked.connect(self._browse)

        scope = QtWidgets.QVBoxLayout()
        scope.addWidget(self.ranges)
        scope.addWidget(self.whole)
        out_row = QtWidgets.QHBoxLayout()
        out_row.addWidget(self.output, 1)
        out_row.addWidget(browse)
        form = QtWidgets.QFormLayout()
        form.addRow("Sync", scope)
        form.addRow("Codec", self.codec)
        form.addRow("Quality", self.quality)
        form.addRow("Audio", self.audio)
        form.addRow("File", out_row)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Cancel)
        self.export_button = buttons.addButton("Export",
                                               QtWidgets.QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)

        self.codec.currentIndexChanged.connect(self._codec_changed)
        self.codec.setCurrentIndex(max(self.codec.findData(prefs.codec), 0))
        self._codec_changed()
        for i in range(self.quality.count()):  # the saved options, when they match a preset
            if self.quality.itemData(i) == prefs.quality:
                self.quality.setCurrentIndex(i)
        self.audio.setCurrentIndex(max(self.audio.findData(prefs.audio_mode), 0))

    def _codec_changed(self) -> None:
        codec = self.codec.currentData()
        self.quality.clear()
        for label, options in QUALITY[codec].items():
            self.quality.addItem(label, options)
        # Keep the file name, change the container to one the codec can go in.
        path = self.output.text().strip()
        if path:
            stem, ext = os.path.splitext(path)
            allowed = PRESETS[codec].extensions
            if ext.lower() not in allowed:
                self.output.setText(stem + allowed[0])

    def _browse(self) -> None:
        codec = self.codec.currentData()
        exts = " ".join(f"*{e}" for e in PRESETS[codec].extensions)
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export to", self.output.text(),
                                                        f"{PRESETS[codec].label} ({exts})")
        if path:
            self.output.setText(path)
            self._codec_changed()

    def choice(self) -> ExportChoice:
        """What the dialog is set to."""
        return ExportChoice(ExportPrefs(output=self.output.text().strip() or None,
                                        codec=self.codec.currentData(),
                                        quality=dict(self.quality.currentData()),
                                        audio_mode=self.audio.currentData()),
                            ranges_only=self.ranges.isChecked())

    def accept(self) -> None:
        if not self.output.text().strip():
            QtWidgets.QMessageBox.warning(self, "Export", "Choose the file to export to.")
            return
        super().accept()
