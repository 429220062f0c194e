"""Memory backpressure and chunk-size advice: a job stays under `memory_limit` whatever its function allocates."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import numpy as np
import polars as pl
import psutil
import pytest

import batchnb as bn
from batchnb.driver.memory import SETTLE_S, MemoryGuard, recommend_chunk_size

cloudpickle.register_pickle_by_value(sys.modules[__name__])

MiB = 2**20


@pytest.fixture
def source(tmp_path: Path) -> str:
    path = tmp_path / "in.parquet"
    pl.DataFrame({"id": np.arange(12_000), "x": np.random.default_rng(0).normal(size=12_000)}).write_parquet(path)
    return str(path)


HUNGRY_RUNS: list[tuple[float, float]] = []  # (start, end) of each hungry chunk, on the threads engine


def hungry(df: pl.DataFrame) -> pl.DataFrame:
    """Allocates (and touches) 300 MiB per chunk for a while: three at once would blow the limit below."""
    start = time.monotonic()
    block = np.ones(300 * MiB // 8)
    time.sleep(0.4)
    if df.height:
        HUNGRY_RUNS.append((start, time.monotonic()))
    return df.with_columns(pl.lit(float(block[0])).alias("anomaly_score"))


def most_at_once(runs: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in runs] + [(end, -1) for _, end in runs])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


class PeakRSS:
    """Samples this process's RSS every 10 ms in a background thread."""

    def __enter__(self) -> PeakRSS:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, me.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_memory_hungry_function_completes_under_the_limit_by_backpressure(source, tmp_path):
    HUNGRY_RUNS.clear()
    baseline = psutil.Process().memory_info().rss
    # Room, under the guard's 10 % headroom, for the job's own memory (~50 MiB) and two hungry chunks, not three.
    limit = int((baseline + 100 * MiB + 2 * 320 * MiB) / 0.9)
    job = bn.BatchJob(source, tmp_path / "out", detector=hungry, chunk_size=1_000, engine="threads",
                      resources=bn.Resources(max_workers=4, memory_limit=limit))  # fmt: skip
    with PeakRSS() as rss:
        result = job.run(progress=None)
    assert result.status == "succeeded" and result.rows_out == 12_000, result.errors
    assert rss.peak < limit, f"peak {rss.peak / MiB:.0f} MiB over the {limit / MiB:.0f} MiB limit"
    # Backpressure, not serial execution: the guard let at least two chunks run together at times.
    assert len(HUNGRY_RUNS) == 12 and most_at_once(HUNGRY_RUNS) >= 2


def test_without_a_tight_limit_the_same_job_runs_four_at_a_time(source, tmp_path):
    job = bn.BatchJob(source, tmp_path / "out", detector=hungry, chunk_size=1_000, engine="threads",
                      resources=bn.Resources(max_workers=4))  # fmt: skip
    with PeakRSS() as rss:
        result = job.run(progress=None)
    assert result.status == "succeeded"
    assert rss.peak - psutil.Process().memory_info().rss > 500 * MiB  # what the guarded run avoided


STARTS: list[tuple[float, float]] = []  # (start, end) of each chunk


def slow(df: pl.DataFrame) -> pl.DataFrame:
    if df.height:  # not the empty frame the job probes the output schema with
        start = time.monotonic()
        time.sleep(2.5)
        STARTS.append((start, time.monotonic()))
    return df.with_columns(pl.lit(0.0).alias("anomaly_score"))


def test_a_slow_first_chunk_holds_the_others_back_only_until_its_cost_settles(source, tmp_path):
    """Slow start waits for a finished chunk or SETTLE_S, not for a long chunk's whole run."""
    STARTS.clear()
    job = bn.BatchJob(source, tmp_path / "out", detector=slow, chunk_size=4_000, engine="threads",
                      resources=bn.Resources(max_workers=3))  # fmt: skip
    result = job.run(progress=None)
    assert result.status == "succeeded" and len(STARTS) == 3
    (_, first_end), *others = sorted(STARTS)
    assert all(start < first_end for start, _ in others)  # all started while the first still ran


