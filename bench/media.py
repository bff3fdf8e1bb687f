"""Media I/O benchmark: decode and export throughput per codec, and memory against file length.

Run from the repository root:  .venv/bin/python -m bench.media   (add --quick for a short run)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.synth import synth_video
from engine.media.codecs import PRESETS, available_presets
from engine.media.reader import VideoReader
from engine.media.writer import VideoWriter

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "media"


def decode_fps(path: Path, limit: int | None) -> float:
    with VideoReader(path) as r:
        stop = r.frame_count if limit is None else min(limit, r.frame_count)
        t = time.perf_counter()
        n = sum(1 for _ in r.frames(0, stop))
        return n / (time.perf_counter() - t)


def export_fps(path: Path, codec: str, limit: int | None, out_dir: Path) -> float:
    ext = PRESETS[codec].extensions[0]
    with VideoReader(path) as r:
        stop = r.frame_count if limit is None else min(limit, r.frame_count)
        t = time.perf_counter()
        with VideoWriter(out_dir / f"out_{codec}{ext}", r.info, codec=codec,
                         sources=[path]) as w:
            for f in r.frames(0, stop):
                w.write(f)
        return stop / (time.perf_counter() - t)


def child_decode_range(path: str, start_s: float, seconds: float) -> None:
    """Run in a fresh process: decode a range, print peak RSS in MiB as JSON."""
    with VideoReader(path) as r:
        a = r.index_at(start_s)
        b = r.index_at(start_s + seconds)
        n = sum(1 for _ in r.frames(a, b))
    print(json.dumps({"frames": n, "peak_rss_mib": peak_rss_mib()}))


def peak_rss_mib() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: the latter survives exec and
    would report the (larger) parent that forked us."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_vs_length(lengths_min: list[float]) -> list[tuple[float, int, float, float]]:
    rows = []
    for minutes in lengths_min:
        path = synth_video(minutes * 60, 1920, 1080, 25)
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "bench.media", "--child", str(path),
                              str(minutes * 30), "10"], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).resolve().parents[1])
        dt = time.perf_counter() - t
        res = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((minutes, res["frames"], res["peak_rss_mib"], dt))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer frames, short long-file test")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_decode_range(args.child[0], float(args.child[1]), float(args.child[2]))
        return
    limit = 60 if args.quick else None
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}")
    clips = [SHARED / "talk_d12_512.mp4", SHARED / "talk_s18_720p.mp4"]
    clips = [c for c in clips if c.exists()]
    if not clips:
        print("(../shared/media absent: shared clips skipped)")
    clips.append(synth_video(10, 1920, 1080, 25))
    codecs = available_presets()
    print(f"\n{'clip':<28}{'size':>11}{'decode':>9}" + "".join(f"{c:>9}" for c in codecs))
    print(f"{'':<28}{'':>11}{'fps':>9}" + "".join(f"{'fps':>9}" for _ in codecs))
    with tempfile.TemporaryDirectory() as tmp:
        for clip in clips:
            with VideoReader(clip) as r:
                size = f"{r.info.width}x{r.info.height}"
            row = f"{clip.name:<28}{size:>11}{decode_fps(clip, limit):>9.1f}"
            for codec in codecs:
                row += f"{export_fps(clip, codec, limit, Path(tmp)):>9.1f}"
            print(row, flush=True)
    print("\n(export = decode + encode, video only, default quality settings)")
    lengths = [1, 2] if args.quick else [1, 5, 10]
    print("\nDecoding a 10 s range from the middle of 1080p files of growing length "
          "(fresh process each):")
    print(f"{'file length':>12}{'frames':>8}{'peak RSS MiB':>14}{'wall s':>8}")
    for minutes, frames, peak, dt in memory_vs_length(lengths):
        print(f"{minutes:>10.0f} m{frames:>8}{peak:>14.1f}{dt:>8.2f}")


if __name__ == "__main__":
    main()
