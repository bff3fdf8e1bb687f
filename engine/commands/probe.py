"""``redub probe FILE``: what a media file holds."""
from __future__ import annotations

import argparse
import json

from engine.media.probe import MediaInfo, probe
from engine.timecode import format_timecode


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="show streams, timing, geometry and colour of a media file")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    info = probe(args.file)
    print(json.dumps(info.to_dict(), indent=2) if args.json else format_table(info))
    return 0


def format_table(info: MediaInfo) -> str:
    rows = [("file", info.path), ("container", info.container),
            ("size", f"{info.size / 1e6:.2f} MB"), ("duration", f"{info.duration:.3f} s")]
    for v in info.video:
        names = v.color_names
        rate = f"{float(v.frame_rate):.3f} fps ({v.frame_rate})"
        rows += [
            (f"video #{v.index}", f"{v.codec}{f' ({v.profile})' if v.profile else ''}"),
            ("  size", f"{v.width}x{v.height}"
             + (f" (stored {v.coded_width}x{v.coded_height}, rotated {v.rotation}°)"
                if v.rotation else "")
             + (f", pixel aspect {v.sample_aspect_ratio}" if v.sample_aspect_ratio != 1 else "")),
            ("  frame rate", rate + (", variable" if v.variable_frame_rate else ", constant")),
            ("  frames", f"{v.frame_count} ({format_timecode(v.duration, v.frame_rate)})"
             + ("  TRUNCATED: the file declares more" if v.truncated else "")),
            ("  time base", f"{v.time_base}"),
            ("  start", f"{v.start_time:.6f} s"
             + (f", timecode {v.start_timecode}" if v.start_timecode else "")),
            ("  pixels", f"{v.pix_fmt}, {v.bit_depth}-bit {v.chroma}"),
            ("  colour", f"primaries {names['primaries']}, transfer {names['transfer']}, "
                         f"matrix {names['matrix']}, range {names['range']}"),
        ]
        if v.bit_rate:
            rows.append(("  bit rate", f"{v.bit_rate / 1000:.0f} kb/s"))
    for a in info.audio:
        rows += [(f"audio #{a.index}", a.codec),
                 ("  sampling", f"{a.rate} Hz, {a.channels} ch ({a.layout}), {a.sample_format}"),
                 ("  duration", f"{a.duration:.3f} s" if a.duration is not None else "unknown"),
                 ("  start", f"{a.start_time:.6f} s")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
