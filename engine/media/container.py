"""Opening media files with errors a user can act on."""
from __future__ import annotations

import os

import av

from engine.errors import RedubError


def check_readable(path: str | os.PathLike) -> str:
    """Raise a one-line :class:`RedubError` unless ``path`` is a non-empty file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise RedubError("no such file", path)
    if os.path.isdir(path):
        raise RedubError("is a folder, not a media file", path)
    if os.path.getsize(path) == 0:
        raise RedubError("file is empty (0 bytes)", path)
    return path


def open_input(path: str | os.PathLike,
               hwaccel: av.codec.hwaccel.HWAccel | None = None) -> av.container.InputContainer:
    """Open ``path`` for reading (its video decoded on ``hwaccel``'s device, if given), or
    raise a one-line :class:`RedubError` saying why not."""
    path = check_readable(path)
    try:
        return av.open(path, mode="r", metadata_errors="replace", hwaccel=hwaccel)
    except PermissionError as exc:
        raise RedubError("permission denied", path) from exc
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise RedubError(f"not a readable media file or damaged ({ffmpeg_reason(exc)})", path) from exc


def ffmpeg_reason(exc: Exception) -> str:
    # FFmpeg errors carry "[Errno N] text: 'path'"; keep the text only, the path is said once.
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).strip().rstrip(".")


def decode_error(exc: Exception, path: str | os.PathLike, what: str) -> RedubError:
    """A :class:`RedubError` for a failure while decoding ``what`` (e.g. 'frame 12')."""
    return RedubError(f"damaged or unreadable at {what} ({ffmpeg_reason(exc)})", path)
