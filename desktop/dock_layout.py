"""The main window's docks: closable (so View shows and hides them) and a timeline tall enough
for every lane whenever the window has the room."""
from __future__ import annotations

from PySide6 import QtCore, QtWidgets

VIEWER_SHARE = 0.4  # the viewer keeps at least this part of the height it shares with the dock


def dock_features() -> QtWidgets.QDockWidget.DockWidgetFeature:
    """Movable, floatable and closable: a dock that cannot close has its View action greyed."""
    f = QtWidgets.QDockWidget.DockWidgetFeature
    return f.DockWidgetMovable | f.DockWidgetFloatable | f.DockWidgetClosable


def fit_timeline(window: QtWidgets.QMainWindow, dock: QtWidgets.QDockWidget,
                 viewer: QtWidgets.QWidget) -> None:
    """Grow ``dock`` (docked at the bottom) to its preferred height, which shows every lane,
    as far as the viewer above it keeps VIEWER_SHARE of their height; never shrink it (a
    taller timeline is the editor's choice, and is remembered)."""
    if dock.isFloating() or dock.isHidden():
        return
    want = dock.sizeHint().height()
    shared = dock.height() + viewer.height()
    height = min(want, round(shared * (1 - VIEWER_SHARE)))
    if height > dock.height():
        window.resizeDocks([dock], [height], QtCore.Qt.Orientation.Vertical)


def scrollable(widget: QtWidgets.QWidget) -> QtWidgets.QScrollArea:
    """``widget`` in a frameless scroll area: a side dock taller than the window scrolls instead
    of setting the window's minimum height (the inspector alone would keep 1280x720 out)."""
    area = QtWidgets.QScrollArea()
    area.setWidget(widget)
    area.setWidgetResizable(True)
    area.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
    return area
