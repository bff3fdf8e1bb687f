"""``redub batch``: shots of a timeline re-synced into new media, a report and a conformed
timeline; failures kept to their shot; reruns skip what is up to date."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main
from engine.errors import Cancelled, UsageError
from engine.media.probe import probe
from engine.pipeline import SyncSettings
from engine.progress import CancelToken
from engine.project import DubTrack, MediaRef, Project, SyncRange
from engine.timeline import io
from engine.timeline.batch import overridden, read_overrides, run_batch
from tests import timeline_factory as tf
from tests.media_factory import decode_all

FFV1 = {"codec": "ffv1"}  # lossless and quick to write: the tests' delivery codec


def _night(folder: Path) -> Path:
    """The factory's two shots (40 frames each) from timecoded copies, saved as OTIO."""
    path = folder / "night.otio"
    io.write_timeline(tf.two_shots(folder, timecode="10:00:00:00"), path)
    return path


def _rows(report: Path) -> list[dict[str, str]]:
    with open(report, newline="") as f:
        return list(csv.DictReader(f))


def test_batch_renders_resumes_after_a_cancel_skips_and_rerenders_on_a_change(tmp_path):
    timeline = _night(tmp_path)
    out = tmp_path / "out"
    seen: list[tuple[str, int, int]] = []
    token = CancelToken()

    def cancel_in_shot_2(stage: str, done: int, total: int) -> None:
        seen.append((stage, done, total))
        if stage == "shot 2/2 export" and done < total:  # workers throttle their reports
            token.cancel()

    # An interrupted night: shot 1 is finished, shot 2 leaves no file.
    with pytest.raises(Cancelled):
        run_batch(timeline, out, handles=3, export=FFV1, progress=cancel_in_shot_2,
                  cancel=token, workers=1)  # one worker: shot 1 finishes before shot 2
    assert ("batch", 1, 2) in seen and ("shot 1/2 export", 46, 46) in seen
    first = sorted(p.name for p in out.iterdir())
    assert first == ["night_001_hdtf_aoc_512_tc_redub.mkv",
                     "night_001_hdtf_aoc_512_tc_redub.mkv.redub.json"]

    # Resumed: shot 1 skipped, shot 2 rendered.
    result = run_batch(timeline, out, handles=3, export=FFV1)
    assert [r.status for r in result.shots] == ["skipped", "done"]
    for r, source_in, count in zip(result.shots, (30, 15), (200, 122)):
        shot = r.shot
        assert (shot.source_in, shot.source_out) == (source_in, source_in + 40)
        first_frame = max(0, source_in - 3)
        frames = min(count, source_in + 43) - first_frame
        video = probe(r.output).video[0]
        # The handles are written; the first frame carries its own source timecode.
        assert r.frames == frames == video.frame_count and video.codec == "ffv1"
        assert video.start_timecode == f"10:00:{first_frame // 25:02d}:{first_frame % 25:02d}"
        assert video.frame_rate == 25
    # Re-synced over the overlap only: the handles are the source's frames, exactly.
    source, written = decode_all(tmp_path / "hdtf_aoc_512_tc.mp4"), decode_all(
        result.shots[0].output)
    same = [np.array_equal(source[27 + k].to_ndarray(format="rgb24"),
                           written[k].to_ndarray(format="rgb24")) for k in range(46)]
    assert same == [True] * 3 + [False] * 40 + [True] * 3
    rows = _rows(result.report)
    assert [(row["index"], row["status"], row["frames"], row["record_in"], row["record_out"])
            for row in rows] == [("1", "skipped", "46", "01:00:00:05", "01:00:01:20"),
                                 ("2", "done", "46", "01:00:02:05", "01:00:03:20")]
    assert rows[1]["output"] == str(result.shots[1].output)
    # The output timeline points the shots' clips at the new media.
    back = io.read_timeline(result.timeline)
    urls = {c.media_reference.target_url for c in back.find_clips()}
    assert {str(r.output) for r in result.shots} <= urls

    # Nothing changed: both skipped, the files untouched.
    stamps = [r.output.stat().st_mtime_ns for r in result.shots]
    again = run_batch(timeline, out, handles=3, export=FFV1)
    assert [r.status for r in again.shots] == ["skipped", "skipped"]
    assert [r.output.stat().st_mtime_ns for r in again.shots] == stamps

    # A setting changed for one shot (by clip name): that shot alone renders again.
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps({"retalk_face5_524_tc": {"openness_gain": 1.4}}))
    changed = run_batch(timeline, out, handles=3, export=FFV1, overrides=overrides)
    assert [r.status for r in changed.shots] == ["skipped", "done"]
    assert changed.shots[1].output.stat().st_mtime_ns != stamps[1]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files


