"""Synthesise small test videos whose every frame is distinguishable."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf


def pattern(i: int, width: int, height: int) -> np.ndarray:
    """RGB frame ``i``: a gradient, a moving square and the frame number as a bar code."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (x * 255 // max(width - 1, 1)).astype(np.uint8)
    img[..., 1] = (y * 255 // max(height - 1, 1)).astype(np.uint8)
    img[..., 2] = (i * 37) % 256
    s = max(4, min(width, height) // 6)
    cx = (i * 5) % max(width - s, 1)
    img[s : 2 * s, cx : cx + s] = (255, 255, 255)
    bar = max(2, width // 16)
    for b in range(min(12, width // bar)):
        on = (i >> b) & 1
        img[height - max(4, height // 10) :, b * bar : (b + 1) * bar] = 255 * on
    return img


def make_video(path: Path, *, frames: int = 36, size: tuple[int, int] = (160, 96),
               rate: int | Fraction = 25, codec: str = "libx264", pix_fmt: str = "yuv420p",
               gop: int = 12, bframes: int = 2, durations_ms: list[int] | None = None,
               rotation: int = 0, audio_rate: int | None = None, audio_channels: int = 2,
               color: tuple[int, int, int, int] | None = None,
               options: dict[str, str] | None = None) -> Path:
    """Write a test video. ``durations_ms`` gives each frame's duration (variable frame rate).

    ``size`` is the stored (coded) size; ``rotation`` adds a display matrix.
    ``color`` is (primaries, transfer, matrix, range) in FFmpeg numbering.
    """
    width, height = size
    out = av.open(str(path), "w")
    stream = out.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    opts = {"g": str(gop)}
    if codec in ("libx264", "libx265"):
        opts.update({"bf": str(bframes), "preset": "ultrafast" if not bframes else "fast",
                     "crf": "20"})
        if codec == "libx265":
            opts["x265-params"] = f"log-level=error:bframes={bframes}:keyint={gop}"
    opts.update(options or {})
    stream.codec_context.options = opts
    if durations_ms is not None:
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.time_base = Fraction(1, 1000)
    if color is not None:
        cc = stream.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = color
    if rotation:
        stream.set_display_rotation(rotation)
    astream = None
    if audio_rate:
        astream = out.add_stream("aac" if path.suffix == ".mp4" else "pcm_s16le",
                                 rate=audio_rate)
        astream.layout = "stereo" if audio_channels == 2 else "mono"
    t_ms = 0
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(pattern(i, width, height), format="rgb24")
        if color is not None:
            frame = frame.reformat(format=pix_fmt, dst_colorspace=color[2],
                                   dst_color_range=color[3])
        if durations_ms is not None:
            frame.pts, frame.time_base = t_ms, Fraction(1, 1000)
            t_ms += durations_ms[i]
        else:
            frame.pts = i
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
    if astream is not None:
        seconds = (t_ms / 1000) if durations_ms is not None else frames / float(rate)
        write_tone(out, astream, seconds, audio_rate, audio_channels)
    out.close()
    return path


def tone(seconds: float, rate: int, channels: int, freq: float = 440.0) -> np.ndarray:
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    mono = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(mono[:, None], channels, axis=1)


def write_tone_wav(path: Path, seconds: float = 1.0, rate: int = 16000) -> Path:
    """A mono 16-bit WAV of a tone: a dub track for tests that need any sound at all."""
    sf.write(str(path), tone(seconds, rate, 1, freq=220.0), rate, subtype="PCM_16")
    return path


def write_tone(out, astream, seconds: float, rate: int, channels: int) -> None:
    samples = tone(seconds, rate, channels)
    resampler = av.AudioResampler(format=astream.codec_context.format.name,
                                  layout=astream.layout, rate=rate)
    for start in range(0, samples.shape[0], 1024):
        block = np.ascontiguousarray(samples[start : start + 1024].T)
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=astream.layout)
        frame.sample_rate, frame.pts = rate, start
        for f in resampler.resample(frame):
            for packet in astream.encode(f):
                out.mux(packet)
    for f in resampler.resample(None):
        for packet in astream.encode(f):
            out.mux(packet)
    for packet in astream.encode(None):
        out.mux(packet)


def decode_all(path: Path) -> list[av.VideoFrame]:
    """Every frame by a plain sequential decode: the reference for frame-accurate access."""
    with av.open(str(path)) as c:
        return list(c.decode(video=0))


def frame_number(rgb: np.ndarray) -> int:
    """The frame number :func:`pattern` drew into ``rgb``'s bar code (survives lossy codecs)."""
    height, width = rgb.shape[:2]
    bar = max(2, width // 16)
    rows = rgb[height - max(4, height // 10) + 1 : height - 1]
    return sum(1 << b for b in range(min(12, width // bar))
               if rows[:, b * bar + 1 : (b + 1) * bar - 1].mean() > 128)


def cut_copy(src: Path, dst: Path, start: float, end: float | None = None) -> Path:
    """Cut without re-encoding, as ``ffmpeg -ss START [-to END] -i SRC -c copy DST`` does.

    Packets are copied from the keyframe before ``start`` with their timestamps moved so that
    ``start`` is 0; the MP4/MOV muxer writes an edit list that skips the leading ones, which
    players (and FFmpeg's demuxer) drop after decoding. NLEs and phones write such lists too.
    """
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        streams = {s.index: out.add_stream_from_template(s)
                   for s in inp.streams if s.type in ("video", "audio")}
        video = inp.streams.video[0]
        inp.seek(int(start / video.time_base), stream=video, backward=True)
        for packet in inp.demux([inp.streams[i] for i in streams]):
            if packet.dts is None:
                continue
            tb = packet.stream.time_base
            if end is not None and (packet.pts if packet.pts is not None else packet.dts) * tb >= end:
                continue
            shift = int(round(start / tb))
            packet.pts = packet.pts - shift if packet.pts is not None else None
            packet.dts -= shift
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return dst


def make_avi(path: Path, frames: int = 50, size: tuple[int, int] = (160, 96),
             audio_rate: int = 44100) -> Path:
    """MPEG-4 Part 2 video and MP3 sound in AVI, as ``ffmpeg -c:v mpeg4 -c:a libmp3lame``
    writes it: the video starts a frame late, so the muxer fills the gap with an empty chunk
    and the header declares more frames than decode."""
    width, height = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        astream = out.add_stream("libmp3lame", rate=audio_rate)
        astream.layout = "stereo"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern(i, width, height), format="rgb24")
            frame.pts = i + 1
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        write_tone(out, astream, (frames + 1) / 25, audio_rate, 2)
    return path


def set_timecode(src: Path, dst: Path, timecode: str) -> Path:
    """``src`` remuxed with a start timecode (a QuickTime/MP4 'tmcd' track; FFmpeg's -timecode)."""
    return remux(src, dst, {"timecode": timecode})


def remux(src: Path, dst: Path, metadata: dict[str, str] | None = None,
          options: dict[str, str] | None = None) -> Path:
    """``src``'s video and sound copied into ``dst`` (no re-encoding), with container
    ``metadata`` and muxer ``options`` (e.g. ``movflags``)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options=options or {}) as out:
        out.metadata.update(metadata or {})
        streams = {s.index: out.add_stream_from_template(s)
                   for s in inp.streams if s.type in ("video", "audio")}
        for packet in inp.demux([inp.streams[i] for i in streams]):
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    return dst


def retime(src: Path, dst: Path, durations_ms: list[int]) -> Path:
    """``src`` (no B-frames) remuxed with each frame shown for its ``durations_ms`` entry (VFR)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        stream.time_base = Fraction(1, 1000)
        t = 0
        for i, packet in enumerate(p for p in inp.demux(video=0) if p.dts is not None):
            packet.stream = stream
            packet.time_base = Fraction(1, 1000)
            packet.pts = packet.dts = t
            packet.duration = durations_ms[i]
            t += durations_ms[i]
            out.mux(packet)
    return dst
