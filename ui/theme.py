"""The dark editing theme: palette colours shared by the painted widgets, and the app-wide loader.

Widgets that paint themselves (viewer, timeline) take their colours from here so they match the
style sheet in ``resources/theme.qss`` even when no theme is applied (tests, embedding).
"""
from __future__ import annotations

from pathlib import Path

from PySide6 import QtGui, QtWidgets

THEME_QSS = Path(__file__).resolve().parents[1] / "resources" / "theme.qss"
# The application's icon: windows, the Linux desktop entry, the bundles' executables.
APP_ICON = THEME_QSS.parent / "icons" / "redub-studio.svg"

# Neutral greys, darkest first (keep in step with resources/theme.qss).
BASE = "#161616"  # viewer surround, timeline lanes
PANEL = "#1f1f1f"  # panels, ruler
RAISED = "#2a2a2a"  # buttons, headers
BORDER = "#3a3a3a"
TEXT = "#d4d4d4"
TEXT_DIM = "#8a8a8a"
ACCENT = "#3b8eea"  # the one accent: playhead, selection, focus

# Content colours (muted, so the accent stays the only saturated UI colour).
VIDEO_CLIP = "#34405a"
SOURCE_AUDIO = ("#1f4a40", "#6fcfb0")  # clip body, waveform
DUB_AUDIO = ("#3e3563", "#b4a6f0")
RANGE_STATE = {"rendered": "#3fae5a", "stale": "#d9922e", "rendering": ACCENT}

# Viewer overlays: distinct hues that read on skin and on dark backgrounds.
OVERLAY_BOX = "#ffcf4a"
OVERLAY_LANDMARKS = "#4fd6e8"
OVERLAY_MASK = "#ff5c93"
OVERLAY_CROP = "#f0f0f0"


def color(name: str, alpha: int = 255) -> QtGui.QColor:
    c = QtGui.QColor(name)
    c.setAlpha(alpha)
    return c


def dark_palette() -> QtGui.QPalette:
    """A palette matching the style sheet, so unstyled parts (dialogs, menus) are dark too."""
    roles = QtGui.QPalette.ColorRole
    pal = QtGui.QPalette()
    for role, value in ((roles.Window, PANEL), (roles.WindowText, TEXT), (roles.Base, BASE),
                        (roles.AlternateBase, PANEL), (roles.ToolTipBase, RAISED),
                        (roles.ToolTipText, TEXT), (roles.Text, TEXT), (roles.Button, RAISED),
                        (roles.ButtonText, TEXT), (roles.BrightText, "#ffffff"),
                        (roles.Highlight, ACCENT), (roles.HighlightedText, "#ffffff"),
                        (roles.Link, ACCENT), (roles.PlaceholderText, TEXT_DIM),
                        (roles.Mid, BORDER), (roles.Dark, BASE), (roles.Light, "#444444")):
        pal.setColor(role, QtGui.QColor(value))
    disabled = QtGui.QPalette.ColorGroup.Disabled
    for role in (roles.WindowText, roles.Text, roles.ButtonText):
        pal.setColor(disabled, role, QtGui.QColor("#5c5c5c"))
    return pal


def apply_theme(app: QtWidgets.QApplication) -> None:
    """Fusion style (renders the same on every platform), the dark palette and the style sheet."""
    app.setStyle("Fusion")
    app.setPalette(dark_palette())
    app.setStyleSheet(style_sheet())


def style_sheet() -> str:
    """The theme's style sheet, its ``url(icons/...)`` made absolute: Qt resolves relative
    urls against the working directory, not the sheet's folder."""
    icons = (THEME_QSS.parent / "icons").as_posix()
    return THEME_QSS.read_text(encoding="utf-8").replace("url(icons/", f"url({icons}/")
