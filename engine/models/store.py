"""The local model folder: where models live, whether each is present and verified, imports.

A model file counts as verified when its sha256 matches the manifest, or when a pin written at
download, conversion, import or verification still matches its size and modification time.
Pins live in ``pins.json`` beside the models, so a multi-gigabyte file is hashed once, not on
every use. A model with ONNX external data is two files (``entry.files``) treated as one: both
pinned, both verified, imported together.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from engine.errors import RedubError
from engine.models.manifest import ModelEntry, get_entry
from engine.paths import data_dir

PINS = "pins.json"
OWN_SOURCES = ("import", "convert")  # pins that vouch for a file no published checksum covers
ENV = "REDUB_MODELS_DIR"
_CHUNK = 1 << 20
_pins_lock = threading.Lock()


class ModelMissingError(RedubError):
    """A model is not installed (or could not be fetched); the message says what to put where."""

    def __init__(self, entry: ModelEntry, path: Path, reason: str | None = None) -> None:
        if entry.urls:
            how = (f"download {entry.urls[0]} to this path, or run "
                   f"`redub models download {entry.id}` when online")
        elif entry.convert is not None:
            how = (f"no public ONNX file: run `redub models download {entry.id}` when online "
                   f"(fetches the official checkpoints and converts them), or import the "
                   f"converted {' + '.join(entry.files)} with `redub models import`")
        else:
            how = (f"no public download: get {entry.file} and run "
                   f"`redub models import FILE --id {entry.id}`")
        lead = f"{reason}; " if reason else ""
        super().__init__(f"{lead}model '{entry.id}' ({entry.stage}) is missing: {how}", path)
        self.entry = entry


@dataclass(frozen=True)
class Digest:
    sha256: str
    crc32: str  # 8 lowercase hex digits, as the facefusion-assets .hash files hold
    size: int


def models_dir(setting: str | os.PathLike | None = None) -> Path:
    """The model folder: ``setting`` (the app's preference) if given, else ``REDUB_MODELS_DIR``,
    else ``models`` in the per-user data folder."""
    chosen = setting or os.environ.get(ENV)
    path = Path(chosen) if chosen else data_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def model_path(model_id: str, directory: str | os.PathLike | None = None) -> Path:
    """The verified local file of ``model_id``; ``ModelMissingError`` when it is not there.

    An unpinned file someone copied in is checked once (sha256 against the manifest, or the
    I/O contract where no checksum is published) and pinned.
    """
    entry = get_entry(model_id)
    folder = models_dir(directory)
    path = folder / entry.file
    state = model_state(entry, folder)
    if state == "verified":
        return path
    if state == "missing":
        raise ModelMissingError(entry, path)
    return verify_file(entry, path)


def model_state(entry: ModelEntry, directory: str | os.PathLike | None = None) -> str:
    """``missing``, ``verified`` (pinned and unchanged), ``unverified`` (present, never checked)
    or ``changed`` (different from when it was pinned). Never hashes the file. A model with
    external data is missing while either file is."""
    folder = models_dir(directory)
    pins = read_pins(folder)
    states = []
    for name in model_files(entry, folder):
        try:
            st = (folder / name).stat()
        except FileNotFoundError:
            return "missing"
        pin = pins.get(name)
        if pin is None:
            states.append("unverified")
        elif pin["size"] != st.st_size or pin["mtime_ns"] != st.st_mtime_ns:
            states.append("changed")
        elif _published(entry, name) and pin["sha256"] != _published(entry, name) \
                and pin.get("source") not in OWN_SOURCES:
            states.append("changed")  # the manifest moved on to a new file since this was pinned
        else:
            states.append("verified")
    for state in ("changed", "unverified"):
        if state in states:
            return state
    return "verified"


def verify_file(entry: ModelEntry, path: Path) -> Path:
    """Hash ``path`` (and its external data) and check it, pin it and return it; ``RedubError``
    on a mismatch.

    The reference is the manifest's sha256, or for a file imported, converted or pinned without
    one, the pin (an unchanged file whose bytes differ is damaged). Files not held to a
    published checksum are also checked against the I/O contract.
    """
    pins = read_pins(path.parent)
    digests, sources, contract = {}, {}, False
    for name in model_files(entry, path.parent):
        target = path.with_name(name) if name != entry.file else path
        digest = digest_file(target)
        st = target.stat()
        pin = pins.get(name)
        unchanged = pin is not None and \
            (pin["size"], pin["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
        published = _published(entry, name)
        own = unchanged and (pin.get("source") in OWN_SOURCES or not published)
        expected = pin["sha256"] if own else published
        if expected and digest.sha256 != expected:
            for other in entry.files:  # so every later use checks it again, not trusting it
                drop_pin(path.with_name(other))
            raise RedubError(f"is damaged or not model '{entry.id}' (sha256 {digest.sha256}, "
                             f"expected {expected}): delete it, then download or import "
                             f"'{entry.id}' again", target)
        contract = contract or own or not published
        digests[target] = digest.sha256
        sources[target] = pin["source"] if unchanged else "verify"
    if contract:
        check_file_contract(entry, path)
    for target, sha256 in digests.items():
        write_pin(target, sha256, sources[target])
    return path


def import_model(file: str | os.PathLike, model_id: str,
                 directory: str | os.PathLike | None = None,
                 data: str | os.PathLike | None = None) -> Path:
    """Copy ``file`` into the model folder as ``model_id`` after checking it against the
    manifest's I/O contract; the copy lands atomically and its sha256 is pinned.

    A model with external data brings its data file too: ``data``, else the manifest's data
    file name or ``<file>.data`` beside ``file``. Both are copied to a staging folder under
    their installed names and checked there together, so a bad pair never replaces a good one.
    """
    entry = get_entry(model_id)
    source = Path(file)
    if not source.is_file():
        raise RedubError("model file not found", source)
    if data and not entry.data_file:
        raise RedubError(f"model '{entry.id}' has no external data file", data)
    sources = {entry.file: source}
    companion = Path(data) if data else find_data_file(entry, source)
    if companion is not None:
        if not companion.is_file():
            raise RedubError("external data file not found", companion)
        sources[entry.data_file] = companion
    folder = models_dir(directory)
    dest = folder / entry.file
    if all(p.resolve() == (folder / n).resolve() for n, p in sources.items()):
        check_file_contract(entry, dest)  # importing the installed files: check, pin
        for name in sources:
            write_pin(folder / name, digest_file(folder / name).sha256, "import")
        return dest
    with staging(folder) as stage:
        for name, path in sources.items():
            shutil.copyfile(path, stage / name)
        try:
            check_file_contract(entry, stage / entry.file)
        except RedubError as exc:
            raise RedubError(exc.problem, source) from None  # the user's file, not the copy
        install_staged(entry, stage, folder, "import")
    return dest


def model_files(entry: ModelEntry, folder: Path) -> tuple[str, ...]:
    """The files ``entry`` has in ``folder``: its ONNX file, and its external data file where
    there is one (present or pinned). A converted network small enough for one protobuf (a
    test's tiny UNet) has none; a pinned data file that went missing makes the model missing."""
    if entry.data_file and ((folder / entry.data_file).exists()
                            or entry.data_file in read_pins(folder)):
        return entry.files
    return (entry.file,)


def find_data_file(entry: ModelEntry, source: Path) -> Path | None:
    """The external data file that came with ``source`` (a model file being imported): the
    manifest's data file name or ``<file>.data`` beside it; None when there is none (the
    contract check then fails if the graph needs one)."""
    if not entry.data_file:
        return None
    for candidate in (source.with_name(entry.data_file), Path(f"{source}.data")):
        if candidate.is_file():
            return candidate
    return None


@contextlib.contextmanager
def staging(folder: Path):
    """A scratch folder inside the model folder (same volume: its files move by rename),
    removed with whatever is left in it."""
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def install_staged(entry: ModelEntry, stage: Path, folder: Path, source: str,
                   digests: dict[str, str] | None = None) -> Path:
    """Move ``entry``'s checked files from ``stage`` into ``folder`` and pin them (with their
    sha256 from ``digests`` by file name where the caller has hashed them already).

    The data file lands first and the pins last: a crash in between leaves files whose pins do
    not match, which are checked again on next use rather than trusted.
    """
    digests = digests or {}
    names = [n for n in entry.files if (stage / n).exists()]
    for name in entry.files:
        drop_pin(folder / name)
    if entry.data_file and entry.data_file not in names:
        (folder / entry.data_file).unlink(missing_ok=True)  # an older copy's, now stale
    for name in reversed(names):
        os.replace(stage / name, folder / name)
    for name in names:
        sha256 = digests.get(name) or digest_file(folder / name).sha256
        write_pin(folder / name, sha256, source)
    return folder / entry.file


def check_file_contract(entry: ModelEntry, path: Path) -> None:
    """Load ``path`` on the CPU and compare it with ``entry``'s contract (``RedubError``)."""
    from engine.models.session import check_contract, load_session

    session = load_session(path, f"{entry.stage} model '{entry.id}'")
    check_contract(session, entry.contract, path)


def digest_file(path: Path) -> Digest:
    sha, crc, size = hashlib.sha256(), 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    return Digest(sha.hexdigest(), f"{crc:08x}", size)


def read_pins(directory: Path) -> dict[str, dict]:
    try:
        with open(directory / PINS, encoding="utf-8") as f:
            pins = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}  # a lost or damaged pin file only costs one re-check per model
    return pins if isinstance(pins, dict) else {}


def write_pin(path: Path, sha256: str, source: str) -> None:
    """Record ``path``'s sha256 with its size and time; ``source`` says how it was vouched for
    (download, import, verify)."""
    st = path.stat()
    with _pins_lock:
        pins = read_pins(path.parent)
        pins[path.name] = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                           "source": source}
        tmp = path.parent / (PINS + ".tmp")
        tmp.write_text(json.dumps(pins, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path.parent / PINS)


def drop_pin(path: Path) -> None:
    with _pins_lock:
        pins = read_pins(path.parent)
        if pins.pop(path.name, None) is not None:
            tmp = path.parent / (PINS + ".tmp")
            tmp.write_text(json.dumps(pins, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, path.parent / PINS)


def _published(entry: ModelEntry, name: str) -> str | None:
    """The manifest's sha256 for one of ``entry``'s files."""
    return entry.sha256 if name == entry.file else entry.data_sha256
