"""Where a batch's tasks run: the task model every executor shares, and how to pick one.

A `Task` is a top-level function and its arguments (both picklable), with the resources it
needs, the keys of the tasks that must end before it starts (`after`: ordering only, a task
runs once its prerequisites have ended, whatever their outcome) and the files it reads. The
function is called as ``fn(*args, progress=, cancel=, media=)``; its result (or exception) is
returned by key. Results are meant to be small: frames never travel, only what a task wrote.

Executors (each its own module, chosen by `create_executor`): `local_executor.LocalExecutor`,
worker processes on this machine (the default), and `ray_executor.RayExecutor`, a Ray cluster.
Both call tasks with the caller's ``REDUB_*`` environment (cache and model folders, offline): a
shot's analysis task and its language tasks must share the analysis cache, and on a cluster
with a shared file system a worker's own defaults would differ. Where ``REDUB_TASK_PIDS`` names
a folder, each task writes ``<key>.pid`` there as it starts, so the process running a shot can
be found (and, in the fault tests, killed).

Cancelling: the flag is raised, running tasks stop at their next ``cancel.check()`` and have
CANCEL_GRACE seconds to do so before their processes are killed; tasks that finished in the
meantime are still reported; run() then raises `Cancelled`.
"""
from __future__ import annotations

import heapq
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from engine.errors import Cancelled, RedubError, UsageError
from engine.progress import CancelToken

MAX_RETRIES = 2  # re-runs of a task whose worker died; an exception it raises is never retried
CANCEL_GRACE = 3.0  # seconds running tasks get to stop by themselves before they are killed
UPDATES_PER_SECOND = 5  # progress reports per task from a worker
PID_FOLDER = "REDUB_TASK_PIDS"


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0


@dataclass(frozen=True)
class Task:
    key: str  # unique; progress and results are reported by it
    fn: Callable[..., Any]  # a top-level (picklable) function
    args: tuple = ()
    resources: Resources = Resources()
    after: tuple[str, ...] = ()  # keys of tasks that must have ended first
    media: tuple[str, ...] = ()  # files the task reads (shipped with ship_media)


ProgressCallback = Callable[[str, str, int, int], None]
DoneCallback = Callable[[str, Any], None]


def no_progress(key: str, stage: str, done: int, total: int) -> None:
    pass


def no_done(key: str, result: Any) -> None:
    pass


class Executor(Protocol):
    def run(self, tasks: Sequence[Task], *, progress: ProgressCallback = no_progress,
            on_done: DoneCallback = no_done,
            cancel: CancelToken | None = None) -> dict[str, Any]:
        """Run every task (respecting `after`); return key -> result, or key -> the exception
        it raised (a dead worker's task is retried, at most MAX_RETRIES times, then its key
        maps to a RedubError saying so). ``on_done(key, result_or_exception)`` as each ends.
        Cancelling stops every running task within a few seconds and raises Cancelled."""

    def close(self) -> None:
        """Stop the workers (or leave the cluster, if this executor joined it)."""


def create_executor(cluster: str | None = None, workers: int | None = None,
                    ship_media: bool = False) -> Executor:
    """None: local worker processes (`workers` of them, default one per two cores; 0 runs
    inline); "auto" (the Ray cluster running on this machine), "ray://host:port" (Ray Client)
    or "host:port": a Ray cluster, joined now (``workers`` is then the cluster's business: its
    CPUs and GPUs pace the tasks)."""
    if cluster is None:
        if ship_media:
            raise UsageError("--ship-media needs --cluster: local workers read the files "
                             "themselves")
        from engine.timeline.local_executor import LocalExecutor

        return LocalExecutor(workers)
    from engine.timeline.ray_executor import RayExecutor

    return RayExecutor(cluster, ship_media=ship_media)


# ---------------------------------------------------------------- what every executor uses

def check_tasks(tasks: Sequence[Task]) -> None:
    """Refuse duplicate keys and prerequisites that are not among the tasks."""
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise ValueError("task keys must be unique")
    for task in tasks:
        unknown = set(task.after) - set(keys)
        if unknown:
            raise ValueError(f"task {task.key} waits for unknown task(s) {sorted(unknown)}")


