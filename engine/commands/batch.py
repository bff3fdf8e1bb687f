"""``redub batch TIMELINE -o FOLDER``: re-sync every dubbed shot of an editor's timeline.

Shots run on local worker processes (``--workers``) or a Ray cluster (``--cluster``), in one
language per ``--dub-track`` (repeated, or a pattern).

Exit 0 when every shot is done, skipped (up to date) or has no face; 1 when any failed.
"""
from __future__ import annotations

import argparse

from engine.commands.progressbar import ProgressBar
from engine.commands.render import add_export_arguments
from engine.commands.sync import add_sync_arguments, fetch_models, sync_settings
from engine.errors import UsageError
from engine.timeline.batch import REPORTS, overridden, read_overrides, run_batch
from engine.timeline.io import FORMATS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batch", help="re-sync every dubbed shot of an editor's timeline")
    p.add_argument("timeline", help="OTIO, FCP 7 XML, FCPXML, EDL, AAF or Kdenlive project")
    p.add_argument("--dub-track", metavar="NAME", action="append",
                   help="the audio track holding the dubs (default: one whose name contains "
                   "'dub', else the last audio track); repeat it, or give a pattern such as "
                   "'Dub *', for several languages: one output timeline and report each")
    p.add_argument("--handles", type=int, default=0, metavar="FRAMES",
                   help="extra source frames written before and after each shot (default 0)")
    p.add_argument("--format", choices=sorted(FORMATS),
                   help="the output timeline's format (default: the input's)")
    p.add_argument("--overrides", metavar="FILE",
                   help="JSON settings per shot number or clip name, e.g. "
                   '{"3": {"openness_gain": 1.2}}')
    p.add_argument("--report", choices=REPORTS, default="csv",
                   help="the report of every shot (default csv)")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="run the shots on a Ray cluster: ray://HOST:PORT, HOST:PORT, or 'auto' "
                   "to join the local one (needs the 'cluster' extra; default: local workers)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="local worker processes (default: one per two cores)")
    p.add_argument("--ship-media", action="store_true",
                   help="send the media to the cluster's workers instead of having them read "
                   "it by path (for workers without the shared file system)")
    add_sync_arguments(p)
    add_export_arguments(p, output_help="folder for the new media, the timeline and the report",
                         codec_default=None)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be 1 or more, not {args.workers}")
    settings = sync_settings(args)
    quality = {k: v for k, v in (("crf", args.crf), ("preset", args.preset)) if v is not None}
    export = {"codec": args.codec, "quality": quality, "audio_mode": args.audio_mode}
    overrides = read_overrides(args.overrides) if args.overrides else {}
    bar = ProgressBar()

    def progress(stage: str, done: int, total: int) -> None:
        if stage != "batch":  # each shot's stages say "shot K/N" already
            bar(stage, done, total)

    try:
        fetch_models(settings, bar, args.offline)
        for values in overrides.values():  # a shot's own backend needs its own models
            fetch_models(overridden(settings, values), bar, args.offline)
        result = run_batch(args.timeline, args.output, settings=settings,
                           overrides=args.overrides, dub_track=args.dub_track,
                           handles=args.handles, fmt=args.format, report=args.report,
                           export=export, progress=progress, cluster=args.cluster,
                           workers=args.workers, ship_media=args.ship_media)
    finally:
        bar.finish()
    results = result if isinstance(result, list) else [result]
    for one in results:
        said = f"{one.language}: " if one.language is not None else ""
        for note in one.notes:
            print(f"{said}note: {note}")
        for r in one.shots:
            where = f" -> {r.output}" if r.output else ""
            print(f"{said}shot {r.shot.index} {r.shot.name}: {r.status}, {r.frames} frames"
                  f"{where}")
            for note in r.notes:
                print(f"  {note}")
        print(f"wrote {one.timeline} and {one.report}")
    failed = sum(len(one.failed) for one in results)
    if failed:
        print(f"{failed} of {sum(len(one.shots) for one in results)} shots failed (their "
              "clips keep the original media); see the report")
        return 1
    return 0
