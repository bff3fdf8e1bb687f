"""The editor's render bookkeeping, without a window: states, pictures, caps, unplaced runs."""
from __future__ import annotations

import numpy as np

from desktop.renders import EXACT, PREVIEWS, Render, Renders
from engine.project import RangeSettings, SyncRange

TIMES = np.arange(100) / 25.0  # a 25 fps clip of 100 frames


def pic(value: int) -> np.ndarray:
    return np.full((4, 4, 3), value, np.uint8)


def render(job: int, start: float = 1.0, end: float = 2.0, **kw) -> Render:
    return Render(start, end, RangeSettings(), 0.0, f"/cache/r{job}.mp4", job, **kw)


def test_states_follow_the_project():
    renders = Renders()
    renders.add(render(1))
    ranges = [SyncRange(1.0, 2.0)]
    assert renders.states(ranges, 0.0, None) == [(1.0, 2.0, "rendering")]
    assert renders.finish(1) and not renders.finish(9)
    assert renders.states(ranges, 0.0, None) == [(1.0, 2.0, "rendered")]
    assert renders.states(ranges, 0.5, None) == [(1.0, 2.0, "stale")]  # the dub moved
    assert renders.states([SyncRange(1.0, 2.5)], 0.0, None) == [(1.0, 2.0, "stale")]
    assert renders.drop(1) and list(renders) == [] and not renders.drop(1)


def test_the_picture_prefers_the_edit_then_the_preview_then_the_exact_then_the_file():
    renders = Renders()
    renders.add(render(1))
    renders.add(render(2))  # the newest render over frames 25..49
    renders.set_result(30, pic(4))
    assert renders.picture(30, TIMES) == (renders.result_rgb, False)  # encoded
    renders.add_exact(1, 30, pic(3))  # an older render's exact frame is not shown
    assert renders.picture(30, TIMES)[1] is False
    renders.add_exact(2, 30, pic(3))
    result, exact = renders.picture(30, TIMES)
    assert exact and result[0, 0, 0] == 3
    assert renders.wants_preview(2, float(TIMES[30])) and not renders.wants_preview(2, 2.0)
    assert not renders.wants_preview(7, float(TIMES[30]))  # an export's frame
    renders.add_preview(2, 30, pic(2))
    assert renders.picture(30, TIMES)[0][0, 0, 0] == 2
    assert renders.picture(30, TIMES, edited=pic(1))[0][0, 0, 0] == 1
    assert renders.picture(60, TIMES) == (None, True)


def test_the_file_is_decoded_only_where_a_finished_render_covers_the_frame():
    renders = Renders()
    renders.add(render(1))
    assert renders.result_file(30, float(TIMES[30])) is None  # still running
    renders.set_result(30, pic(1))
    renders.finish(1)
    assert renders.result_at is None  # the new file may cover the frame
    assert renders.result_file(30, float(TIMES[30])) == "/cache/r1.mp4"
    assert renders.result_file(60, float(TIMES[60])) is None
    renders.add(render(2))
    renders.add_preview(2, 30, pic(2))
    assert renders.result_file(30, float(TIMES[30])) is None  # the newer preview shows it


def test_pictures_are_capped_and_cleared():
    renders = Renders()
    renders.add(render(1))
    for i in range(PREVIEWS + 5):
        renders.add_preview(1, i, pic(0))
        renders.add_exact(1, i, pic(0))
    assert list(renders.previews) == list(range(5, PREVIEWS + 5))  # the oldest go first
    assert list(renders.exact) == list(range(PREVIEWS + 5 - EXACT, PREVIEWS + 5))
    renders.set_result(3, pic(1))
    renders.clear()
    assert (len(renders), renders.previews, renders.exact, renders.result_at,
            renders.result_rgb) == (0, {}, {}, None, None)


def test_newer_renders_replace_older_unplaced_runs_over_their_range():
    renders = Renders()
    renders.add(render(1, 0.0, 2.0))
    renders.add(render(2, 1.0, 1.4))  # frames 25..34
    assert renders.add_unplaced(1, [(10, 40)]) and not renders.add_unplaced(9, [(1, 2)])
    assert renders.unplaced_spans(lambda t: int(t * 25 + 1e-9), 25.0) == [(10, 40)]
    renders.add_unplaced(2, [[30, 31]])
    assert renders.unplaced_spans(lambda t: int(t * 25 + 1e-9), 25.0) == [
        (10, 24), (30, 31), (35, 40)]


def test_a_render_that_ends_takes_its_previews_with_it():
    renders = Renders()
    for job in (1, 2, 3):
        renders.add(render(job))
        renders.add_preview(job, 30 + job, pic(job))
    renders.add_exact(1, 40, pic(9))  # the frame the editor parked on stays exact
    renders.finish(1)  # its frames come from its file from now on, every one alike
    renders.drop(2)  # cancelled: no file holds its pictures
    assert list(renders.previews) == [33] and list(renders.exact) == [40]
    assert renders.picture(31, TIMES) == (None, True)
    assert renders.picture(32, TIMES) == (None, True)
