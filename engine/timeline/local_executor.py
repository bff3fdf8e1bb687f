"""Tasks on worker processes of this machine: the batch's default executor.

Worker processes ('spawn': the engine runs threads and onnxruntime, which a fork would copy
mid-flight), kept for the executor's life, so one pays its imports once. A task is sent to an
idle worker over its own pipe; progress comes back on that pipe and is handed to the caller's
callbacks on the caller's thread (run() waits on every pipe and process). A worker that dies
(killed, crashed, out of memory) is replaced and its task re-sent, at most MAX_RETRIES times.
Cancel goes to every worker through one shared event. ``workers=0`` runs the tasks inline in
the caller, one after another: no isolation and no retries, for debugging and profiling.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for
from typing import Any

from engine.errors import Cancelled, RedubError, UsageError
from engine.progress import CancelToken
from engine.timeline.executors import (CANCEL_GRACE, MAX_RETRIES, UPDATES_PER_SECOND,
                                       DoneCallback, Pending, ProgressCallback, Task, Throttle,
                                       call_task, check_tasks, no_done, no_progress, queues,
                                       redub_env)


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

        outcome = call_task(fn, args, key, env, media, Throttle(report, UPDATES_PER_SECOND), cancel)
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

    def run(self, tasks: Sequence[Task], *, progress: ProgressCallback = no_progress,
            on_done: DoneCallback = no_done,
            cancel: CancelToken | None = None) -> dict[str, Any]:
        check_tasks(tasks)
        if self.workers == 0:
            return self._run_inline(tasks, progress, on_done, cancel or CancelToken())
        pending, ended = queues(tasks)
        deaths: dict[str, int] = {}
        env = redub_env()
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
        pending, ended = queues(tasks)
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

    def _send(self, worker: _Worker, task: Task, env: dict[str, str], pending: Pending,
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

    def _collect(self, timeout: float, pending: Pending | None, ended: dict[str, Any],
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

    def _bury(self, worker: _Worker, pending: Pending | None, ended: dict[str, Any],
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
