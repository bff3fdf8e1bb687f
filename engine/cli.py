"""The headless ``redub`` command: one subcommand per module in ``engine.commands``."""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from typing import Sequence

from engine.errors import RedubError, UsageError

# Each module defines register(subparsers) and sets the parser's ``run(args) -> int`` default.
COMMANDS = ("probe", "render", "analyze", "sync", "batch", "models")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redub", description="Redub Studio, headless.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"engine.commands.{name}").register(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler, a closing desktop session), unwound like Ctrl+C so every
    writer removes its temporary file on the way out."""


def _terminate(signum: int, frame: object) -> None:
    # Once is enough: a second SIGTERM must not cut the clean-up short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Handlers can only be set from the main thread (a host embedding main() keeps its own).
    handle = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if handle else None
    try:
        if handle:
            signal.signal(signal.SIGTERM, _terminate)
        return int(args.run(args) or 0)
    except UsageError as exc:
        print(f"redub {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RedubError as exc:
        print(f"redub {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`redub probe FILE | head`); stdout goes to /dev/null so the
        # interpreter's final flush does not fail again with a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE
    except Terminated:
        print(f"redub {args.command}: terminated", file=sys.stderr)
        return 143  # 128 + SIGTERM, as a shell reports it
    except KeyboardInterrupt:
        print(f"redub {args.command}: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT
    finally:
        if handle:
            # None: the old handler was not set from Python; the default is the nearest.
            signal.signal(signal.SIGTERM, previous or signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
