"""Dask and Ray engines against real clusters on 127.0.0.1 (started and stopped by tests/clusters.py).

Only what needs a real cluster is here: joining one by address, a worker killed with SIGKILL mid-job
(it costs only a retry of its chunks), a scheduler or head node that goes away (the job ends `failed`
with an `EngineError` and a later `run()` resumes), chunks of a row group kept on one worker, adaptive
scaling, the workers' metrics, and the local Ray's life in a process. What every engine does (output,
retries, cancel and resume, chunk_timeout, parts written by the workers, counts, close) is the engine
contract, tests/test_engine_contract.py; what the embedded clusters listen on is tests/test_network.py.

Chunks that a test acts on are held by a `Gate` until it opens it: no sleep decides a race.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import psutil
import pytest
from clusters import Gate, SlowMAD, dask_cluster, ray_cluster, scores, slow_scores, stop_tree
from conftest import make_frame, write_source

import batchnb as bn
from batchnb.engines.dask import DaskEngine
from batchnb.engines.ray import RayEngine

pytestmark = pytest.mark.timeout(300)

ROWS, CHUNK = 12_000, 1_000  # 12 chunks
DEADLINE_S = 60.0  # generous: waits end as soon as their condition holds


@pytest.fixture(scope="module", autouse=True)
def process_wide_threads() -> None:
    """distributed keeps one offload thread for the life of the process (a module-level executor):
    start it before the leak check takes its snapshot, as it would be in any kernel that used Dask."""
    from distributed.utils import _offload_executor

    _offload_executor.submit(lambda: None).result()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    return write_source(make_frame(ROWS, seed=5), "parquet", tmp_path_factory.mktemp("dist") / "source.parquet")


@pytest.fixture(scope="module")
def expected(source, tmp_path_factory) -> pl.DataFrame:
    """The sequential engine's output: what every cluster run must reproduce exactly."""
    out = tmp_path_factory.mktemp("dist") / "sequential"
    result = cluster_job(source, out, scores, engine="sequential").run(progress=None)
    assert result.status == "succeeded"
    return result.read().collect()


@pytest.fixture
def gate(tmp_path) -> Iterator[Gate]:
    """The first two chunks to arrive run, the rest wait until the test opens the gate (at the end in any case)."""
    gate = Gate(tmp_path / "release", CHUNK)
    yield gate
    gate.open()


def cluster_job(source: str, output: Path, detector: Callable, **options) -> bn.BatchJob:
    options.setdefault("backoff", bn.Backoff(base=0.0, max=0.0, jitter=False))
    return bn.BatchJob(source, str(output), detector=detector, chunk_size=CHUNK, **options)


def wait_for_chunks(job: bn.BatchJob, n: int, timeout: float = DEADLINE_S) -> bn.Progress:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = job.status()
        if progress.chunks_done >= n:
            return progress
        assert progress.status in ("pending", "planning", "running"), progress
        time.sleep(0.05)
    raise TimeoutError(f"fewer than {n} chunks done after {timeout}s")


def part_writers(output: Path) -> set[str]:
    """host:pid of the process that wrote each finished part (recorded by the worker itself)."""
    with sqlite3.connect(Path(output, "_batchnb", "state.sqlite")) as conn:
        return {row[0] for row in conn.execute("SELECT worker FROM chunks WHERE status = 'done'")}


def done_parts(output: Path) -> dict[str, int]:
    """Part file -> modification time, for the chunks the state records done."""
    with sqlite3.connect(Path(output, "_batchnb", "state.sqlite")) as conn:
        names = [row[0] for row in conn.execute("SELECT part FROM chunks WHERE status = 'done'")]
    return {name: Path(output, name).stat().st_mtime_ns for name in names}


def assert_same_output(result: bn.JobResult, expected: pl.DataFrame) -> None:
    assert result.status == "succeeded", result.errors
    assert result.read().collect().equals(expected)
    assert result.chunks_done == result.chunks_total


# --------------------------------------------------------------------------------------------------
# Options (no cluster)
# --------------------------------------------------------------------------------------------------
def test_engine_options_are_checked_at_construction() -> None:
    with pytest.raises(bn.ConfigError, match=r"`n_workers`.*embedded"):
        DaskEngine("tcp://127.0.0.1:8786", n_workers=2)
    with pytest.raises(bn.ConfigError, match="`adapt`"):
        DaskEngine(adapt=(3, 1))
    with pytest.raises(bn.ConfigError, match="`threads_per_worker`"):
        DaskEngine(threads_per_worker=0)
    with pytest.raises(bn.ConfigError, match=r"`num_cpus`.*local Ray"):
        RayEngine("auto", num_cpus=2)
    assert bn.engines.DaskEngine is DaskEngine and bn.engines.RayEngine is RayEngine


