"""Where a batch's tasks run: worker processes on this machine, or a Ray cluster.

A `Task` is a top-level function and its arguments (both picklable), with the resources it
needs, the keys of the tasks that must end before it starts (`after`: ordering only, a task
runs once its prerequisites have ended, whatever their outcome) and the files it reads. The
function is called as ``fn(*args, progress=, cancel=, media=)``; its result (or exception) is
returned by key. Results are meant to be small: frames never travel, only what a task wrote.

Both executors call tasks with the caller's ``REDUB_*`` environment (cache and model folders,
offline): a shot's analysis task and its language tasks must share the analysis cache, and on a
cluster with a shared file system a worker's own defaults would differ. Where
``REDUB_TASK_PIDS`` names a folder, each task writes ``<key>.pid`` there as it starts, so the
process running a shot can be found (and, in the fault tests, killed).

- `LocalExecutor`: worker processes ('spawn': the engine runs threads and onnxruntime, which a
  fork would copy mid-flight), kept for the executor's life, so one pays its imports once. A
  task is sent to an idle worker over its own pipe; progress comes back on that pipe and is
  handed to the caller's callbacks on the caller's thread (run() waits on every pipe and
  process). A worker that dies (killed, crashed, out of memory) is replaced and its task
  re-sent, at most MAX_RETRIES times. ``workers=0`` runs the tasks inline in the caller, one
  after another: no isolation and no retries, for debugging and profiling.
- `RayExecutor`: each task a Ray task with its CPUs and GPU fraction, retried by Ray when its
  worker dies (``max_retries``; an exception the task raises is its result, never retried).
  Progress and cancellation go through a small actor (`_Hub`): tasks report to it (at most
  five updates a second each) and poll its cancel flag from a thread; the caller drains it.
  ``ship_media``: each distinct file is read once into the object store and written into a
  temporary folder on the worker that runs the task (removed after the task).

Cancelling: the flag is raised, running tasks stop at their next ``cancel.check()`` and have
CANCEL_GRACE seconds to do so before their processes are killed; tasks that finished in the
meantime are still reported; run() then raises `Cancelled`.
"""
from __future__ import annotations

import heapq
import logging
import multiprocessing
import os
import pickle
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for
from pathlib import Path
from typing import Any, Protocol

from engine.errors import Cancelled, RedubError, UsageError
from engine.progress import CancelToken

MAX_RETRIES = 2  # re-runs of a task whose worker died; an exception it raises is never retried
CANCEL_GRACE = 3.0  # seconds running tasks get to stop by themselves before they are killed
UPDATES_PER_SECOND = 5  # progress reports per task through the cluster
INSTALL_RAY = 'pip install "redub-studio[cluster]"'
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


def _no_progress(key: str, stage: str, done: int, total: int) -> None:
    pass


def _no_done(key: str, result: Any) -> None:
    pass


