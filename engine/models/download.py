"""Model downloads over HTTP(S) with the standard library: resumable, cancellable, verified.

Bytes go to ``<file>.part``; a cut connection resumes with a ``Range`` request (within the
same call, and on the next call, since the part file is kept). The studio's model mirror
(``engine.models.mirror``) is tried first, then the manifest's URLs in order. The finished
files are checked (the manifest's sha256; else the mirror's ``SHA256SUMS``; else the CRC32 of
the official ``.hash`` companion; else the I/O contract), moved into place and pinned. Files
that fail their check are deleted. :func:`install_models` also converts the models that have
no public ONNX file from their official checkpoints (``engine.models.convert``).
"""
from __future__ import annotations

import http.client
import os
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Iterable
from urllib.parse import urlsplit

from engine.errors import Cancelled, RedubError
from engine.models.manifest import ModelEntry, get_entry
from engine.models.mirror import Mirror, mirror_url, normalise
from engine.models.store import (ModelMissingError, check_file_contract, digest_file,
                                 install_staged, model_path, model_state, models_dir, staging,
                                 verify_file)
from engine.progress import CancelToken, ProgressFn

ByteProgress = Callable[[int, int], None]  # (done_bytes, total_bytes); total 0 when unknown
OFFLINE_ENV = "REDUB_OFFLINE"  # set (to anything but "" or "0"): never download on first use

CHUNK = 256 * 1024  # small enough that cancel and progress respond within a fraction of a second
RETRIES = 5  # resumes after cut connections, per source
USER_AGENT = "redub-studio"

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def offline_requested() -> bool:
    """Whether the environment forbids downloads (``REDUB_OFFLINE``)."""
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def ensure_models(model_ids: Iterable[str], progress: Callable[[str], ByteProgress] | None = None,
                  cancel: CancelToken | None = None, offline: bool | None = None) -> list[Path]:
    """The files of ``model_ids``, downloading those not installed yet: models come on first use.

    ``progress(stage)`` gives the byte callback for one download (``stage`` is the model id, or
    the file name of a checkpoint; a conversion reports its steps through it too). ``offline``
    (default: the ``REDUB_OFFLINE`` environment variable) forbids downloads: a missing model
    then raises ``ModelMissingError`` saying which file to put where.
    """
    if offline is None:
        offline = offline_requested()
    ids = list(dict.fromkeys(model_ids))
    if offline:
        return [model_path(model_id) for model_id in ids]
    steps = (lambda stage, done, total: progress(stage)(done, total)) if progress else None
    return install_models(ids, progress=steps, cancel=cancel)


def install_models(model_ids: Iterable[str], directory: str | os.PathLike | None = None,
                   progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                   force: bool = False, mirror: str | None = None,
                   timeout: float = 30.0) -> list[Path]:
    """Install ``model_ids`` however each can be had; their paths, in order.

    A verified model is kept (unless ``force``). Others are downloaded (the mirror first, then
    the manifest's URLs); a model with no public ONNX file that the mirror does not have is
    converted from the official checkpoints, one conversion for all of a checkpoint set's
    models. ``progress(stage, done, total)``: bytes of each download (stage: the model id or the
    checkpoint's path) and the conversion's steps (stage: ``convert ...``). ``mirror``: as in
    :func:`download_model`.
    """
    entries = [get_entry(model_id) for model_id in dict.fromkeys(model_ids)]
    folder = models_dir(directory)
    paths: dict[str, Path] = {}
    to_convert = []
    for entry in entries:
        state = "missing" if force else model_state(entry, folder)
        if state == "verified":
            paths[entry.id] = folder / entry.file
            continue
        byte_progress = (lambda d, t, stage=entry.id: progress(stage, d, t)) if progress \
            else None
        if entry.convert is not None and not entry.urls:
            if state != "missing":
                try:
                    paths[entry.id] = verify_file(entry, folder / entry.file)
                    continue
                except RedubError:
                    pass  # damaged or another model: made again
            if _mirror(mirror):
                try:
                    paths[entry.id] = download_model(entry.id, folder, byte_progress, cancel,
                                                     timeout, force, mirror)
                    continue
                except Cancelled:
                    raise
                except RedubError:
                    pass  # the mirror does not have it (or not whole): convert instead
            to_convert.append(entry)
            continue
        paths[entry.id] = download_model(entry.id, folder, byte_progress, cancel, timeout,
                                         force, mirror)
    if to_convert:
        from engine.models.convert import convert_models

        paths.update(convert_models(to_convert, folder, progress, cancel, timeout))
    return [paths[e.id] for e in entries]


