"""Generate long synthetic clips quickly (for benchmarks): moving content, real GOP structure."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache"


def synth_video(seconds: float, width: int = 1920, height: int = 1080, fps: int = 25,
                name: str | None = None) -> Path:
    """A cached H.264 clip with AAC audio; made once, reused by later runs."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / (name or f"synth_{width}x{height}_{int(seconds)}s.mp4")
    if path.exists():
        return path
    tmp = path.with_suffix(".part.mp4")
    frames = int(round(seconds * fps))
    # A fixed random texture that pans: real encoders spend bits on it, as on camera footage.
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 60, (height, width), dtype=np.uint8)
    y0 = (np.add.outer(np.arange(height), np.arange(width)) % 160 + 16).astype(np.uint8) + texture
    u0 = np.full((height // 2, width // 2), 110, np.uint8)
    v0 = np.full((height // 2, width // 2), 150, np.uint8)
    with av.open(str(tmp), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.options = {"preset": "ultrafast", "crf": "23", "g": str(fps * 4)}
        vs.thread_type = "AUTO"
        aus = out.add_stream("aac", rate=48000)
        aus.layout = "stereo"
        block = 1024
        sample = 0
        for i in range(frames):
            y = np.roll(y0, 3 * i, axis=1)
            s = height // 6
            x = (7 * i) % (width - s)
            y[s : 2 * s, x : x + s] = 235
            frame = av.VideoFrame(width, height, "yuv420p")
            for plane, data in zip(frame.planes, (y, u0, v0)):
                plane.update(_padded(data, plane.line_size))
            frame.pts = i
            for packet in vs.encode(frame):
                out.mux(packet)
            while sample < (i + 1) * 48000 // fps:
                t = (sample + np.arange(block)) / 48000
                tone = (0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
                af = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp",
                                                layout="stereo")
                af.sample_rate, af.pts, af.time_base = 48000, sample, Fraction(1, 48000)
                for packet in aus.encode(af):
                    out.mux(packet)
                sample += block
        for stream in (vs, aus):
            for packet in stream.encode(None):
                out.mux(packet)
    tmp.rename(path)
    return path


def _padded(data: np.ndarray, line_size: int) -> np.ndarray:
    if data.shape[1] == line_size:
        return data
    out = np.zeros((data.shape[0], line_size), data.dtype)
    out[:, : data.shape[1]] = data
    return out
