"""Scale-out (#18): a timeline's shots rendered as executor tasks, on local worker processes and
on a local Ray cluster, in two languages from one analysis per take; the same pictures either
way, a worker killed mid-shot retried, a cancelled batch leaving no partial output and resuming.

The takes are short re-encoded cuts of the shared clips (60 frames at 256x256 with their own
sound), so the whole file stays near a minute on a small machine.
"""
from __future__ import annotations

import glob
import os
import signal
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from engine.cli import main
from engine.errors import Cancelled
from engine.media.audio import read_audio
from engine.media.reader import VideoReader
from engine.paths import cache_dir
from engine.progress import CancelToken
from engine.timeline import io
from engine.timeline.batch import BatchResult, run_batch
from engine.timeline.executors import pid_file
from tests import timeline_factory as tf
from tests.conftest import shared_clip
from tests.media_factory import decode_all
from tests.ray_cluster import local_ray, ray_cluster  # noqa: F401 - fixtures

FFV1 = {"codec": "ffv1"}
LANGUAGES = ["Dub EN", "Dub FR"]
DUB_FR = "speech_retalk2.wav"  # another speaker than Dub EN's
TAKE_FRAMES, SIDE, RATE = 60, 256, 25


def _take(name: str, path: Path) -> Path:
    """The first TAKE_FRAMES frames of a shared clip at SIDExSIDE, H.264, with its own sound
    (16 kHz PCM) in Matroska."""
    with VideoReader(shared_clip(name)) as reader:
        pictures = [cv2.resize(f.rgb(), (SIDE, SIDE), interpolation=cv2.INTER_AREA)
                    for f in reader.frames(0, TAKE_FRAMES)]
    sound = read_audio(shared_clip(name), rate=16000, channels=1).samples
    sound = (np.clip(sound[:TAKE_FRAMES * 16000 // RATE, 0], -1, 1) * 32767).astype(np.int16)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=RATE)
        video.width = video.height = SIDE
        video.pix_fmt = "yuv420p"
        video.codec_context.options = {"preset": "ultrafast", "crf": "18", "bf": "0"}
        audio = out.add_stream("pcm_s16le", rate=16000, layout="mono")
        for picture in pictures:
            out.mux(video.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        out.mux(video.encode(None))
        block = av.AudioFrame.from_ndarray(sound[None], format="s16", layout="mono")
        block.sample_rate = 16000
        out.mux(audio.encode(block))
        out.mux(audio.encode(None))
    return path


def _film(folder: Path) -> Path:
    """Three shots, two from one take, under two dub tracks (two languages), saved as OTIO.

    Shot 1: take A frames 5-17; shot 2: take A frames 35-47; shot 3: take B frames 10-22.
    "Dub EN" is DUB_A under all three, "Dub FR" DUB_FR.
    """
    folder.mkdir(parents=True, exist_ok=True)
    a, b = _take(tf.FACE, folder / "take_a.mkv"), _take(tf.FACE_B, folder / "take_b.mkv")
    path = folder / "film.otio"
    io.write_timeline(tf.timeline(
        tf.video_track(tf.clip(a, 5, 12), tf.clip(a, 35, 12), tf.clip(b, 10, 12)),
        tf.audio_track(tf.clip(shared_clip(tf.DUB_A), 0, 36), name="Dub EN"),
        tf.audio_track(tf.clip(shared_clip(DUB_FR), 0, 36), name="Dub FR")), path)
    return path


def _batch(path: Path, out: Path, seen: list | None = None,
           **options) -> list[BatchResult]:
    def progress(stage: str, done: int, total: int) -> None:
        if seen is not None:
            seen.append((stage, done, total))

    return run_batch(path, out, dub_track=LANGUAGES, export=FFV1, progress=progress, **options)


def _pictures(path: Path) -> list[np.ndarray]:
    return [f.to_ndarray() for f in decode_all(path)]  # the planes as stored: exact


def _outputs(results: list[BatchResult]) -> dict[str, Path]:
    return {r.output.name: r.output for one in results for r in one.shots if r.output}


def _same_pictures(a: dict[str, Path], b: dict[str, Path]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        first, second = _pictures(a[name]), _pictures(b[name])
        assert len(first) == len(second) == 12
        assert all(np.array_equal(x, y) for x, y in zip(first, second)), name


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The batch on two local worker processes, once for the module: (results, progress)."""
    folder = tmp_path_factory.mktemp("local")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("REDUB_CACHE_DIR", str(folder / "cache"))
        env.setenv("REDUB_DATA_DIR", str(folder / "data"))
        env.setenv("REDUB_OFFLINE", "1")
        seen: list = []
        results = _batch(_film(folder / "media"), folder / "out", seen, workers=2)
        analyses = sorted(p.name for p in (cache_dir() / "faces").glob("*.npz")
                          if ".placement" not in p.name)
        analyses += sorted(f"sound/{p.name}" for p in (cache_dir() / "sound").glob("*.npz"))
    return results, seen, analyses, folder


def test_two_languages_on_local_workers_share_one_analysis_per_take(local_run):
    results, seen, analyses, _ = local_run
    assert [one.language for one in results] == LANGUAGES
    for one in results:
        assert [r.status for r in one.shots] == ["done"] * 3, [r.notes for r in one.shots]
        assert {r.output.name for r in one.shots} == {
            f"film_{k:03d}_{name}_{one.language.replace(' ', '_')}_redub.mkv"
            for k, name in ((1, "take_a"), (2, "take_a_2"), (3, "take_b"))}
        tag = one.language.replace(" ", "_")
        assert one.timeline.name == f"film_{tag}_redub.otio"
        assert one.report.name == f"film_{tag}_redub_report.csv"
        # Each language's timeline points its shots at that language's media.
        back = io.read_timeline(one.timeline)
        urls = {c.media_reference.target_url for t in back.video_tracks() for c in t}
        assert urls == {str(r.output) for r in one.shots}
    # One analysis per take (shots 1 and 2 share take A), run before either language's render:
    # two face analyses and two of the take's own sound cached, and no render analysed or
    # repaired a face itself.
    assert len(analyses) == 4 and sum(a.startswith("sound/") for a in analyses) == 2
    finished = [s for s, done, total in seen if s.endswith(" faces") and done == total]
    assert sorted(finished) == ["shot 1/3 faces", "shot 3/3 faces"]
    assert not [s for s, _, _ in seen if s.startswith("Dub ") and
                s.rsplit(" ", 1)[1] in ("faces", "placement")]
    assert ("batch", 6, 6) in seen and [s for s in seen if s[0] == "batch"][-1] == ("batch", 6, 6)
    # The languages differ where the mouth is, and only there.
    en, fr = (_pictures(r.output) for r in (results[0].shots[2], results[1].shots[2]))
    assert not all(np.array_equal(x, y) for x, y in zip(en, fr))


def test_cancel_leaves_no_partial_output_and_a_rerun_resumes(local_run, tmp_path):
    path = _film(tmp_path / "media")
    out = tmp_path / "out"
    token = CancelToken()
    cancelled_at: list[float] = []

    def cancel_in_french(stage: str, done: int, total: int) -> None:
        # Reports are throttled in the workers: the first one of the stage is sure to come.
        if stage == "Dub FR shot 2/3 export" and done < total and not token.cancelled:
            cancelled_at.append(time.monotonic())
            token.cancel()

    with pytest.raises(Cancelled):
        run_batch(path, out, dub_track=LANGUAGES, export=FFV1, workers=2, cancel=token,
                  progress=cancel_in_french)
    assert time.monotonic() - cancelled_at[0] < 5.0
    left = sorted(p.name for p in out.iterdir())
    assert not [n for n in left if n.startswith(".")]  # no temporary file
    media = [n for n in left if n.endswith(".mkv")]
    assert media and "film_002_take_a_2_Dub_FR_redub.mkv" not in media
    assert sorted(n for n in left if n.endswith(".redub.json")) == [f"{n}.redub.json"
                                                                   for n in media]

    again = run_batch(path, out, dub_track=LANGUAGES, export=FFV1, workers=2)
    statuses = {r.output.name: r.status for one in again for r in one.shots}
    assert statuses == {name: "skipped" if name in media else "done" for name in statuses}
    assert len(statuses) == 6
    _same_pictures(_outputs(again), _outputs(local_run[0]))


def test_cli_takes_languages_by_pattern_and_refuses_no_workers(local_run, capsys):
    folder = local_run[3]
    film, out = folder / "media" / "film.otio", folder / "out"
    assert main(["batch", str(film), "-o", str(out), "--dub-track", "Dub *", "--codec",
                 "ffv1", "--workers", "1"]) == 0
    text = capsys.readouterr().out
    # Up to date from the module's run: nothing renders, each language says so and where.
    for language in LANGUAGES:
        assert sum(line.startswith(f"{language}: shot ") and ": skipped, 12 frames" in line
                   for line in text.splitlines()) == 3
        assert f"film_{language.replace(' ', '_')}_redub.otio" in text
    assert main(["batch", str(film), "-o", str(out), "--workers", "0"]) == 2
    assert "--workers must be 1 or more" in capsys.readouterr().err
    assert main(["batch", str(film), "-o", str(out), "--dub-track", "Voice *"]) == 2
    assert "no audio track matches 'Voice *'" in capsys.readouterr().err


def test_on_a_ray_cluster_the_outputs_equal_the_local_run(local_run, ray_cluster, tmp_path):
    seen: list = []
    results = _batch(_film(tmp_path / "media"), tmp_path / "out", seen, cluster=ray_cluster)
    assert [[r.status for r in one.shots] for one in results] == [["done"] * 3] * 2
    _same_pictures(_outputs(results), _outputs(local_run[0]))
    # Progress streamed back from the nodes; one analysis per take there too.
    finished = [s for s, done, total in seen if s.endswith(" faces") and done == total]
    assert sorted(finished) == ["shot 1/3 faces", "shot 3/3 faces"]
    assert [s for s in seen if s[0] == "batch"][-1] == ("batch", 6, 6)
    assert any(s.startswith("Dub FR shot 3/3 export") for s, _, _ in seen)


def _kill_while_writing(pids: Path, key: str, partial: str, killed: list[int]) -> threading.Thread:
    """A thread that kills the process running task ``key`` (its pid file, see
    tests.ray_cluster) once a temporary output matching ``partial`` exists: mid-export."""
    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if glob.glob(partial) and pid_file(pids, key).exists():
                pid = int(pid_file(pids, key).read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_worker_killed_during_a_shot_is_retried_and_the_batch_completes(
        local_run, ray_cluster, tmp_path, monkeypatch):
    pids = tmp_path / "pids"
    monkeypatch.setenv("REDUB_TASK_PIDS", str(pids))  # each task's process, for the killer
    out = tmp_path / "out"
    seen: list = []
    killed: list[int] = []
    # "render 5" is the French render of shot 2: killed while it writes its media.
    watcher = _kill_while_writing(pids, "render 5",
                                  str(out / ".film_002_take_a_2_Dub_FR_redub.mkv.*"), killed)
    results = _batch(_film(tmp_path / "media"), out, seen, cluster=ray_cluster)
    watcher.join(timeout=1)
    assert len(killed) == 1
    # The shot started over on a new worker (its first stage reported by both attempts).
    starts = [s for s, done, _ in seen if s == "Dub FR shot 2/3 audio" and done == 0]
    assert len(starts) == 2, [s for s in seen if s[0].startswith("Dub FR shot 2/3")]
    assert [[r.status for r in one.shots] for one in results] == [["done"] * 3] * 2
    _same_pictures(_outputs(results), _outputs(local_run[0]))
    # The killed attempt's partial file is gone.
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_a_shot_asks_for_half_a_gpu_only_for_a_neural_backend_on_a_gpu_provider(monkeypatch):
    from engine.pipeline import SyncSettings
    from engine.timeline import batch

    def plan(*backends: str) -> batch._Plan:
        return batch._Plan(Path("dub.wav"), 0.0, [(0.0, 1.0)] * len(backends),
                           [SyncSettings(backend=b) for b in backends], batch.Corrections())

    cpu = [("CPUExecutionProvider", {})]
    monkeypatch.setattr(batch, "providers", lambda: cpu)
    assert batch._resources(plan("wav2lip")) == batch.Resources(cpus=1.0, gpus=0.0)
    monkeypatch.setattr(batch, "providers", lambda: [("CUDAExecutionProvider", {}), *cpu])
    assert batch._resources(plan("wav2lip")) == batch.Resources(cpus=1.0, gpus=0.5)
    assert batch._resources(plan("retrieval", "wav2lip")) == batch.Resources(1.0, 0.5)
    assert batch._resources(plan("retrieval")) == batch.Resources(cpus=1.0, gpus=0.0)


def test_media_shipped_through_the_object_store_give_the_same_pictures(local_run, ray_cluster,
                                                                        tmp_path):
    results = _batch(_film(tmp_path / "media"), tmp_path / "out", cluster=ray_cluster,
                     ship_media=True)
    assert [[r.status for r in one.shots] for one in results] == [["done"] * 3] * 2
    _same_pictures(_outputs(results), _outputs(local_run[0]))
