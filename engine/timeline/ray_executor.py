"""Tasks on a Ray cluster (``--cluster``; Ray is the ``cluster`` extra).

Each task is a Ray task with its CPUs and GPU fraction, retried by Ray when its worker dies
(``max_retries``; an exception the task raises is its result, never retried). Progress and
cancellation go through a small actor (`_Hub`): tasks report to it (at most UPDATES_PER_SECOND
updates each) and poll its cancel flag from a thread; the caller drains it. ``ship_media``:
each distinct file is read once into the object store and written into a temporary folder on
the worker that runs the task (removed after the task).
"""
from __future__ import annotations

import logging
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.errors import Cancelled, RedubError, UsageError
from engine.progress import CancelToken
from engine.timeline.executors import (CANCEL_GRACE, MAX_RETRIES, UPDATES_PER_SECOND,
                                       DoneCallback, ProgressCallback, Task, Throttle,
                                       call_task, check_tasks, no_done, no_progress, queues,
                                       redub_env)

INSTALL_RAY = 'pip install "redub-studio[cluster]"'


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
            return call_task(fn, args, key, env, local, Throttle(report, UPDATES_PER_SECOND),
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

    def run(self, tasks: Sequence[Task], *, progress: ProgressCallback = no_progress,
            on_done: DoneCallback = no_done,
            cancel: CancelToken | None = None) -> dict[str, Any]:
        import ray

        check_tasks(tasks)
        self._check_gpus(tasks)
        hub = ray.remote(num_cpus=0)(_Hub).remote()
        remote = ray.remote(_ray_task)
        env = redub_env()
        shipped: dict[str, Any] = {}
        if self.ship_media:
            for path in dict.fromkeys(m for t in tasks for m in t.media):
                try:
                    shipped[path] = ray.put(Path(path).read_bytes())
                except OSError as exc:
                    raise RedubError(f"cannot read it to ship it: {exc.strerror or exc}",
                                     path) from None
        (pending, ended), running = queues(tasks), {}
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
