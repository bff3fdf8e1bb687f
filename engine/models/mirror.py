"""A studio's model mirror: one URL prefix tried before the official sources for every model.

A studio hosts the ONNX files it uses (downloaded once, or converted with
``python -m installer.export_musetalk``, whose output folder is ready to serve as is) on its own
server or share. ``redub models mirror URL`` keeps the prefix in ``mirror.json`` in the data
folder, so the command line and the desktop use the same one; ``REDUB_MODEL_MIRROR`` overrides it
for one process. A file's URL is the prefix, "/" and its name; a local folder may be given as a
path. The mirror's ``SHA256SUMS`` (sha256, size when given, then the file name on each line, as
the exporter writes it) verifies the files the manifest holds no checksum for.
"""
from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from engine.errors import UsageError
from engine.paths import data_dir

ENV = "REDUB_MODEL_MIRROR"
SETTING = "mirror.json"
SUMS = "SHA256SUMS"


def mirror_url() -> str | None:
    """The mirror prefix in force: ``REDUB_MODEL_MIRROR``, else the saved setting, else None."""
    chosen = os.environ.get(ENV)
    if chosen is None:
        try:
            chosen = json.loads((data_dir() / SETTING).read_text(encoding="utf-8")).get("url")
        except (FileNotFoundError, json.JSONDecodeError, AttributeError):
            chosen = None
    return normalise(chosen) if chosen else None


def set_mirror(url: str | None) -> str | None:
    """Save ``url`` as the mirror (None: forget it); the prefix as it will be used."""
    path = data_dir() / SETTING
    if not url:
        path.unlink(missing_ok=True)
        return None
    prefix = normalise(url)
    tmp = path.with_name(SETTING + ".tmp")
    tmp.write_text(json.dumps({"url": prefix}), encoding="utf-8")
    os.replace(tmp, path)
    return prefix


def normalise(url: str) -> str:
    """``url`` as a prefix without a trailing slash; a local folder becomes a ``file:`` URL."""
    url = url.strip()
    if re.match(r"(?i)(https?|file)://", url):
        return url.rstrip("/")
    path = Path(url).expanduser()
    if path.is_absolute() and path.is_dir():
        return path.resolve().as_uri()
    raise UsageError(f"model mirror '{url}' is neither an http(s):// or file:// URL nor an "
                     "existing folder")


class Mirror:
    """One download's view of a mirror: file URLs and the mirror's checksums, read once."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.rstrip("/")
        self._sums: dict[str, tuple[str, int | None]] | None = None

    def url(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def checksum(self, name: str, timeout: float = 30.0) -> tuple[str, int | None] | None:
        """(sha256, size or None) of ``name`` from the mirror's ``SHA256SUMS``; None when the
        mirror publishes none for it."""
        if self._sums is None:
            try:
                request = urllib.request.Request(self.url(SUMS),
                                                 headers={"User-Agent": "redub-studio"})
                with urllib.request.urlopen(request, timeout=timeout) as resp:
                    self._sums = parse_sums(resp.read(1 << 20).decode("utf-8", "replace"))
            except (urllib.error.URLError, OSError, ValueError):
                self._sums = {}  # no sums: the manifest's checksum or the contract decides
        return self._sums.get(name)


def parse_sums(text: str) -> dict[str, tuple[str, int | None]]:
    """File name -> (sha256, size or None) from ``sha256sum`` style lines, with an optional
    size column (``<sha256>  <size>  <name>``); other lines are skipped."""
    sums = {}
    for line in text.splitlines():
        match = re.fullmatch(r"\s*([0-9a-fA-F]{64})\s+(?:(\d+)\s+)?\*?(\S.*?)\s*", line)
        if match:
            sums[match.group(3)] = (match.group(1).lower(),
                                    int(match.group(2)) if match.group(2) else None)
    return sums
