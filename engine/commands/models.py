"""``redub models list | download ID | verify [ID] | import FILE [--id ID]``: the local models."""
from __future__ import annotations

import argparse
from pathlib import Path

from engine.commands.progressbar import ProgressBar
from engine.errors import RedubError, UsageError
from engine.models.download import download_model
from engine.models.manifest import ModelEntry, get_entry, load_manifest
from engine.models.store import (ModelMissingError, digest_file, import_model, model_state,
                                 models_dir, verify_file)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, download, verify and import the ONNX models")
    p.add_argument("--dir", metavar="DIR",
                   help="model folder (default: REDUB_MODELS_DIR, else the user data folder)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="every model with its stage, size, state and licence")
    d = actions.add_parser("download", help="fetch a model (resumes, verifies, lands atomically)")
    d.add_argument("id")
    d.add_argument("--force", action="store_true", help="download again even if verified")
    v = actions.add_parser("verify", help="hash installed models and check them again")
    v.add_argument("id", nargs="?", help="one model (default: every installed model)")
    i = actions.add_parser("import", help="check a model file against its contract and copy it in")
    i.add_argument("file")
    i.add_argument("--id", help="which model it is (default: found by file name or checksum)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    folder = models_dir(args.dir)
    if args.action == "list":
        print(format_list(load_manifest().values(), folder))
        return 0
    if args.action == "download":
        bar = ProgressBar(unit="kB")
        try:
            path = download_model(args.id, folder, force=args.force,
                                  progress=lambda done, total: bar("download", done // 1000,
                                                                   total // 1000))
        finally:
            bar.finish()
        print(path)
        return 0
    if args.action == "verify":
        return verify(folder, args.id)
    model_id = args.id or identify(Path(args.file))
    print(import_model(args.file, model_id, folder))
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
    path = folder / entry.file
    size = path.stat().st_size if path.exists() else entry.size
    return f"{size / 1e6:.1f} MB" if size else "?"
