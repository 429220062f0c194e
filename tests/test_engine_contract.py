"""The engine contract: what every engine promises a job, whoever wrote it.

One suite, parametrized over the five built-in engines and a small third-party engine defined here
(`PoolEngine`, a ThreadPoolExecutor behind the `batchnb.engines.base.Engine` protocol, passed as
`engine=PoolEngine()`). Every engine: gives the sequential engine's output (every row once, in input
order, bit-identical scores), each part written where its chunk ran (a worker process writes its own:
the driver moves no data); retries a failing chunk, then records it with its ChunkError; never retries a
DataError; on cancel keeps its finished parts, which a later run does not redo, and counts its workers'
memory while it runs; stops a chunk over `chunk_timeout` when it can kill one; ends with progress counts
that add up; and leaves no thread or process behind once closed (the `no_leaks` fixture in conftest.py
checks every test).

The Dask and Ray cases run on clusters on 127.0.0.1 started once for this module (the chunk_timeout case
starts Dask's embedded cluster of its own). Which engines run chunks in worker processes and can kill one
is a table here (`WORKER_PROCESSES`, `KILLS`): the Engine protocol does not declare it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cloudpickle
import polars as pl
import psutil
import pytest
from clusters import Gate
from conftest import make_frame, write_source

import batchnb as bn
from batchnb.engines.base import Engine, EngineLike
from batchnb.sources import parquet

pytestmark = pytest.mark.timeout(600)

ROWS, CHUNK = 12_000, 1_000  # 12 chunks
RETRIES = 2
DEADLINE_S = 60.0  # generous: waits end as soon as their condition holds
WORKER_PROCESSES = {"processes", "dask", "ray"}  # engines whose chunks run in processes of their own
KILLS = {"processes", "dask", "ray"}  # engines whose cancel() stops a running chunk
DRIVER = f"{socket.gethostname()}:{os.getpid()}"  # how the record names this process as a part's writer


class PoolEngine:
    """A third-party engine in a few lines: the protocol is all a job needs."""

    name = "pool"
    needs_pickle = False

    def open(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batchnb-test-pool")

    def submit(self, fn: Callable[[Any], Any], arg: Any) -> Future:
        return self._pool.submit(fn, arg)

    def cancel(self, future: Future) -> None:
        future.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def worker_pids(self) -> list[int]:
        return []


# --------------------------------------------------------------------------------------------------
# What the chunks run: shipped by value, since cluster and process workers cannot import this module
# --------------------------------------------------------------------------------------------------
def scores(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select("id", (pl.col("x2").fill_null(0.0) * 2.0 + pl.col("x1").fill_null(0.0)).alias("score"))


def first_id(frame: pl.DataFrame) -> int | None:
    """The first row of a whole chunk; None for the frames a job probes the detector with (empty or a sample)."""
    if frame.height != CHUNK or frame["id"][-1] - frame["id"][0] != CHUNK - 1 or frame["id"][0] % CHUNK:
        return None
    return int(frame["id"][0])


def fails(frame: pl.DataFrame) -> pl.DataFrame:
    """Chunk 1 always raises an OSError (retried); chunk 2 a DataError (never retried)."""
    if first_id(frame) == CHUNK:
        raise OSError("disk hiccup under chunk 1")
    if first_id(frame) == 2 * CHUNK:
        raise bn.DataError("column 'x2' is not a float in chunk 2")
    return scores(frame)


class HangsOnce:
    """Hangs for good on its first attempt of chunk 0 (a marker file remembers the attempt)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __call__(self, frame: pl.DataFrame) -> pl.DataFrame:
        if first_id(frame) == 0 and not os.path.exists(self.marker):
            Path(self.marker).touch()
            time.sleep(3600)
        return scores(frame)


cloudpickle.register_pickle_by_value(sys.modules[__name__])


# --------------------------------------------------------------------------------------------------
# Engines
# --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def dask_cluster() -> Iterator[str]:
    """An embedded Dask cluster (with nannies, so a stuck worker can be restarted); yields its address."""
    dask = pytest.importorskip("dask")
    from distributed import LocalCluster
    from distributed.utils import _offload_executor

    _offload_executor.submit(lambda: None).result()  # a process-wide thread, started before any leak check
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)  # fmt: skip
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


