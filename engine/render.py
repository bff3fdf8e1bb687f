"""Export a clip with a dub track laid in: decode, (optionally) edit frames, encode, mux."""
from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

from engine.errors import RedubError, UsageError
from engine.media.codecs import check_quality
from engine.media.frame import Frame
from engine.media.mix import DubMix
from engine.media.probe import probe
from engine.media.reader import VideoReader
from engine.media.writer import VideoWriter, check_output_path
from engine.progress import CancelToken, ProgressFn, no_progress

FrameEdit = Callable[[Frame], Frame]


@dataclass
class ExportSettings:
    output: str
    codec: str = "h264"
    quality: dict[str, str] = field(default_factory=dict)  # encoder options: crf, preset, ...
    audio_mode: str = "ranges"  # "ranges": dub only inside the ranges; "all": dub everywhere
    # Frames [first, stop) of the source only (None: all), written from time 0 with the start
    # timecode of the first: a shot for an NLE to relink by timecode.
    span: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        # Refused when built (CLI options, the project's export preferences), before any work.
        check_quality(self.codec, self.quality)


@dataclass
class RenderResult:
    path: str
    frames: int
    seconds: float
    notes: list[str]

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def render(video: str | os.PathLike, settings: ExportSettings, *, dub: str | os.PathLike | None,
           dub_offset: float = 0.0, ranges: Sequence[tuple[float, float]] = (),
           edit: FrameEdit | None = None, on_frame: Callable[[Frame], None] | None = None,
           workers: int = 2, progress: ProgressFn = no_progress,
           cancel: CancelToken | None = None, dub_note: bool = True) -> RenderResult:
    """Write ``video`` to ``settings.output`` with ``dub`` laid in at ``dub_offset`` seconds.

    ``edit`` (if given) transforms each frame before encoding, on ``workers`` threads (it must
    be thread-safe); without it frames pass through. ``on_frame`` sees every output frame, in
    order. With ``ranges`` empty and mode "ranges", the dub plays over the whole clip.
    ``dub_offset`` and ``ranges`` are in the source's time, also with ``settings.span``.
    ``dub_note=False`` leaves the note on a dub that ends early to the caller (the lip-sync job
    words one that also says what the mouth does).
    """
    video = os.fspath(video)
    sources = [video] + ([os.fspath(dub)] if dub is not None else [])
    check_output_path(settings.output, sources)
    if settings.audio_mode not in ("ranges", "all"):
        raise UsageError(f"unknown audio mode '{settings.audio_mode}': use ranges or all")
    t0 = time.monotonic()
    notes: list[str] = []
    with VideoReader(video) as reader:
        info = reader.info
        for start, end in ranges:
            if start >= info.duration or end <= 0:
                raise UsageError(f"range {start:.3f}-{end:.3f} s lies outside the clip "
                                 f"(0-{info.duration:.3f} s)")
        first, stop = _span(settings.span, reader.frame_count, video)
        # The output's time 0 is the first written frame: the audio is placed against it.
        origin = float(reader.times[first])
        end = float(reader.times[stop]) if stop < reader.frame_count else info.duration
        src_audio = reader.media.audio[0] if reader.media.audio else None
        mode = settings.audio_mode if ranges else "all"
        mix = None
        if src_audio is not None or dub is not None:
            mix = DubMix(source=video if src_audio is not None else None,
                         source_offset=((src_audio.start_time - info.start_time) if src_audio
                                        else 0.0) - origin,
                         source_stream=src_audio.index if src_audio else None,
                         dub=dub, dub_offset=dub_offset - origin,
                         ranges=[(a - origin, b - origin) for a, b in ranges] or None,
                         mode=mode)
        if dub is not None and dub_note:
            dub_end = dub_offset + _audio_duration(dub)
            if dub_end < (max(e for _, e in ranges) if ranges else end) - 0.05:
                notes.append(f"the dub ends at {dub_end:.2f} s, before the edited span: "
                             "silence after it")
        try:
            with VideoWriter(settings.output, info, codec=settings.codec,
                             quality=settings.quality, audio=mix,
                             audio_sample_format=src_audio.sample_format if src_audio else None,
                             sources=sources, first=first) as writer:
                if writer.note:
                    notes.append(writer.note)
                total = stop - first
                for frame in _edited(reader.frames(first, stop), edit, workers):
                    if cancel is not None:
                        cancel.check()
                    writer.write(frame)
                    if on_frame is not None:
                        on_frame(frame)
                    progress("export", frame.index + 1 - first, total)
        finally:
            if mix is not None:
                mix.close()
    return RenderResult(path=os.path.abspath(settings.output), frames=stop - first,
                        seconds=time.monotonic() - t0, notes=notes)


def _edited(frames: Iterable[Frame], edit: FrameEdit | None, workers: int) -> Iterator[Frame]:
    """``edit`` applied to ``frames`` on a few threads, yielded in order.

    OpenCV and numpy release the interpreter lock in their heavy loops, so frames edited side
    by side use both cores; a short queue keeps memory bounded.
    """
    if edit is None:
        yield from frames
        return
    if workers <= 1:
        yield from map(edit, frames)
        return
    pending: deque[Future[Frame]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edit") as pool:
        try:
            for frame in frames:
                pending.append(pool.submit(edit, frame))
                if len(pending) > 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _span(span: tuple[int, int] | None, count: int, video: str) -> tuple[int, int]:
    """The frames [first, stop) to write; all of them without a span."""
    if span is None:
        return 0, count
    first, stop = span
    if not 0 <= first < stop <= count:
        raise UsageError(f"frames {first}-{stop} are not inside the clip's 0-{count}", video)
    return first, stop


def _audio_duration(path: str | os.PathLike) -> float:
    info = probe(path)
    if not info.audio:
        raise RedubError("has no audio stream to use as a dub", path)
    a = info.audio[0]
    return a.duration if a.duration is not None else info.duration