class Executor(Protocol):
    def run(self, tasks: Sequence[Task], *, progress: ProgressCallback = _no_progress,
            on_done: DoneCallback = _no_done,
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
        return LocalExecutor(workers)
    return RayExecutor(cluster, ship_media=ship_media)


# ---------------------------------------------------------------- both sides

def _check(tasks: Sequence[Task]) -> None:
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise ValueError("task keys must be unique")
    for task in tasks:
        unknown = set(task.after) - set(keys)
        if unknown:
            raise ValueError(f"task {task.key} waits for unknown task(s) {sorted(unknown)}")


class _Pending:
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

    def __init__(self, pending: _Pending) -> None:
        super().__init__()
        self._pending = pending

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._pending.ended(key)


def _queues(tasks: Sequence[Task]) -> tuple[_Pending, _Ended]:
    pending = _Pending(tasks)
    return pending, _Ended(pending)


def _redub_env() -> dict[str, str]:
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


def _call(fn: Callable[..., Any], args: tuple, key: str, env: Mapping[str, str],
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


class _Throttle:
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


# ---------------------------------------------------------------- local worker processes

class _SharedCancel(CancelToken):
    """A worker's token: set by the caller's process through a multiprocessing Event."""

    def __init__(self, event: Any) -> None:
        self._event = event  # a multiprocessing Event: the same set/is_set as threading's


def _worker_main(conn: Any, cancel_event: Any) -> None:
    """A worker process: run the tasks sent over ``conn`` until it closes."""
    cancel = _SharedCancel(cancel_event)
    send_lock = threading.Lock()

    def send(message: tuple) -> None:
        with send_lock:
            conn.send(message)

    while True:
        try:
            message = conn.recv()
        except EOFError:  # the caller is gone
            return
        if message is None:
            return
        key, fn, args, env, media = message

        def report(stage: str, done: int, total: int, key: str = key) -> None:
            send(("progress", key, stage, done, total))

        outcome = _call(fn, args, key, env, media, _Throttle(report, UPDATES_PER_SECOND), cancel)
        try:
            send(("done", key, outcome))
        except Exception as exc:  # an unpicklable result
            send(("done", key, ("err", RedubError(f"{key}: its result cannot be sent back "
                                                  f"({exc})"))))


@dataclass
class _Worker:
    process: Any
    conn: Any
    task: Task | None = None


class LocalExecutor:
    """Tasks on worker processes of this machine (see the module's notes)."""

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and workers < 0:
            raise UsageError(f"workers must be 0 or more, not {workers}")
        self.workers = max(1, (os.cpu_count() or 2) // 2) if workers is None else workers
        self._context = multiprocessing.get_context("spawn")
        self._cancel_event = self._context.Event() if self.workers else None
        self._pool: list[_Worker] = []

    def run(self, tasks: Sequence[Task], *, progress: ProgressCallback = _no_progress,
            on_done: DoneCallback = _no_done,
            cancel: CancelToken | None = None) -> dict[str, Any]:
        _check(tasks)
        if self.workers == 0:
            return self._run_inline(tasks, progress, on_done, cancel or CancelToken())
        pending, ended = _queues(tasks)
        deaths: dict[str, int] = {}
        env = _redub_env()
        while pending or self._busy():
            if cancel is not None and cancel.cancelled:
                self._cancel(ended, progress, on_done)
            while (task := pending.first_ready()) is not None:
                worker = self._idle_worker()
                if worker is None:
                    break
                pending.remove(task)
                self._send(worker, task, env, pending, ended, on_done)
            if pending and not self._busy() and pending.first_ready() is None:
                raise ValueError("tasks wait for each other in a circle: "
                                 + ", ".join(t.key for t in pending))
            self._collect(0.1, pending, ended, deaths, progress, on_done)
        return ended

    def close(self) -> None:
        for worker in self._pool:
            try:
                worker.conn.send(None)
            except OSError:
                pass
        for worker in self._pool:
            worker.process.join(timeout=2)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._pool = []

    @staticmethod
    def _run_inline(tasks: Sequence[Task], progress: ProgressCallback, on_done: DoneCallback,
                    cancel: CancelToken) -> dict[str, Any]:
        pending, ended = _queues(tasks)
        while pending:
            task = pending.first_ready()
            if task is None:
                raise ValueError("tasks wait for each other in a circle: "
                                 + ", ".join(t.key for t in pending))
            pending.remove(task)
            cancel.check()

            def report(stage: str, done: int, total: int, key: str = task.key) -> None:
                progress(key, stage, done, total)

            try:
                result = task.fn(*task.args, progress=report, cancel=cancel,
                                 media={m: m for m in task.media})
            except Cancelled as exc:
                if cancel.cancelled:
                    raise
                result = exc  # the task cancelled itself: an error like any other
            except Exception as exc:  # the task's failure is its result
                result = exc
            ended[task.key] = result
            on_done(task.key, result)
        return ended

    def _busy(self) -> list[_Worker]:
        return [w for w in self._pool if w.task is not None]

    def _idle_worker(self) -> _Worker | None:
        for worker in list(self._pool):
            if worker.task is None and not worker.process.is_alive():  # died between tasks
                worker.conn.close()
                self._pool.remove(worker)
        for worker in self._pool:
            if worker.task is None:
                return worker
        if len(self._pool) < self.workers:
            ours, theirs = self._context.Pipe()
            process = self._context.Process(target=_worker_main, args=(theirs, self._cancel_event),
                                            name="redub-worker", daemon=True)
            process.start()
            theirs.close()  # only the child holds its end: its death reads as end of file
            self._pool.append(_Worker(process, ours))
            return self._pool[-1]
        return None

    def _send(self, worker: _Worker, task: Task, env: dict[str, str], pending: _Pending,
              ended: dict[str, Any], on_done: DoneCallback) -> None:
        try:
            worker.conn.send((task.key, task.fn, task.args, env, {m: m for m in task.media}))
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            ended[task.key] = RedubError(f"{task.key}: cannot be sent to a worker ({exc})")
            on_done(task.key, ended[task.key])
            return
        except OSError:  # the worker died idle, just now: the task goes to another
            worker.conn.close()
            self._pool.remove(worker)
            pending.insert(0, task)
            return
        worker.task = task

    def _collect(self, timeout: float, pending: _Pending | None, ended: dict[str, Any],
                 deaths: dict[str, int], progress: ProgressCallback, on_done: DoneCallback,
                 cancelling: bool = False) -> None:
        """Wait up to ``timeout`` for messages and deaths and act on them."""
        busy = self._busy()
        waitables = [w.conn for w in busy] + [w.process.sentinel for w in busy]
        if not waitables:
            return
        wait_for(waitables, timeout)
        for worker in busy:
            alive = True
            try:
                while worker.task is not None and worker.conn.poll():
                    message = worker.conn.recv()
                    if message[0] == "progress":
                        progress(*message[1:])
                        continue
                    key, (status, value) = message[1], message[2]
                    worker.task = None
                    if status == "cancelled":
                        if not cancelling:  # the task cancelled itself: an error like any other
                            ended[key] = Cancelled()
                            on_done(key, ended[key])
                        continue
                    ended[key] = value
                    on_done(key, value)
            except (EOFError, OSError):
                alive = False
            if worker.task is not None and (not alive or not worker.process.is_alive()):
                self._bury(worker, pending, ended, deaths, on_done, cancelling)

    def _bury(self, worker: _Worker, pending: _Pending | None, ended: dict[str, Any],
              deaths: dict[str, int], on_done: DoneCallback, cancelling: bool) -> None:
        task = worker.task
        worker.process.join(timeout=5)
        worker.conn.close()
        self._pool.remove(worker)
        if cancelling:
            return
        deaths[task.key] = deaths.get(task.key, 0) + 1
        if deaths[task.key] > MAX_RETRIES:
            ended[task.key] = RedubError(f"worker died {deaths[task.key]} times on {task.key}")
            on_done(task.key, ended[task.key])
        else:
            pending.insert(0, task)

    def _cancel(self, ended: dict[str, Any], progress: ProgressCallback,
                on_done: DoneCallback) -> None:
        self._cancel_event.set()
        deadline = time.monotonic() + CANCEL_GRACE
        while self._busy() and time.monotonic() < deadline:
            self._collect(0.05, None, ended, {}, progress, on_done, cancelling=True)
        for worker in self._busy():  # still running after the grace: stopped for good
            worker.process.kill()
            worker.process.join()
            worker.conn.close()
            self._pool.remove(worker)
        self._cancel_event.clear()
        raise Cancelled()


# ---------------------------------------------------------------- Ray

class _Hub:
    """The actor between a run and its tasks: progress reports in, the cancel flag out."""

    def __init__(self) -> None:
        self._reports: list[tuple[str, str, int, int]] = []
        self._cancelled = False

    def report(self, key: str, stage: str, done: int, total: int) -> None:
        self._reports.append((key, stage, done, total))

    def drain(self) -> list[tuple[str, str, int, int]]:
        reports, self._reports = self._reports, []
        return reports

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled


class _PolledCancel(CancelToken):
    """A Ray task's token, raised by a thread that asks the hub twice a second."""

    def __init__(self, hub: Any) -> None:
        super().__init__()
        self._hub = hub
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        import ray

        while not self._stop.wait(0.5):
            try:
                if ray.get(self._hub.cancelled.remote(), timeout=5):
                    self.cancel()
                    return
            except ray.exceptions.RayError:  # the run is over and its hub gone
                return

    def stop(self) -> None:
        self._stop.set()


@contextmanager
def _materialised(media: Mapping[str, Any]) -> Iterator[dict[str, str]]:
    """``media`` maps each path to None (read in place) or the ObjectRef of its bytes."""
    shipped = {path: ref for path, ref in media.items() if ref is not None}
    if not shipped:
        yield {path: path for path in media}
        return
    import ray

    folder = Path(tempfile.mkdtemp(prefix="redub-media-"))
    try:
        local = {path: path for path in media}
        for i, (path, ref) in enumerate(shipped.items()):
            target = folder / str(i) / Path(path).name  # its own name: formats go by suffix
            target.parent.mkdir()
            target.write_bytes(ray.get(ref))
            local[path] = str(target)
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _ray_task(fn: Callable[..., Any], args: tuple, key: str, env: Mapping[str, str],
              media: Mapping[str, Any], hub: Any) -> tuple[str, Any]:
    """What a Ray worker runs for a Task."""
    import ray

    last: list[Any] = []

    def report(stage: str, done: int, total: int) -> None:
        last[:] = [hub.report.remote(key, stage, done, total)]

    cancel = _PolledCancel(hub)
    try:
        with _materialised(media) as local:
            return _call(fn, args, key, env, local, _Throttle(report, UPDATES_PER_SECOND),
                         cancel)
    finally:
        cancel.stop()
        # The hub has every report before the task ends (an actor runs one caller's calls in
        # order), so the caller's last drain sees them all.
        if last:
            try:
                ray.get(last[0], timeout=5)
            except ray.exceptions.RayError:
                pass


def _ray_failure(ray: Any, key: str, exc: Exception) -> RedubError:
    """One line for a task Ray could not run to its end."""
    if isinstance(exc, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                        ray.exceptions.LocalRayletDiedError)):
        return RedubError(f"worker died {MAX_RETRIES + 1} times on {key}")
    if isinstance(exc, ray.exceptions.TaskCancelledError):
        return Cancelled()
    return RedubError(f"{key}: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}")


def _reachable(address: str) -> None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except ValueError:
        raise UsageError(f"cluster address '{address}' is not HOST:PORT, ray://HOST:PORT "
                         "or auto") from None
    except OSError as exc:
        raise RedubError(f"cannot reach the Ray cluster at {address}: "
                         f"{exc.strerror or exc}") from None


class RayExecutor:
    """Tasks on a Ray cluster (see the module's notes)."""

    def __init__(self, address: str, ship_media: bool = False) -> None:
        try:
            import ray
        except ImportError:
            raise RedubError(f"--cluster needs Ray, which is not installed: {INSTALL_RAY}") \
                from None
        self.address, self.ship_media = address, ship_media
        self._connected = False
        if ray.is_initialized():  # a caller that joined a cluster itself keeps it
            return
        if address != "auto":
            # Ray retries an unreachable address for minutes; a refused port fails here now.
            _reachable(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ValueError, ConnectionError, RuntimeError) as exc:  # ValueError: Ray Client
            ray.shutdown()  # a half-made connection would make every later ray.init fail
            raise RedubError(f"cannot join the Ray cluster at {address}: "
                             f"{str(exc).splitlines()[0]}") from None
        self._connected = True

    def run(self, tasks: Sequence[Task], *, progress: ProgressCallback = _no_progress,
            on_done: DoneCallback = _no_done,
            cancel: CancelToken | None = None) -> dict[str, Any]:
        import ray

        _check(tasks)
        self._check_gpus(tasks)
        hub = ray.remote(num_cpus=0)(_Hub).remote()
        remote = ray.remote(_ray_task)
        env = _redub_env()
        shipped: dict[str, Any] = {}
        if self.ship_media:
            for path in dict.fromkeys(m for t in tasks for m in t.media):
                try:
                    shipped[path] = ray.put(Path(path).read_bytes())
                except OSError as exc:
                    raise RedubError(f"cannot read it to ship it: {exc.strerror or exc}",
                                     path) from None
        (pending, ended), running = _queues(tasks), {}
        try:
            while pending or running:
                if cancel is not None and cancel.cancelled:
                    self._cancel(hub, running, ended, progress, on_done)
                while (task := pending.first_ready()) is not None:
                    pending.remove(task)
                    ref = remote.options(
                        num_cpus=task.resources.cpus, num_gpus=task.resources.gpus,
                        max_retries=MAX_RETRIES, retry_exceptions=False,
                        name=f"redub:{task.key}",
                    ).remote(task.fn, task.args, task.key, env,
                             {m: shipped.get(m) for m in task.media}, hub)
                    running[ref] = task.key
                if pending and not running:
                    raise ValueError("tasks wait for each other in a circle: "
                                     + ", ".join(t.key for t in pending))
                self._collect(hub, running, 0.2, ended, progress, on_done)
            for report in ray.get(hub.drain.remote()):  # the last tasks' last reports
                progress(*report)
        finally:
            ray.kill(hub)
        return ended

    def close(self) -> None:
        if self._connected:
            import ray

            ray.shutdown()
            self._connected = False

    @staticmethod
    def _check_gpus(tasks: Sequence[Task]) -> None:
        import ray

        wanting = [t for t in tasks if t.resources.gpus > 0]
        if wanting and not ray.cluster_resources().get("GPU"):
            raise RedubError(f"the Ray cluster has no GPU, and task {wanting[0].key} needs "
                             f"{wanting[0].resources.gpus:g} of one")

    @staticmethod
    def _collect(hub: Any, running: dict[Any, str], timeout: float, ended: dict[str, Any],
                 progress: ProgressCallback, on_done: DoneCallback,
                 cancelling: bool = False) -> None:
        import ray

        if running:
            ray.wait(list(running), num_returns=1, timeout=timeout)
        else:
            time.sleep(timeout)
        for report in ray.get(hub.drain.remote()):
            progress(*report)
        if not running:
            return
        done, _ = ray.wait(list(running), num_returns=len(running), timeout=0)
        for ref in done:
            key = running.pop(ref)
            try:
                status, value = ray.get(ref)
            except ray.exceptions.RayError as exc:
                if cancelling:  # killed by the cancel itself
                    continue
                status, value = "err", _ray_failure(ray, key, exc)
            if status == "cancelled":
                if cancelling:
                    continue
                value = Cancelled()
            ended[key] = value
            on_done(key, value)

    def _cancel(self, hub: Any, running: dict[Any, str], ended: dict[str, Any],
                progress: ProgressCallback, on_done: DoneCallback) -> None:
        import ray

        hub.cancel.remote()
        deadline = time.monotonic() + CANCEL_GRACE
        while running and time.monotonic() < deadline:
            self._collect(hub, running, 0.1, ended, progress, on_done, cancelling=True)
        for ref in running:  # still running after the grace: their workers are killed
            ray.cancel(ref, force=True)
        deadline = time.monotonic() + CANCEL_GRACE
        while running and time.monotonic() < deadline:
            self._collect(hub, running, 0.1, ended, progress, on_done, cancelling=True)
        raise Cancelled()
