"""Scale-out (#18): batch throughput on local workers and on Ray, and a film's wall time.

Shots per hour with 1 and 2 local workers, Ray's overhead per shot and per task, and the wall
time of a 2-hour film in 10 languages projected onto N machines.

    .venv/bin/python -m bench.cluster [--shots 8] [--languages 2] [--backend retrieval]
                                      [--codec ffv1] [--gpu-speedup X]

1. A timeline of ``--shots`` shots of 1-2 s from the shared clips, each from its own take (a
   link per shot, so no shot reads another's cached analysis: every analysis is real work),
   with ``--languages`` dub tracks ("Dub de", "Dub fr", ...), written as OTIO.
2. The batch's own tasks run one at a time in this process: the cost of a shot's analysis (face
   analysis, landmark repair, the clip's own sound; once per shot) and of one language's render,
   per analysed and per rendered frame.
3. ``run_batch`` over every language with 1 and 2 local worker processes: wall time, shots per
   hour (a shot in every language), the executor's overhead against the in-process sum.
4. The same batch on a local Ray cluster (``tests.ray_cluster``: a head and one worker node on
   127.0.0.1, one CPU each, so two task slots as the two local workers have) against the
   2-worker local run: Ray's overhead per shot and per task; no-op tasks through each executor:
   a fresh executor's start, the round trip (submit -> result) of a run() of one task, the
   cost per task of ``--noops`` in one run(), a plain Ray task's round trip, and graphs shaped
   as the film's batch (an analysis and 10 renders after it per shot) of 1,100 and 4,400 tasks,
   extrapolated to the film's 16,500.
5. The projection for a film of 1,500 shots of 4.8 s (120 frames at 25 fps) in 10 languages on
   N = 8, 32, 128 machines, from those costs; the model is printed with the table.

The caches are emptied before every run, so each run computes every analysis. Every run's
outputs are compared with the in-process run's, picture by picture: "differ" counts those that
are not the same (x264 does not always encode the same frames alike here: ``--codec ffv1``
compares the pictures the batch made).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from unittest import mock

import av

from engine.errors import RedubError
from engine.media.probe import probe
from engine.pipeline import SyncSettings
from engine.timeline import batch as batch_module
from engine.timeline import io
from engine.timeline.batch import BatchResult, run_batch
from engine.timeline.executors import Task, create_executor
from tests.timeline_factory import audio_track, clip, timeline, video_track

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "media"
TAKES = ("hdtf_aoc_512.mp4", "retalk_face5_524.mp4", "talk_d12_512.mp4",
         "retalk_face3_590.mp4", "retalk_face2_844.mp4")  # the 25 fps clips with one face
DUBS = ("speech_radio31_16k.wav", "speech_retalk1.wav", "speech_retalk2.wav",
        "speech_eng_long.wav")
LANGUAGES = ("de", "fr", "es", "it", "ja", "pt", "ru", "zh", "ko", "nl")
RATE = 25
FILM_SHOTS, FILM_SHOT_FRAMES, FILM_LANGUAGES = 1500, 120, 10  # a 2-hour film at 25 fps
MACHINES = (8, 32, 128)


@dataclass(frozen=True)
class Bench:
    """The bench's timeline and what its shots cost to make."""

    timeline: Path
    languages: list[str]  # dub track names
    shots: int
    analysed: int  # frames the shots' analyses cover, in all
    rendered: int  # frames the shots' new media hold, one language


@dataclass
class Costs:
    """Seconds of each of the batch's tasks, run one at a time in this process."""

    analyses: list[float] = field(default_factory=list)  # one per shot
    renders: list[float] = field(default_factory=list)  # one per shot and language

    @property
    def total(self) -> float:
        return sum(self.analyses) + sum(self.renders)