def test_a_relinked_timeline_with_an_edited_shot_rerenders_that_shot_alone(tmp_path):
    """The desktop's Render All: the timeline relinked in memory (outputs named after its
    file), each shot's result as it finishes, a shot's own project deciding its render."""
    path = _night(tmp_path)
    moved = tmp_path / "moved"
    moved.mkdir()
    for media in tmp_path.glob("*_tc.mp4"):
        media.rename(moved / media.name)
    timeline = io.read_timeline(path)
    assert io.relink(timeline, path, [moved]) == 2
    with pytest.raises(UsageError, match="needs the path"):
        run_batch(timeline, tmp_path / "out")
    out = tmp_path / "out"
    events: list = []
    first = run_batch(timeline, out, path=path, export=FFV1, workers=1,
                      progress=lambda stage, done, total: events.append(stage),
                      on_shot=lambda r: events.append((r.shot.index, r.status)))
    # Each shot's result is known before the next shot starts.
    assert [e for e in events if isinstance(e, tuple)] == [(1, "done"), (2, "done")]
    assert events.index((1, "done")) < min(
        k for k, e in enumerate(events) if str(e).startswith("shot 2/2"))
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".json")) == [
        "night_001_hdtf_aoc_512_tc_redub.mkv", "night_002_retalk_face5_524_tc_redub.mkv",
        "night_redub.otio", "night_redub_report.csv"]
    assert {r.shot.media for r in first.shots} == set(moved.iterdir())

    # Shot 1 opened in the editor: a project on its media, the overlap as its one range, the
    # dub where the timeline has it. Unedited, it renders nothing again.
    shot = first.shots[0].shot
    clock = probe(shot.media).video[0].clock
    t_in, t_out = clock.frame_time(shot.source_in, ""), clock.frame_time(shot.source_out, "")
    project = Project(media=MediaRef.from_file(shot.media),
                      dubs=[DubTrack(MediaRef.from_file(shot.dub), t_in - shot.dub_start)],
                      ranges=[SyncRange(t_in, t_out)])
    project_path = tmp_path / "shot_001.redub"
    project.save(project_path)
    again = run_batch(timeline, out, path=path, export=FFV1, projects={1: project_path})
    assert [r.status for r in again.shots] == ["skipped", "skipped"]

    # Edited: the source's mouth kept over frames 10-19 of the shot. That shot alone renders.
    keep = (shot.source_in + 10, shot.source_in + 19)
    project.corrections.keep.append(keep)
    project.save(project_path)
    stamp = first.shots[1].output.stat().st_mtime_ns

    def pictures(video: Path) -> list[np.ndarray]:
        return [f.to_ndarray(format="rgb24") for f in decode_all(video)]

    before = pictures(first.shots[0].output)
    edited = run_batch(timeline, out, path=path, export=FFV1, projects={1: project_path})
    assert [r.status for r in edited.shots] == ["done", "skipped"]
    assert edited.shots[1].output.stat().st_mtime_ns == stamp
    source, after = pictures(shot.media), pictures(edited.shots[0].output)
    assert len(after) == len(before) == 40  # no handles: frame k is source frame in + k
    kept = range(keep[0] - shot.source_in, keep[1] - shot.source_in + 1)
    assert all(np.array_equal(after[k], source[shot.source_in + k]) for k in kept)
    assert not any(np.array_equal(before[k], source[shot.source_in + k]) for k in kept)
    # Beyond the span and its 3-frame ease, the shot is as it was.
    far = [k for k in range(40) if k < kept[0] - 3 or k > kept[-1] + 3]
    assert all(np.array_equal(after[k], before[k]) for k in far)

    # A project that is not the shot's fails that shot alone, naming the project.
    wrong = run_batch(timeline, out, path=path, export=FFV1,
                      projects={1: project_path, 2: project_path, 9: project_path})
    assert [r.status for r in wrong.shots] == ["skipped", "failed"]
    assert wrong.shots[1].notes == [f"{project_path}: the project of shot 2 is on other media "
                                    "(hdtf_aoc_512_tc.mp4)"]
    assert wrong.notes == [f"project {project_path} is for shot 9, which the timeline does "
                           "not have"]


