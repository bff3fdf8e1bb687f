"""The model manifest: what each downloadable ONNX model is, where it comes from, what it eats.

``resources/models.json`` ships beside the code (found relative to the package, like the Qt
theme) and holds one entry per model: stage, file name, mirror URLs, checksum (sha256, or the
URL of a CRC32 ``.hash`` companion as the facefusion-assets releases publish), size, licence
note and the I/O contract that the runtime checks every file against.

A model with no public ONNX file may be converted from its publisher's PyTorch checkpoints:
its ``convert`` field names a set in the ``checkpoints`` section (the official files, each with
its URLs, sha256 where published, and size; downloaded into ``checkpoints/`` in the model
folder in the publisher's own layout) and the converter that turns them into the contract.
A model too big for one protobuf keeps its weights in ONNX external data: ``data_file`` names
that companion, which is pinned, verified and imported with the model.

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
STAGES = ("detector", "landmarker", "stabilizer", "generator", "restorer", "parser")
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
class Conversion:
    """How a model without a public ONNX file is made: ``checkpoints`` names the set of
    official files, ``needs`` the paths in it this model is made from; ``version`` and
    ``fp16`` are passed to the set's converter."""
    checkpoints: str
    needs: tuple[str, ...]
    version: str | None = None
    fp16: bool = False
    optional: bool = False  # the converter makes it only when its checkpoints are there


@dataclass(frozen=True)
class CheckpointFile:
    path: str  # relative to the checkpoints folder, in the publisher's layout
    urls: tuple[str, ...]
    sha256: str | None
    size: int | None


@dataclass(frozen=True)
class CheckpointSet:
    name: str
    converter: str  # "module:callable", imported only when a conversion runs
    files: dict[str, CheckpointFile]  # by path
    license: str = ""
    notes: str = ""
    default_version: str | None = None  # the version converted when none is asked for


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
    data_file: str | None = None  # ONNX external data beside ``file`` (a model over 2 GB)
    data_sha256: str | None = None
    convert: Conversion | None = None  # made from official checkpoints where not published

    @property
    def files(self) -> tuple[str, ...]:
        """Every file of the model in the model folder: the ONNX file, then its data."""
        return (self.file, self.data_file) if self.data_file else (self.file,)


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


def checkpoint_sets(path: str | os.PathLike | None = None) -> dict[str, CheckpointSet]:
    """The manifest's ``checkpoints`` section by set name."""
    return dict(_load_checkpoints(os.fspath(path) if path is not None
                                  else os.fspath(MANIFEST_PATH)))


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
def _load_checkpoints(path: str) -> dict[str, CheckpointSet]:
    models = dict(_load(path))
    with open(path, encoding="utf-8") as f:
        data = json.load(f).get("checkpoints", {})
    sets = {}
    try:
        for name, raw in data.items():
            files = {}
            for f in raw["files"]:
                files[f["path"]] = CheckpointFile(f["path"], tuple(f.get("urls", ())),
                                                  _sha256(f"checkpoint {f['path']}",
                                                          f.get("sha256")), f.get("size"))
            if ":" not in raw["converter"]:
                raise ValueError(f"checkpoints '{name}': converter must be module:name")
            sets[name] = CheckpointSet(name, raw["converter"], files, raw.get("license", ""),
                                       raw.get("notes", ""), raw.get("default_version"))
        for entry in models.values():
            if entry.convert is None:
                continue
            chosen = sets.get(entry.convert.checkpoints)
            if chosen is None:
                raise ValueError(f"{entry.id} is converted from unknown checkpoints "
                                 f"'{entry.convert.checkpoints}'")
            unknown = [p for p in entry.convert.needs if p not in chosen.files]
            if unknown:
                raise ValueError(f"{entry.id} needs checkpoint files not in "
                                 f"'{chosen.name}': {', '.join(unknown)}")
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise RedubError(f"bad checkpoints entry in the model manifest: {exc}", path) from None
    return sets


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
    convert = raw.get("convert")
    return ModelEntry(
        id=model_id, stage=raw["stage"], file=raw["file"],
        urls=tuple(raw.get("urls", ())), sha256=_sha256(model_id, raw.get("sha256")),
        hash_url=raw.get("hash_url"), size=raw.get("size"), license=raw.get("license", ""),
        contract=Contract(inputs=tuple(_tensor(model_id, t) for t in raw["inputs"]),
                          outputs=tuple(_tensor(model_id, t) for t in raw["outputs"])),
        notes=raw.get("notes", ""), data_file=raw.get("data_file"),
        data_sha256=_sha256(f"{model_id} data", raw.get("data_sha256")),
        convert=Conversion(convert["checkpoints"], tuple(convert.get("needs", ())),
                           convert.get("version"), bool(convert.get("fp16", False)),
                           bool(convert.get("optional", False)))
        if convert else None)


def _sha256(what: str, value: str | None) -> str | None:
    if value is not None and (len(value) != 64 or not _is_hex(value)):
        raise ValueError(f"{what}: sha256 must be 64 hex digits")
    return value.lower() if value else None


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