def enormous(df: pl.DataFrame) -> pl.DataFrame:
    block = np.ones(1200 * MiB // 8)
    time.sleep(1.0)
    return df.with_columns(pl.lit(float(block[0])).alias("anomaly_score"))


def test_a_chunk_too_big_for_the_limit_fails_with_a_chunk_size_to_use(source, tmp_path):
    baseline = psutil.Process().memory_info().rss
    limit = baseline + 700 * MiB  # two idle workers fit; one 1.2 GiB chunk does not
    job = bn.BatchJob(source, tmp_path / "out", detector=enormous, chunk_size=6_000, engine="processes",
                      retries=2, resources=bn.Resources(max_workers=1, memory_limit=limit))  # fmt: skip
    result = job.run(progress=None)
    assert result.status == "failed"
    error = result.errors[0]
    assert error.type == "MemoryError" and error.attempts == 1  # not retried: only a smaller chunk helps
    assert "use chunk_size=" in error.message and "memory_limit=" in error.message


class GrowsLate:
    """Allocates 500 MiB only after SETTLE_S, so a second chunk has started by then; notes each start."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir

    def __call__(self, df: pl.DataFrame) -> pl.DataFrame:
        import os

        if df.height:
            (self.log_dir / f"{df['id'][0]}-{os.getpid()}").touch()
            time.sleep(1.3)
            block = np.ones(500 * MiB // 8)  # held while it sleeps
            time.sleep(2.0)
            del block
        return df.with_columns(pl.lit(0.0).alias("anomaly_score"))


def test_on_processes_the_newest_chunk_over_the_limit_is_stopped_and_runs_again_without_spending_a_retry(
    source, tmp_path
):
    starts = tmp_path / "starts"
    starts.mkdir()
    baseline = psutil.Process().memory_info().rss
    limit = baseline + 1_000 * MiB  # two idle workers and one 500 MiB chunk fit; two such chunks do not
    job = bn.BatchJob(source, tmp_path / "out", detector=GrowsLate(starts), chunk_size=6_000, engine="processes",
                      retries=0, resources=bn.Resources(max_workers=2, memory_limit=limit))  # fmt: skip
    result = job.run(progress=None)
    assert result.status == "succeeded" and result.rows_out == 12_000, result.errors
    runs = sorted(p.name.split("-")[0] for p in starts.iterdir())
    assert runs == ["0", "6000", "6000"]  # the second chunk was stopped once, then ran alone


def test_guard_admits_one_chunk_until_it_has_measured_one():
    guard = MemoryGuard(limit=1000, estimate=10)
    guard.observe(100, running=0)
    assert guard.admit(100, running=0)
    assert not guard.admit(150, running=1)  # slow start
    guard.observe(110, running=1)  # sampled before the chunk allocated: not a measurement
    assert not guard.admit(110, running=1)
    guard.observe(400, running=1, oldest_s=0.5)
    assert not guard.admit(400, running=1)  # the chunk may still grow: it has neither finished nor settled
    guard.observe(400, running=1, oldest_s=SETTLE_S)
    assert guard.cost() == 300
    assert guard.admit(400, running=1)  # 400 + 300 <= 900 (the headroom under 1000)
    assert not guard.admit(700, running=1)  # 700 + 300 > 900
    assert not guard.admit(150, running=2)  # two running chunks will reach 100 + 2 * 300 = 700, + 300 > 900
    guard2 = MemoryGuard(limit=1000, estimate=10, baseline=100, per_chunk=100, measured=True)
    assert guard2.admit(600, running=2)


def test_a_known_chunk_cost_starts_chunks_together_while_a_generous_multiple_of_it_fits():
    """A detector scoring with one Polars expression needs what its chunk's size says: no slow start while
    UNMEASURED_MARGIN times the estimate fits per running chunk; an estimate that does not fit starts slowly."""
    known = MemoryGuard(limit=10_000, estimate=10, known=True)
    known.observe(100, running=0)
    assert known.admit(100, running=1) and known.admit(100, running=2)  # 100 + 3 * 160 <= 9,000
    assert not known.admit(100, running=60)  # 100 + 61 * 160 > 9,000
    big = MemoryGuard(limit=10_000, estimate=600, known=True)
    big.observe(100, running=0)
    assert not big.admit(100, running=1)  # 600 * 16 alone is over the limit: learn the real cost first
    assert not MemoryGuard(limit=10_000, estimate=10).admit(100, running=1)  # unknown: slow start


def zero(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.lit(0.0).alias("anomaly_score"))


@pytest.mark.parametrize(("detector", "known"), [("mad", True), ("isolation_forest", False), (zero, False)])
def test_the_job_trusts_the_chunk_estimate_only_for_a_detector_scoring_with_one_expression(
    source, tmp_path, monkeypatch, detector, known
):
    from batchnb.driver import run as driver_run

    guards: list[MemoryGuard] = []

    def recording(**kwargs):
        guards.append(MemoryGuard(**kwargs))
        return guards[-1]

    monkeypatch.setattr(driver_run, "MemoryGuard", recording)
    result = bn.BatchJob(source, tmp_path / "out", detector=detector, chunk_size=6_000).run(progress=None)
    assert result.status == "succeeded" and [g.known for g in guards] == [known]


def test_recommended_chunk_size_fits_half_the_room():
    assert recommend_chunk_size(100_000, per_chunk=800 * MiB, available=400 * MiB) == 25_000
    assert recommend_chunk_size(5_000, per_chunk=10**12, available=MiB) == 1_000


def _sleep_then_pid(seconds: float) -> int:
    import os
    import time

    time.sleep(seconds)
    return os.getpid()


def test_worker_pool_runs_a_queued_task_where_its_row_group_is_cached() -> None:
    """A freed worker skips queued tasks of another worker's row group for one of its own (with FIFO it would
    take the first queued task)."""
    from batchnb.engines.pool import WorkerPool

    pool = WorkerPool(2)
    try:
        pids = {f.result(timeout=60) for f in [pool.submit(_sleep_then_pid, 0.3) for _ in range(2)]}
        assert len(pids) == 2  # both workers are up
        slow = pool.submit(_sleep_then_pid, 1.0, affinity="g0")
        fast = pool.submit(_sleep_then_pid, 0.1, affinity="g1")
        g0_next = pool.submit(_sleep_then_pid, 1.0, affinity="g0")  # first in the queue...
        g1_next = pool.submit(_sleep_then_pid, 0.0, affinity="g1")  # ...but this one is for the freed worker
        assert g1_next.result(timeout=60) == fast.result() != slow.result()
        assert g0_next.result(timeout=60) in pids  # then, rather than wait for its group's worker, any worker
    finally:
        pool.close()


def test_processes_engine_with_row_group_affinity_gives_the_sequential_output(tmp_path) -> None:
    frame = pl.DataFrame({"id": np.arange(48_000), "x": np.random.default_rng(3).normal(size=48_000)})
    source = tmp_path / "groups.parquet"
    frame.write_parquet(source, row_group_size=8_000)  # 6 row groups of 4 chunks
    outputs = {}
    for engine in ("sequential", "processes"):
        job = bn.BatchJob(str(source), str(tmp_path / engine), detector="zscore", chunk_size=2_000, engine=engine,
                          resources=bn.Resources(max_workers=2))  # fmt: skip
        result = job.run(progress=None)
        assert result.status == "succeeded", result.errors
        outputs[engine] = result.read().collect()
    assert outputs["processes"].equals(outputs["sequential"])


GRANDCHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(64 * 2**20); time.sleep(30)"])
print(child.pid, flush=True)
time.sleep(30)
"""


def test_the_resource_sample_counts_every_process_the_job_started_and_no_other() -> None:
    """Workers' own children (a cluster's nanny and its worker) count; the sample finds them without reading every
    process of the machine, and agrees with psutil's walk."""
    import subprocess

    from batchnb.driver.sampling import ResourceSampler, descendants

    sampler = ResourceSampler()
    child = subprocess.Popen([sys.executable, "-c", GRANDCHILD], stdout=subprocess.PIPE, text=True)
    try:
        grandchild = int(child.stdout.readline())
        time.sleep(0.5)  # the grandchild has touched its 64 MiB
        found = descendants(os.getpid())
        assert found is not None and {child.pid, grandchild} <= set(found)
        assert set(found) == {p.pid for p in psutil.Process().children(recursive=True)}
        _, rss = sampler.sample()
        own, theirs = psutil.Process().memory_info().rss, psutil.Process(grandchild).memory_info().rss
        assert theirs > 64 * MiB and rss >= own + theirs  # the grandchild's memory is in the job's figure
    finally:
        for p in [*psutil.Process(child.pid).children(recursive=True), psutil.Process(child.pid)]:
            p.kill()
        child.wait()
