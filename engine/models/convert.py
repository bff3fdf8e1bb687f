"""Models made on the user's machine from their publisher's PyTorch checkpoints (MuseTalk).

Some models have no public ONNX file. The manifest's ``checkpoints`` section lists the official
files they are made from; :func:`convert_models` downloads the ones a conversion needs into
``checkpoints/`` in the model folder, in the publisher's own layout (resumable, verified where
a sha256 is published, kept for the next conversion), then runs the set's converter (the
exporter in ``installer/``, imported only now: it needs torch, diffusers and transformers, the
``export`` extra) into a staging folder, checks every file it wrote against its contract, and
moves them into place, pinned. The converter checks its own output against PyTorch, so a
damaged checkpoint fails there rather than giving a wrong model.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import urllib.error
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

from engine.errors import RedubError
from engine.models.manifest import CheckpointSet, ModelEntry, checkpoint_sets, load_manifest
from engine.models.store import (ModelMissingError, check_file_contract, digest_file,
                                 install_staged, model_state, staging)
from engine.progress import CancelToken, ProgressFn

CHECKPOINTS = "checkpoints"  # the folder in the model folder
EXPORT_MODULES = ("torch", "diffusers", "transformers", "onnx")


def convert_models(entries: Iterable[ModelEntry], folder: Path,
                   progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                   timeout: float = 30.0) -> dict[str, Path]:
    """Make ``entries`` (models with a ``convert`` field) in ``folder``: model id -> path.

    One conversion per checkpoint set serves every model of it asked for; the other models
    it writes are installed too where none is installed yet (they cost nothing more).
    ``progress(stage, done, total)``: bytes per checkpoint download (stage: its path) and
    networks converted (stage: ``convert <model id>``).
    """
    wanted = list(entries)
    paths: dict[str, Path] = {}
    for name in dict.fromkeys(e.convert.checkpoints for e in wanted):
        group = [e for e in wanted if e.convert.checkpoints == name]
        paths.update(_convert_set(checkpoint_sets()[name], group, folder, progress, cancel,
                                  timeout))
    return {e.id: paths[e.id] for e in wanted}


def export_tools_missing() -> str | None:
    """Why a conversion cannot run here, in one sentence; None when it can."""
    missing = [m for m in EXPORT_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        return f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed"
    if importlib.util.find_spec("installer") is None:
        return "the export tools (installer/ of a source checkout) are not importable"
    return None


def _convert_set(chosen: CheckpointSet, group: list[ModelEntry], folder: Path,
                 progress: ProgressFn | None, cancel: CancelToken | None,
                 timeout: float) -> dict[str, Path]:
    ids = ", ".join(e.id for e in group)
    why = export_tools_missing()
    if why:
        # The bundled application carries no exporters (no torch): the conversion runs on a
        # machine with a source checkout, and its files come in by import or a mirror.
        where = ("this bundled application cannot convert them: run `redub models download` "
                 "on a source checkout with the export extra" if getattr(sys, "frozen", False)
                 else f"converting the official checkpoints needs the export extra ({why}): "
                 "pip install -e \".[export]\"")
        raise RedubError(f"no ONNX file of {ids} here, and {where}, or import converted ONNX "
                         "files with `redub models import FILE`, or set a model mirror with "
                         "`redub models mirror URL`", folder / group[0].file)
    versions = sorted({e.convert.version for e in group if e.convert.version}) or \
        [v for v in (chosen.default_version,) if v]
    fp16 = any(e.convert.fp16 for e in group)
    products = _products(chosen.name, versions, group)
    needed = dict.fromkeys(p for e in products for p in e.convert.needs)
    root = folder / CHECKPOINTS
    for path in needed:
        if cancel is not None:
            cancel.check()
        try:
            fetch_checkpoint(chosen, path, root, progress, cancel, timeout)
        except Unreachable as exc:
            raise ModelMissingError(group[0], folder / group[0].file,
                                    f"offline: cannot reach {exc} for the official checkpoint "
                                    f"{path}") from None
    module, _, attr = chosen.converter.partition(":")
    convert = getattr(importlib.import_module(module), attr)

    def steps(model_id: str, done: int, total: int) -> None:
        if cancel is not None:
            cancel.check()  # between networks: the converter removes what it wrote
        if progress:
            progress(f"convert {model_id}", done, total)

    manifest = load_manifest()
    installed: dict[str, Path] = {}
    with staging(folder) as stage:
        written = convert(root, stage, versions=tuple(versions), fp16=fp16, progress=steps)
        asked = {e.id for e in group}
        for model_id in written:
            entry = manifest.get(model_id)
            if entry is None or (model_id not in asked
                                 and model_state(entry, folder) == "verified"):
                continue  # unknown, or one the user has already (perhaps imported)
            check_file_contract(entry, stage / entry.file)
            installed[model_id] = install_staged(entry, stage, folder, "convert")
    missing = [e.id for e in group if e.id not in installed]
    if missing:
        raise RedubError(f"the conversion of the '{chosen.name}' checkpoints wrote no "
                         f"{', '.join(missing)}", root)
    return installed


def _products(name: str, versions: list[str], group: list[ModelEntry]) -> list[ModelEntry]:
    """The models a conversion of set ``name`` for ``versions`` makes, so their checkpoints
    are fetched: every fp32 model of the set of those versions (or of none), and the
    requested ones; an optional one (made only when its checkpoint is there) only when
    asked for."""
    made = [e for e in load_manifest().values()
            if e.convert is not None and e.convert.checkpoints == name and not e.convert.fp16
            and not e.convert.optional
            and e.convert.version in (None, *versions)]
    return list({e.id: e for e in [*made, *group]}.values())


def fetch_checkpoint(chosen: CheckpointSet, path: str, root: Path,
                     progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                     timeout: float = 30.0) -> Path:
    """The official file ``path`` of ``chosen`` under ``root``, downloaded if not there yet
    (resumable; checked against its published sha256 and size where known). ``Unreachable``
    when no source answers at all."""
    from engine.models.download import fetch

    spec = chosen.files[path]
    dest = root / path
    if dest.is_file() and (spec.size is None or dest.stat().st_size == spec.size):
        return dest  # a finished download, or the user's own copy of the official file
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures, unreachable = [], []
    for url in spec.urls:
        try:
            fetch(url, part, (lambda d, t: progress(path, d, t)) if progress else None,
                  cancel, timeout)
        except urllib.error.HTTPError as exc:
            failures.append(f"{url}: HTTP {exc.code} {exc.reason}")
            continue
        except urllib.error.URLError as exc:
            reason = getattr(exc.reason, "strerror", None) or exc.reason
            unreachable.append(f"{urlsplit(url).netloc or url} ({reason})")
            continue
        except (ConnectionError, TimeoutError) as exc:
            failures.append(f"{url}: {exc}")
            continue
        digest = digest_file(part)
        wrong = (f"sha256 {digest.sha256}, expected {spec.sha256}"
                 if spec.sha256 and digest.sha256 != spec.sha256 else
                 f"{digest.size} bytes, expected {spec.size}"
                 if spec.size is not None and digest.size != spec.size else None)
        if wrong:
            part.unlink(missing_ok=True)
            raise RedubError(f"the download from {url} was removed: {wrong}", dest)
        os.replace(part, dest)
        return dest
    if not failures:
        raise Unreachable(", ".join(unreachable))
    kept = " (the part downloaded so far is kept: run again to resume)" \
        if part.exists() and part.stat().st_size else ""
    raise RedubError(f"download of checkpoint {path} failed: "
                     f"{'; '.join(failures + unreachable)}{kept}", dest)


class Unreachable(Exception):
    """No source of a checkpoint could be reached (the hosts and why are the message)."""
