"""Export codecs: which encoder, container and pixel format each preset uses.

Pixel formats follow the source: its chroma subsampling and bit depth are kept wherever the
codec allows them, so 10-bit footage stays 10-bit and 4:2:2 stays 4:2:2.

The NVENC presets encode on an NVIDIA GPU. Many FFmpeg builds list NVENC whether or not the
machine has the GPU and driver, so they are offered only where an encoder actually opens
(``hardware_available``), and refused in one line, naming a software codec, elsewhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Mapping

import av

from engine.errors import UsageError

# x264's and x265's speed presets, fastest first, and their constant-quality scale.
X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow", "placebo")
CRF_RANGE = (0, 51)
# NVENC's presets, fastest first. Its constant quality (``cq``) is 1-51: 0 means "let the
# driver choose", not lossless, so crf 0 is refused rather than silently meaning something else.
NVENC_PRESETS = ("p1", "p2", "p3", "p4", "p5", "p6", "p7")
CQ_RANGE = (1, 51)


@dataclass(frozen=True)
class EncodeSettings:
    encoder: str
    pix_fmt: str
    options: dict[str, str]
    note: str = ""  # said to the user when the source's format could not be kept as it was


@dataclass(frozen=True)
class CodecPreset:
    name: str
    label: str
    encoder: str
    extensions: tuple[str, ...]  # allowed containers; the first is the default
    quality: dict[str, str] = field(default_factory=dict)  # default options (crf, preset, ...)
    software: str = ""  # a hardware preset's software twin, named where the device is missing

    @property
    def hardware(self) -> bool:
        return bool(self.software)

    @property
    def speeds(self) -> tuple[str, ...]:
        return NVENC_PRESETS if self.hardware else X26X_PRESETS

    @property
    def crf_range(self) -> tuple[int, int]:
        return CQ_RANGE if self.hardware else CRF_RANGE

    def check_quality(self, quality: Mapping[str, str] | None) -> dict[str, str]:
        """``quality`` as a dict once its crf and preset suit this codec; else a UsageError
        naming what is allowed (checked before any work, so the encoder never sees them)."""
        options = dict(quality or {})
        for key in ("crf", "preset"):
            # A codec takes crf/preset exactly when it has a default for them.
            if key in options and key not in self.quality:
                takers = [p for p in available_presets() if key in PRESETS[p].quality]
                raise UsageError(f"the {self.name} codec has no {key} setting "
                                 f"(only {_and(takers)} have one)")
        if "crf" in options:
            try:
                crf = float(options["crf"])
            except ValueError:
                crf = math.nan
            low, high = self.crf_range
            if not low <= crf <= high:
                raise UsageError(f"crf '{options['crf']}' is not valid for {self.name}: use a "
                                 f"number from {low} to {high} (lower is better)")
        if "preset" in options and options["preset"] not in self.speeds:
            raise UsageError(f"unknown {self.name} preset '{options['preset']}': use one of "
                             f"{', '.join(self.speeds)}")
        return options

    def settings(self, pix_fmt: str, width: int, height: int,
                 quality: dict[str, str] | None = None) -> EncodeSettings:
        """Encoder settings for a source in ``pix_fmt`` of the given (stored) size."""
        depth, chroma = _depth(pix_fmt), _chroma(pix_fmt)
        options = {**self.quality, **self.check_quality(quality)}
        note = ""
        encoder = self.encoder
        if self.name in ("h264", "h265"):
            depth = 8 if depth <= 8 else (10 if self.name == "h264" or depth <= 10 else 12)
            if chroma == "420" and (width % 2 or height % 2):
                # 4:2:0 needs even sizes in these encoders; 4:4:4 keeps every pixel instead.
                chroma, note = "444", "odd frame size: encoding 4:4:4 to keep every pixel"
            if chroma not in ("420", "422", "444"):
                chroma = "444"
            fmt = f"yuv{chroma}p" + ("" if depth == 8 else f"{depth}le")
            if self.name == "h265":
                options.setdefault("x265-params", "log-level=error")
        elif self.hardware:
            fmt, note = _nvenc_format(self.name, depth, chroma, width, height)
            # One constant-quality scale for every codec at the API; NVENC calls it cq.
            if "crf" in options:
                options["cq"] = options.pop("crf")
        elif self.name == "prores":
            # ProRes is 10-bit by definition: 422 HQ, or 4444 for full-chroma sources.
            if width % 2:
                encoder = "prores_ks"  # the fast encoder needs an even width; this one does not
            if chroma == "444":
                fmt, options = "yuv444p10le", {**options, "profile": "4"}
            else:
                fmt = "yuv422p10le"
        elif self.name == "dnxhr":
            if width < 256 or height < 120:
                raise UsageError(f"DNxHR needs frames of at least 256x120, not {width}x{height}; "
                                 "use prores or ffv1")
            if chroma == "444":
                fmt, options = "yuv444p10le", {**options, "profile": "dnxhr_444"}
            elif depth > 8:
                fmt, options = "yuv422p10le", {**options, "profile": "dnxhr_hqx"}
                note = "10-bit source: DNxHR HQX (10-bit) instead of HQ (8-bit)"
            else:
                fmt = "yuv422p"
        elif self.name == "ffv1":
            supported = {f.name for f in av.codec.Codec("ffv1", "w").video_formats}
            if width % 2 or height % 2:
                # FFmpeg's FFV1 cannot split odd-sized subsampled pictures into slices.
                options.pop("slices", None)
            if pix_fmt in supported:
                fmt = pix_fmt
            elif av.VideoFormat(pix_fmt).is_rgb:
                fmt = "rgb48le" if depth > 8 else "bgr0"  # lossless repack of RGB
            else:
                fmt = "yuv444p16le" if depth > 8 else "yuv444p"
        else:  # pragma: no cover - the table below is exhaustive
            raise UsageError(f"no pixel format rule for codec {self.name}")
        return EncodeSettings(encoder=encoder, pix_fmt=fmt, options=options, note=note)


PRESETS: dict[str, CodecPreset] = {
    p.name: p for p in (
        CodecPreset("h264", "H.264 (x264)", "libx264", (".mp4", ".mov", ".mkv"),
                    {"crf": "18", "preset": "medium"}),
        CodecPreset("h265", "H.265 (x265)", "libx265", (".mp4", ".mov", ".mkv"),
                    {"crf": "20", "preset": "medium"}),
        CodecPreset("prores", "Apple ProRes 422 HQ", "prores", (".mov",),
                    {"profile": "3", "vendor": "apl0"}),
        CodecPreset("dnxhr", "Avid DNxHR HQ", "dnxhd", (".mov", ".mxf"),
                    {"profile": "dnxhr_hq"}),
        CodecPreset("ffv1", "FFV1 lossless", "ffv1", (".mkv",),
                    {"level": "3", "g": "1", "slicecrc": "1", "slices": "4"}),
        # Variable bit rate held at constant quality: b=0 lifts NVENC's default 2 Mb/s target,
        # which would otherwise cap the quality cq asks for.
        CodecPreset("h264_nvenc", "H.264 (NVENC)", "h264_nvenc", (".mp4", ".mov", ".mkv"),
                    {"crf": "19", "preset": "p5", "tune": "hq", "rc": "vbr", "b": "0"},
                    software="h264"),
        CodecPreset("hevc_nvenc", "H.265 (NVENC)", "hevc_nvenc", (".mp4", ".mov", ".mkv"),
                    {"crf": "21", "preset": "p5", "tune": "hq", "rc": "vbr", "b": "0"},
                    software="h265"),
    )
}


def get_preset(name: str) -> CodecPreset:
    """The preset called ``name``; a UsageError for an unknown one, or for a hardware encoder
    this machine cannot open (said before any work, with the software codec to use)."""
    try:
        preset = PRESETS[name.lower()]
    except KeyError:
        raise UsageError(f"unknown codec '{name}': choose one of "
                         f"{', '.join(available_presets())}") from None
    if preset.hardware and not hardware_available(preset.encoder):
        raise UsageError(f"the {preset.name} codec needs an NVIDIA GPU with NVENC and its "
                         f"driver, which this machine lacks: use {preset.software} instead")
    return preset


def available_presets() -> list[str]:
    """The preset names this machine can encode with, in table order."""
    return [name for name, p in PRESETS.items()
            if not p.hardware or hardware_available(p.encoder)]


@lru_cache(maxsize=None)
def hardware_available(encoder: str) -> bool:
    """Whether this PyAV build has ``encoder`` and it opens here: listing is not enough, NVENC
    is in many builds and only fails when it looks for the GPU. Checked once per process."""
    if encoder not in av.codecs_available:
        return False
    try:
        cc = av.CodecContext.create(encoder, "w")
        # NVENC's smallest frame is about 145x49; 256x256 4:2:0 opens on every generation.
        cc.width, cc.height, cc.pix_fmt = 256, 256, "yuv420p"
        cc.time_base = Fraction(1, 25)
        cc.open()
    except Exception:  # noqa: BLE001 - whatever stops it opening (no driver, no device, ...)
        return False
    return True


def check_quality(codec: str, quality: Mapping[str, str] | None) -> dict[str, str]:
    """The export's encoder options, checked against ``codec`` (``CodecPreset.check_quality``)."""
    return get_preset(codec).check_quality(quality)