@contextlib.contextmanager
def ray_local() -> Iterator[None]:
    """The local Ray a RayEngine starts once per process, started here before the leak check looks."""
    pytest.importorskip("ray")
    from batchnb.engines.ray import RayEngine

    engine = RayEngine(num_cpus=2)
    engine.open(2)
    engine.close()
    try:
        yield
    finally:
        RayEngine.shutdown()


ENGINE_CASES = [
    "sequential",
    "threads",
    "processes",
    pytest.param("dask", marks=pytest.mark.slow),
    pytest.param("ray", marks=pytest.mark.slow),
    "third_party",
]


@pytest.fixture(scope="module", params=ENGINE_CASES)
def make_engine(request) -> Iterator[Callable[[], str | Engine]]:
    """A factory of fresh engines of one kind (a job closes its engine at the end of each run). Module scope:
    a cluster starts once for all the tests of its engine, before the leak check of the first one."""
    name = request.param
    if name == "dask":
        from batchnb.engines.dask import DaskEngine

        with dask_cluster() as address:
            yield lambda: DaskEngine(address)
    elif name == "ray":
        from batchnb.engines.ray import RayEngine

        with ray_local():
            yield lambda: RayEngine()
    elif name == "third_party":
        yield PoolEngine
    else:
        yield lambda: name


def kind(make_engine: Callable[[], str | Engine]) -> str:
    engine = make_engine()
    return engine if isinstance(engine, str) else engine.name


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    return write_source(make_frame(ROWS, seed=8), "parquet", tmp_path_factory.mktemp("engines") / "source.parquet")


@pytest.fixture(scope="module")
def expected(source, tmp_path_factory) -> pl.DataFrame:
    """The sequential engine's output: what every engine must reproduce bit for bit."""
    result = job(source, tmp_path_factory.mktemp("engines") / "sequential", "sequential").run(progress=None)
    assert result.status == "succeeded", result.errors
    return result.read().collect()


def job(source: str, output: Path, engine: str | Engine, detector: Callable = scores, **options) -> bn.BatchJob:
    options.setdefault("backoff", bn.Backoff(base=0.0, max=0.0, jitter=False))
    options.setdefault("resources", bn.Resources(max_workers=2))
    return bn.BatchJob(source, str(output), detector=detector, chunk_size=CHUNK, engine=engine, **options)


def done_parts(output: Path) -> dict[str, int]:
    """Part file -> modification time, for the chunks the record says are done."""
    with sqlite3.connect(Path(output, "_batchnb", "state.sqlite")) as conn:
        names = [row[0] for row in conn.execute("SELECT part FROM chunks WHERE status = 'done'")]
    return {name: Path(output, name).stat().st_mtime_ns for name in names}


def part_writers(output: Path) -> set[str]:
    """host:pid of the process that wrote each finished part (recorded by the writer itself)."""
    with sqlite3.connect(Path(output, "_batchnb", "state.sqlite")) as conn:
        return {row[0] for row in conn.execute("SELECT worker FROM chunks WHERE status = 'done'")}


def wait_until(running: bn.BatchJob, holds: Callable[[bn.Progress], bool]) -> None:
    """Poll the job's progress until `holds` is true of it (a generous deadline ends a test that hangs)."""
    deadline = time.monotonic() + DEADLINE_S
    while not holds(running.status()):
        assert time.monotonic() < deadline, running.status()
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------------
# The contract
# --------------------------------------------------------------------------------------------------
def test_output_equals_the_sequential_engines(make_engine, source, expected, tmp_path) -> None:
    result = job(source, tmp_path / "out", make_engine()).run(progress=None)
    assert result.status == "succeeded", result.errors
    out = result.read().collect()
    assert out.get_column("id").to_list() == list(range(ROWS))  # every row once, in input order
    assert out.equals(expected)  # bit-identical scores
    writers = part_writers(tmp_path / "out")
    if kind(make_engine) in WORKER_PROCESSES:  # each worker writes the parts of its chunks: no data comes back
        assert writers and DRIVER not in writers, writers
    else:
        assert writers == {DRIVER}

    status = bn.status(tmp_path / "out")  # the counts a view shows at the end add up
    assert (status.status, status.chunks_done, status.chunks_total) == ("succeeded", 12, 12)
    assert (status.chunks_running, status.chunks_failed, status.rows_done, status.rows_total) == (0, 0, ROWS, ROWS)
    assert status.percent == pytest.approx(100.0)
    assert (result.rows_in, result.rows_out, result.chunks_done, result.retries) == (ROWS, ROWS, 12, 0)