def test_missing_media_fails_its_shot_and_a_faceless_shot_keeps_its_clip(tmp_path, capsys):
    path = tmp_path / "night.otio"
    io.write_timeline(tf.faceless_shot(tmp_path, timecode="10:00:00:00"), path)
    (tmp_path / "hdtf_aoc_512_tc.mp4").rename(tmp_path / "moved.mp4")
    out = tmp_path / "out"
    code = main(["batch", str(path), "-o", str(out), "--codec", "ffv1", "--report", "json"])
    assert code == 1
    text = capsys.readouterr().out
    assert "1 of 2 shots failed" in text
    rows = json.loads((out / "night_redub_report.json").read_text())
    # The missing file does not stop the next shot, which has no face to re-sync.
    assert [(r["index"], r["status"], r["output"]) for r in rows] == [
        (1, "failed", ""), (2, "no-face", "")]
    assert "hdtf_aoc_512_tc.mp4" in rows[0]["notes"] and "not found" in rows[0]["notes"]
    assert "no face" in rows[1]["notes"]
    assert sorted(p.name for p in out.iterdir()) == ["night_redub.otio",
                                                    "night_redub_report.json"]
    # Both clips keep their original media in the output timeline, at the same record time.
    back, before = io.read_timeline(out / "night_redub.otio"), io.read_timeline(path)
    assert [(c.media_reference.target_url, c.range_in_parent()) for c in back.find_clips()] == [
        (c.media_reference.target_url, c.range_in_parent()) for c in before.find_clips()]


def test_overrides_are_checked_before_any_work(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"2": {"backend": "wav2lip", "mask": {"kind": "lips"},
                                      "color_match": False}}))
    table = read_overrides(good)
    settings = overridden(SyncSettings(), table["2"])
    assert (settings.backend, settings.mask.kind, settings.color_match) == (
        "wav2lip", "lips", False)
    assert settings.mask.feather == SyncSettings().mask.feather
    for text, words in ((b"{", "not valid JSON"), (b'{"1": {"gain": 2}}', "unknown setting"),
                        (b'{"1": {"openness_gain": "high"}}', "must be a float"),
                        (b'{"1": {"restore_strength": 3}}', "outside 0..1"),
                        (b'[1, 2]', "must map")):
        bad = tmp_path / "bad.json"
        bad.write_bytes(text)
        with pytest.raises(UsageError, match=words):
            read_overrides(bad)
    timeline = tmp_path / "t.otio"
    timeline.write_text("{}")
    bad.write_bytes(b'{"1": {"gain": 2}}')
    assert main(["batch", str(timeline), "-o", str(tmp_path / "o"), "--overrides",
                 str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_dub_over_no_picture_is_an_error_naming_the_timeline(tmp_path, capsys):
    path = tmp_path / "late.otio"
    io.write_timeline(tf.timeline(tf.video_track(tf.clip(tf.shared_clip(tf.FACE), 0, 25)),
                                  tf.audio_track(50, tf.clip(tf.shared_clip(tf.DUB_B), 0, 25))),
                      path)
    assert main(["batch", str(path), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "late.otio: no shot to re-sync" in err and "over no picture" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