def download_model(model_id: str, directory: str | os.PathLike | None = None,
                   progress: ByteProgress | None = None, cancel: CancelToken | None = None,
                   timeout: float = 30.0, force: bool = False,
                   mirror: str | None = None) -> Path:
    """Fetch ``model_id`` into the model folder unless a verified copy is there; its path.

    The model mirror (``mirror``: a URL prefix; None: the saved setting or
    ``REDUB_MODEL_MIRROR``; "": none) is tried before the manifest's URLs. A copy that is there
    but not pinned is checked first and kept when it passes. Offline, raises
    ``ModelMissingError`` saying which file to put where. ``Cancelled`` keeps the part files so
    the next call resumes.
    """
    entry = get_entry(model_id)
    folder = models_dir(directory)
    dest = folder / entry.file
    prefix = _mirror(mirror)
    sources = [_Source(url, {entry.file: url}) for url in entry.urls] \
        if not entry.data_file else []  # the published models are all single files
    if prefix:
        studio = Mirror(prefix)
        sources.insert(0, _Source(prefix, {n: studio.url(n) for n in entry.files}, studio))
    with _lock_for(dest):
        state = "missing" if force else model_state(entry, folder)
        if state == "verified":
            return dest
        if state != "missing":
            try:
                return verify_file(entry, dest)  # copied in by hand, or changed since pinned
            except RedubError:
                if not sources:
                    raise
                # damaged or another model: a fresh copy replaces it
        if not sources:
            raise ModelMissingError(entry, dest)
        return _download(entry, folder, sources, progress, cancel, timeout)


def fetch(url: str, part: Path, progress: ByteProgress | None = None,
          cancel: CancelToken | None = None, timeout: float = 30.0,
          retries: int | None = None) -> None:
    """Download ``url`` into ``part``, continuing from the bytes already there and resuming
    up to ``retries`` (default ``RETRIES``) times after a cut connection."""
    retries = RETRIES if retries is None else retries
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, progress, cancel, timeout)
            return
        except (ConnectionError, TimeoutError, http.client.HTTPException) as exc:
            if attempt == retries:
                raise ConnectionError(f"connection cut {retries + 1} times, last: {exc}") \
                    from exc


def fetch_crc32(url: str, timeout: float = 30.0) -> str | None:
    """The CRC32 (8 lowercase hex digits) in a ``.hash`` companion file; None if unavailable."""
    try:
        with urllib.request.urlopen(_request(url), timeout=timeout) as resp:
            text = resp.read(64).decode("ascii", "replace").strip().lower()
    except (urllib.error.URLError, OSError):
        return None  # the file is then checked against its contract instead
    return text if re.fullmatch(r"[0-9a-f]{8}", text) else None


@dataclass
class _Source:
    """Where one copy of a model can be had: each file's URL, and the mirror vouching for it."""
    label: str
    urls: dict[str, str]  # file name -> URL
    mirror: Mirror | None = None


def _download(entry: ModelEntry, folder: Path, sources: list[_Source],
              progress: ByteProgress | None, cancel: CancelToken | None, timeout: float) -> Path:
    """Fetch ``entry``'s files from the first source that has them whole and checked."""
    dest = folder / entry.file
    failures, unreachable = [], []
    for source in sources:
        fetched = []
        try:
            for name, url in source.urls.items():
                try:
                    fetch(url, folder / (name + ".part"), progress, cancel, timeout)
                except urllib.error.HTTPError as exc:
                    if name != entry.data_file or exc.code != 404:
                        raise
                    continue  # a small export keeps its weights inside the graph
                fetched.append(name)
        except urllib.error.HTTPError as exc:
            failures.append(f"{url}: HTTP {exc.code} {exc.reason}")
            continue
        except urllib.error.URLError as exc:
            unreachable.append(f"{urlsplit(url).netloc or url} ({_reason(exc.reason)})")
            continue
        except (ConnectionError, TimeoutError) as exc:
            failures.append(f"{url}: {_reason(exc)}")
            continue
        try:
            return _install(entry, folder, source, fetched, timeout)
        except RedubError as exc:
            if source.mirror is None:
                raise
            failures.append(f"{source.label}: {exc.problem}")  # the official copy may do
    if not failures:
        raise ModelMissingError(entry, dest, f"offline: cannot reach {', '.join(unreachable)}")
    kept = " (the part downloaded so far is kept: run again to resume)" \
        if any(_size(folder / (n + ".part")) for n in entry.files) else ""
    raise RedubError(f"download of '{entry.id}' failed: {'; '.join(failures + unreachable)}"
                     f"{kept}", dest)


