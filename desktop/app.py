"""``redub-studio``: the desktop application's entry point.

``redub-studio [VIDEO] [--audio DUB]`` opens the editor (see :mod:`desktop.main_window`);
``redub-studio --screenshots DIR [VIDEO] [--audio DUB]`` writes PNGs of the main states
offscreen and exits; ``redub-studio --startup-check`` opens the window, prints ``ready`` once
it is up and taking input, and quits (an install's smoke test; ``bench/bundle.py`` times it).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from PySide6 import QtCore, QtGui, QtWidgets


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="redub-studio", description="Redub Studio editor")
    parser.add_argument("video", nargs="?", help="clip or .redub project to open")
    parser.add_argument("--audio", metavar="DUB", help="dub audio to lay against the clip")
    parser.add_argument("--screenshots", metavar="DIR",
                        help="write PNGs of the main window states to DIR and exit")
    parser.add_argument("--startup-check", action="store_true",
                        help="print 'ready' once the window is up, then quit")
    args = parser.parse_args(argv)
    if args.screenshots:
        from desktop.screenshots import write_screenshots
        for path in write_screenshots(args.screenshots, args.video, args.audio):
            print(path)
        return 0

    from desktop.main_window import MainWindow
    from ui.theme import APP_ICON, apply_theme

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    app.setApplicationName("Redub Studio")
    app.setDesktopFileName("redub-studio")  # the desktop entry's name: the shell's icon and grouping
    app.setWindowIcon(QtGui.QIcon(str(APP_ICON)))
    apply_theme(app)
    window = MainWindow()
    window.show()
    if args.startup_check:
        # Runs once the event loop has handled the show and first paint: the window takes input.
        QtCore.QTimer.singleShot(0, lambda: (print("ready", flush=True), window.close()))
    if args.video:
        if args.video.endswith(".redub"):
            window.open_project(args.video)
        else:
            window.open_video(args.video, dub=args.audio)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
