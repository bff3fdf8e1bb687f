"""``redub analyze VIDEO``: track the target face over a range, cache it, optionally draw it."""
from __future__ import annotations

import argparse

import numpy as np

from engine.commands.progressbar import ProgressBar
from engine.errors import RedubError
from engine.face.analysis import FaceAnalysis, Flag, Target, analyze_range, cache_file
from engine.face.detect import detector_names
from engine.face.landmark import landmarker_names
from engine.face.overlay import write_overlay
from engine.media.probe import probe
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
    fps = info.video[0].frame_rate
    start, end = parse_range(args.range, fps) if args.range else (None, None)
    target = Target.parse(args.target, fps) if args.target else None
    if args.overlay:
        check_output_path(args.overlay, [args.video], (".mp4", ".mov", ".mkv"))
    if args.output:
        check_output_path(args.output, [args.video], (".npz",))
    bar = ProgressBar()
    try:
        analysis = analyze_range(
            args.video, start, end, target=target, backend=args.backend,
            landmarker=args.landmarker,
            backend_options={"model": args.model} if args.model else None,
            landmarker_options={"model": args.landmarker_model} if args.landmarker_model else None,
            use_cache=not args.no_cache, progress=bar)
        if args.output:
            analysis.save(args.output)
        if args.overlay:
            write_overlay(analysis, args.overlay, progress=bar)
    finally:
        bar.finish()
    print(summary(analysis))
    if not args.no_cache:
        print(f"cached: {cache_file(analysis)}")
    return 0


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
