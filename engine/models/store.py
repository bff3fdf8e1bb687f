"""The local model folder: where models live, whether each is present and verified, imports.

A model file counts as verified when its sha256 matches the manifest, or when a pin written at
download, import or verification still matches its size and modification time. Pins live in
``pins.json`` beside the models, so a multi-gigabyte file is hashed once, not on every use.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from engine.errors import RedubError
from engine.models.manifest import ModelEntry, get_entry
from engine.paths import data_dir

PINS = "pins.json"
ENV = "REDUB_MODELS_DIR"
_CHUNK = 1 << 20
_pins_lock = threading.Lock()


class ModelMissingError(RedubError):
    """A model is not installed (or could not be fetched); the message says what to put where."""

    def __init__(self, entry: ModelEntry, path: Path, reason: str | None = None) -> None:
        if entry.urls:
            how = (f"download {entry.urls[0]} to this path, or run "
                   f"`redub models download {entry.id}` when online")
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
    or ``changed`` (different from when it was pinned). Never hashes the file."""
    path = models_dir(directory) / entry.file
    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing"
    pin = read_pins(path.parent).get(entry.file)
    if pin is None:
        return "unverified"
    if pin["size"] != st.st_size or pin["mtime_ns"] != st.st_mtime_ns:
        return "changed"
    if entry.sha256 and pin["sha256"] != entry.sha256 and pin.get("source") != "import":
        return "changed"  # the manifest moved on to a new file since this one was pinned
    return "verified"


def verify_file(entry: ModelEntry, path: Path) -> Path:
    """Hash ``path`` and check it, pin it and return it; ``RedubError`` on a mismatch.

    The reference is the manifest's sha256, or for a file imported or pinned without one, the
    pin (an unchanged file whose bytes differ is damaged). Files not held to a published
    checksum are also checked against the I/O contract.
    """
    digest = digest_file(path)
    st = path.stat()
    pin = read_pins(path.parent).get(entry.file)
    unchanged = pin is not None and (pin["size"], pin["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
    own = unchanged and (pin.get("source") == "import" or not entry.sha256)
    expected = pin["sha256"] if own else entry.sha256
    if expected and digest.sha256 != expected:
        drop_pin(path)  # so every later use checks it again rather than trusting it
        raise RedubError(f"is damaged or not model '{entry.id}' (sha256 {digest.sha256}, "
                         f"expected {expected}): delete it, then download or import "
                         f"'{entry.id}' again", path)
    if own or not entry.sha256:
        check_file_contract(entry, path)
    write_pin(path, digest.sha256, pin["source"] if unchanged else "verify")
    return path


def import_model(file: str | os.PathLike, model_id: str,
                 directory: str | os.PathLike | None = None) -> Path:
    """Copy ``file`` into the model folder as ``model_id`` after checking it against the
    manifest's I/O contract; the copy lands atomically and its sha256 is pinned."""
    entry = get_entry(model_id)
    source = Path(file)
    if not source.is_file():
        raise RedubError("model file not found", source)
    check_file_contract(entry, source)
    dest = models_dir(directory) / entry.file
    if source.resolve() != dest.resolve():
        part = dest.with_name(dest.name + ".import")
        try:
            shutil.copyfile(source, part)
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)
    write_pin(dest, digest_file(dest).sha256, "import")
    return dest


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
