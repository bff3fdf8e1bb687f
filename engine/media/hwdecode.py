"""Hardware video decoding (NVDEC through FFmpeg's ``cuda`` device), asked for per reader
(``VideoReader(..., hwdecode="cuda")``) or per process (``REDUB_HWDECODE=cuda``; any other
FFmpeg device type, e.g. ``vaapi``, is tried the same way).

Decoded pictures are downloaded from the device and repacked into the planes software decoding
gives (NVDEC hands out NV12, P010 or MSB-aligned 4:4:4; the repack is exact), so everything
downstream sees the same frames. Where the device is missing, decoding falls back to software
with one warning per device type and process; a stream the device cannot decode (4:2:2 on most
cards, a codec it lacks) FFmpeg decodes in software by itself.
"""
from __future__ import annotations

import os
import warnings
from functools import lru_cache

import av
from av.codec.hwaccel import HWAccel, hwdevices_available

from engine.errors import RedubError
from engine.media.container import ffmpeg_reason, open_input

ENV = "REDUB_HWDECODE"
_SOFTWARE = ("", "0", "no", "off", "none", "software")

_warned: set[str] = set()


def requested(device: str | None = None) -> str | None:
    """The FFmpeg device type to decode with: ``device`` if given, else ``$REDUB_HWDECODE``;
    None for software decoding."""
    name = (os.environ.get(ENV, "") if device is None else device).strip().lower()
    return None if name in _SOFTWARE else name


@lru_cache(maxsize=None)
def device_problem(kind: str) -> str | None:
    """Why ``kind`` cannot decode on this machine, or None when its device opens (checked once
    per process: opening a CUDA device costs a driver start-up)."""
    if kind not in hwdevices_available():
        return (f"this FFmpeg build has no '{kind}' device (it has: "
                f"{', '.join(hwdevices_available()) or 'none'})")
    try:
        _accel(kind).create(av.codec.Codec("h264", "r"))
    except NotImplementedError:
        return f"FFmpeg's H.264 decoder does not decode on '{kind}' devices"
    except av.FFmpegError as exc:
        return f"no {kind} device could be opened ({ffmpeg_reason(exc)}: GPU or driver missing?)"
    return None


def open_decoding(path: str | os.PathLike, device: str | None = None
                  ) -> av.container.InputContainer:
    """``path`` opened for decoding on the requested device (see :func:`requested`), else in
    software; errors about the file itself are ``open_input``'s."""
    kind = requested(device)
    if kind is None:
        return open_input(path)
    problem = device_problem(kind)
    if problem is None:
        try:
            return open_input(path, hwaccel=_accel(kind))
        except RedubError as exc:
            problem = f"it could not open this file ({exc.problem})"
    container = open_input(path)  # a damaged file is reported as such, not as a device problem
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(f"hardware decoding with {kind} is not available: {problem}; decoding "
                      "in software", RuntimeWarning, stacklevel=3)
    return container


def _accel(kind: str) -> HWAccel:
    # CUDA's primary context: every decoder (a seek opens a new one) and onnxruntime share it,
    # where a context of their own would cost each about 100 ms and a few hundred MB.
    options = {"primary_ctx": "1"} if kind == "cuda" else None
    return HWAccel(kind, allow_software_fallback=True, options=options)


def as_software(frame: av.VideoFrame, pix_fmt: str) -> av.VideoFrame:
    """A frame downloaded from the device in the software decoder's format ``pix_fmt``.

    The device's layouts hold the same samples differently packed (interleaved chroma, samples
    in the high bits of 16), so swscale's conversion between them only moves bits: exact.
    """
    if frame.format.name == pix_fmt:
        return frame
    # One thread: FFmpeg 8.1's threaded swscale, on a fresh context per frame, now and then
    # left 8 samples of a P010 row mid-grey; and its pool costs more than this copy (0.07 ms
    # against 0.6 ms for a 1080p NV12 picture).
    return frame.reformat(format=pix_fmt, threads=1)
