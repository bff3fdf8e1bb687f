"""Executors: worker processes on this machine and a Ray cluster (tests/ray_cluster.py, a head
and two workers on 127.0.0.1) run the same tasks with the same outcomes: results by key,
progress, ordering, errors returned not retried, cancel, a killed worker's task retried."""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.errors import Cancelled, RedubError, UsageError
from engine.progress import CancelToken
from engine.timeline.executors import (CANCEL_GRACE, MAX_RETRIES, Resources, Task,
                                       create_executor)
from engine.timeline.local_executor import LocalExecutor
from tests import executor_tasks as tasks
from tests.ray_cluster import (TaskKiller, free_port, local_ray,  # noqa: F401 - fixtures
                               ray_client, ray_cluster)


@pytest.fixture(params=["local", "ray"])
def executor(request):
    if request.param == "local":
        ex = create_executor(workers=2)
    else:
        ex = create_executor(cluster=request.getfixturevalue("ray_cluster"))
    yield ex
    ex.close()


def test_results_progress_order_and_errors(executor, tmp_path):
    log, failures = tmp_path / "order.log", tmp_path / "fail.log"
    reports, done = [], []
    results = executor.run(
        [Task("b", tasks.stamp, (str(log), "b", 0.0), after=("a",)),
         Task("a", tasks.stamp, (str(log), "a", 0.5)),
         Task("x1", tasks.double, (1,), Resources(cpus=0.5)),
         Task("x2", tasks.double, (21,)),
         Task("bad", tasks.fail, (str(failures),))],
        progress=lambda *r: reports.append(r), on_done=lambda k, r: done.append(k))

    assert results["x1"][0] == 2 and results["x2"][0] == 42
    assert os.getpid() not in (results["x1"][1], results["x2"][1])  # never in the caller
    assert results["a"] == "a" and results["b"] == "b"
    assert log.read_text().splitlines() == ["start a", "end a", "start b", "end b"]
    # The task's own exception, by key, once: an application error is not retried.
    assert isinstance(results["bad"], RedubError)
    assert str(results["bad"]) == "/clips/shot.mov: no face in the analysed range"
    assert failures.read_text().splitlines() == ["attempt"]
    assert sorted(done) == ["a", "b", "bad", "x1", "x2"]
    # Throttled to five reports a second, but a stage's start and end always arrive.
    for key in ("x1", "x2"):
        assert [r for r in reports if r[0] == key][-1] == (key, "double", 2, 2)


def _cancel_once(started: Path, token: CancelToken) -> list[float]:
    """Cancel ``token`` as soon as ``started`` exists; returns [the time of the cancel]."""
    when: list[float] = []

    def watch() -> None:
        while not started.exists():
            time.sleep(0.02)
        when.append(time.monotonic())
        token.cancel()

    threading.Thread(target=watch, daemon=True).start()
    return when


@pytest.mark.parametrize("task", [tasks.until_cancelled, tasks.deaf],
                         ids=["checks", "deaf"])
def test_cancel_stops_every_task_within_seconds(executor, tmp_path, task):
    started, token = tmp_path / "started", CancelToken()
    when = _cancel_once(started, token)
    with pytest.raises(Cancelled):
        executor.run([Task("long", task, (str(started),)),
                      Task("later", tasks.double, (1,), after=("long",))], cancel=token)
    took = time.monotonic() - when[0]
    print(f"cancel -> run() raised: {took:.2f} s ({task.__name__})")
    # A task that checks stops at once; one that never checks is killed after the grace.
    assert took < (2.0 if task is tasks.until_cancelled else CANCEL_GRACE + 3.0)
    # The executor is still good for the next run.
    assert executor.run([Task("again", tasks.double, (2,))])["again"][0] == 4


def test_a_killed_worker_is_retried_then_reported(executor, tmp_path, monkeypatch):
    pids = tmp_path / "pids"
    monkeypatch.setenv("REDUB_TASK_PIDS", str(pids))
    once, thrice = tmp_path / "once.log", tmp_path / "thrice.log"
    killers = [TaskKiller(pids, "once", times=1, after_s=0.3),
               TaskKiller(pids, "thrice", times=MAX_RETRIES + 1, after_s=0.3)]
    for killer in killers:
        killer.start()
    results = executor.run([Task("once", tasks.count_attempts, (str(once), 1.0, "done")),
                            Task("thrice", tasks.count_attempts, (str(thrice), 1.0, "never"))])
    for killer in killers:
        killer.join(timeout=5)
    assert results["once"] == "done"
    assert once.read_text().splitlines() == ["attempt"] * 2
    assert len(killers[0].killed) == 1 and os.getpid() not in killers[0].killed
    assert isinstance(results["thrice"], RedubError)
    assert str(results["thrice"]) == "worker died 3 times on thrice"
    assert thrice.read_text().splitlines() == ["attempt"] * 3
    assert len(set(killers[1].killed)) == 3  # a fresh process each time


