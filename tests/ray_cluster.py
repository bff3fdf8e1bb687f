"""A local Ray cluster for the tests (a head and two worker nodes on this machine, one CPU
each), and a helper that kills the process running a task.

Use: ``from tests.ray_cluster import local_ray, ray_cluster`` in a test module; ``ray_cluster``
yields the head's "host:port" for ``create_executor(cluster=...)``, ``ray_client`` (import it
too) its Ray Client address "ray://host:port". The cluster is started once per session and
skips where Ray is not installed.

Each node is its own ``ray start`` in its own process group, and is stopped by killing that
group (and the workers its raylet started), never by ``ray stop``, which would end every Ray
cluster of this user, other people's test runs included. The head gets free ports of its own
(GCS, dashboard, client server) for the same reason. Worker nodes join the head's session
folder (``--temp-dir`` applies to the head only): a short folder under /tmp, as Ray's socket
paths must stay under 108 characters. Ray advertises the machine's address rather than
127.0.0.1 for every node; the cluster is still reached at 127.0.0.1.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.timeline.executors import pid_file

REPO = Path(__file__).resolve().parents[1]
NODES = 3  # the head and two workers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRayCluster:
    """``ray start`` processes on this machine: a head and ``workers`` worker nodes."""

    def __init__(self, workers: int = 2) -> None:
        self.ray = Path(sys.executable).with_name("ray")
        self.root = Path(tempfile.mkdtemp(prefix="rayt", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.workers = workers
        self.client: str | None = None  # the Ray Client address, where ray[client] is installed
        self._groups: list[int] = []
        # Workers import the engine and tests' task modules however pytest was started. Token
        # authentication off, said outright: with the mode unset, a head turns it on when
        # ~/.ray/auth_token exists (any local ray.init() writes one) and its workers do not.
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                               os.environ.get("PYTHONPATH")]))}

    def start(self) -> None:
        head = ["--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
                "--include-dashboard=false", f"--dashboard-port={free_port()}",
                f"--temp-dir={self.root}"]
        if _has_ray_client():
            client_port = free_port()
            head.append(f"--ray-client-server-port={client_port}")
            self.client = f"ray://127.0.0.1:{client_port}"
        self._start(head)
        for _ in range(self.workers):
            self._start([f"--address={self.address}"])
        self._wait_for_nodes(1 + self.workers)

    def _start(self, options: list[str]) -> None:
        process = subprocess.Popen(
            [str(self.ray), "start", "--num-cpus=1", "--min-worker-port=0",
             "--max-worker-port=0", "--disable-usage-stats", *options],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)  # its daemons stay in this group: stopped together
        self._groups.append(process.pid)
        output, _ = process.communicate(timeout=120)
        if process.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start {' '.join(options)} failed:\n{output[-2000:]}")

    def _wait_for_nodes(self, count: int, timeout: float = 60) -> None:
        # A fresh interpreter: joining here would leave this one connected for the tests.
        script = ("import ray, time\n"
                  f"ray.init(address='{self.address}', logging_level='ERROR')\n"
                  f"deadline = time.time() + {timeout}\n"
                  f"while sum(n['Alive'] for n in ray.nodes()) < {count}:\n"
                  "    assert time.time() < deadline, ray.nodes()\n"
                  "    time.sleep(0.2)\n")
        subprocess.run([sys.executable, "-c", script], env=self.env, check=True,
                       timeout=timeout + 60, capture_output=True)

    def stop(self) -> None:
        victims = []
        for group in self._groups:
            for pid in _group_members(group):
                victims.append(pid)
                victims += _descendants(pid)  # task workers: the raylet's children
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in victims:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 3
            while any(_alive(pid) for pid in victims) and time.monotonic() < deadline:
                time.sleep(0.1)
        self._groups = []
        shutil.rmtree(self.root, ignore_errors=True)


def _has_ray_client() -> bool:
    try:
        import grpc  # noqa: F401 - Ray Client's server needs it
    except ImportError:
        return False
    return True


def _group_members(group: int) -> list[int]:
    import psutil

    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == group:
                members.append(process.pid)
        except (ProcessLookupError, PermissionError):
            pass
    return members


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="session")
def local_ray() -> Iterator[LocalRayCluster]:
    """A head and two worker nodes on 127.0.0.1, one CPU each."""
    pytest.importorskip("ray")
    cluster = LocalRayCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def ray_cluster(local_ray: LocalRayCluster) -> str:
    """The local cluster's head address (HOST:PORT)."""
    return local_ray.address


@pytest.fixture(scope="session")
def ray_client(local_ray: LocalRayCluster) -> str:
    """The local cluster's Ray Client address (ray://HOST:PORT)."""
    if local_ray.client is None:
        pytest.skip("Ray Client (ray[client]) is not installed")
    return local_ray.client


class TaskKiller(threading.Thread):
    """Kills the process running task ``key`` (SIGKILL) ``times`` times, each time once the
    task has (re)started and run ``after_s`` seconds. The tasks must run with
    ``REDUB_TASK_PIDS=pid_folder`` (see engine.timeline.executors). ``killed`` lists the PIDs."""

    def __init__(self, pid_folder: Path, key: str, times: int = 1, after_s: float = 0.0,
                 timeout: float = 120) -> None:
        super().__init__(daemon=True)
        self.file = pid_file(Path(pid_folder), key)
        self.times, self.after_s, self.timeout = times, after_s, timeout
        self.killed: list[int] = []

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while len(self.killed) < self.times and time.monotonic() < deadline:
            if not self.file.exists():
                time.sleep(0.02)
                continue
            pid = int(self.file.read_text())
            self.file.unlink()
            time.sleep(self.after_s)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended first: nothing was killed
                continue
            self.killed.append(pid)
