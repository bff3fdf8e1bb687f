"""Model downloads over HTTP(S) with the standard library: resumable, cancellable, verified.

Bytes go to ``<file>.part``; a cut connection resumes with a ``Range`` request (within the
same call, and on the next call, since the part file is kept). Mirrors are tried in order.
The finished file is checked (the manifest's sha256; else the CRC32 of the mirror's ``.hash``
companion; else the I/O contract), renamed into place and pinned. A file that fails its check
is deleted.
"""
from __future__ import annotations

import http.client
import os
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import urlsplit

from engine.errors import RedubError
from engine.models.manifest import ModelEntry, get_entry
from engine.models.store import (ModelMissingError, check_file_contract, digest_file,
                                 model_path, model_state, models_dir, verify_file,
                                 write_pin)
from engine.progress import CancelToken

ByteProgress = Callable[[int, int], None]  # (done_bytes, total_bytes); total 0 when unknown
OFFLINE_ENV = "REDUB_OFFLINE"  # set (to anything but "" or "0"): never download on first use

CHUNK = 256 * 1024  # small enough that cancel and progress respond within a fraction of a second
RETRIES = 5  # resumes after cut connections, per mirror
USER_AGENT = "redub-studio"

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def offline_requested() -> bool:
    """Whether the environment forbids downloads (``REDUB_OFFLINE``)."""
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def ensure_models(model_ids: Iterable[str], progress: Callable[[str], ByteProgress] | None = None,
                  cancel: CancelToken | None = None, offline: bool | None = None) -> list[Path]:
    """The files of ``model_ids``, downloading those not installed yet: models come on first use.

    ``progress(model_id)`` gives the byte callback for one download. ``offline`` (default: the
    ``REDUB_OFFLINE`` environment variable) forbids downloads: a missing model then raises
    ``ModelMissingError`` saying which file to put where.
    """
    if offline is None:
        offline = offline_requested()
    paths = []
    for model_id in dict.fromkeys(model_ids):
        entry = get_entry(model_id)
        if offline or model_state(entry) == "verified":
            paths.append(model_path(model_id))
        else:
            paths.append(download_model(model_id, progress=progress(model_id) if progress
                                        else None, cancel=cancel))
    return paths


def download_model(model_id: str, directory: str | os.PathLike | None = None,
                   progress: ByteProgress | None = None, cancel: CancelToken | None = None,
                   timeout: float = 30.0, force: bool = False) -> Path:
    """Fetch ``model_id`` into the model folder unless a verified copy is there; its path.

    A copy that is there but not pinned is checked first and kept when it passes.
    Offline, raises ``ModelMissingError`` saying which file to put where. ``Cancelled``
    keeps the part file so the next call resumes.
    """
    entry = get_entry(model_id)
    folder = models_dir(directory)
    dest = folder / entry.file
    with _lock_for(dest):
        state = "missing" if force else model_state(entry, folder)
        if state == "verified":
            return dest
        if state != "missing":
            try:
                return verify_file(entry, dest)  # copied in by hand, or changed since pinned
            except RedubError:
                if not entry.urls:
                    raise
                # damaged or another model: a fresh copy replaces it
        if not entry.urls:
            raise ModelMissingError(entry, dest)
        part = dest.with_name(dest.name + ".part")
        crc32 = fetch_crc32(entry.hash_url, timeout) if entry.hash_url and not entry.sha256 \
            else None
        url = _fetch_from_mirrors(entry, dest, part, progress, cancel, timeout)
        sha256 = _verify_part(entry, part, dest, crc32, url)
        os.replace(part, dest)
        write_pin(dest, sha256, "download")
        return dest


def fetch(url: str, part: Path, progress: ByteProgress | None = None,
          cancel: CancelToken | None = None, timeout: float = 30.0,
          retries: int = RETRIES) -> None:
    """Download ``url`` into ``part``, continuing from the bytes already there and resuming
    up to ``retries`` times after a cut connection."""
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


def _fetch_from_mirrors(entry: ModelEntry, dest: Path, part: Path,
                        progress: ByteProgress | None, cancel: CancelToken | None,
                        timeout: float) -> str:
    failures, unreachable = [], []
    for url in entry.urls:
        try:
            fetch(url, part, progress, cancel, timeout)
            return url
        except urllib.error.HTTPError as exc:
            failures.append(f"{url}: HTTP {exc.code} {exc.reason}")
        except urllib.error.URLError as exc:
            unreachable.append(f"{urlsplit(url).netloc} ({_reason(exc.reason)})")
        except (ConnectionError, TimeoutError) as exc:
            failures.append(f"{url}: {_reason(exc)}")
    if not failures:
        raise ModelMissingError(entry, dest, f"offline: cannot reach {', '.join(unreachable)}")
    kept = " (the part downloaded so far is kept: run again to resume)" \
        if part.exists() and part.stat().st_size else ""
    raise RedubError(f"download of '{entry.id}' failed: {'; '.join(failures + unreachable)}"
                     f"{kept}", dest)


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


def _verify_part(entry: ModelEntry, part: Path, dest: Path, crc32: str | None,
                 url: str) -> str:
    digest = digest_file(part)
    if entry.sha256 and digest.sha256 != entry.sha256:
        expected, actual, kind = entry.sha256, digest.sha256, "sha256"
    elif not entry.sha256 and crc32 and digest.crc32 != crc32:
        expected, actual, kind = crc32, digest.crc32, "CRC32"
    else:
        if not entry.sha256 and not crc32:
            try:
                check_file_contract(entry, part)
            except RedubError as exc:
                part.unlink(missing_ok=True)
                raise RedubError(f"the download from {url} was removed: it {exc.problem}",
                                 dest) from None
        return digest.sha256
    part.unlink(missing_ok=True)
    raise RedubError(f"the download from {url} was removed: {kind} {actual}, expected "
                     f"{expected}", dest)


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