def test_a_failing_chunk_is_retried_then_recorded_and_a_data_error_is_not(make_engine, source, tmp_path) -> None:
    result = job(source, tmp_path / "out", make_engine(), detector=fails, retries=RETRIES).run(progress=None)
    assert (result.status, result.chunks_done, result.chunks_failed) == ("failed", 10, 2)
    errors = {error.chunk: error for error in result.errors}
    assert set(errors) == {1, 2}
    oserror, data = errors[1], errors[2]
    assert (oserror.type, oserror.attempts, oserror.rows) == ("OSError", 1 + RETRIES, (CHUNK, 2 * CHUNK))
    assert "disk hiccup under chunk 1" in oserror.message and "fails" in oserror.traceback
    assert (data.type, data.attempts, data.rows) == ("DataError", 1, (2 * CHUNK, 3 * CHUNK))
    assert "'x2' is not a float" in data.message
    assert result.retries == RETRIES  # only the OSError was retried
    status = bn.status(tmp_path / "out")
    assert (status.chunks_done, status.chunks_failed, status.chunks_running) == (10, 2, 0)


def test_cancel_keeps_finished_parts_and_a_later_run_resumes(make_engine, source, expected, tmp_path) -> None:
    out, release = tmp_path / "out", tmp_path / "release"
    running = job(source, out, make_engine(), detector=Gate(release, CHUNK, detector=scores)).start(progress=None)
    try:
        wait_until(running, lambda progress: progress.chunks_done >= 2)
        if kind(make_engine) in WORKER_PROCESSES:  # their memory is the job's too
            wait_until(running, lambda progress: progress.rss_bytes > psutil.Process().memory_info().rss)
        running.cancel()
    finally:
        release.touch()  # chunks still waiting go on (or were stopped) either way
    cancelled = running.wait(timeout=DEADLINE_S)
    assert cancelled.status == "cancelled" and 2 <= cancelled.chunks_done < cancelled.chunks_total
    kept = done_parts(out)
    assert len(kept) == cancelled.chunks_done

    result = job(source, out, make_engine(), detector=Gate(release, CHUNK, detector=scores)).run(progress=None)
    assert result.status == "succeeded" and result.read().collect().equals(expected)
    assert {name: mtime for name, mtime in done_parts(out).items() if name in kept} == kept  # not redone


def test_a_chunk_over_chunk_timeout_is_stopped_and_retried(make_engine, source, expected, tmp_path) -> None:
    if kind(make_engine) not in KILLS:
        pytest.skip("this engine cannot stop a running chunk (a thread is abandoned, not killed)")
    hangs = HangsOnce(tmp_path / "hung")
    resources = bn.Resources(max_workers=2, chunk_timeout=3)
    engine = make_engine()
    if kind(make_engine) == "dask":  # a cluster of its own: the worker its nanny restarts ends with it
        from batchnb.engines.dask import DaskEngine

        engine = DaskEngine(n_workers=2)
    result = job(source, tmp_path / "out", engine, detector=hangs, retries=1, resources=resources).run(progress=None)
    # The first attempt sleeps for an hour: the job ends only because it was stopped (the leak check
    # then sees that no process runs it any more).
    assert (tmp_path / "hung").exists()
    assert result.status == "succeeded", result.errors
    assert result.read().collect().equals(expected)
    # The hung chunk ran twice. Stopping it may take down its worker, and the chunks queued there run
    # again too (Dask restarts the worker): those are retries of the job, not failures of the chunk.
    with sqlite3.connect(Path(tmp_path, "out", "_batchnb", "state.sqlite")) as conn:
        [(attempts,)] = conn.execute("SELECT attempts FROM chunks WHERE idx = 0").fetchall()
    assert attempts == 2 and result.retries >= 1


