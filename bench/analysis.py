"""Face analysis speed: frames per second, decoding included, per backend and picture size.

Runs the full analysis (open, decode, track, smooth, pose; no cache) on the shared 512x512
clips, the shared 1280x720 clip and a generated 1920x1080 clip, for each backend available,
and prints one line per run (best of ``--repeat``)::

    .venv/bin/python bench/analysis.py [--shared ../shared] [--repeat 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.face.analysis import analyze_range  # noqa: E402
from engine.media.reader import VideoReader  # noqa: E402

_CLIPS = ["hdtf_aoc_512.mp4", "talk_d12_512.mp4", "talk_s18_720p.mp4"]


def make_1080p(source: Path, target: Path, frames: int = 200) -> None:
    """A 1920x1080 H.264 clip: the source scaled to 1080 lines, centred on a blurred copy."""
    with VideoReader(source) as reader, av.open(str(target), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for frame in reader.frames(0, frames):
            rgb = frame.rgb()
            face = cv2.resize(rgb, (1080 * rgb.shape[1] // rgb.shape[0], 1080),
                              interpolation=cv2.INTER_CUBIC)
            canvas = cv2.GaussianBlur(cv2.resize(rgb, (1920, 1080)), (0, 0), 25)
            x = (1920 - face.shape[1]) // 2
            canvas[:, x:x + face.shape[1]] = face
            for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def run(clip: Path, backend: str, options: dict, repeat: int) -> tuple[float, float, int]:
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        analysis = analyze_range(clip, backend=backend, backend_options=options, use_cache=False)
        best = min(best, time.perf_counter() - t0)
    return len(analysis) / best, float(analysis.found.mean()), len(analysis)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path,
                        default=Path(__file__).resolve().parents[1].parent / "shared")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    media = args.shared / "media"
    if not media.is_dir():
        print(f"shared media not found at {media}", file=sys.stderr)
        return 1
    backends = [("dlib", {})]
    scrfd = args.shared / "models" / "scrfd_2.5g_bnkps.onnx"
    if scrfd.is_file():
        backends.append(("scrfd", {"model": str(scrfd)}))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["REDUB_CACHE_DIR"] = tmp  # keep the user's cache out of it
        clips = [media / name for name in _CLIPS]
        generated = Path(tmp) / "generated_1080p.mp4"
        make_1080p(media / "hdtf_aoc_512.mp4", generated)
        clips.append(generated)
        print(f"{'backend':8} {'clip':24} {'size':>10} {'frames':>6} {'fps':>7} {'found':>6}")
        for backend, options in backends:
            for clip in clips:
                with VideoReader(clip) as reader:
                    size = f"{reader.info.width}x{reader.info.height}"
                fps, found, n = run(clip, backend, options, args.repeat)
                print(f"{backend:8} {clip.name:24} {size:>10} {n:6d} {fps:7.1f} "
                      f"{found * 100:5.1f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
