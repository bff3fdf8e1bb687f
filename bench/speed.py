"""Export speed of the lip-sync job against a plain render of the same range, on real footage.

    .venv/bin/python bench/speed.py [--clips NAME[:IN-OUT] ...] [--backend retrieval]

For each clip (every shared clip, whole clip edited, and the 2-megapixel one also over 0-10 s of
its 20 s), in one run: ``render`` (decode, the dub laid in over the range, H.264 encode: the
ceiling), then ``sync`` of the same range cold (empty analysis cache) and warm (cached), all to
H.264 medium as ``redub`` does by default. Prints frames per second of the whole export, the
ratios to the plain render, and where the cold and warm runs spent their seconds (face analysis,
landmark placement, sound, plan, export).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.media.reader import VideoReader  # noqa: E402
from engine.pipeline import SyncSettings, sync  # noqa: E402
from engine.render import ExportSettings, render  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "media"
CLIPS = ["hdtf_aoc_512.mp4", "retalk_face2_844.mp4", "retalk_face3_590.mp4",
         "retalk_face5_524.mp4", "talk_d12_512.mp4", "talk_s18_720p.mp4",
         "latentsync_demo3_1080x1920.mp4", "latentsync_demo3_1080x1920.mp4:0-10"]
DUB = "speech_eng_long.wav"  # 60 s: long enough for every clip
STAGES = ["faces", "placement", "audio", "plan", "export"]


class StageClock:
    """Seconds between the first reports of successive progress stages."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._stage, self._since = None, time.perf_counter()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self.stop()
            self._stage = stage

    def stop(self) -> None:
        now = time.perf_counter()
        if self._stage is not None:
            self.seconds[self._stage] += now - self._since
        self._since = now


def timed_sync(clip: Path, dub: Path, out: Path, ranges: list[tuple[float, float]],
               settings: SyncSettings) -> tuple[float, dict[str, float]]:
    clock = StageClock()
    t = time.perf_counter()
    sync(clip, dub, ExportSettings(output=str(out)), ranges=ranges, settings=settings,
         progress=clock)
    clock.stop()
    return time.perf_counter() - t, dict(clock.seconds)


def measure(clip: Path, dub: Path, ranges: list[tuple[float, float]], settings: SyncSettings,
            tmp: Path) -> dict:
    os.environ["REDUB_CACHE_DIR"] = tempfile.mkdtemp(dir=tmp)  # cold: nothing analysed yet
    t = time.perf_counter()
    result = render(clip, ExportSettings(output=str(tmp / "plain.mp4")), dub=dub, ranges=ranges)
    plain = time.perf_counter() - t
    cold, cold_stages = timed_sync(clip, dub, tmp / "sync.mp4", ranges, settings)
    warm, warm_stages = timed_sync(clip, dub, tmp / "sync.mp4", ranges, settings)
    n = result.frames
    return {"frames": n, "plain": n / plain, "cold": n / cold, "warm": n / warm,
            "cold_stages": cold_stages, "warm_stages": warm_stages}


def parse_clip(spec: str) -> tuple[Path, list[tuple[float, float]], str]:
    name, _, span = spec.partition(":")
    clip = SHARED / name
    if not span:
        with VideoReader(clip) as r:
            return clip, [(0.0, r.info.duration)], "all"
    start, end = (float(v) for v in span.split("-"))
    return clip, [(start, end)], f"{start:g}-{end:g} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="*", default=CLIPS,
                        help="shared clip names, optionally NAME:IN-OUT (seconds)")
    parser.add_argument("--backend", default="retrieval")
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"shared media not found at {SHARED}", file=sys.stderr)
        return 1
    settings = SyncSettings(backend=args.backend)
    print(f"sync ({args.backend}) against plain render, H.264 medium, dub {DUB}; "
          f"{os.cpu_count()} CPUs")
    print(f"{'clip':32}{'size':>10}{'range':>9}{'frames':>7}{'plain':>7}{'cold':>7}{'warm':>7}"
          f"{'cold/pl':>8}{'warm/pl':>8}   seconds cold (warm): "
          + " ".join(STAGES))
    worst = float("inf")
    with tempfile.TemporaryDirectory() as tmp_name:
        for spec in args.clips:
            clip, ranges, label = parse_clip(spec)
            with VideoReader(clip) as r:
                size = f"{r.info.width}x{r.info.height}"
            m = measure(clip, SHARED / DUB, ranges, settings, Path(tmp_name))
            stages = " ".join(f"{m['cold_stages'].get(s, 0):.1f}({m['warm_stages'].get(s, 0):.1f})"
                              for s in STAGES)
            ratios = m["cold"] / m["plain"], m["warm"] / m["plain"]
            worst = min(worst, *ratios)
            print(f"{clip.name[:31]:32}{size:>10}{label:>9}{m['frames']:>7}{m['plain']:>7.1f}"
                  f"{m['cold']:>7.1f}{m['warm']:>7.1f}{ratios[0]:>8.2f}{ratios[1]:>8.2f}   "
                  f"{stages}", flush=True)
    print(f"lowest ratio: {worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
