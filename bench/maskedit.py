"""Single-frame update latency after a mask edit, at 512x512 and 1920x1080.

For each clip a sync session is prepared once and its range rendered once, nearest the
playhead first, as the editor's preview thread does when mask editing starts. Then each kind of
edit is made on the frame at the playhead and timed until that frame's new RGB picture is
ready: the session works out which frames the edit reaches and renders the frame (decoded
already: the user is looking at it). "cold" is the same edit on a fresh session before any
frame was rendered (donor frames decoded from the file). The last line is the whole path in
the editor: from the edit to the new picture painted in a viewer, through the preview thread
and its signals. The goal is 200 ms at 1080p::

    .venv/bin/python -m bench.maskedit [--shared ../shared] [--repeat 8]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from bench.analysis import make_1080p
from engine.curves import Curve
from engine.face import geometry as geo
from engine.mask import landmark_polygon
from engine.maskedit import Corrections
from engine.media.reader import VideoReader
from engine.pipeline import SyncSession, SyncSettings, prepare_sync

CACHE = Path(__file__).resolve().parent / ".cache"
RANGE = (4.2, 6.2)  # talk_d12 frames 105-154: landmarks on the face throughout
TRAIN = (4.2, 6.36)
PLAYHEAD = 120  # 4.8 s: inside the range


def edits(session: SyncSession, frame: int) -> dict[str, Callable[[int], Corrections]]:
    """Edit makers: step ``i`` gives a slightly different edit of each kind."""
    a = session.analysis
    k = frame - a.start
    to_face = a.transforms[k]
    outline = geo.apply(to_face, landmark_polygon(a.landmarks[k], "lower_face"))
    mouth = geo.apply(to_face, a.landmarks[k][48:68]).mean(0)

    def vertex(i: int) -> Corrections:
        c = Corrections()
        moved = outline.copy()
        moved[5, 1] += 0.01 * (i + 1)  # the chin, dragged down step by step
        c.set_outline(frame, moved)
        return c

    def exclusion(i: int) -> Corrections:
        c = Corrections()
        c.add_shape("exclude", frame, np.array([mouth, mouth + [0.01 * (i + 1), 0.02]]), 0.04)
        return c

    def feather(i: int) -> Corrections:
        c = Corrections()
        c.set_outline(frame, None, feather=0.1 + 0.01 * i)
        return c

    def keep(i: int) -> Corrections:
        return Corrections(keep=[(frame + 1 + i % 3, frame + 6)])  # the fade reaches the frame

    def curve(i: int) -> Corrections:
        c = Corrections()
        c.curves.openness_gain = Curve({frame: 0.2 + 0.25 * i})
        return c

    return {"vertex drag": vertex, "exclusion brush": exclusion, "feather": feather,
            "keep-original span": keep, "openness curve (re-plan)": curve}


def time_edit(session: SyncSession, reader: VideoReader, frame: int,
              make: Callable[[int], Corrections], repeat: int) -> tuple[list[float], int]:
    """Seconds from setting each edit to the frame's RGB, and how many frames the last edit
    reached."""
    session.set_corrections(Corrections())
    reader.frame(frame)  # decoded already, as the frame the user is looking at
    times = []
    for i in range(repeat):
        t0 = time.perf_counter()
        changed = session.set_corrections(make(i))
        session.render_frame(reader.frame(frame)).rgb()
        times.append(time.perf_counter() - t0)
    return times, len(changed)


def background_pass(session: SyncSession, reader: VideoReader, playhead: int) -> float:
    """Render the session's frames nearest ``playhead`` first; seconds per frame."""
    frames = sorted(session.edited_frames().tolist(), key=lambda f: abs(f - playhead))
    t0 = time.perf_counter()
    for index in frames:
        session.render_frame(reader.frame(index)).rgb()
    return (time.perf_counter() - t0) / max(len(frames), 1)


