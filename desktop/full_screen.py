"""The viewer full screen: the window goes full screen with only the picture showing.

The window itself goes full screen (docks, tool bars, menu and status bar hidden) rather than
the viewer moving to a window of its own, so every shortcut, the mask editor over the viewer
and the transport keep working unchanged. Esc, or the same action again, brings the layout
back exactly as it was (also before the window closes, so it saves the editor's layout).
"""
from __future__ import annotations

from PySide6 import QtCore, QtWidgets

Qt = QtCore.Qt


class FullScreenViewer(QtCore.QObject):
    """Toggles ``window`` between its layout and the viewer alone, full screen.
    ``toggled`` says which, for a checkable menu action."""

    toggled = QtCore.Signal(bool)

    def __init__(self, window: QtWidgets.QMainWindow) -> None:
        super().__init__(window)
        self.window = window
        self._saved: tuple[QtCore.QByteArray, Qt.WindowState] | None = None
        window.installEventFilter(self)  # Esc that no widget used

    @property
    def active(self) -> bool:
        return self._saved is not None

    def set_active(self, on: bool) -> None:
        if on == self.active:
            return
        w = self.window
        if on:
            self._saved = (w.saveState(), w.windowState())
            for bar in (*w.findChildren(QtWidgets.QDockWidget),
                        *w.findChildren(QtWidgets.QToolBar)):
                if bar.parent() is w:
                    bar.hide()
            w.menuBar().hide()
            w.statusBar().hide()
            w.showFullScreen()
        else:
            state, window_state = self._saved
            self._saved = None
            w.menuBar().show()
            w.statusBar().show()
            w.setWindowState(window_state)
            w.restoreState(state)
        self.toggled.emit(on)

    def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:
        if not self.active:
            return False
        if event.type() == QtCore.QEvent.Type.KeyPress and event.key() == Qt.Key.Key_Escape:
            self.set_active(False)
            return True
        if event.type() == QtCore.QEvent.Type.Close:
            self.set_active(False)  # the layout the window saves is the editor's own
        return False