def _timeline(folder: Path, shots: int, languages: int) -> Bench:
    """The bench's timeline, written into ``folder`` with a link per shot to its take."""
    video, dubs = [], [[] for _ in range(languages)]
    analysed = rendered = 0
    for i in range(shots):
        source = SHARED / TAKES[i % len(TAKES)]
        take = folder / f"take_{i:03d}{source.suffix}"  # its own file: its own analysis
        take.symlink_to(source)
        count = probe(take).video[0].frame_count
        frames = 25 + (i * 11) % 26  # 1 to 2 s
        video.append(clip(take, (i * 17) % (count - frames), frames, name=f"shot {i + 1}"))
        analysed += count  # a take under batch.LEARN_SECONDS is analysed whole
        rendered += frames
        for j in range(languages):
            dub = SHARED / DUBS[(i + j) % len(DUBS)]
            length = int(probe(dub).duration * RATE)
            dubs[j].append(clip(dub, (i * 29 + j * 37) % (length - frames), frames))
    names = [f"Dub {LANGUAGES[j % len(LANGUAGES)]}{'' if j < len(LANGUAGES) else j}"
             for j in range(languages)]
    path = folder / "bench.otio"
    io.write_timeline(timeline(video_track(*video),
                               *(audio_track(*d, name=n) for d, n in zip(dubs, names))), path)
    return Bench(path, names, shots, analysed, rendered)


def _timed(fn: Callable[..., Any], seconds: list[float]) -> Callable[..., Any]:
    """``fn`` adding the seconds of each call to ``seconds`` (in this process only)."""
    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - t0)
    return timed


def _batch(bench: Bench, out: Path, cache: Path, backend: str, codec: str | None,
           **options: Any) -> tuple[float, list[BatchResult]]:
    """Wall seconds of the whole batch, the caches empty at its start; its results."""
    for entry in cache.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    t0 = time.perf_counter()
    results = run_batch(bench.timeline, out, dub_track=bench.languages,
                        settings=SyncSettings(backend=backend), export={"codec": codec},
                        **options)
    wall = time.perf_counter() - t0
    for language in results:
        for r in language.shots:
            if r.status != "done":
                raise RedubError(f"shot {r.shot.index} in {language.language}: {r.status} "
                                 f"({'; '.join(r.notes)})", bench.timeline)
    return wall, results


def _digests(results: list[BatchResult]) -> list[str]:
    """One digest per output of its decoded pictures (a container's bytes may differ)."""
    digests = []
    for r in (r for language in results for r in language.shots):
        sha = hashlib.sha256()
        with av.open(str(r.output)) as container:
            for frame in container.decode(video=0):
                sha.update(frame.to_ndarray().tobytes())
        digests.append(sha.hexdigest())
    return digests


def _noop(*, progress: Any, cancel: Any, media: Any) -> None:
    """A task that does nothing: what its round trip takes is the executor's."""


def _bare() -> None:
    """A plain Ray task that does nothing."""


def _round_trips(executor: Any, count: int) -> tuple[float, float, float]:
    """Seconds through a fresh ``executor``: its start (two no-op tasks at once, so two
    workers start), and per no-op task: one run() per task (submit -> result), and ``count``
    tasks in one run()."""
    t0 = time.perf_counter()
    executor.run([Task("start 1", _noop), Task("start 2", _noop)])
    start = time.perf_counter() - t0
    t0 = time.perf_counter()
    for k in range(count):
        executor.run([Task(f"noop {k}", _noop)])
    single = (time.perf_counter() - t0) / count
    t0 = time.perf_counter()
    executor.run([Task(f"noop {k}", _noop) for k in range(count)])
    return start, single, (time.perf_counter() - t0) / count


def _film_graph(shots: int) -> list[Task]:
    """No-op tasks shaped as the film's batch: per shot an analysis, then a render per language
    after it."""
    tasks = []
    for k in range(shots):
        tasks.append(Task(f"analyse {k}", _noop))
        tasks += [Task(f"render {k} {j}", _noop, after=(f"analyse {k}",))
                  for j in range(FILM_LANGUAGES)]
    return tasks


