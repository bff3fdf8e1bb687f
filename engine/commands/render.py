"""``redub render VIDEO --audio DUB -o OUT``: the video with the dub laid in, frames untouched."""
from __future__ import annotations

import argparse
from typing import Callable

from engine.commands.progressbar import ProgressBar
from engine.errors import RedubError, UsageError
from engine.media.codecs import PRESETS, available_presets, get_preset
from engine.media.probe import probe
from engine.progress import ProgressFn
from engine.render import ExportSettings, RenderResult, render
from engine.timecode import parse_range, parse_time


def add_export_arguments(p: argparse.ArgumentParser, output_help: str = "output file (never an "
                         "input)", codec_default: str | None = "h264") -> None:
    """Options shared by every command that writes video (``codec_default`` None: a batch
    keeps each source's codec family unless --codec is given)."""
    p.add_argument("-o", "--output", required=True, help=output_help)
    # The NVENC codecs are offered only where an NVIDIA encoder opens on this machine.
    p.add_argument("--codec", default=codec_default, choices=sorted(available_presets()),
                   type=_codec,
                   help=f"video codec (default {codec_default}); the extension must suit it"
                   if codec_default else "video codec (default: the source's codec family)")
    p.add_argument("--crf", help="constant quality for h264/h265 (lower is better; default "
                   "18/20), NVENC's cq for h264_nvenc/hevc_nvenc (1-51, default 19/21)")
    p.add_argument("--preset", help="x264/x265 speed preset (default medium); p1-p7 for NVENC "
                   "(default p5)")
    p.add_argument("--audio-mode", choices=("ranges", "all"), default="ranges",
                   help="dub replaces the source audio only in the ranges, or everywhere")


def _codec(name: str) -> str:
    """An NVENC codec this machine cannot open is refused saying why, not as a bad choice."""
    if name in PRESETS and PRESETS[name].hardware:
        try:
            get_preset(name)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return name


def add_timeline_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--audio", required=True, metavar="DUB", help="the dub track")
    p.add_argument("--offset", default="0",
                   help="where the dub starts on the timeline: seconds, frames (50f) "
                        "or timecode HH:MM:SS:FF (may be negative)")
    p.add_argument("--range", action="append", default=[], metavar="IN-OUT",
                   help="edited range (repeatable): seconds, frames or timecode")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="export the video with the dub laid in")
    p.add_argument("video")
    add_timeline_arguments(p)
    add_export_arguments(p)
    p.set_defaults(run=run)


def export_settings(args: argparse.Namespace) -> ExportSettings:
    """The export settings from the options; bad encoder settings are refused here, so call it
    before any work."""
    quality = {k: v for k, v in (("crf", args.crf), ("preset", args.preset)) if v is not None}
    return ExportSettings(output=args.output, codec=args.codec, quality=quality,
                          audio_mode=args.audio_mode)


def timeline(args: argparse.Namespace) -> tuple[float, list[tuple[float, float]]]:
    """The dub offset and the ranges in seconds, frames (the clip's own) and source timecode."""
    info = probe(args.video)
    if not info.video:
        raise RedubError("has no video stream (audio only?)", args.video)
    clock = info.video[0].clock
    return parse_time(args.offset, clock), [parse_range(r, clock) for r in args.range]


def run(args: argparse.Namespace) -> int:
    export = export_settings(args)
    offset, ranges = timeline(args)
    return run_export(lambda bar: render(args.video, export, dub=args.audio,
                                         dub_offset=offset, ranges=ranges, progress=bar))


def run_export(job: Callable[[ProgressFn], RenderResult]) -> int:
    """Run an export with a progress bar, then print its notes and a summary line."""
    bar = ProgressBar()
    try:
        result = job(bar)
    finally:
        bar.finish()
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote {result.path}: {result.frames} frames in {result.seconds:.1f} s "
          f"({result.fps:.1f} fps)")
    return 0