def test_importing_batchnb_imports_no_cluster_library() -> None:
    code = "import sys, batchnb as bn; bn.engines.DaskEngine; bn.engines.RayEngine; print(sorted(m for m in ('dask', 'distributed', 'ray') if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "[]", run.stderr


# --------------------------------------------------------------------------------------------------
# Dask
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_dask_cluster_survives_a_worker_killed_mid_job(tmp_path, source, expected, gate) -> None:
    with dask_cluster(tmp_path, n_workers=3) as cluster:
        engine = DaskEngine(cluster.address)
        job = cluster_job(source, tmp_path / "out", gate, engine=engine, retries=2).start(progress=None)
        wait_for_chunks(job, 2)
        victim = cluster.busy_worker()  # it holds a chunk at the gate
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=DEADLINE_S) == -signal.SIGKILL
        gate.open()
        result = job.wait(timeout=120)

        assert_same_output(result, expected)
        assert result.retries >= 1  # its running chunk failed with KilledWorker and ran again elsewhere
        writers = part_writers(tmp_path / "out")
        assert f"{socket.gethostname()}:{os.getpid()}" not in writers  # every part was written on a worker
        assert {int(w.rsplit(":", 1)[1]) for w in writers} <= {w.pid for w in cluster.workers}
        assert job.verify().ok


@pytest.mark.slow
def test_dask_sends_every_chunk_of_a_row_group_to_one_worker(tmp_path) -> None:
    """Each worker process caches the row groups it decodes: all chunks of a group go to one worker (a group is
    read once on the cluster, not once per worker), and the groups are dealt so that every worker has work."""
    frame = make_frame(4 * ROWS, seed=6)
    source = tmp_path / "groups.parquet"
    frame.write_parquet(source, row_group_size=8_000)  # 6 row groups of 4 chunks
    with dask_cluster(tmp_path, n_workers=3) as cluster:
        job = bn.BatchJob(str(source), str(tmp_path / "out"), detector=slow_scores, chunk_size=2_000,
                          engine=DaskEngine(cluster.address))  # fmt: skip
        result = job.run(progress=None)
        assert result.status == "succeeded", result.errors
        assert result.read().collect().get_column("id").equals(frame.get_column("id"))
        with sqlite3.connect(tmp_path / "out" / "_batchnb" / "state.sqlite") as conn:
            writers = dict(conn.execute("SELECT idx, worker FROM chunks"))
        by_group = [Counter(writers[i] for i in range(4 * g, 4 * g + 4)) for g in range(6)]
        # Each group has one home worker; at the tail a worker that has run out of groups may take a queued
        # chunk of another's rather than wait (Dask's work stealing): at most one such chunk per worker.
        assert all(group.most_common(1)[0][1] >= 3 for group in by_group), by_group
        assert sum(4 - group.most_common(1)[0][1] for group in by_group) <= 2, by_group
        assert len({group.most_common(1)[0][0] for group in by_group}) == 3  # every worker had groups of its own


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["dask", "ray"])
def test_a_fitted_detector_runs_each_row_group_as_one_task(tmp_path, engine, ray_driver) -> None:
    """A row group's chunks run in order on one worker, which scores the group once (Ray cannot route single
    chunks to one worker: two workers decoded each group), and each chunk is still recorded alone."""
    frame = make_frame(4 * ROWS, seed=6)
    source = tmp_path / "groups.parquet"
    frame.write_parquet(source, row_group_size=8_000)  # 6 row groups of 4 chunks
    opts = {"detector": "mad", "keep": ["id"], "chunk_size": 2_000}
    expected = bn.BatchJob(str(source), str(tmp_path / "seq"), engine="sequential", **opts).run(progress=None)
    with dask_cluster(tmp_path, n_workers=2) if engine == "dask" else contextlib.nullcontext() as cluster:
        chosen = DaskEngine(cluster.address) if engine == "dask" else RayEngine(num_cpus=2)
        result = bn.BatchJob(str(source), str(tmp_path / "out"), engine=chosen, **opts).run(progress=None)
        assert result.status == "succeeded", result.errors
        assert result.read().collect().equals(expected.read().collect())
        with sqlite3.connect(tmp_path / "out" / "_batchnb" / "state.sqlite") as conn:
            writers = dict(conn.execute("SELECT idx, worker FROM chunks"))
        assert len(writers) == 24 and f"{socket.gethostname()}:{os.getpid()}" not in writers.values()
        assert all(len({writers[i] for i in range(4 * g, 4 * g + 4)}) == 1 for g in range(6)), writers
        assert len(set(writers.values())) >= 2  # the groups were shared out