def _driver(executor: Any, shots: tuple[int, int]) -> tuple[list[tuple[int, float]], float]:
    """``executor``'s seconds over film-shaped no-op graphs of ``shots`` shots, and over the
    film's, extrapolated as a*n + b*n^2 for n tasks (the executor scans the tasks still waiting
    each time one ends, so the cost per task grows with their number)."""
    timed = []
    for count in shots:
        graph = _film_graph(count)
        t0 = time.perf_counter()
        executor.run(graph)
        timed.append((len(graph), time.perf_counter() - t0))
    (n1, t1), (n2, t2) = timed
    b = max(0.0, (t2 / n2 - t1 / n1) / (n2 - n1))
    a = t2 / n2 - b * n2
    n = FILM_SHOTS * (1 + FILM_LANGUAGES)
    return timed, a * n + b * n * n


def _ray_round_trip(count: int) -> float:
    """Seconds per plain Ray task (``ray.get(f.remote())``), on the cluster joined already."""
    import ray

    remote = ray.remote(num_cpus=1)(_bare)
    ray.get(remote.remote())
    t0 = time.perf_counter()
    for _ in range(count):
        ray.get(remote.remote())
    return (time.perf_counter() - t0) / count


@contextmanager
def _ray_cluster() -> Iterator[str]:
    """A head and one worker node on 127.0.0.1, one CPU each (``tests.ray_cluster``): two task
    slots, as the two local workers have."""
    from tests.ray_cluster import LocalRayCluster

    cluster = LocalRayCluster(workers=1)
    cluster.start()
    try:
        yield cluster.address
    finally:
        cluster.stop()


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


@dataclass(frozen=True)
class Measured:
    """What the projection scales: per-frame seconds of a lone run, and the overheads."""

    analysis_frame: float  # seconds per analysed frame
    render_frame: float  # seconds per rendered frame, one language
    contention: float  # core-seconds per second of a lone run, every core busy (>= 1)
    task_overhead: float  # slot-seconds Ray adds to each task
    driver: float  # seconds the executor takes over the film's tasks as no-ops, two slots


