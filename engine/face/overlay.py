"""Draw a face analysis onto frames, and write the analysed range as a checking video.

Green: the landmark box and the 68 landmarks joined by feature; red: the five keypoints;
yellow: the crop box; top left: frame number, pose and flags. Frames where the target was not
found say so in red and are otherwise untouched.
"""
from __future__ import annotations

import dataclasses
import os

import cv2
import numpy as np

from engine.face.analysis import FaceAnalysis, FaceFrame, Flag
from engine.media.reader import VideoReader
from engine.media.writer import VideoWriter
from engine.progress import CancelToken, ProgressFn, no_progress

# Runs of landmarks drawn as lines (end exclusive), and whether each closes on itself.
_FEATURES = [(0, 17, False), (17, 22, False), (22, 27, False), (27, 31, False),
             (31, 36, False), (36, 42, True), (42, 48, True), (48, 60, True), (60, 68, True)]
_GREEN, _RED, _YELLOW, _WHITE = (0, 230, 0), (255, 40, 40), (255, 220, 0), (255, 255, 255)


def draw(rgb: np.ndarray, face: FaceFrame) -> np.ndarray:
    """A copy of an RGB frame with ``face`` drawn on it."""
    out = np.ascontiguousarray(rgb).copy()
    h, w = out.shape[:2]
    thick = max(1, int(round(min(h, w) / 360)))
    font = max(0.4, min(h, w) / 900)
    if face.found:
        x0, y0, x1, y1 = (int(round(v)) for v in face.crop_box)
        cv2.rectangle(out, (x0, y0), (x1, y1), _YELLOW, thick, cv2.LINE_AA)
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), _GREEN, thick, cv2.LINE_AA)
        pts = np.round(face.landmarks * 16).astype(np.int32)  # 4 fractional bits
        for a, b, closed in _FEATURES:
            cv2.polylines(out, [pts[a:b]], closed, _GREEN, thick, cv2.LINE_AA, shift=4)
        for p in np.round(face.keypoints * 16).astype(np.int32):
            cv2.circle(out, tuple(int(v) for v in p), 3 * thick * 16, _RED, -1, cv2.LINE_AA,
                       shift=4)
        yaw, pitch, roll = face.pose
        text = f"{face.index}  yaw {yaw:+.0f} pitch {pitch:+.0f} roll {roll:+.0f}"
        names = [f.name.lower().replace("_", " ") for f in Flag
                 if f in face.flags and f is not Flag.NOT_FOUND]
        _label(out, text + ("  " + ", ".join(names) if names else ""), _WHITE, font, thick)
    else:
        _label(out, f"{face.index}  target not found", _RED, font, thick)
    return out


def _label(out: np.ndarray, text: str, color: tuple[int, int, int], font: float,
           thick: int) -> None:
    """Text on a dark band at the top left (legible on any picture)."""
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, thick)
    pad = max(2, h // 3)
    cv2.rectangle(out, (0, 0), (w + 2 * pad, h + base + 2 * pad), (0, 0, 0), -1)
    cv2.putText(out, text, (pad, pad + h), cv2.FONT_HERSHEY_SIMPLEX, font, color, thick,
                cv2.LINE_AA)


def write_overlay(analysis: FaceAnalysis, output: str | os.PathLike, *,
                  progress: ProgressFn = no_progress, cancel: CancelToken | None = None) -> None:
    """Encode the analysed range of ``analysis.source`` with the analysis drawn on it."""
    with VideoReader(analysis.source) as reader:
        base = None
        with VideoWriter(output, reader.info, codec="h264",
                         sources=[analysis.source]) as writer:
            total = len(analysis)
            for frame in reader.frames(analysis.start, analysis.stop):
                if cancel is not None:
                    cancel.check()
                drawn = frame.with_region(0, 0, draw(frame.rgb(), analysis.frame(frame.index)))
                base = base or (frame.pts, frame.time)
                # The output starts at the range's first frame.
                writer.write(dataclasses.replace(drawn, pts=frame.pts - base[0],
                                                 time=frame.time - base[1]))
                progress("overlay", frame.index - analysis.start + 1, total)
