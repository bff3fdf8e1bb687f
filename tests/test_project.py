from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import engine.project as project_module
from engine.errors import RedubError, UsageError
from engine.face.analysis import Target
from engine.curves import Curve, MotionCurves
from engine.mask import MaskSettings
from engine.maskedit import Corrections, MaskLayer, ShapeKey
from engine.paths import cache_dir
from engine.pipeline import SyncSettings
from engine.project import (DubTrack, ExportPrefs, MediaRef, Project, RangeSettings, Recovery,
                            SyncRange, autosave_path, migrate)
from tests.media_factory import make_video, write_tone_wav


def full_project(video: Path, dub: Path) -> Project:
    return Project(
        media=MediaRef.from_file(video),
        dubs=[DubTrack(MediaRef.from_file(dub), offset=0.25, gain_db=-3.5)],
        ranges=[SyncRange(0.2, 0.8),
                SyncRange(1.0, 1.4, RangeSettings(stabilizer="liveportrait",
                                                  restorer_strength=0.4, mask_kind="lips",
                                                  mask_dilation=0.1, mask_feather=0.2,
                                                  openness_gain=1.3, audio_offset_ms=-40.0,
                                                  target=Target(80.5, 40.25, 1.1)))],
        corrections=Corrections(
            [MaskLayer("outline", {3: ShapeKey(np.array([(0.1, 0.2), (0.3, 0.4), (0.5, 0.1)]),
                                               dilation=0.02),
                                   12: ShapeKey(None, feather=0.3)}),
             MaskLayer("exclude", {12: ShapeKey(np.array([(-0.1, 0.7), (0.3, 0.9),
                                                          (0.1, 1 / 3)]))}),
             MaskLayer("erase", {5: ShapeKey(np.array([(0.4, 0.8), (0.45, 0.85)]))}, 0.03)],
            keep=[(20, 24)],
            curves=MotionCurves(openness_gain=Curve({2: 1.2, 30: 0.8}))),
        export=ExportPrefs(output="/tmp/out.mov", codec="prores", quality={"crf": "18"},
                           audio_mode="all"),
    )