@pytest.mark.slow
def test_dask_worker_killed_during_a_row_groups_task_costs_only_that_task(tmp_path) -> None:
    """A row group's chunks run as one task: a worker killed in the middle of one fails that task's chunks, which
    run again; the chunks already recorded stay as they are, and the output is complete and exact."""
    frame = make_frame(4 * ROWS, seed=6)
    source = tmp_path / "groups.parquet"
    frame.write_parquet(source, row_group_size=8_000)  # 6 row groups of 4 chunks, each group scored in ~1 s
    opts = {"detector": SlowMAD(seconds=1.0), "keep": ["id"], "chunk_size": 2_000}
    expected = bn.BatchJob(str(source), str(tmp_path / "seq"), engine="sequential", **opts).run(progress=None)
    with dask_cluster(tmp_path, n_workers=2) as cluster:
        job = bn.BatchJob(str(source), str(tmp_path / "out"), engine=DaskEngine(cluster.address), retries=2,
                          backoff=bn.Backoff(base=0.0, max=0.0, jitter=False), **opts)  # fmt: skip
        job.start(progress=None)
        wait_for_chunks(job, 4)  # a first row group is done and recorded
        first = done_parts(tmp_path / "out")
        victim = cluster.busy_worker()  # it runs the task of another group
        victim.send_signal(signal.SIGKILL)
        result = job.wait(timeout=120)

        assert_same_output(result, expected.read().collect())
        assert result.retries >= 1 and job.verify().ok
        after = done_parts(tmp_path / "out")
        assert all(after[name] == mtime for name, mtime in first.items())  # finished parts were not redone


@pytest.mark.slow
def test_dask_worker_metrics_count_workers_psutil_cannot_see(tmp_path, monkeypatch) -> None:
    with dask_cluster(tmp_path, n_workers=2) as cluster:
        engine = DaskEngine(cluster.address)
        engine.open(2)
        try:
            assert engine.capacity() == 2
            assert engine.remote_resources() == (0.0, 0)  # here the workers are our children: psutil counts them
            monkeypatch.setattr("batchnb.engines.dask._local_pids", set)  # as if they ran on other machines
            cpu, rss = engine.remote_resources()
        finally:
            engine.close()
        psutil_rss = sum(psutil.Process(w.pid).memory_info().rss for w in cluster.workers)
        assert 0.5 * psutil_rss < rss < 2 * psutil_rss
        assert cpu >= 0.0


@pytest.mark.slow
def test_dask_scheduler_loss_fails_the_job_and_run_resumes(tmp_path, source, expected, gate) -> None:
    out = tmp_path / "out"
    with dask_cluster(tmp_path, n_workers=2) as cluster:
        job = cluster_job(source, out, gate, engine=DaskEngine(cluster.address)).start(progress=None)
        wait_for_chunks(job, 2)
        cluster.kill_scheduler()
        with pytest.raises(bn.EngineError, match=r"lost the Dask scheduler.*run\(\) again"):
            job.wait(timeout=60)  # noticed, not waited out: a TimeoutError otherwise

        status = bn.status(out)
        assert status.status == "failed" and status.chunks_running == 0
        assert "lost the Dask scheduler" in status.last_error
        assert not job.result().errors  # the lost cluster is not blamed on any chunk
        kept = done_parts(out)
        assert len(kept) == status.chunks_done == 2  # the chunks at the gate never finished
        assert job.verify().ok

        for worker in cluster.workers:  # workers of the old scheduler (they would wait out a SIGTERM); fresh ones
            stop_tree(worker, signal.SIGKILL)
        cluster.workers.clear()
        gate.open()
        cluster.start_scheduler()  # same address
        cluster.add_workers(2)
        result = job.run(progress=None)

    assert_same_output(result, expected)
    assert {name: mtime for name, mtime in done_parts(out).items() if name in kept} == kept  # not redone


