"""The editor's range renders and the result pictures they give the viewer.

Render states are not stored: each render remembers the range, settings and dub offset it was
made with, and is "rendered" while they still match the project (undo brings a render back),
"stale" otherwise, "rendering" while its job runs. The frames a render leaves with their own
mouth (the face could not be placed) are known from the moment its session is prepared, the
newest render's over its range.

Pictures, for the frame the editor shows: a running render's previews (dropped when it ends, so
a finished render's frames read the same way, from its file), the exact frames the bridge sends
for the frame the editor is parked on (the render file's copy is encoded), and the render file's
frame decoded by the window. Plain data: the window converts the bridge's images and decodes
files on its thread pool.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from desktop.bridge import Spans
from engine.project import RangeSettings, SyncRange

PREVIEWS = 120  # memory cap: a few seconds of previews
EXACT = 8  # the frames the editor parked on during recent renders


@dataclass
class Render:
    """One range render: what it was made from, so its state follows the project."""

    start: float
    end: float
    settings: RangeSettings
    dub_offset: float
    output: str
    job: int
    corrections: dict[str, Any] | None = None  # the project's corrections, as saved
    unplaced: Spans | None = None  # frames keeping their own mouth (None: not prepared yet)
    running: bool = True
    done: bool = False


class Renders:
    """The project's renders, oldest first (iterable and indexable), and their pictures."""

    def __init__(self) -> None:
        self._renders: list[Render] = []
        # frame index -> (running render's job, its newest preview of the frame)
        self.previews: dict[int, tuple[int, np.ndarray]] = {}
        # frame index -> (render job, its exact picture)
        self.exact: dict[int, tuple[int, np.ndarray]] = {}
        self.result_at: int | None = None  # frame index of the last decoded result
        self.result_rgb: np.ndarray | None = None

    def __iter__(self) -> Iterator[Render]:
        return iter(self._renders)

    def __len__(self) -> int:
        return len(self._renders)

    def __getitem__(self, i: int) -> Render:
        return self._renders[i]

    def clear(self) -> None:
        """Forget every render and picture (another project)."""
        self._renders.clear()
        self.previews.clear()
        self.exact.clear()
        self.result_rgb = self.result_at = None

    def add(self, render: Render) -> None:
        self._renders.append(render)

    def of(self, job_id: int) -> Render | None:
        return next((r for r in self._renders if r.job == job_id), None)

    def running_jobs(self) -> list[int]:
        return [r.job for r in self._renders if r.running]

    def finish(self, job_id: int) -> bool:
        """Mark job ``job_id``'s render done (False: not a render). Its previews and the
        decoded result are forgotten: the new file shows its frames from now on, so every
        frame reads the same (encoded) way, but for the exact ones the editor parked on."""
        render = self.of(job_id)
        if render is None:
            return False
        render.running, render.done = False, True
        self._forget_previews(job_id)
        self.result_at = None
        return True

    def drop(self, job_id: int) -> bool:
        """Forget job ``job_id``'s render and its previews (it failed or was cancelled: no file
        holds those pictures); False: not a render."""
        render = self.of(job_id)
        if render is not None:
            self._renders.remove(render)
            self._forget_previews(job_id)
        return render is not None

    def _forget_previews(self, job_id: int) -> None:
        self.previews = {i: p for i, p in self.previews.items() if p[0] != job_id}

    def add_unplaced(self, job_id: int, spans: Sequence[Sequence[int]]) -> bool:
        """Record runs of frames job ``job_id``'s render leaves with their own mouth."""
        render = self.of(job_id)
        if render is not None:
            render.unplaced = (render.unplaced or []) + [tuple(s) for s in spans]
        return render is not None

    def wants_preview(self, job_id: int, t: float) -> bool:
        """Whether job ``job_id``'s preview of the frame at ``t`` is worth keeping: frames
        outside its range pass through unchanged, and exports are not renders."""
        render = self.of(job_id)
        return render is not None and render.start - 1e-6 <= t < render.end - 1e-6

    def add_preview(self, job_id: int, index: int, rgb: np.ndarray) -> None:
        self.previews[index] = (job_id, rgb)
        while len(self.previews) > PREVIEWS:
            del self.previews[next(iter(self.previews))]

    def add_exact(self, job_id: int, index: int, rgb: np.ndarray) -> None:
        self.exact[index] = (job_id, rgb)
        while len(self.exact) > EXACT:
            del self.exact[next(iter(self.exact))]

    def result_file(self, index: int, t: float) -> str | None:
        """The file to decode frame ``index`` (at ``t``) from: the newest finished render
        covering it; None when there is none or a preview shows the frame already."""
        render = next((r for r in reversed(self._renders)
                       if r.done and r.start <= t < r.end), None)
        if render is None or index in self.previews:
            return None
        return render.output

    def set_result(self, index: int, rgb: np.ndarray) -> None:
        self.result_at, self.result_rgb = index, rgb

    def newest_job(self, t: float) -> int | None:
        """The job of the newest render (running or done) covering ``t``."""
        return next((r.job for r in reversed(self._renders) if r.start <= t < r.end), None)

    def picture(self, index: int, times: Sequence[float],
                edited: np.ndarray | None = None) -> tuple[np.ndarray | None, bool]:
        """The result picture of frame ``index`` (``times``: the clip's frame starts) and
        whether it is exact rather than the encoded file's: the mask editor's ``edited`` (the
        newest, it follows every edit), then a running render's preview, then the exact frame
        of the newest render covering it, then the render file's decoded frame."""
        result = edited
        if result is None:
            result = self.previews[index][1] if index in self.previews else None
        exact = self.exact.get(index)
        if result is None and exact is not None \
                and exact[0] == self.newest_job(float(times[index])):
            result = exact[1]
        encoded = result is None and self.result_at == index
        if encoded:
            result = self.result_rgb
        return result, not encoded

    def states(self, ranges: Sequence[SyncRange], dub_offset: float,
               corrections: dict[str, Any] | None) -> list[tuple[float, float, str]]:
        """Each render's span and state against the project's ``ranges``, dub offset and
        corrections (as saved), oldest first: the newest is drawn on top."""
        current = {(r.start, r.end, repr(r.settings)) for r in ranges}
        states = []
        for render in self._renders:
            if render.running:
                state = "rendering"
            elif ((render.start, render.end, repr(render.settings)) in current
                  and render.dub_offset == dub_offset and render.corrections == corrections):
                state = "rendered"
            else:
                state = "stale"
            states.append((render.start, render.end, state))
        return states

    def unplaced_spans(self, index_at: Callable[[float], int], fps: float) -> Spans:
        """Runs of frames (first, last) the renders leave with their own mouth, each render's
        replacing older ones' over its range (``index_at``: the clip's frame at a time)."""
        spans: Spans = []
        for render in self._renders:
            if render.unplaced is None:
                continue
            first = index_at(render.start)
            last = index_at(render.end - 0.5 / fps)
            spans = [(x, y) for a, b in spans
                     for x, y in ((a, min(b, first - 1)), (max(a, last + 1), b)) if x <= y]
            spans += render.unplaced
        return sorted(spans)
