"""The application bundle: its size, its largest parts, and start-up to a usable window.

    .venv/bin/python -m bench.bundle [--bundle DIR] [--runs N]

DIR is a built bundle (default ``dist/cpu/redub-studio``, built with ``installer/build.sh`` when
missing). Start-up is from the launch of ``redub-studio --startup-check`` to its ``ready`` (the
window shown and its first events handled), and of ``redub --help`` to its exit, offscreen, for the
bundle and for the source tree's virtual environment: cold (the page cache dropped first, as
after a reboot; only where this process may write /proc/sys/vm/drop_caches) and warm (median
of N runs).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def largest_parts(bundle: Path, count: int = 15) -> list[tuple[str, int]]:
    """Sizes of the entries of the bundle's ``_internal`` folder (packages, libraries); the
    links PyInstaller puts there to libraries inside packages are not counted twice."""
    internal = bundle / "_internal"
    sizes = [(p.name, tree_size(p)) for p in internal.iterdir() if not p.is_symlink()]
    return sorted(sizes, key=lambda item: -item[1])[:count]


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def timed(command: list[str], env: dict[str, str], marker: str | None = None) -> float:
    """Seconds from launch to the line ``marker`` on stdout (the window is up), or to exit."""
    start = time.perf_counter()
    output: list[str] = []
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as process:
        ready = None
        for line in process.stdout:
            output.append(line)
            if ready is None and line.strip() == marker:
                ready = time.perf_counter() - start
        process.wait(timeout=300)
        ended = time.perf_counter() - start
    if process.returncode != 0 or (marker and ready is None):
        raise SystemExit(f"{command[0]} failed ({process.returncode}): {''.join(output)[-500:]}")
    return ready if marker else ended


def cold_and_warm(command: list[str], env: dict[str, str], runs: int,
                  marker: str | None = None) -> str:
    """Seconds of one run after the page cache is dropped (where permitted) and the median of
    ``runs`` more, as ``cold S  warm S``."""
    cold = f"cold {timed(command, env, marker):5.2f}  " if drop_caches() else ""
    warm = statistics.median(timed(command, env, marker) for _ in range(runs))
    return f"{cold}warm {warm:5.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "dist" / "cpu" / "redub-studio")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not (args.bundle / "redub-studio").exists():
        subprocess.run(["bash", str(ROOT / "installer" / "build.sh")], check=True)
    total = tree_size(args.bundle)
    print(f"bundle {args.bundle}: {total / 1e6:.0f} MB")
    for name, size in largest_parts(args.bundle):
        print(f"  {name:45s} {size / 1e6:7.1f} MB")

    with tempfile.TemporaryDirectory() as home:
        # A user's first start: empty home (no settings, caches or fonts cache), no venv on PATH.
        env = {"PATH": "/usr/bin:/bin", "HOME": home, "QT_QPA_PLATFORM": "offscreen",
               "LANG": os.environ.get("LANG", "C.UTF-8")}
        venv = ROOT / ".venv" / "bin"
        runs = {"bundle": (args.bundle / "redub-studio", args.bundle / "redub"),
                "source tree (.venv)": (venv / "redub-studio", venv / "redub")}
        print(f"start-up, seconds from launch to a usable window / to exit (cold: page cache "
              f"dropped, where permitted; warm: median of {args.runs}):")
        for label, (studio, cli) in runs.items():
            if not studio.exists():
                continue
            window = cold_and_warm([str(studio), "--startup-check"], env, args.runs, "ready")
            command = cold_and_warm([str(cli), "--help"], env, args.runs)
            print(f"  {label:22s} window: {window}   redub --help: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
