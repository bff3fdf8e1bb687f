"""Where I, O, N and edge drags may put a sync range: ranges never overlap.

A frame has one set of sync settings (the engine refuses overlapping ranges at export), so
overlaps are stopped where ranges are made, and every message names frames in timecode:

- a mark (I or O) is a frame the editor chose: when it falls inside another range, or the range
  it would make swallows one, it is refused with a message rather than moved to a frame the
  editor did not choose;
- the edge a mark leaves open (a new range's other end) stops at the neighbouring range, and so
  does an edge dragged on the timeline, the way a trim stops at the next clip.
"""
from __future__ import annotations

from typing import Callable, Sequence

Span = tuple[float, float]


class RangeMarks:
    """Range edits checked against the other ranges; ``timecode`` names a time, ``span_text``
    a range (in and out as the editor shows them)."""

    def __init__(self, timecode: Callable[[float], str],
                 span_text: Callable[[float, float], str]) -> None:
        self.timecode, self.span_text = timecode, span_text

    def mark_in(self, spans: Sequence[Span], selected: int | None, t: float,
                duration: float) -> Span | str:
        """The range an in point at ``t`` makes, or why it is refused."""
        inside = _containing(spans, t, selected)
        if inside is not None:
            return f"In point {self.timecode(t)} is {self._inside(spans, inside)}"
        own = spans[selected] if selected is not None else None
        end = own[1] if own is not None and own[1] > t else _room(spans, t, selected, duration)[1]
        return self._checked(spans, selected, t, end)

    def mark_out(self, spans: Sequence[Span], selected: int | None, frame: float, out: float,
                 new_in: float | None) -> Span | str:
        """The range an out point makes: ``frame`` is the playhead's frame, ``out`` its end (out
        points include the frame); ``new_in`` is where N left the playhead, if it did."""
        inside = _containing(spans, frame, selected)
        if inside is not None:
            return f"Out point {self.timecode(frame)} is {self._inside(spans, inside)}"
        own = spans[selected] if selected is not None else None
        if own is not None and own[0] < out:
            start = own[0]
        elif selected is None and new_in is not None and new_in < out:
            start = new_in
        else:
            start = _room(spans, frame, selected, out)[0]
        return self._checked(spans, selected, start, out)

    def new_range(self, spans: Sequence[Span], t: float) -> tuple[str, float | None]:
        """What N tells the editor, and the next range's in point: the playhead's frame ``t``
        (None when it is inside a range)."""
        inside = _containing(spans, t, None)
        if inside is not None:
            return (f"The playhead ({self.timecode(t)}) is {self._inside(spans, inside)}: "
                    "move it to a free stretch, then mark I and O"), None
        return f"New range from {self.timecode(t)}: mark its out point (O), or I elsewhere", t

    def check(self, spans: Sequence[Span], selected: int | None, start: float,
              end: float) -> str | None:
        """Why ``selected`` (None: a new range) may not span ``start``-``end``, if it may not."""
        result = self._checked(spans, selected, start, end)
        return result if isinstance(result, str) else None

    def overlap(self, spans: Sequence[Span]) -> str | None:
        """Why these ranges cannot be exported together (two overlap), if they cannot: what
        the engine would refuse, said in the editor's timecode."""
        order = sorted(range(len(spans)), key=lambda i: spans[i])
        for a, b in zip(order, order[1:]):
            if spans[b][0] < spans[a][1]:
                first, second = sorted((a, b))
                return (f"Range {first + 1} ({self.span_text(*spans[first])}) and range "
                        f"{second + 1} ({self.span_text(*spans[second])}) overlap from "
                        f"{self.timecode(spans[b][0])}: each frame needs one setting, so trim "
                        "one of them")
        return None

    def _checked(self, spans: Sequence[Span], selected: int | None, start: float,
                 end: float) -> Span | str:
        for i, (a, b) in enumerate(spans):
            if i != selected and a < end and start < b:
                return (f"Range {self.span_text(start, end)} would overlap "
                        f"range {i + 1} ({self.span_text(a, b)}): ranges cannot overlap")
        return start, end

    def _inside(self, spans: Sequence[Span], i: int) -> str:
        return f"inside range {i + 1} ({self.span_text(*spans[i])}): ranges cannot overlap"


def clamp_drag(spans: Sequence[Span], selected: int, start: float, end: float,
               duration: float) -> Span:
    """A dragged edge of range ``selected`` stopped at its neighbours."""
    lo, hi = _room(spans, spans[selected][0], selected, duration)
    return max(start, lo), min(end, hi)


def _containing(spans: Sequence[Span], t: float, skip: int | None) -> int | None:
    return next((i for i, (a, b) in enumerate(spans) if i != skip and a <= t < b), None)


def _room(spans: Sequence[Span], t: float, skip: int | None, duration: float) -> Span:
    """The free stretch around ``t``: from the end of the range before it (or 0) to the start
    of the one after it (or ``duration``)."""
    others = [s for i, s in enumerate(spans) if i != skip]
    lo = max((b for a, b in others if b <= t), default=0.0)
    hi = min((a for a, b in others if a > t), default=duration)
    return lo, hi
