"""Render the app icon's SVG to the PNG that PyInstaller and the Linux desktop entry take.

``python render_icon.py SVG PNG [SIZE]``; PyInstaller turns the PNG into .ico or .icns itself
(with Pillow) on Windows and macOS.
"""
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from PySide6 import QtCore, QtGui, QtSvg  # noqa: E402


def render(svg: str, png: str, size: int = 256) -> None:
    renderer = QtSvg.QSvgRenderer(svg)
    if not renderer.isValid():
        raise SystemExit(f"render_icon: {svg} is not a readable SVG")
    image = QtGui.QImage(size, size, QtGui.QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(QtCore.Qt.GlobalColor.transparent)
    painter = QtGui.QPainter(image)
    painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    if not image.save(png):
        raise SystemExit(f"render_icon: cannot write {png}")


if __name__ == "__main__":
    app = QtGui.QGuiApplication(sys.argv[:1])  # QPainter on images needs the font system
    render(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 256)
