from __future__ import annotations

import pytest

from engine.errors import UsageError
from engine.timecode import format_timecode, parse_range, parse_time


@pytest.mark.parametrize("text,fps,expected", [
    ("12.5", 25, 12.5), ("12.5s", 25, 12.5), ("1500ms", None, 1.5), ("-0.25", None, -0.25),
    ("300f", 25, 12.0), ("00:00:12:05", 25, 12.2), ("01:00:00:00", 24, 3600.0),
    ("01:02.5", None, 62.5), ("1:00:02.5", None, 3602.5), ("-00:00:01:00", 25, -1.0),
])
def test_parse_time_forms(text, fps, expected):
    assert parse_time(text, fps) == pytest.approx(expected)


def test_drop_frame_timecode_round_trips_at_2997():
    fps = 30000 / 1001
    # The frames around each minute boundary, where drop-frame counting skips labels.
    for frame in [0, 1, 1799, 1800, 1801, 17981, 17982, 17983, 107892, 107891]:
        tc = format_timecode(frame / fps + 1e-9, fps, drop_frame=True)
        assert round(parse_time(tc, fps) * fps) == frame, tc
    assert format_timecode(1800 / fps + 1e-9, fps, drop_frame=True) == "00:01:00;02"
    assert format_timecode(17982 / fps + 1e-9, fps, drop_frame=True) == "00:10:00;00"
    with pytest.raises(UsageError, match="does not exist"):
        parse_time("00:01:00;00", fps)


def test_non_drop_timecode_format():
    assert format_timecode(12.2, 25) == "00:00:12:05"
    assert format_timecode(3661.5, 30) == "01:01:01:15"
    assert format_timecode(-1.0, 25) == "-00:00:01:00"


def test_ranges():
    assert parse_range("2.0-5.5", 25) == (2.0, 5.5)
    assert parse_range("50f-120f", 25) == (2.0, 4.8)
    assert parse_range("00:00:02:00-00:00:05:12", 25) == pytest.approx((2.0, 5.48))
    for bad in ("5-2", "2-2", "abc", "1-2-3", "-5", "2-"):
        with pytest.raises(UsageError):
            parse_range(bad, 25)


def test_frames_need_a_rate_and_fields_are_checked():
    with pytest.raises(UsageError, match="frame rate is unknown"):
        parse_time("10f", None)
    with pytest.raises(UsageError, match="out of range"):
        parse_time("00:00:00:25", 25)
    with pytest.raises(UsageError, match="drop-frame"):
        parse_time("00:00:01;00", 25)
