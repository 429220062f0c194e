"""Memory backpressure and chunk-size advice: a job stays under `memory_limit` whatever its function allocates."""

from __future__ import annotations

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
from batchnb.memory import MemoryGuard, recommend_chunk_size

cloudpickle.register_pickle_by_value(sys.modules[__name__])

MiB = 2**20


@pytest.fixture
def source(tmp_path: Path) -> str:
    path = tmp_path / "in.parquet"
    pl.DataFrame({"id": np.arange(12_000), "x": np.random.default_rng(0).normal(size=12_000)}).write_parquet(path)
    return str(path)


def hungry(df: pl.DataFrame) -> pl.DataFrame:
    """Allocates (and touches) 200 MiB per chunk for a while: four at once would blow the limit below."""
    block = np.ones(200 * MiB // 8)
    time.sleep(0.4)
    return df.with_columns(pl.lit(float(block[0])).alias("anomaly_score"))


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
    baseline = psutil.Process().memory_info().rss
    limit = baseline + 520 * MiB  # room for two hungry chunks, not four
    job = bn.BatchJob(source, tmp_path / "out", detector=hungry, chunk_size=1_000, engine="threads",
                      resources=bn.Resources(max_workers=4, memory_limit=limit))  # fmt: skip
    with PeakRSS() as rss:
        result = job.run(progress=None)
    assert result.status == "succeeded" and result.rows_out == 12_000, result.errors
    assert rss.peak < limit, f"peak {rss.peak / MiB:.0f} MiB over the {limit / MiB:.0f} MiB limit"
    # Backpressure, not serial execution: the guard let at least two chunks run together at times.
    assert result.elapsed_s < 12 * 0.4 * 0.9


def test_without_a_tight_limit_the_same_job_runs_four_at_a_time(source, tmp_path):
    job = bn.BatchJob(source, tmp_path / "out", detector=hungry, chunk_size=1_000, engine="threads",
                      resources=bn.Resources(max_workers=4))  # fmt: skip
    with PeakRSS() as rss:
        result = job.run(progress=None)
    assert result.status == "succeeded"
    assert rss.peak - psutil.Process().memory_info().rss > 500 * MiB  # what the guarded run avoided


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


def test_guard_admits_one_chunk_until_it_has_measured_one():
    guard = MemoryGuard(limit=1000, estimate=10)
    guard.observe(100, running=0)
    assert guard.admit(100, running=0)
    assert not guard.admit(150, running=1)  # slow start
    guard.observe(400, running=1)
    guard.measured = True
    assert guard.cost() == 300
    assert guard.admit(400, running=1)  # 400 + 300 <= 900 (the headroom under 1000)
    assert not guard.admit(700, running=1)  # 700 + 300 > 900
    assert not guard.admit(150, running=2)  # two running chunks will reach 100 + 2 * 300 = 700, + 300 > 900
    guard2 = MemoryGuard(limit=1000, estimate=10, baseline=100, per_chunk=100, measured=True)
    assert guard2.admit(600, running=2)


def test_recommended_chunk_size_fits_half_the_room():
    assert recommend_chunk_size(100_000, per_chunk=800 * MiB, available=400 * MiB) == 25_000
    assert recommend_chunk_size(5_000, per_chunk=10**12, available=MiB) == 1_000
