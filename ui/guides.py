"""Framing guides over the viewer's picture: safe areas and the centre cross.

Safe areas as broadcast uses them (SMPTE ST 2046-1): action safe at 93 % and title safe at
90 % of the picture's width and height, centred. They are drawn on the picture's rectangle,
so they follow zoom and pan like the picture does.
"""
from __future__ import annotations

from PySide6 import QtCore, QtGui

GUIDES: tuple[str, ...] = ("safe", "centre")
ACTION_SAFE = 0.93
TITLE_SAFE = 0.90
_CROSS = 0.04  # half the centre cross's arm, as a fraction of the picture's height


def safe_rect(picture: QtCore.QRectF, fraction: float) -> QtCore.QRectF:
    """The centred part of ``picture`` that keeps ``fraction`` of its width and height."""
    dx, dy = picture.width() * (1 - fraction) / 2, picture.height() * (1 - fraction) / 2
    return picture.adjusted(dx, dy, -dx, -dy)


def draw_guides(p: QtGui.QPainter, picture: QtCore.QRectF, shown: set[str]) -> None:
    """Draw the ``shown`` guides over ``picture`` (widget pixels)."""
    if not shown:
        return
    p.save()
    # Light lines with a dark halo: visible on bright and dark pictures alike.
    for colour, width in ((QtGui.QColor(0, 0, 0, 110), 3.0), (QtGui.QColor(255, 255, 255, 170),
                                                                1.0)):
        pen = QtGui.QPen(colour, width)
        pen.setCosmetic(True)
        p.setPen(pen)
        p.setBrush(QtCore.Qt.BrushStyle.NoBrush)
        if "safe" in shown:
            p.drawRect(safe_rect(picture, ACTION_SAFE))
            p.drawRect(safe_rect(picture, TITLE_SAFE))
        if "centre" in shown:
            c, arm = picture.center(), picture.height() * _CROSS
            p.drawLine(QtCore.QPointF(c.x() - arm, c.y()), QtCore.QPointF(c.x() + arm, c.y()))
            p.drawLine(QtCore.QPointF(c.x(), c.y() - arm), QtCore.QPointF(c.x(), c.y() + arm))
    p.restore()
