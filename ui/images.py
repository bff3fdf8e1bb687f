"""numpy pictures to Qt images."""
from __future__ import annotations

import numpy as np
from PySide6 import QtGui


def rgb_to_qimage(rgb: np.ndarray,
                  fmt: QtGui.QImage.Format = QtGui.QImage.Format.Format_RGB32) -> QtGui.QImage:
    """A QImage that owns a copy of an (h, w, 3) uint8 RGB array, in ``fmt``.

    Safe to keep after ``rgb`` goes and to hand to another thread. RGB32 is what Qt paints
    fastest; RGB888 keeps the bytes as they are.
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (h, w, 3) RGB frame, got shape {rgb.shape}")
    h, w, _ = rgb.shape
    borrowed = QtGui.QImage(rgb.data, w, h, rgb.strides[0], QtGui.QImage.Format.Format_RGB888)
    # The constructor borrows ``rgb``; both conversions return an image with its own pixels.
    return borrowed.copy() if fmt == QtGui.QImage.Format.Format_RGB888 \
        else borrowed.convertToFormat(fmt)