class Pending:
    """The tasks not started yet, and the first of them (in the tasks' order) that may start.
    A task is looked at when one of its prerequisites ends, not on every event: a film in ten
    languages is some 16,500 tasks, and rescanning them all at each end took minutes."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        self._tasks = {t.key: t for t in tasks}
        self._order = {t.key: i for i, t in enumerate(tasks)}
        self._missing = {t.key: set(t.after) for t in tasks}
        self._dependents: dict[str, list[str]] = {}
        for task in tasks:
            for key in set(task.after):
                self._dependents.setdefault(key, []).append(task.key)
        self._ready = [(self._order[t.key], t.key) for t in tasks if not t.after]  # a heap
        self._front = 0  # retried tasks go before every other

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(list(self._tasks.values()))

    def first_ready(self) -> Task | None:
        while self._ready and self._ready[0][1] not in self._tasks:  # taken since
            heapq.heappop(self._ready)
        return self._tasks[self._ready[0][1]] if self._ready else None

    def remove(self, task: Task) -> None:
        del self._tasks[task.key]

    def insert(self, index: int, task: Task) -> None:
        """``task`` back among the pending, first (``index`` 0: a retry goes first)."""
        self._front -= 1
        self._tasks[task.key] = task
        if not self._missing[task.key]:
            heapq.heappush(self._ready, (self._front, task.key))

    def ended(self, key: str) -> None:
        for dependent in self._dependents.pop(key, ()):
            missing = self._missing[dependent]
            missing.discard(key)
            if not missing and dependent in self._tasks:
                heapq.heappush(self._ready, (self._order[dependent], dependent))


class _Ended(dict):
    """Results by key; each key set releases the tasks that waited for it."""

    def __init__(self, pending: Pending) -> None:
        super().__init__()
        self._pending = pending

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._pending.ended(key)


def queues(tasks: Sequence[Task]) -> tuple[Pending, _Ended]:
    """A run's pending tasks and its results, linked: a result releases its dependents."""
    pending = Pending(tasks)
    return pending, _Ended(pending)


def redub_env() -> dict[str, str]:
    """The caller's ``REDUB_*`` variables, handed to every task."""
    return {k: v for k, v in os.environ.items() if k.startswith("REDUB_")}


@contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _portable(exc: BaseException) -> BaseException:
    """The exception itself if it survives pickling, else a RedubError with its words."""
    if isinstance(exc, Cancelled):
        return Cancelled()  # rebuilt by the receiver: its __init__ takes no message
    try:
        back = pickle.loads(pickle.dumps(exc))
        if type(back) is type(exc) and str(back) == str(exc):
            return exc
    except Exception:  # any pickling failure: fall back to the words
        pass
    return RedubError(str(exc) if isinstance(exc, RedubError) else
                      f"{type(exc).__name__}: {exc}")


def call_task(fn: Callable[..., Any], args: tuple, key: str, env: Mapping[str, str],
          media: dict[str, str], progress: Callable[[str, int, int], None],
          cancel: CancelToken) -> tuple[str, Any]:
    """Run one task in a worker: ("ok", result) or ("err", exception) or ("cancelled", None)."""
    with _environment(env):
        pid_folder = os.environ.get(PID_FOLDER)
        if pid_folder:
            _write_pid(pid_file(Path(pid_folder), key))
        try:
            return "ok", fn(*args, progress=progress, cancel=cancel, media=media)
        except Cancelled:
            return "cancelled", None
        except Exception as exc:  # the task's failure is its result
            return "err", _portable(exc)


def pid_file(folder: Path, key: str) -> Path:
    """Where the task ``key`` writes its process id, with ``REDUB_TASK_PIDS=folder``."""
    return folder / ("".join(c if c.isalnum() or c in "-_." else "_" for c in key) + ".pid")


def _write_pid(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(str(os.getpid()))
    partial.replace(path)  # readers never see a half-written number


class Throttle:
    """Passes a report at most ``rate`` times a second, besides a new stage and the last
    unit of one (so a finished stage always reads as finished)."""

    def __init__(self, send: Callable[[str, int, int], None], rate: float) -> None:
        self._send, self._interval = send, 1.0 / rate
        self._last, self._stage = 0.0, None
        self._lock = threading.Lock()  # tasks report from their own threads too

    def __call__(self, stage: str, done: int, total: int) -> None:
        with self._lock:
            now = time.monotonic()
            if stage == self._stage and now - self._last < self._interval and done != total:
                return
            self._last, self._stage = now, stage
            self._send(stage, done, total)
