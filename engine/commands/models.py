"""``redub models list | download NAME | verify [ID] | import FILE... | mirror [URL]``: the
local models.

``download`` takes a model id or a backend name (``redub models download musetalk`` fetches
every model the MuseTalk generator runs, converting those without a public ONNX file from
the official checkpoints). ``mirror`` shows, sets or clears the studio's model mirror.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from engine.commands.progressbar import ProgressBar
from engine.errors import RedubError, UsageError
from engine.models import manifest
from engine.models.download import install_models
from engine.models.manifest import ModelEntry, get_entry, load_manifest
from engine.models.mirror import ENV as MIRROR_ENV
from engine.models.mirror import mirror_url, set_mirror
from engine.models.store import (ModelMissingError, digest_file, import_model, model_files,
                                 model_state, models_dir, verify_file)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, download, verify and import the ONNX models")
    p.add_argument("--dir", metavar="DIR",
                   help="model folder (default: REDUB_MODELS_DIR, else the user data folder)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="every model with its stage, size, state and licence")
    d = actions.add_parser("download", help="fetch a model, or every model of a backend "
                                            "(resumes, verifies, lands atomically)")
    d.add_argument("id", metavar="NAME", help="a model id, or a backend name (e.g. musetalk)")
    d.add_argument("--force", action="store_true", help="download again even if verified")
    d.add_argument("--mirror", metavar="URL",
                   help="model mirror for this run (default: `redub models mirror`)")
    v = actions.add_parser("verify", help="hash installed models and check them again")
    v.add_argument("id", nargs="?", help="one model (default: every installed model)")
    i = actions.add_parser("import", help="check model files against their contracts and copy "
                                          "them in (a .onnx.data file goes with its model)")
    i.add_argument("files", nargs="+", metavar="FILE")
    i.add_argument("--id", help="which model it is, for one file (default: found by file name "
                                "or checksum)")
    m = actions.add_parser("mirror", help="show, set or clear the studio's model mirror (a URL "
                                          "prefix or folder tried before the official sources)")
    m.add_argument("url", nargs="?", metavar="URL")
    m.add_argument("--clear", action="store_true", help="forget the mirror")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    folder = models_dir(args.dir)
    if args.action == "list":
        print(format_list(load_manifest().values(), folder))
        return 0
    if args.action == "download":
        progress = JobProgress()
        try:
            paths = install_models(resolve(args.id), folder, progress=progress,
                                   force=args.force, mirror=args.mirror)
        finally:
            progress.finish()
        print("\n".join(str(p) for p in paths))
        return 0
    if args.action == "verify":
        return verify(folder, args.id)
    if args.action == "mirror":
        return mirror(args.url, args.clear)
    files = [Path(f) for f in args.files]
    graphs = [f for f in files if not _is_data_of(f, files)]
    if args.id and len(graphs) > 1:
        raise UsageError("--id names the model of one file: import the others separately")
    for file in graphs:
        data = next((f for f in files if _is_data_of(f, [file])), None)
        print(import_model(file, args.id or identify(file), folder, data=data))
    return 0


class JobProgress:
    """Download bytes and conversion steps on the terminal, each phase on its own line."""

    def __init__(self) -> None:
        self.bytes = ProgressBar(unit="kB")
        self.steps = ProgressBar(unit="networks")

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage.startswith("convert "):
            self.bytes.finish()
            self.steps(stage, done, total)
        else:
            self.steps.finish()
            self.bytes(stage, done // 1000, total // 1000)

    def finish(self) -> None:
        self.bytes.finish()
        self.steps.finish()


def resolve(name: str) -> list[str]:
    """The model ids ``name`` stands for: itself if it is one, else the models of the backend
    of that name (a usage error listing both kinds when it is neither)."""
    entries = load_manifest()
    if name in entries:
        return [name]
    for stage in manifest.STAGES:
        models = manifest.backend_models(stage, name)
        if models:
            return list(models)
    backends = sorted({b for stage in manifest.STAGES for b in manifest.backends(stage)
                       if manifest.backend_models(stage, b)})
    raise UsageError(f"unknown model or backend '{name}' (models: {', '.join(sorted(entries))}; "
                     f"backends with models: {', '.join(backends)})")


def mirror(url: str | None, clear: bool) -> int:
    """Show the mirror in force, or save a new one (``clear``: none)."""
    if clear or url:
        prefix = set_mirror(None if clear else url)
        print(prefix or "no model mirror")
        if os.environ.get(MIRROR_ENV):
            print(f"note: {MIRROR_ENV} is set and takes precedence", file=sys.stderr)
        return 0
    print(mirror_url() or "no model mirror")
    return 0


def format_list(entries, folder: Path) -> str:
    rows = [("id", "stage", "size", "state", "licence")]
    for e in entries:
        rows.append((e.id, e.stage, _size(e, folder), model_state(e, folder), e.license))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:4], widths)) + "  " + r[4]
             for r in rows]
    return "\n".join(lines) + f"\nfolder: {folder}"


def verify(folder: Path, model_id: str | None) -> int:
    """Hash and check one model, or every installed one; 1 if any fails."""
    if model_id:
        entries = [get_entry(model_id)]
        if model_state(entries[0], folder) == "missing":
            raise ModelMissingError(entries[0], folder / entries[0].file)
    else:
        entries = [e for e in load_manifest().values() if model_state(e, folder) != "missing"]
        if not entries:
            print(f"no models installed in {folder}")
            return 0
    failed = 0
    for entry in entries:
        try:
            verify_file(entry, folder / entry.file)
            print(f"{entry.id}: ok")
        except RedubError as exc:
            print(f"{entry.id}: {exc}")
            failed += 1
    return 1 if failed else 0


def identify(file: Path) -> str:
    """The manifest id of ``file``: by file name, else by sha256."""
    if not file.is_file():
        raise RedubError("model file not found", file)
    entries = list(load_manifest().values())
    by_name = [e.id for e in entries if e.file == file.name]
    if by_name:
        return by_name[0]
    sha256 = digest_file(file).sha256
    by_hash = [e.id for e in entries if e.sha256 == sha256]
    if by_hash:
        return by_hash[0]
    raise UsageError(f"cannot tell which model {file.name} is: pass --id "
                     f"({', '.join(e.id for e in entries)})")


def _size(entry: ModelEntry, folder: Path) -> str:
    files = [folder / name for name in model_files(entry, folder)]
    size = sum(f.stat().st_size for f in files if f.exists()) if files[0].exists() \
        else entry.size
    return f"{size / 1e6:.1f} MB" if size else "?"


def _is_data_of(file: Path, files: list[Path]) -> bool:
    """Whether ``file`` is the external data of one of ``files`` (``<model>.onnx.data``)."""
    return file.name.endswith(".data") and any(
        f.name == file.name[:-len(".data")] for f in files if f != file)