def _project(m: Measured, cores: int, learn_frames: int, gpu_speedup: float | None) -> None:
    """The film's wall time on N machines (the model is printed with it)."""
    tasks = FILM_SHOTS * (1 + FILM_LANGUAGES)
    analysis = m.analysis_frame * learn_frames  # lone seconds, per shot
    render = m.render_frame * FILM_SHOT_FRAMES  # lone seconds, per shot and language
    print(f"\nprojection: a 2-hour film, {FILM_SHOTS} shots of {FILM_SHOT_FRAMES} frames "
          f"({FILM_SHOT_FRAMES / RATE:.1f} s at {RATE} fps) in {FILM_LANGUAGES} languages: "
          f"{tasks} tasks, on machines of {cores} cores")
    print(f"  analysis per shot: {m.analysis_frame * 1000:.1f} ms x {learn_frames} frames (its "
          "learn range: batch.LEARN_SECONDS of a longer take, no two shots sharing one) = "
          f"{analysis:.1f} s")
    print(f"  render per shot and language: {m.render_frame * 1000:.1f} ms x "
          f"{FILM_SHOT_FRAMES} frames = {render:.1f} s (what a render does once per shot, "
          "preparing from the footage, scaled with its frames as measured on 5-8 s takes)")
    print("  a task holds one core (the batch's Resources(cpus=1)) for its lone seconds x the "
          f"contention (1: every core ours; {m.contention:.2f}: as measured here with 2 "
          f"workers), plus Ray's {m.task_overhead * 1000:.0f} ms per task")
    print("  wall = all tasks' core-seconds over all cores; never under one shot's analysis "
          "and render back to back (a render waits for its shot's analysis), nor under the "
          f"executor's {m.driver:.0f} s over the film's tasks as no-ops (measured on two slots: "
          "an upper bound on the driver's share)")
    floor = max(analysis + render, m.driver)

    def cpu(contention: float) -> Callable[[int], float]:
        work = FILM_SHOTS * (analysis + FILM_LANGUAGES * render) * contention \
            + tasks * m.task_overhead
        return lambda n: max(work / (n * cores), floor)

    columns = {"CPU": cpu(1.0), f"CPU, x{m.contention:.2f}": cpu(m.contention)}
    print(f"  {FILM_SHOTS * (analysis + FILM_LANGUAGES * render) / 3600:.0f} core-hours at "
          f"contention 1; one analysis per language would add "
          f"{FILM_SHOTS * (FILM_LANGUAGES - 1) * analysis / 3600:.0f}")
    if gpu_speedup is not None:
        # A neural render asks half a GPU (batch._resources): two at a time per machine.
        gpu_render = render / gpu_speedup + m.task_overhead
        rest = FILM_SHOTS * (analysis + m.task_overhead)
        columns[f"1 GPU, render x{gpu_speedup:g}"] = lambda n: max(
            FILM_SHOTS * FILM_LANGUAGES * gpu_render / (2 * n), rest / (n * cores),
            analysis + render / gpu_speedup, m.driver)
    print(f"\n{'machines':>9} {'cores':>6} " + " ".join(f"{c:>22}" for c in columns)
          + f" {'shots/hour (CPU)':>17}")
    for n in MACHINES:
        walls = [wall(n) for wall in columns.values()]
        print(f"{n:>9} {n * cores:>6} " + " ".join(f"{_duration(w):>22}" for w in walls)
              + f" {FILM_SHOTS / walls[0] * 3600:>17.0f}")
    if gpu_speedup is None:
        print("the retrieval backend runs no network: on GPU machines it runs on their cores, "
              "as above. The repo holds no GPU figure for the neural backends (bench.models "
              "measures one on a GPU machine): --gpu-speedup adds their column")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--languages", type=int, default=2)
    parser.add_argument("--backend", default="retrieval")
    parser.add_argument("--codec", help="the new media's codec (default: the source's family)")
    parser.add_argument("--noops", type=int, default=100, help="no-op tasks timed per executor")
    parser.add_argument("--cores", type=int, default=16, help="cores per projected machine")
    parser.add_argument("--learn-frames", type=int, default=750,
                        help="frames a film shot's analysis covers (default: 30 s at 25 fps)")
    parser.add_argument("--gpu-speedup", type=float,
                        help="times faster a render runs with a GPU, for the projection")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray cluster")
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED}: the shared clips are needed")
    with tempfile.TemporaryDirectory(prefix="redub-bench-cluster-") as tmp:
        work = Path(tmp)
        cache = work / "cache"
        cache.mkdir()
        os.environ["REDUB_CACHE_DIR"] = str(cache)  # the executors hand it to every task
        (work / "takes").mkdir()
        bench = _timeline(work / "takes", args.shots, args.languages)
        languages = len(bench.languages)
        print(f"{bench.shots} shots ({bench.rendered} frames; their analyses cover "
              f"{bench.analysed}) in {languages} languages, backend {args.backend}; "
              f"{os.cpu_count()} cores here, load {os.getloadavg()[0]:.1f}", flush=True)

        # workers=0: the batch's own tasks inline, one after another; run_batch makes them
        # from these module functions, so each call is timed through the wrappers.
        costs = Costs()
        with mock.patch.object(batch_module, "analyse_shot",
                               _timed(batch_module.analyse_shot, costs.analyses)), \
                mock.patch.object(batch_module, "render_shot",
                                  _timed(batch_module.render_shot, costs.renders)):
            inline, results = _batch(bench, work / "inline", cache, args.backend, args.codec,
                                     workers=0)
        reference = _digests(results)
        analysis_frame = sum(costs.analyses) / bench.analysed
        render_frame = sum(costs.renders) / (bench.rendered * languages)
        print(f"\none task at a time in this process: {inline:.1f} s; per shot: analysis "
              f"{statistics.mean(costs.analyses):.2f} s ({analysis_frame * 1000:.1f} ms per "
              f"analysed frame), render {statistics.mean(costs.renders):.2f} s per language "
              f"({render_frame * 1000:.1f} ms per frame)", flush=True)

        walls: dict[str, float] = {}
        trips: dict[str, tuple[float, float, float, float]] = {}

        def batch(name: str, **options: Any) -> None:
            walls[name], results = _batch(bench, work / name.replace(" ", "_").replace(",", ""),
                                          cache, args.backend, args.codec, **options)
            differ = sum(a != b for a, b in zip(_digests(results), reference))
            print(f"{name:<18} {walls[name]:7.1f} {bench.shots / walls[name] * 3600:11.0f} "
                  f"{walls[name] / bench.shots:7.2f} {walls[name] / inline:11.2f}x "
                  f"{differ:>8}", flush=True)

        def round_trips(name: str, **options: Any) -> str:
            executor = create_executor(**options)
            try:
                start, single, many = _round_trips(executor, args.noops)
                bare = _ray_round_trip(args.noops) if "cluster" in options else None
                graphs, film = _driver(executor, (100, 400))
            finally:
                executor.close()
            trips[name] = start, single, many, film
            return (f"{name:<18} {start:7.2f} s | {single * 1000:7.1f} ms | {many * 1000:6.1f} "
                    "ms" + (f" | {bare * 1000:.1f} ms" if bare else "") + "\n" + " " * 19
                    + "film-shaped graphs: " + ", ".join(f"{n} tasks {t:.1f} s"
                                                         for n, t in graphs)
                    + f" -> the film's {FILM_SHOTS * (1 + FILM_LANGUAGES)} about {film:.0f} s")

        print(f"\n{'batch':<18} {'wall s':>7} {'shots/hour':>11} {'s/shot':>7} "
              f"{'/in-process':>12} {'differ':>8}")
        batch("local, 1 worker", workers=1)
        batch("local, 2 workers", workers=2)
        lines = [round_trips("local, 2 workers", workers=2)]
        if not args.no_ray:  # started only now: its daemons would slow the local runs
            with _ray_cluster() as address:
                batch("Ray, 2 nodes", cluster=address)
                lines.append(round_trips("Ray, 2 nodes", cluster=address))
        print(f"\nno-op tasks: start (2 at once, fresh workers) | {args.noops} tasks, a run() "
              "each | in one run(), per task | plain ray.get(f.remote())")
        print("\n".join(lines))

        tasks = bench.shots * (1 + languages)
        # Core-seconds per lone second, the workers' start (paid once per batch) left out.
        busy = walls["local, 2 workers"] - trips["local, 2 workers"][0]
        contention = max(1.0, 2 * busy / costs.total)
        print(f"\n2 local workers: {walls['local, 1 worker'] / walls['local, 2 workers']:.2f}x "
              f"the shots per hour of 1; contention {contention:.2f} core-s per lone second "
              f"(load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores now)")
        overhead, driver = 0.0, trips["local, 2 workers"][3]
        if "Ray, 2 nodes" in walls:
            extra = walls["Ray, 2 nodes"] - walls["local, 2 workers"]
            print(f"Ray against 2 local workers: {extra:+.1f} s, {extra / bench.shots:+.2f} s per "
                  f"shot ({1 + languages} tasks), {extra / tasks:+.2f} s per task")
            # Slot-seconds per task with tasks queued: the no-op figure, two slots held.
            overhead, driver = 2 * trips["Ray, 2 nodes"][2], trips["Ray, 2 nodes"][3]
            print(f"Ray's overhead from the no-ops: {overhead * 1000:.0f} slot-ms per task, "
                  f"{overhead * (1 + languages) * 1000:.0f} per shot in {languages} languages")
        _project(Measured(analysis_frame, render_frame, contention, overhead, driver),
                 args.cores, args.learn_frames, args.gpu_speedup)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
