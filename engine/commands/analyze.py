"""``redub analyze VIDEO``: track the target face over a range, cache it, optionally draw it."""
from __future__ import annotations

import argparse
import os
import uuid

import numpy as np

from engine.commands.progressbar import ProgressBar
from engine.errors import RedubError, UsageError
from engine.face.analysis import FaceAnalysis, Flag, Target, analyze_range, cache_file
from engine.face.detect import detector_names
from engine.face.landmark import landmarker_names
from engine.face.overlay import write_overlay
from engine.media.probe import VideoStreamInfo, probe
from engine.media.writer import check_output_path
from engine.timecode import parse_range


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="find and track the target face; cache the analysis")
    p.add_argument("video")
    p.add_argument("--range", metavar="IN-OUT",
                   help="frames to analyse: seconds, frames (50f) or timecode; default all")
    p.add_argument("--target", metavar="X,Y@TIME",
                   help="follow the face nearest pixel X,Y on the frame at TIME "
                        "(default: the largest face)")
    p.add_argument("--backend", default="dlib", choices=detector_names(),
                   help="face detector (default dlib, embedded)")
    p.add_argument("--model", metavar="PATH", help="model file for an ONNX detector (scrfd)")
    p.add_argument("--landmarker", default="dlib", choices=landmarker_names(),
                   help="68-point landmarker (default dlib, embedded)")
    p.add_argument("--landmarker-model", metavar="PATH", help="model file for an ONNX landmarker")
    p.add_argument("--overlay", metavar="OUT.mp4",
                   help="also write the range with boxes, landmarks and crop drawn on it")
    p.add_argument("-o", "--output", metavar="FILE.npz",
                   help="also save the analysis here (it is always cached)")
    p.add_argument("--no-cache", action="store_true", help="analyse again even if cached")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    info = probe(args.video)
    if not info.video:
        raise RedubError("has no video stream (audio only?)", args.video)
    clock = info.video[0].clock
    start, end = parse_range(args.range, clock) if args.range else (None, None)
    target = (check_target(Target.parse(args.target, clock), info.video[0], args.video)
              if args.target else None)
    if args.overlay:
        check_output_path(args.overlay, [args.video], (".mp4", ".mov", ".mkv"))
    if args.output:
        check_output_path(args.output, [args.video], (".npz",))
    outputs = _Outputs()
    # The overlay moves into place first: a player holding the old one open is the likeliest
    # refusal, and then nothing has moved yet.
    overlay = outputs.stage(args.overlay) if args.overlay else None
    saved = outputs.stage(args.output) if args.output else None
    bar = ProgressBar()
    try:
        analysis = analyze_range(
            args.video, start, end, target=target, backend=args.backend,
            landmarker=args.landmarker,
            backend_options={"model": args.model} if args.model else None,
            landmarker_options={"model": args.landmarker_model} if args.landmarker_model else None,
            use_cache=not args.no_cache, progress=bar)
        if saved:
            analysis.save(saved)
        if overlay:
            write_overlay(analysis, overlay, progress=bar)
        outputs.commit()
    finally:
        outputs.discard()
        bar.finish()
    print(summary(analysis))
    if not args.no_cache:
        print(f"cached: {cache_file(analysis)}")
    return 0


def check_target(target: Target, video: VideoStreamInfo, path: str) -> Target:
    """``target`` if it lies on the clip: its time within the clip, its point inside the
    (upright) frame; otherwise a usage error naming the clip's duration or size."""
    if not 0 <= target.time < video.duration:
        raise UsageError(f"target time {target.time:g} s is outside the clip "
                         f"(0-{video.duration:.2f} s)", path)
    if not (0 <= target.x < video.width and 0 <= target.y < video.height):
        raise UsageError(f"target point {target.x:g},{target.y:g} is outside the "
                         f"{video.width}x{video.height} frame", path)
    return target


class _Outputs:
    """The run's files, written under hidden names beside their targets and moved into place
    together once all are complete: a failed or interrupted run leaves none of them."""

    def __init__(self) -> None:
        self._staged: list[tuple[str, str]] = []  # (temporary, target)

    def stage(self, target: str) -> str:
        """A temporary path beside ``target`` keeping its extension (writers go by it)."""
        folder, name = os.path.split(os.path.abspath(target))
        temp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.part"
                                    f"{os.path.splitext(name)[1]}")
        self._staged.append((temp, target))
        return temp

    def commit(self) -> None:
        """Move every staged file into place, in staging order; all or none."""
        moved: list[str] = []
        try:
            for temp, target in self._staged:
                try:
                    os.replace(temp, target)
                except OSError as exc:
                    raise RedubError(f"cannot put the finished file in place ({exc.strerror or exc}"
                                     "): is it read-only or open in another program? Nothing "
                                     "was saved", target) from exc
                moved.append(target)
        except BaseException:
            # An analysis without its overlay (or the reverse) would not match: take back all.
            for path in moved:
                _remove(path)
            raise

    def discard(self) -> None:
        """Remove whatever was not moved into place (nothing is left after a commit)."""
        for temp, _ in self._staged:
            _remove(temp)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def summary(analysis: FaceAnalysis) -> str:
    n = len(analysis)
    flags = analysis.flags

    def count(flag: Flag) -> int:
        return int(np.count_nonzero(flags & flag))

    found = n - count(Flag.NOT_FOUND)
    rows = [("frames", f"{analysis.start}-{analysis.stop - 1} ({n})"),
            ("target found", f"{found} ({100.0 * found / n:.1f}%)"),
            ("interpolated", str(count(Flag.INTERPOLATED))),
            ("not found", f"{count(Flag.NOT_FOUND)} (passed through untouched)"),
            ("tiny face", str(count(Flag.TINY))),
            ("strong profile", str(count(Flag.PROFILE))),
            ("shot cuts", str(count(Flag.SHOT_START)))]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
