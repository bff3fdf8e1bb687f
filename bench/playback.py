"""Playback benchmark: A/V drift and dropped frames over 30 s of 720p playback.

Run from the repository root:  .venv/bin/python -m bench.playback  [--clip FILE] [--seconds 30]
                               [--timer]  (picture on the timer clock even when a device opens)

Plays on the real audio path when a sounddevice output opens (on a machine without a sound card,
the ALSA null device, which does not keep real time: the clock is then throttled to the system
clock), else on the timer clock, and says which. For every displayed frame it records the clock
at display against the frame's time: a frame is on time while 0 <= clock - t < one frame.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QCoreApplication, QTimer  # noqa: E402

from bench.synth import synth_video  # noqa: E402
from desktop.playback import Playback  # noqa: E402


def run(clip: Path, seconds: float, timer_clock: bool) -> dict[str, float | int | str]:
    app = QCoreApplication.instance() or QCoreApplication([])
    pb = Playback(audio_device=None if timer_clock else "default")
    notices: list[str] = []
    pb.notice.connect(notices.append)
    pb.set_media(clip)
    shown: list[tuple[int, float, float]] = []  # (index, clock at display, wall time)
    off: list[int] = []  # per 2 ms sample: frames between the shown frame and the clock's frame

    def on_frame(i: int, rgb: np.ndarray) -> None:
        shown.append((i, pb.clock(), time.monotonic()))

    def sample() -> None:
        if pb.state == "playing" and shown:
            off.append(pb._reader.index_at(pb.clock()) - shown[-1][0])

    pb.frame_ready.connect(on_frame)
    sampler = QTimer()
    sampler.setInterval(2)
    sampler.timeout.connect(sample)

    def start() -> None:
        shown.clear()
        pb.play()
        sampler.start()

    pb.state_changed.connect(lambda s: app.quit() if s == "paused" else None)
    QTimer.singleShot(500, start)  # let the first frame and the stream settle
    QTimer.singleShot(int((seconds + 0.5) * 1000), pb.pause)
    QTimer.singleShot(int((seconds + 5) * 1000), app.quit)  # safety net
    app.exec()
    sampler.stop()
    clock_kind = "audio (sounddevice)" if pb.has_audio_device and not timer_clock else "timer"
    times = pb.times.copy()
    frame_s = float(np.median(np.diff(times)))
    pb.close()

    idx = np.array([s[0] for s in shown])
    clock = np.array([s[1] for s in shown])
    wall = np.array([s[2] for s in shown])
    drift = clock - times[idx]  # 0 .. one frame is in sync
    late = np.maximum(drift - frame_s, 0.0) + np.maximum(-drift, 0.0)
    jumps = np.diff(idx)
    off_arr = np.array(off)
    return {
        "clip": clip.name,
        "clock": clock_kind,
        "notice": notices[0] if notices else "",
        "played_s": float(clock[-1] - clock[0]) if len(clock) else 0.0,
        "wall_s": float(wall[-1] - wall[0]) if len(wall) else 0.0,
        "frames_shown": int(len(idx)),
        "frame_ms": frame_s * 1000,
        "drift_mean_ms": float(drift.mean() * 1000),
        "drift_max_ms": float(drift.max() * 1000),
        "drift_min_ms": float(drift.min() * 1000),
        "outside_frame_max_ms": float(late.max() * 1000),
        "outside_frame_max_frames": float(late.max() / frame_s),
        "shown_outside_frame": int((late > 0).sum()),
        "late_indices": " ".join(str(i) for i in idx[late > 0][:10]),
        "dropped": int(np.maximum(jumps - 1, 0).sum()),
        "repeated": int((jumps == 0).sum()),
        "samples_behind_1plus_frame_pct": float((off_arr >= 1).mean() * 100) if len(off_arr) else 0.0,
        "samples_behind_2plus_frames_pct": float((off_arr >= 2).mean() * 100) if len(off_arr) else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", type=Path, help="video to play (default: a synthetic 30 s 720p clip)")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--timer", action="store_true", help="force the timer clock")
    args = ap.parse_args()
    clip = args.clip or synth_video(max(args.seconds, 30.0), 1280, 720, name="synth_1280x720_30s.mp4")
    result = run(clip, args.seconds, args.timer)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value:.2f}" if isinstance(value, float) else f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
