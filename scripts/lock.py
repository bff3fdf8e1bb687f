"""Write the hash-locked requirement sets that ``scripts/setup.sh`` installs.

One lock per set (base, dev, export, gpu, cluster, bundle, bundle-gpu), resolved from
``pyproject.toml``'s compatible ranges to the newest releases that fit them and
``requirements/constraints.txt`` (with ``--upgrade``; without it, the releases already locked
stay and only new requirements are resolved). The ``gpu`` set is the base with onnxruntime-gpu
in place of onnxruntime (both ship the same module); the bundle sets are the runtime sets
(base, gpu) with the bundler, so an application bundle holds exactly the locked runtime
(``installer/build.sh``). pip and setuptools are locked too: the package is installed without
build isolation, so nothing the lock does not name is downloaded. Run by
``scripts/refresh-lock.sh``.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A bundle holds its runtime set's exact releases: resolved after that set, held to its lock.
BUNDLES = {"bundle": "base", "bundle-gpu": "gpu"}
OUT = ROOT / "requirements"
TOOLS = ["pip", "setuptools"]  # the installer and the build backend (see pyproject)
# Wheels this kind of machine keeps on disk (PyTorch's CPU build); absent elsewhere.
FIND_LINKS = Path("/opt/wheels")


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()


def sets(project: dict) -> dict[str, list[str]]:
    base = project["dependencies"]
    extras = project["optional-dependencies"]
    gpu = [r for r in base if _name(r) != "onnxruntime"] + extras["gpu"]
    return {"base": base, "dev": base + extras["dev"], "export": base + extras["export"],
            "gpu": gpu, "cluster": base + extras["cluster"],
            "bundle": base + extras["bundle"], "bundle-gpu": gpu + extras["bundle"]}


def compile_set(name: str, requirements: list[str], uv: str, upgrade: bool,
                constraints: list[Path]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"{name}.in"
        source.write_text("\n".join(requirements + TOOLS) + "\n")
        command = [uv, "pip", "compile", str(source), "-o", str(OUT / f"{name}.txt"),
                   # For this kind of machine: its Python and platform (glibc) tags.
                   "--generate-hashes", "--python-version", "3.11",
                   *(f for c in [OUT / "constraints.txt", *constraints] for f in ("-c", str(c))),
                   "--custom-compile-command", "bash scripts/refresh-lock.sh"]
        if upgrade:
            command.append("--upgrade")
        if FIND_LINKS.is_dir():
            command += ["--find-links", str(FIND_LINKS)]
        subprocess.run(command, check=True)


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--upgrade"]
    uv = args[0] if args else "uv"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for name, requirements in sets(project).items():
        runtime = [OUT / f"{BUNDLES[name]}.txt"] if name in BUNDLES else []
        compile_set(name, requirements, uv, "--upgrade" in sys.argv[1:], runtime)
    return 0


if __name__ == "__main__":
    sys.exit(main())
