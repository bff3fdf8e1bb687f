"""Head pose (yaw, pitch, roll) from 68-point landmarks.

A generic head, six points of it, is fitted to the landmarks with a perspective camera whose
focal length equals the frame's long side (about a 50 degree lens) by ``cv2.solvePnP``. The
camera is aimed at the face (principal point on it), so the angles say how the face appears
(frontal, half or full profile) wherever it sits in the picture, rather than how it is turned
relative to the lens axis. An estimate good to some degrees.

Angles are in degrees: yaw > 0 when the face turns towards the image's right, pitch > 0 when
the chin rises, roll > 0 when the head tilts clockwise as seen in the image.
"""
from __future__ import annotations

import cv2
import numpy as np

# Landmarks used and a generic head in camera-like axes (x right, y down, z away from the
# camera; nose tip at the origin), units about a fifth of a millimetre.
_POINTS = [30, 8, 36, 45, 48, 54]
_HEAD = np.array([(0.0, 0.0, 0.0),  # nose tip
                  (0.0, 330.0, 65.0),  # chin
                  (-225.0, -170.0, 135.0),  # outer corner of the image-left eye
                  (225.0, -170.0, 135.0),  # outer corner of the image-right eye
                  (-150.0, 150.0, 125.0),  # image-left mouth corner
                  (150.0, 150.0, 125.0)])  # image-right mouth corner


def head_pose(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    """Yaw, pitch and roll in degrees (T, 3) for landmarks (T, 68, 2); NaN rows stay NaN."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    out = np.full((len(landmarks), 3), np.nan)
    focal = float(max(width, height))
    rvec = tvec = None
    for t, points in enumerate(landmarks):
        image_points = points[_POINTS]
        if not np.isfinite(image_points).all():
            continue
        cx, cy = points.mean(0)
        camera = np.array([[focal, 0, cx], [0, focal, cy], [0, 0, 1]])
        guess = rvec is not None
        ok, r, tv = cv2.solvePnP(_HEAD, image_points, camera, None,
                                 rvec=rvec.copy() if guess else None,
                                 tvec=tvec.copy() if guess else None,
                                 useExtrinsicGuess=guess, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok or tv[2, 0] <= 0:  # behind the camera: the fit failed
            rvec = tvec = None
            continue
        rvec, tvec = r, tv
        out[t] = _angles(cv2.Rodrigues(r)[0])
    return out


def _angles(rotation: np.ndarray) -> np.ndarray:
    """Yaw, pitch, roll (degrees, signs as documented) of rotation = Rz(r) Ry(y) Rx(p).

    With y pointing down and z away from the camera, a positive turn about y swings the nose
    to the image's left and one about x lowers the chin, hence the sign flips.
    """
    yaw = np.arcsin(np.clip(-rotation[2, 0], -1.0, 1.0))
    pitch = np.arctan2(rotation[2, 1], rotation[2, 2])
    roll = np.arctan2(rotation[1, 0], rotation[0, 0])
    return np.degrees([-yaw, -pitch, roll])