def test_inline_runs_in_the_caller(tmp_path):
    log = tmp_path / "order.log"
    ex = create_executor(workers=0)
    results = ex.run([Task("b", tasks.stamp, (str(log), "b", 0.0), after=("a",)),
                      Task("a", tasks.stamp, (str(log), "a", 0.0)),
                      Task("x", tasks.double, (3,)),
                      Task("bad", tasks.fail, (str(tmp_path / "fail.log"),))])
    assert results["x"] == (6, os.getpid())
    assert log.read_text().splitlines() == ["start a", "end a", "start b", "end b"]
    assert isinstance(results["bad"], RedubError)
    ex.close()


def test_task_lists_refused_before_anything_runs():
    ex = LocalExecutor(workers=2)
    with pytest.raises(ValueError, match="circle"):
        ex.run([Task("a", tasks.double, (1,), after=("b",)),
                Task("b", tasks.double, (1,), after=("a",))])
    with pytest.raises(ValueError, match="unknown"):
        ex.run([Task("a", tasks.double, (1,), after=("z",))])
    with pytest.raises(ValueError, match="unique"):
        ex.run([Task("a", tasks.double, (1,)), Task("a", tasks.double, (2,))])
    assert ex._pool == []  # no process was started for them
    ex.close()


def test_local_workers_read_media_in_place(tmp_path):
    clip = tmp_path / "clip.mov"
    clip.write_bytes(b"x" * 1000)
    ex = create_executor(workers=1)
    try:
        digest, local, _ = ex.run([Task("d", tasks.digest, (str(clip),),
                                        media=(str(clip),))])["d"]
    finally:
        ex.close()
    assert local == str(clip)


def test_ship_media_materialises_the_bytes_on_the_worker(ray_cluster, tmp_path):  # noqa: F811
    import hashlib

    clip = tmp_path / "clip.mov"
    clip.write_bytes(os.urandom(3 << 20))
    ex = create_executor(cluster=ray_cluster, ship_media=True)
    try:
        results = ex.run([Task(f"d{i}", tasks.digest, (str(clip),), media=(str(clip),))
                          for i in range(2)])
    finally:
        ex.close()
    for digest, local, existed in results.values():
        assert digest == hashlib.sha256(clip.read_bytes()).hexdigest()
        assert local != str(clip) and Path(local).name == "clip.mov" and existed
        assert not Path(local).exists()  # removed once the task ended


def test_cluster_errors_are_one_line(ray_cluster, monkeypatch):  # noqa: F811
    port = free_port()
    started = time.monotonic()
    with pytest.raises(RedubError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        create_executor(cluster=f"127.0.0.1:{port}")
    assert time.monotonic() - started < 6  # not Ray's minutes of retrying
    with pytest.raises(UsageError, match="not HOST:PORT"):
        create_executor(cluster="somewhere")
    with pytest.raises(UsageError, match="--ship-media needs --cluster"):
        create_executor(ship_media=True)
    ex = create_executor(cluster=ray_cluster)
    try:
        with pytest.raises(RedubError, match="the Ray cluster has no GPU, and task g needs 0.5"):
            ex.run([Task("g", tasks.double, (1,), Resources(gpus=0.5))])
    finally:
        ex.close()
    monkeypatch.setitem(sys.modules, "grpc", None)  # Ray Client missing: what to install
    with pytest.raises(RedubError, match=r"ray\[client\]") as error:
        create_executor(cluster=f"ray://{ray_cluster}")
    assert "\n" not in str(error.value)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(RedubError, match=r'pip install "redub-studio\[cluster\]"'):
        create_executor(cluster=ray_cluster)


def test_ray_client_addresses_run_tasks(ray_client):  # noqa: F811
    """``--cluster ray://HOST:PORT``: the tasks run on the cluster through Ray Client."""
    reports = []
    ex = create_executor(cluster=ray_client)
    try:
        results = ex.run([Task("x", tasks.double, (21,))], progress=lambda *r: reports.append(r))
    finally:
        ex.close()
    assert results["x"][0] == 42 and results["x"][1] != os.getpid()
    assert reports[-1] == ("x", "double", 2, 2)
