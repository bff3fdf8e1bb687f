"""``redub sync VIDEO --audio DUB -o OUT``: re-sync the speaker's mouth to the dub and export."""
from __future__ import annotations

import argparse
from dataclasses import replace

from engine.commands.analyze import check_target
from engine.commands.render import (add_export_arguments, add_timeline_arguments,
                                    export_settings, run_export, timeline)
from engine.face.analysis import Target
from engine.lipsync.backend import GENERATORS
from engine.media.probe import probe
from engine.models.download import ensure_models
from engine.pipeline import SyncSettings, required_models, sync
from engine.progress import ProgressFn
from engine.restore.backend import RESTORERS
from engine.stabilize.backend import STABILIZERS
from engine.timecode import parse_range


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sync", help="re-sync the mouth to the dub and export")
    p.add_argument("video")
    add_timeline_arguments(p)
    add_sync_arguments(p)
    p.add_argument("--train-range", metavar="IN-OUT",
                   help="footage to learn the speaker's mouth from (default: 30 s of the clip "
                   "around the edited ranges, the whole clip when shorter)")
    p.add_argument("--target", metavar="X,Y@TIME", help="the face to re-sync (default: largest)")
    add_export_arguments(p)
    p.set_defaults(run=run)


def add_sync_arguments(p: argparse.ArgumentParser) -> None:
    """How the mouth is re-synced: options shared by every command that re-syncs."""
    p.add_argument("--backend", default="retrieval", choices=sorted(GENERATORS),
                   help="lip generator (default: retrieval, offline)")
    p.add_argument("--stabilizer", default="geometric", choices=sorted(STABILIZERS),
                   help="face crops for the neural backends (default: geometric)")
    p.add_argument("--restore", default="none", choices=sorted(RESTORERS),
                   help="face restorer for the mouth (default: none)")
    p.add_argument("--restore-strength", type=float, default=SyncSettings.restore_strength,
                   metavar="X", help="0..1: how much of the restored mouth is used "
                   f"(default: {SyncSettings.restore_strength})")
    p.add_argument("--restore-fidelity", type=float, default=SyncSettings.restore_fidelity,
                   metavar="W", help="0..1: CodeFormer's fidelity weight, 1 keeps closest to "
                   f"the generated mouth (default: {SyncSettings.restore_fidelity})")
    p.add_argument("--mask", default="lower_face",
                   choices=["lower_face", "lips", "parsing", "mouth"],
                   help="where the mouth may change: the lower face or the lips from the "
                   "landmarks, or face parsing (parsing: MuseTalk's jaw mask; mouth: Video "
                   "ReTalking's mouth and lips; each downloads its model)")
    p.add_argument("--openness", type=float, default=1.0, help="mouth openness gain")
    p.add_argument("--audio-offset-ms", type=float, default=0.0,
                   help="shift the mouth against the dub (positive: later)")
    p.add_argument("--offline", action="store_true",
                   help="never download a missing model (also: REDUB_OFFLINE=1)")


def sync_settings(args: argparse.Namespace, **more: object) -> SyncSettings:
    """The settings ``add_sync_arguments``' options give, with ``more`` fields set."""
    return SyncSettings(
        backend=args.backend, stabilizer=args.stabilizer, restorer=args.restore,
        mask=replace(SyncSettings().mask, kind=args.mask),
        restore_strength=args.restore_strength, restore_fidelity=args.restore_fidelity,
        openness_gain=args.openness, audio_offset_ms=args.audio_offset_ms, **more)


def fetch_models(settings: SyncSettings, bar: ProgressFn, offline: bool) -> None:
    """Models come on first use, before any decoding (offline: a clear message instead);
    downloads count kB, a conversion from checkpoints counts networks."""
    ensure_models(required_models(settings), progress=lambda stage: lambda done, total: bar(
        stage, *((done, total) if stage.startswith("convert ") else
                 (done // 1000, total // 1000))), offline=offline or None)


def run(args: argparse.Namespace) -> int:
    export = export_settings(args)
    offset, ranges = timeline(args)
    stream = probe(args.video).video[0]
    clock = stream.clock
    settings = sync_settings(
        args, train_range=parse_range(args.train_range, clock) if args.train_range else None,
        target=(check_target(Target.parse(args.target, clock), stream, args.video)
                if args.target else None))
    def job(bar):
        fetch_models(settings, bar, args.offline)
        return sync(args.video, args.audio, export, dub_offset=offset,
                    ranges=ranges, settings=settings, progress=bar)

    return run_export(job)
