"""The model manifest: what each downloadable ONNX model is, where it comes from, what it eats.

``resources/models.json`` ships beside the code (found relative to the package, like the Qt
theme) and holds one entry per model: stage, file name, mirror URLs, checksum (sha256, or the
URL of a CRC32 ``.hash`` companion as the facefusion-assets releases publish), size, licence
note and the I/O contract that the runtime checks every file against.

The manifest's ``backends`` section names every stage backend (those without a model too):
``"module:factory"`` and the model ids it runs. The stage registries (``GENERATORS``,
``RESTORERS``...) are read from it, so adding a backend is one module and one entry here.

A tensor in a contract has a shape of ints (fixed) and names (symbolic, e.g. ``"B"``: any
size, but one name means one size across the model). Its ``name`` may be ``null`` where the
public files disagree or the name is unknown: it then matches by position only.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import RedubError, UsageError

MANIFEST_PATH = Path(__file__).resolve().parents[2] / "resources" / "models.json"
STAGES = ("detector", "landmarker", "stabilizer", "generator", "restorer")
DTYPES = ("float16", "float32", "float64", "int32", "int64", "uint8", "bool")

Dim = int | str


@dataclass(frozen=True)
class TensorSpec:
    name: str | None  # None: any name, matched by position
    shape: tuple[Dim, ...]
    dtype: str = "float32"
    layout: str | None = None  # e.g. "NCHW"; documentation for the code that fills it
    range: tuple[float, float] | None = None  # value range, e.g. (-1, 1)


@dataclass(frozen=True)
class Contract:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class ModelEntry:
    id: str
    stage: str
    file: str
    urls: tuple[str, ...]
    sha256: str | None
    hash_url: str | None  # CRC32 companion file (8 hex digits), used where no sha256 is known
    size: int | None
    license: str
    contract: Contract
    notes: str = ""


@dataclass(frozen=True)
class BackendEntry:
    stage: str
    name: str
    factory: str  # "module:callable", imported on first use
    models: tuple[str, ...]  # manifest ids of the models it runs (downloaded before a job)
    notes: str = ""


def backends(stage: str) -> dict[str, str]:
    """The backends of ``stage``, name -> ``"module:factory"``, from the manifest."""
    return {name: b.factory for name, b in _load_backends(os.fspath(MANIFEST_PATH))[stage].items()}


def backend_models(stage: str, name: str) -> tuple[str, ...]:
    """Model ids backend ``name`` of ``stage`` runs (none for an unknown name: resolving the
    backend reports that)."""
    entry = _load_backends(os.fspath(MANIFEST_PATH))[stage].get(name)
    return entry.models if entry is not None else ()


def load_manifest(path: str | os.PathLike | None = None) -> dict[str, ModelEntry]:
    """Entries by id, from ``resources/models.json`` unless ``path`` names another manifest."""
    return dict(_load(os.fspath(path) if path is not None else os.fspath(MANIFEST_PATH)))


def get_entry(model_id: str, manifest: dict[str, ModelEntry] | None = None) -> ModelEntry:
    """The entry for ``model_id``; a usage error listing the known ids otherwise."""
    entries = manifest if manifest is not None else load_manifest()
    try:
        return entries[model_id]
    except KeyError:
        raise UsageError(f"unknown model '{model_id}' (known: {', '.join(sorted(entries))})") \
            from None


@functools.lru_cache(maxsize=8)
def _load(path: str) -> tuple[tuple[str, ModelEntry], ...]:
    # Cached as a tuple so callers get a fresh dict they may change without touching the cache.
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise RedubError("model manifest not found", path) from None
    except json.JSONDecodeError as exc:
        raise RedubError(f"model manifest is not valid JSON (line {exc.lineno})", path) from None
    try:
        entries = [_entry(raw) for raw in data["models"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise RedubError(f"bad model manifest entry: {exc}", path) from None
    ids = [e.id for e in entries]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise RedubError(f"model manifest repeats ids {', '.join(duplicates)}", path)
    return tuple((e.id, e) for e in entries)


@functools.lru_cache(maxsize=8)
def _load_backends(path: str) -> dict[str, dict[str, BackendEntry]]:
    models = dict(_load(path))
    with open(path, encoding="utf-8") as f:
        data = json.load(f).get("backends", {})
    table: dict[str, dict[str, BackendEntry]] = {stage: {} for stage in STAGES}
    try:
        for stage, entries in data.items():
            if stage not in STAGES:
                raise ValueError(f"backend stage '{stage}' is not one of {', '.join(STAGES)}")
            for name, raw in entries.items():
                entry = BackendEntry(stage, name, raw["factory"], tuple(raw.get("models", ())),
                                     raw.get("notes", ""))
                if ":" not in entry.factory:
                    raise ValueError(f"{stage} backend '{name}': factory must be module:name")
                unknown = [m for m in entry.models if m not in models]
                if unknown:
                    raise ValueError(f"{stage} backend '{name}' runs unknown models "
                                     f"{', '.join(unknown)}")
                table[stage][name] = entry
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise RedubError(f"bad backend entry in the model manifest: {exc}", path) from None
    return table


def _entry(raw: dict) -> ModelEntry:
    model_id = raw["id"]
    if raw["stage"] not in STAGES:
        raise ValueError(f"{model_id}: stage '{raw['stage']}' is not one of {', '.join(STAGES)}")
    sha256 = raw.get("sha256")
    if sha256 is not None and (len(sha256) != 64 or not _is_hex(sha256)):
        raise ValueError(f"{model_id}: sha256 must be 64 hex digits")
    return ModelEntry(
        id=model_id, stage=raw["stage"], file=raw["file"],
        urls=tuple(raw.get("urls", ())), sha256=sha256.lower() if sha256 else None,
        hash_url=raw.get("hash_url"), size=raw.get("size"), license=raw.get("license", ""),
        contract=Contract(inputs=tuple(_tensor(model_id, t) for t in raw["inputs"]),
                          outputs=tuple(_tensor(model_id, t) for t in raw["outputs"])),
        notes=raw.get("notes", ""))


def _tensor(model_id: str, raw: dict) -> TensorSpec:
    dtype = raw.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ValueError(f"{model_id}: dtype '{dtype}' is not one of {', '.join(DTYPES)}")
    value_range = raw.get("range")
    return TensorSpec(name=raw.get("name"), shape=tuple(raw["shape"]), dtype=dtype,
                      layout=raw.get("layout"),
                      range=(float(value_range[0]), float(value_range[1]))
                      if value_range is not None else None)


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True