# --------------------------------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def ray_driver(monkeypatch):
    """Token authentication for drivers that join the test clusters; disconnected at the end."""
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    yield
    RayEngine.shutdown()


@pytest.mark.slow
def test_ray_local_starts_once_per_process_and_refuses_a_driver_without_its_token(
    tmp_path, source, expected, ray_driver, monkeypatch
) -> None:
    import ray
    from ray._raylet import AuthenticationMode, get_authentication_mode

    first = cluster_job(source, tmp_path / "a", scores, engine=RayEngine(num_cpus=2))
    assert_same_output(first.run(progress=None), expected)
    node = ray.get_runtime_context().get_node_id()

    # The second job reuses the Ray the first one started: ray.init is not called again.
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started twice in one process"))
    second = cluster_job(source, tmp_path / "b", scores, engine="ray")
    assert_same_output(second.run(progress=None), expected)
    assert ray.get_runtime_context().get_node_id() == node

    assert get_authentication_mode() == AuthenticationMode.TOKEN
    gcs = ray.get_runtime_context().gcs_address
    code = f"import ray; ray.init(address={gcs!r}, log_to_driver=False)"
    # The GCS listens on 127.0.0.1 only; Ray's cluster mode off keeps the intruder's address loopback.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_gcs_server_port_wait_time_s": "1"}  # one connection attempt, not twenty  # fmt: skip
    intruder = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert intruder.returncode != 0 and "InvalidAuthToken" in intruder.stderr, intruder.stderr[-2000:]


@pytest.mark.slow
def test_ray_cluster_survives_a_worker_killed_mid_job(
    tmp_path, source, expected, gate, ray_driver, monkeypatch
) -> None:
    with ray_cluster(tmp_path, head_cpus=1, nodes=1, node_cpus=2) as cluster:
        engine = RayEngine(cluster.address)
        job = cluster_job(source, tmp_path / "out", gate, engine=engine, retries=2).start(progress=None)
        wait_for_chunks(job, 2)
        deadline = time.monotonic() + DEADLINE_S
        while not (victims := cluster.worker_processes(cluster.nodes[0])):  # they hold chunks at the gate
            assert time.monotonic() < deadline, "no Ray worker runs a chunk on the second node"
            time.sleep(0.02)
        victims[0].kill()
        gate.open()
        result = job.wait(timeout=120)

        assert_same_output(result, expected)
        assert result.retries >= 1
        assert f"{socket.gethostname()}:{os.getpid()}" not in part_writers(tmp_path / "out")
        assert job.verify().ok
        # The workers' own reports count them when psutil cannot (here they are our grandchildren).
        assert engine.remote_resources() == (0.0, 0)
        monkeypatch.setattr("batchnb.engines.ray._local_pids", set)
        cpu, rss = engine.remote_resources()
        assert 50 * 2**20 < rss < 4 * 2**30 and cpu >= 0.0
        RayEngine.shutdown()  # before the cluster goes: disconnecting from a dead head takes seconds


@pytest.mark.slow
def test_ray_head_loss_fails_the_job_and_run_resumes(tmp_path, source, expected, gate, ray_driver) -> None:
    out = tmp_path / "out"
    with ray_cluster(tmp_path, head_cpus=1, nodes=1, node_cpus=1) as cluster:
        job = cluster_job(source, out, gate, engine=RayEngine(cluster.address)).start(progress=None)
        wait_for_chunks(job, 2)
        cluster.kill_head()
        with pytest.raises(bn.EngineError, match=r"lost the Ray head node.*run\(\) again"):
            job.wait(timeout=60)  # noticed, not waited out: a TimeoutError otherwise

        status = bn.status(out)
        assert status.status == "failed" and "lost the Ray head node" in status.last_error
        assert not job.result().errors
        kept = done_parts(out)
        assert len(kept) == status.chunks_done == 2  # the chunks at the gate never finished

        for node in cluster.nodes:  # a node of the old head; the new head gets a fresh one
            stop_tree(node, signal.SIGKILL)
        cluster.nodes.clear()
        gate.open()
        cluster.start_head(num_cpus=2)  # same address
        cluster.wait_for_cpus(2)  # its raylet registered: a driver joining before that is refused
        result = job.run(progress=None)
        RayEngine.shutdown()

    assert_same_output(result, expected)
    assert {name: mtime for name, mtime in done_parts(out).items() if name in kept} == kept
