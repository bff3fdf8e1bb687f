"""The headless ``redub`` command: one subcommand per module in ``engine.commands``."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from engine.errors import RedubError, UsageError

# Each module defines register(subparsers) and sets the parser's ``run(args) -> int`` default.
COMMANDS = ("probe", "render", "analyze", "sync", "models")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redub", description="Redub Studio, headless.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"engine.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except UsageError as exc:
        print(f"redub {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RedubError as exc:
        print(f"redub {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"redub {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
