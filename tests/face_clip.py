"""A short clip with a detectable face, cut from a shared talking-head clip (skips without it).

The face is scaled down and set into a larger grey frame, so the face crop box lies well inside
the picture and "nothing outside the crop box changes" means something.
"""
from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from engine.media.reader import VideoReader
from tests.conftest import shared_clip

SIZE = (384, 320)  # width, height of the clip
FACE = 256  # side of the shared clip's picture once scaled
AT = (64, 32)  # where its top-left corner sits


def write_face_clip(path: Path, frames: int = 50, fps: int = 25) -> Path:
    """``frames`` frames of ``hdtf_aoc_512.mp4`` (one frontal speaker; its 200 frames
    looped for longer clips), H.264 without audio."""
    source = shared_clip("hdtf_aoc_512.mp4")
    with VideoReader(source) as reader:
        faces = [cv2.resize(f.rgb(), (FACE, FACE), interpolation=cv2.INTER_AREA)
                 for f in reader.frames(0, frames)]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "crf": "18", "bf": "0"}
        for i in range(frames):
            face = faces[i % len(faces)]
            canvas = np.full((SIZE[1], SIZE[0], 3), 96, np.uint8)
            canvas[AT[1]:AT[1] + FACE, AT[0]:AT[0] + FACE] = face
            for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path