def _install(entry: ModelEntry, folder: Path, source: _Source, names: list[str],
             timeout: float) -> Path:
    """Check the downloaded part files of ``entry`` and move them into place, pinned.

    Each file is held to the manifest's sha256, else the mirror's ``SHA256SUMS``, else (the
    model file) the CRC32 of the official ``.hash`` companion; what none of these covers is
    checked against the I/O contract. A file that fails is deleted with the others.
    """
    dest = folder / entry.file
    parts = {name: folder / (name + ".part") for name in names}
    digests, unchecked = {}, False
    try:
        for name, part in parts.items():
            digest = digest_file(part)
            digests[name] = digest.sha256
            published = entry.sha256 if name == entry.file else entry.data_sha256
            listed = source.mirror.checksum(name, timeout) \
                if source.mirror and not published else None
            if published or listed:
                want, size = (published, None) if published else listed
                if digest.sha256 != want:
                    raise _Rejected(f"sha256 {digest.sha256}, expected {want}")
                if size is not None and digest.size != size:
                    raise _Rejected(f"{digest.size} bytes, expected {size}")
                continue
            crc32 = fetch_crc32(entry.hash_url, timeout) \
                if name == entry.file and entry.hash_url else None
            if crc32 and digest.crc32 != crc32:
                raise _Rejected(f"CRC32 {digest.crc32}, expected {crc32}")
            unchecked = unchecked or crc32 is None
        with staging(folder) as stage:
            for name, part in parts.items():
                os.replace(part, stage / name)
            if unchecked:
                try:
                    check_file_contract(entry, stage / entry.file)
                except RedubError as exc:
                    raise _Rejected(f"it {exc.problem}") from None
            return install_staged(entry, stage, folder, "download", digests)
    except _Rejected as exc:
        for part in parts.values():
            part.unlink(missing_ok=True)
        raise RedubError(f"the download from {source.label} was removed: {exc}", dest) \
            from None


class _Rejected(Exception):
    """A downloaded file failed its check (the reason is the message)."""


def _mirror(mirror: str | None) -> str | None:
    if mirror is None:
        return mirror_url()
    return normalise(mirror) if mirror else None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _fetch_once(url: str, part: Path, progress: ByteProgress | None,
                cancel: CancelToken | None, timeout: float) -> None:
    start = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={start}-"} if start else {}
    try:
        resp = urllib.request.urlopen(_request(url, headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:
            # The part is as long as the file (done) or longer (stale): the range header says.
            total = _content_range_total(exc.headers.get("Content-Range", ""))
            if total == start:
                return
            part.unlink()
            raise ConnectionError("the partial file did not fit the server's; starting over") \
                from exc
        raise
    with resp:
        resumed = bool(start) and resp.status == 206 and \
            resp.headers.get("Content-Range", "").startswith(f"bytes {start}-")
        if resumed:
            total = _content_range_total(resp.headers["Content-Range"])
        else:
            start = 0  # the server sent the whole file
            total = int(resp.headers.get("Content-Length") or 0)
        done = start
        if progress:
            progress(done, total)
        with open(part, "ab" if resumed else "wb") as f:
            while True:
                if cancel is not None:
                    cancel.check()
                chunk = resp.read1(CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    if total and done < total:
        raise ConnectionError(f"connection closed after {done} of {total} bytes")


def _request(url: str, headers: dict[str, str] | None = None) -> urllib.request.Request:
    return urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})


def _content_range_total(value: str) -> int:
    match = re.search(r"/(\d+)\s*$", value)
    return int(match.group(1)) if match else 0


def _reason(reason: object) -> str:
    return getattr(reason, "strerror", None) or str(reason)


def _lock_for(path: Path) -> threading.Lock:
    # Two downloads of one model in a process (CLI thread and dialog) must not share a part file.
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())