def test_close_leaves_nothing_running(make_engine) -> None:
    engine = make_engine()
    if isinstance(engine, str):
        engine = bn.engines.create(engine)
    assert isinstance(engine, EngineLike)  # the core every engine has, built in or not
    engine.open(2)
    try:
        futures = [engine.submit(abs, -i) for i in range(5)]
        assert [f.result(timeout=DEADLINE_S) for f in futures] == list(range(5))
    finally:
        engine.close()
    # no_leaks (conftest.py) fails this test if a batchnb thread or a worker process is still running


def pool_threads(frame: pl.DataFrame) -> pl.DataFrame:
    """The size of Polars' thread pool and of the row-group cache in the process that scores the chunk."""
    return frame.select(
        "id",
        pl.lit(pl.thread_pool_size(), dtype=pl.Int64).alias("threads"),
        pl.lit(parquet._CACHE.max_bytes, dtype=pl.Int64).alias("cache_bytes"),
    )


def test_worker_processes_share_the_cores_between_their_thread_pools(make_engine, source, tmp_path) -> None:
    """Worker processes batchnb starts size Polars' pool so that workers x threads <= cores."""
    if kind(make_engine) not in WORKER_PROCESSES:
        pytest.skip("chunks run in this process, on its own thread pool")
    engine = make_engine()
    if kind(make_engine) == "dask":  # an embedded cluster: batchnb starts its workers
        from batchnb.engines.dask import DaskEngine

        engine = DaskEngine(n_workers=2)
    result = job(source, tmp_path / "out", engine, detector=pool_threads).run(progress=None)
    assert result.status == "succeeded", result.errors
    out = result.read().collect()
    threads, cache_bytes = set(out.get_column("threads")), set(out.get_column("cache_bytes"))
    cores = len(os.sched_getaffinity(0))
    assert threads == {max(1, cores // 2)}, (threads, cores)  # 2 workers
    assert cache_bytes == {parquet.CACHE_BYTES // 2}  # and the machine's cache bytes: two keep no more than one


def test_a_kernel_keeps_the_whole_cache_and_worker_processes_split_it(monkeypatch) -> None:
    from batchnb.engines.base import worker_env
    from batchnb.frame_cache import WORKER_PROCESSES, host_share

    monkeypatch.delenv(WORKER_PROCESSES, raising=False)
    assert host_share(1000) == 1000
    assert worker_env(4)[WORKER_PROCESSES] == "4" and worker_env(8, processes=2)[WORKER_PROCESSES] == "2"
    monkeypatch.setenv(WORKER_PROCESSES, "4")
    assert host_share(1000) == 250
    monkeypatch.setenv(WORKER_PROCESSES, "many")  # a value someone else set: ignored, not a crash at import
    assert host_share(1000) == 1000


def _lock(_: object) -> object:
    return threading.Lock()


def _raise_holding_a_lock(_: object) -> object:
    error = ValueError("held a lock")
    error.lock = threading.Lock()  # type: ignore[attr-defined]
    raise error


def test_a_worker_processs_unpicklable_result_or_error_reaches_the_driver_as_an_error() -> None:
    engine = bn.engines.create("processes")
    engine.open(1)
    try:
        result, error = engine.submit(_lock, None), engine.submit(_raise_holding_a_lock, None)
        with pytest.raises(RuntimeError, match=r"result \(lock\) cannot be pickled"):
            result.result(timeout=DEADLINE_S)
        with pytest.raises(RuntimeError, match="ValueError: held a lock"):
            error.result(timeout=DEADLINE_S)
    finally:
        engine.close()
