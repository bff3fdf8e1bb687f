"""Export codecs: which encoder, container and pixel format each preset uses.

Pixel formats follow the source: its chroma subsampling and bit depth are kept wherever the
codec allows them, so 10-bit footage stays 10-bit and 4:2:2 stays 4:2:2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import av

from engine.errors import UsageError

# x264's and x265's speed presets, fastest first, and their constant-quality scale.
X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow", "placebo")
CRF_RANGE = (0, 51)


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

    def check_quality(self, quality: Mapping[str, str] | None) -> dict[str, str]:
        """``quality`` as a dict once its crf and preset suit this codec; else a UsageError
        naming what is allowed (checked before any work, so the encoder never sees them)."""
        options = dict(quality or {})
        for key in ("crf", "preset"):
            # A codec takes crf/preset exactly when it has a default for them.
            if key in options and key not in self.quality:
                takers = " and ".join(p.name for p in PRESETS.values() if key in p.quality)
                raise UsageError(f"the {self.name} codec has no {key} setting "
                                 f"(only {takers} have one)")
        if "crf" in options:
            try:
                crf = float(options["crf"])
            except ValueError:
                crf = math.nan
            if not CRF_RANGE[0] <= crf <= CRF_RANGE[1]:
                raise UsageError(f"crf '{options['crf']}' is not valid for {self.name}: use a "
                                 f"number from {CRF_RANGE[0]} to {CRF_RANGE[1]} (lower is better)")
        if "preset" in options and options["preset"] not in X26X_PRESETS:
            raise UsageError(f"unknown {self.name} preset '{options['preset']}': use one of "
                             f"{', '.join(X26X_PRESETS)}")
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
    )
}


def get_preset(name: str) -> CodecPreset:
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise UsageError(f"unknown codec '{name}': choose one of {', '.join(PRESETS)}") from None


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


def _depth(pix_fmt: str) -> int:
    return max(c.bits for c in av.VideoFormat(pix_fmt).components)


def _chroma(pix_fmt: str) -> str:
    fmt = av.VideoFormat(pix_fmt, 64, 64)
    if fmt.is_rgb or len(fmt.components) < 3:
        return "444"
    return {(64, 64): "444", (32, 64): "422", (32, 32): "420"}.get(
        (fmt.chroma_width(), fmt.chroma_height()), "other")