def audio_codec_for(extension: str, source_sample_format: str | None) -> str:
    """AAC in mp4; PCM in mov/mkv/mxf, 24-bit unless the source audio was 16-bit or less."""
    if extension == ".mp4":
        return "aac"
    if source_sample_format in ("u8", "u8p", "s16", "s16p"):
        return "pcm_s16le"
    return "pcm_s24le"


def _nvenc_format(name: str, depth: int, chroma: str, width: int,
                  height: int) -> tuple[str, str]:
    """The pixel format NVENC takes for a source, and what that changed (for the user).

    NVENC encodes 8-bit 4:2:0 and 4:4:4 H.264, and HEVC up to 10 bits, on every generation
    since Pascal; 4:2:2 and 10-bit H.264 only on the newest, so they are not relied on: 4:2:2
    becomes 4:4:4 (every chroma sample kept) and 10-bit H.264 becomes 8-bit.
    """
    notes = []
    if chroma == "420" and (width % 2 or height % 2):
        chroma = "444"
        notes.append("odd frame size: encoding 4:4:4 to keep every pixel")
    elif chroma not in ("420", "444"):
        chroma = "444"
        notes.append("NVENC takes 4:2:0 or 4:4:4: encoding 4:4:4 to keep every chroma sample")
    bits = 8
    if depth > 8 and name == "h264_nvenc":
        notes.append("NVENC H.264 is 8-bit on most GPUs: use hevc_nvenc to keep 10 bits")
    elif depth > 8:
        bits = 10
        if depth > 10:
            notes.append(f"NVENC encodes at most 10 bits: the {depth}-bit source is rounded")
    # NVENC reads 10-bit samples from the high bits of 16: p010le, or yuv444p16le for 4:4:4.
    fmt = {("420", 8): "yuv420p", ("420", 10): "p010le", ("444", 8): "yuv444p",
           ("444", 10): "yuv444p16le"}[chroma, bits]
    return fmt, "; ".join(notes)


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _depth(pix_fmt: str) -> int:
    return max(c.bits for c in av.VideoFormat(pix_fmt).components)


def _chroma(pix_fmt: str) -> str:
    fmt = av.VideoFormat(pix_fmt, 64, 64)
    if fmt.is_rgb or len(fmt.components) < 3:
        return "444"
    return {(64, 64): "444", (32, 64): "422", (32, 32): "420"}.get(
        (fmt.chroma_width(), fmt.chroma_height()), "other")
