"""``redub-studio``: the desktop application's entry point.

``redub-studio [VIDEO] [--audio DUB]`` opens the editor (see :mod:`desktop.main_window`);
``redub-studio --screenshots DIR [VIDEO] [--audio DUB]`` writes PNGs of the main states
offscreen and exits.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from PySide6 import QtWidgets


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="redub-studio", description="Redub Studio editor")
    parser.add_argument("video", nargs="?", help="clip or .redub project to open")
    parser.add_argument("--audio", metavar="DUB", help="dub audio to lay against the clip")
    parser.add_argument("--screenshots", metavar="DIR",
                        help="write PNGs of the main window states to DIR and exit")
    args = parser.parse_args(argv)
    if args.screenshots:
        from desktop.screenshots import write_screenshots
        for path in write_screenshots(args.screenshots, args.video, args.audio):
            print(path)
        return 0

    from desktop.main_window import MainWindow
    from ui.theme import apply_theme

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    app.setApplicationName("Redub Studio")
    apply_theme(app)
    window = MainWindow()
    window.show()
    if args.video:
        if args.video.endswith(".redub"):
            window.open_project(args.video)
        else:
            window.open_video(args.video, dub=args.audio)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