@pytest.fixture
def media(tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    return (make_video(folder / "clip.mp4", frames=40, size=(96, 64)),
            write_tone_wav(folder / "dub.wav"))


def test_round_trip(tmp_path, media):
    project = full_project(*media)
    assert project.media.size == media[0].stat().st_size
    assert project.media.frame_rate == 25.0 and abs(project.media.duration - 1.6) < 1e-6
    assert project.dubs[0].media.frame_rate is None
    path = tmp_path / "p.redub"
    project.save(path)
    loaded = Project.load(path)
    assert loaded == project
    assert json.loads(path.read_text())["version"] == project_module.VERSION
    # Saving the loaded project gives the same bytes.
    loaded.save(tmp_path / "q.redub")
    assert (tmp_path / "q.redub").read_bytes() == path.read_bytes()


def test_conversions_to_engine_types():
    assert RangeSettings().to_sync_settings() == SyncSettings()
    settings = RangeSettings(mask_kind="lips", mask_dilation=0.1, mask_feather=0.2,
                             openness_gain=1.5, audio_offset_ms=20.0,
                             target=Target(1.0, 2.0, 3.0)).to_sync_settings()
    assert settings.mask == MaskSettings("lips", 0.1, 0.2)
    assert (settings.openness_gain, settings.audio_offset_ms) == (1.5, 20.0)
    assert settings.target == Target(1.0, 2.0, 3.0)

    export = ExportPrefs(codec="ffv1", quality={"level": "3"}).to_export_settings("/o.mkv")
    assert (export.output, export.codec, export.quality) == ("/o.mkv", "ffv1", {"level": "3"})
    with pytest.raises(UsageError, match="no output file"):
        ExportPrefs().to_export_settings()


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "p.redub"
    Project(MediaRef("/old.mp4")).save(path)
    before = path.read_bytes()

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(project_module.os, "replace", full_disk)
    with pytest.raises(RedubError, match="No space left.*file on disk is unchanged") as info:
        Project(MediaRef("/new.mp4")).save(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["p.redub"]  # no temporary file left


@pytest.mark.parametrize("content, message", [
    (b"\x00\x01garbage", "not a Redub project or damaged"),
    (b'{"format": "redub-project", "version": 1, "media": {"pa', "not a Redub project or damaged"),
    (b'{"hello": 1}', "not a Redub project file"),
    (b'[1, 2]', "not a Redub project file"),
    (b'{"format": "redub-project", "version": 1}', "missing 'media'"),
    (b'{"format": "redub-project", "version": "1", "media": {"path": "a"}}', "bad version"),
    (b'{"format": "redub-project", "version": 1, "media": {"path": "a", "size": "big"}}',
     "damaged project"),
    (b'{"format": "redub-project", "version": 1, "media": {"path": "a"}, "ranges": [{}]}',
     "missing 'start'"),
    (b'{"format": "redub-project", "version": 7, "media": {"path": "a"}}',
     "version 7 is newer than this Redub Studio supports"),
])
def test_bad_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.redub"
    path.write_bytes(content)
    with pytest.raises(RedubError, match=message) as info:
        Project.load(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_missing_project_file(tmp_path):
    with pytest.raises(RedubError, match="project file not found"):
        Project.load(tmp_path / "none.redub")


def test_migration_chain(tmp_path, monkeypatch):
    # A pretend next version that renamed "dubs" to "tracks": older files are upgraded on load.
    def rename(data):
        data["tracks"] = data.pop("dubs")
        return data

    path = tmp_path / "old.redub"
    Project(MediaRef("/a.mp4"), dubs=[DubTrack(MediaRef("/d.wav"), 1.5)]).save(path)
    current = project_module.VERSION
    monkeypatch.setattr(project_module, "VERSION", current + 1)
    monkeypatch.setattr(project_module, "MIGRATIONS", {current: rename})
    data = migrate(json.loads(path.read_text()))
    assert data["version"] == current + 1 and data["tracks"][0]["offset"] == 1.5 \
        and "dubs" not in data


def test_relink_after_moving_media(tmp_path, media):
    video, dub = media
    proj_dir = tmp_path / "proj"
    proj_dir.mkdir()
    path = proj_dir / "p.redub"
    full_project(video, dub).save(path)
    # The clip moves under the project's folder, the dub somewhere else; a different file
    # with the dub's name sits in the project folder (wrong fingerprint: not taken).
    (proj_dir / "footage").mkdir()
    os.replace(video, proj_dir / "footage" / "clip.mp4")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.replace(dub, elsewhere / "dub.wav")
    write_tone_wav(proj_dir / "dub.wav", seconds=2.0)

    project = Project.load(path)
    report = project.relink(proj_dir)
    assert report.relinked == {str(video): str(proj_dir / "footage" / "clip.mp4")}
    assert report.missing == [str(dub)] and not report.complete
    assert project.media.path == str(proj_dir / "footage" / "clip.mp4")

    # A copy (new mtime) and the moved file both match: the moved one is preferred.
    (tmp_path / "copies").mkdir()
    shutil.copy(elsewhere / "dub.wav", tmp_path / "copies" / "dub.wav")
    os.utime(tmp_path / "copies" / "dub.wav", (1e9, 1e9))
    report = project.relink(proj_dir, [tmp_path / "copies", elsewhere])
    assert report.complete and report.relinked == {str(dub): str(elsewhere / "dub.wav")}
    assert project.relink(proj_dir).relinked == {}  # nothing missing any more


def test_autosave_paths_are_per_project(tmp_path):
    a, b = autosave_path(tmp_path / "x" / "p.redub"), autosave_path(tmp_path / "y" / "p.redub")
    assert a != b and a.parent == b.parent == cache_dir() / "autosave"
    assert a.name.startswith("p-") and a.suffix == ".redub"
    assert autosave_path(None).name == "untitled.redub"


def test_recovery_after_a_crash(tmp_path):
    path = tmp_path / "p.redub"
    project = Project(MediaRef("/clip.mp4"), ranges=[SyncRange(1.0, 2.0)])
    recovery = Recovery(path)
    recovery.save(project)
    assert recovery.pending() is None

    project.ranges.append(SyncRange(3.0, 4.0))
    recovery.write(project)  # ... and then the app crashes
    saved = path.stat().st_mtime_ns
    os.utime(recovery.path, ns=(saved + 10**9, saved + 10**9))
    reopened = Recovery(path)
    assert reopened.pending() == recovery.path
    assert reopened.load() == project

    # An autosave older than the saved file (saved by someone else since) is not offered.
    os.utime(recovery.path, ns=(saved - 10**9, saved - 10**9))
    assert reopened.pending() is None

    reopened.save(project)  # a clean save discards the autosave
    assert not recovery.path.exists() and reopened.pending() is None
    assert Project.load(path) == project


def test_untitled_recovery_and_save_as(tmp_path):
    project = Project(MediaRef("/clip.mp4"))
    recovery = Recovery(None)
    assert recovery.pending() is None
    recovery.write(project)
    assert Recovery(None).pending() == autosave_path(None)
    with pytest.raises(UsageError):
        recovery.save(project)
    recovery.save(project, tmp_path / "named.redub")
    assert recovery.project_path == tmp_path / "named.redub"
    assert not autosave_path(None).exists() and recovery.pending() is None
    assert Project.load(tmp_path / "named.redub") == project


def test_the_editor_learns_from_the_whole_clip_it_has_analysed():
    rng = SyncRange(100.0, 102.0, RangeSettings(backend="retrieval", openness_gain=1.2))
    project = Project(MediaRef("/long.mp4", duration=600.0), ranges=[rng])
    settings = project.sync_settings(rng)
    assert settings.train_range == (0.0, 600.0)
    assert settings == replace(rng.settings.to_sync_settings(), train_range=(0.0, 600.0))
    # Not yet probed: the engine's default window.
    assert Project(MediaRef("/new.mp4"), ranges=[rng]).sync_settings(rng).train_range is None