def editor_latency(video: str, dub: str, frame: int, repeat: int) -> list[float]:
    """Seconds from an edit to its picture painted in a viewer, through the PreviewRenderer."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtCore, QtWidgets

    from desktop.mask_editing import PreviewRenderer, PreviewSpec
    from ui.viewer import Viewer

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    viewer = Viewer()
    viewer.resize(1280, 720)
    viewer.show()
    with VideoReader(video) as reader:
        source = reader.frame(frame).rgb()
    renderer = PreviewRenderer()
    spec = PreviewSpec(video, dub, 0.0, (RANGE,), SyncSettings(train_range=TRAIN))
    got: dict[int, float] = {}
    ready: list[bool] = []
    edited_at = [0.0]

    def show(version: int, index: int, rgb, seconds: float) -> None:
        if index == frame:
            viewer.set_frames(source, rgb)
            viewer.repaint()  # painted now, not at the next idle moment
            got[version] = time.perf_counter() - edited_at[0]

    renderer.prepared.connect(lambda *args: ready.append(True))
    renderer.rendered.connect(show)

    def wait(condition: Callable[[], bool], seconds: float = 120.0) -> None:
        end = time.monotonic() + seconds
        while not condition() and time.monotonic() < end:
            app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 10)
            time.sleep(0.001)

    renderer.prepare(spec, Corrections())
    wait(lambda: bool(ready))
    renderer.request(frame)
    wait(lambda: bool(got))
    session = renderer.session
    a = session.analysis
    k = frame - a.start
    outline = geo.apply(a.transforms[k], landmark_polygon(a.landmarks[k], "lower_face"))
    latencies = []
    for i in range(repeat):
        got.clear()
        c = Corrections()
        moved = outline.copy()
        moved[5, 1] += 0.01 * (i + 1)
        c.set_outline(frame, moved)
        edited_at[0] = time.perf_counter()
        renderer.update_corrections(c, frame)
        wait(lambda: bool(got))
        latencies.extend(got.values())
    renderer.stop()
    return latencies


def bench(label: str, video: Path, dub: Path, repeat: int) -> None:
    settings = SyncSettings(train_range=TRAIN)
    with prepare_sync(video, dub, ranges=[RANGE], settings=settings) as cold, \
            VideoReader(video) as reader:
        reader.frame(PLAYHEAD)
        cold_times, _ = time_edit(cold, reader, PLAYHEAD, edits(cold, PLAYHEAD)["vertex drag"], 1)
    t0 = time.perf_counter()
    session = prepare_sync(video, dub, ranges=[RANGE], settings=settings)
    prepared = time.perf_counter() - t0
    with session, VideoReader(video) as reader:
        size = f"{reader.info.width}x{reader.info.height}"
        per_frame = background_pass(session, reader, PLAYHEAD)
        print(f"{label} ({size}): session prepared in {prepared:.2f} s (face analysis cached), "
              f"background render {per_frame * 1000:.0f} ms per frame")
        for name, make in edits(session, PLAYHEAD).items():
            times, reached = time_edit(session, reader, PLAYHEAD, make, repeat)
            print(f"  {name:26s} playhead update median {statistics.median(times) * 1000:6.1f} ms,"
                  f" max {max(times) * 1000:6.1f} ms   ({reached} frames to re-render)")
        print(f"  {'vertex drag, cold':26s} {cold_times[0] * 1000:6.1f} ms "
              f"(first edit before any frame was rendered)")
    shown = editor_latency(str(video), str(dub), PLAYHEAD, repeat)
    print(f"  {'edit to viewer painted':26s} median {statistics.median(shown) * 1000:6.1f} ms, "
          f"max {max(shown) * 1000:6.1f} ms (vertex drags, preview thread and signals)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--repeat", type=int, default=8)
    args = parser.parse_args()
    clip = args.shared / "media" / "talk_d12_512.mp4"
    dub = args.shared / "media" / "speech_radio31_16k.wav"
    if not clip.exists() or not dub.exists():
        print(f"shared media not found under {args.shared}", file=sys.stderr)
        return 1
    CACHE.mkdir(exist_ok=True)
    big = CACHE / "talk_d12_1080p.mp4"
    if not big.exists():
        part = big.with_suffix(".part.mp4")
        make_1080p(clip, part, frames=100)
        part.rename(big)
    bench("512x512", clip, dub, args.repeat)
    bench("1080p", big, dub, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
