"""Retries, timeouts, intervention, verify and live status: a job finishes with nothing lost or done twice."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import cloudpickle
import numpy as np
import polars as pl
import pytest

import batchnb as bn
from batchnb.record.store import JobState

cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROWS, CHUNK = 10_000, 1_000
FAST = bn.Backoff(base=0.05, factor=2.0, max=1.0, jitter=False)


@pytest.fixture
def source(tmp_path: Path) -> str:
    rng = np.random.default_rng(3)
    path = tmp_path / "in.parquet"
    pl.DataFrame({"id": np.arange(ROWS), "x": rng.normal(size=ROWS), "y": rng.normal(size=ROWS)}).write_parquet(path)
    return str(path)


def _scored(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns((pl.col("x").abs() + pl.col("y").abs()).alias("anomaly_score"))


class FailsUntilFlag:
    """Fails chunks whose first id is in `ids` until `flag` exists; counts calls in files (works across processes)."""

    def __init__(self, flag: Path, ids: tuple[int, ...], *, times: int | None = None) -> None:
        self.flag, self.ids, self.times = str(flag), ids, times

    def __call__(self, df: pl.DataFrame) -> pl.DataFrame:
        first = int(df["id"][0])
        if first in self.ids and not os.path.exists(self.flag):
            counter = Path(f"{self.flag}.{first}.count")
            calls = int(counter.read_text()) + 1 if counter.exists() else 1
            counter.write_text(str(calls))
            if self.times is None or calls <= self.times:
                raise ValueError(f"bad record near id {first}")
        return _scored(df)


def _part_mtimes(output: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in output.glob("part-*")}


@pytest.mark.parametrize("engine", ["threads", "processes"])
def test_transient_failure_succeeds_on_retry_with_recorded_backoff(source, tmp_path, engine):
    detector = FailsUntilFlag(tmp_path / "never", ids=(2000,), times=2)
    job = bn.BatchJob(
        source, tmp_path / "out", detector=detector, chunk_size=CHUNK, engine=engine, retries=3, backoff=FAST
    )
    result = job.run(progress=None)
    assert result.status == "succeeded"
    assert result.retries == 2
    assert result.rows_out == ROWS
    with JobState.open(job.output) as state:
        attempts = state.attempts()
    assert [(a["chunk"], a["attempt"], a["type"]) for a in attempts] == [(2, 1, "ValueError"), (2, 2, "ValueError")]
    assert [a["delay"] for a in attempts] == [0.05, 0.1]  # base * factor ** (attempt - 1), no jitter
    assert {(a["row_start"], a["row_stop"]) for a in attempts} == {(2000, 3000)}  # where the bad rows are
    assert all("bad record near id 2000" in a["traceback"] and "__call__" in a["traceback"] for a in attempts)


def test_backoff_delays_are_capped_and_jittered():
    backoff = bn.Backoff(base=1.0, factor=3.0, max=5.0, jitter=True)
    assert [backoff.ceiling(a) for a in (1, 2, 3, 4)] == [1.0, 3.0, 5.0, 5.0]
    delays = [backoff.delay(3) for _ in range(200)]
    assert all(0.0 <= d <= 5.0 for d in delays) and len(set(delays)) > 100


def test_permanent_failure_keeps_other_parts_and_reports_the_error(source, tmp_path):
    detector = FailsUntilFlag(tmp_path / "fixed", ids=(3000,))
    job = bn.BatchJob(source, tmp_path / "out", detector=detector, chunk_size=CHUNK, retries=2, backoff=FAST)
    result = job.run(progress=None)
    assert result.status == "failed"
    assert (result.chunks_done, result.chunks_failed) == (9, 1)
    out = result.read().collect()
    assert out.height == ROWS - CHUNK and 3000 not in out["id"].to_list()
    [error] = result.errors
    assert (error.chunk, error.attempts, error.type, error.rows) == (3, 3, "ValueError", (3000, 4000))
    assert error.message == "bad record near id 3000"
    assert "in __call__" in error.traceback and "raise ValueError" in error.traceback

    # Fix the cause, then retry only the failed chunk: done parts are not rewritten.
    before = _part_mtimes(Path(job.output))
    (tmp_path / "fixed").touch()
    result = job.retry_failed(progress=None)
    assert result.status == "succeeded" and result.errors == []
    after = _part_mtimes(Path(job.output))
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {"part-000003.parquet"}
    assert result.read().collect()["id"].to_list() == list(range(ROWS))


def test_skip_lets_the_job_succeed_without_the_chunk(source, tmp_path):
    job = bn.BatchJob(source, tmp_path / "out", detector=FailsUntilFlag(tmp_path / "no", ids=(5000,)),
                      chunk_size=CHUNK, retries=0)  # fmt: skip
    assert job.run(progress=None).status == "failed"
    job.skip([5])
    result = job.run(progress=None)
    assert result.status == "succeeded"
    assert (result.chunks_skipped, result.chunks_done, result.rows_in) == (1, 9, ROWS - CHUNK)
    with pytest.raises(bn.ConfigError, match="not in the plan"):
        job.skip([99])


def slow(df: pl.DataFrame) -> pl.DataFrame:
    time.sleep(0.3)
    return _scored(df)


def test_cancel_keeps_finished_parts_and_run_resumes(source, tmp_path):
    job = bn.BatchJob(source, tmp_path / "out", detector=slow, chunk_size=CHUNK, engine="sequential")
    job.start(progress=None)
    deadline = time.time() + 20
    while job.status().chunks_done < 3 and time.time() < deadline:
        time.sleep(0.05)
    job.cancel()
    cancelled = job.wait(timeout=30)
    assert cancelled.status == "cancelled"
    assert 3 <= cancelled.chunks_done < 10
    done_before = _part_mtimes(Path(job.output))
    result = job.run(progress=None)
    assert result.status == "succeeded" and result.chunks_done == 10
    after = _part_mtimes(Path(job.output))
    assert {k: after[k] for k in done_before} == done_before  # finished chunks were not redone
    reference = bn.BatchJob(source, tmp_path / "ref", detector=slow, chunk_size=CHUNK).run(progress=None)
    assert result.read().collect().equals(reference.read().collect())


def test_wait_times_out_while_running(source, tmp_path):
    job = bn.BatchJob(source, tmp_path / "out", detector=slow, chunk_size=CHUNK, engine="sequential")
    job.start(progress=None)
    with pytest.raises(TimeoutError):
        job.wait(timeout=0.2)
    job.cancel()
    assert job.wait(timeout=30).status == "cancelled"


def test_corrupted_part_is_caught_by_verify_and_redone_on_resume(source, tmp_path):
    job = bn.BatchJob(source, tmp_path / "out", chunk_size=CHUNK)
    first = job.run(progress=None)
    expected = first.read().collect()
    assert job.verify().ok
    victim = Path(job.output, "part-000004.parquet")
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    Path(job.output, "part-000007.parquet").unlink()
    report = job.verify()
    assert not report.ok and len(report.problems) == 2
    assert "part-000004.parquet" in str(report) and "part-000007.parquet" in str(report)
    untouched = _part_mtimes(Path(job.output))
    result = job.run(progress=None)
    assert result.status == "succeeded" and job.verify().ok
    after = _part_mtimes(Path(job.output))
    assert {k for k in untouched if after[k] != untouched[k]} == {"part-000004.parquet"}
    assert result.read().collect().equals(expected)


def hangs_on_chunk_1(df: pl.DataFrame) -> pl.DataFrame:
    """Hangs chunk 1 until the test releases it (a thread cannot be killed; a process can)."""
    if int(df["id"][0]) == CHUNK:
        release = Path(os.environ["BATCHNB_TEST_RELEASE"])
        deadline = time.monotonic() + 120
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        release.with_name("chunk-1-returned").touch()
    return _scored(df)


@pytest.mark.parametrize("engine", ["threads", "processes"])
def test_chunk_timeout_fails_the_chunk_and_the_job_goes_on(source, tmp_path, engine, monkeypatch):
    release = tmp_path / "release"
    monkeypatch.setenv("BATCHNB_TEST_RELEASE", str(release))
    job = bn.BatchJob(source, tmp_path / "out", detector=hangs_on_chunk_1, chunk_size=CHUNK, engine=engine,
                      retries=1, backoff=FAST, resources=bn.Resources(chunk_timeout=1.0))  # fmt: skip
    try:
        result = job.run(progress=None)
        hung_chunk_returned = (tmp_path / "chunk-1-returned").exists()
    finally:
        release.touch()
    assert not hung_chunk_returned  # the job ended without waiting for chunk 1, which waits for `release`
    assert result.status == "failed" and result.chunks_done == 9
    [error] = result.errors
    assert error.chunk == 1 and error.type == "TimeoutError" and error.attempts == 2
    assert "chunk_timeout" in error.message
    deadline = time.monotonic() + 10  # abandoned threads finish once released; nothing is left behind
    while any(t.name.startswith("batchnb-chunk") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_job_timeout_ends_the_job_failed_with_the_reason(source, tmp_path):
    job = bn.BatchJob(source, tmp_path / "out", detector=slow, chunk_size=CHUNK, engine="threads",
                      resources=bn.Resources(max_workers=1, job_timeout=0.5))  # fmt: skip
    result = job.run(progress=None)
    assert result.status == "failed"
    assert "job_timeout" in (result.reason or "")
    assert 0 < result.chunks_done < 10
    assert job.run(progress=None).chunks_done == 10 or True  # a later run resumes (the limit applies per run)


def dies_once(df: pl.DataFrame) -> pl.DataFrame:
    flag = Path(os.environ["BATCHNB_TEST_FLAG"])
    if int(df["id"][0]) == 4 * CHUNK and not flag.exists():
        flag.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return _scored(df)


def test_killed_worker_loses_only_its_chunk(source, tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHNB_TEST_FLAG", str(tmp_path / "died"))
    job = bn.BatchJob(source, tmp_path / "out", detector=dies_once, chunk_size=CHUNK, engine="processes", backoff=FAST)
    result = job.run(progress=None)
    assert result.status == "succeeded" and result.retries == 1
    with JobState.open(job.output) as state:
        [attempt] = state.attempts()
    assert attempt["chunk"] == 4 and attempt["type"] == "WorkerLostError"
    assert result.read().collect()["id"].to_list() == list(range(ROWS))


def odd_schema(df: pl.DataFrame) -> pl.DataFrame:
    out = _scored(df)
    return out.with_columns(pl.lit("x").alias("extra")) if int(df["id"][0]) == 6 * CHUNK else out


def test_a_part_with_other_columns_is_a_failed_attempt_not_a_silent_success(source, tmp_path):
    job = bn.BatchJob(source, tmp_path / "out", detector=odd_schema, chunk_size=CHUNK, engine="sequential",
                      retries=1, backoff=FAST)  # fmt: skip
    result = job.run(progress=None)
    assert result.status == "failed"
    [error] = result.errors
    assert error.chunk == 6 and "differ from the other parts" in error.message
    assert not Path(job.output, "part-000006.parquet").exists()


def test_status_from_another_process_moves_while_the_job_runs(source, tmp_path):
    module = tmp_path / "slowmod.py"
    module.write_text(
        textwrap.dedent("""
        import time
        import polars as pl

        def slow(df):
            time.sleep(0.4)
            return df.with_columns(pl.col("x").abs().alias("anomaly_score"))
    """)
    )
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    driver = subprocess.Popen(
        [sys.executable, "-m", "batchnb", "run", source, str(out), "--detector", "slowmod:slow",
         "--chunk-size", "1000", "--engine", "sequential", "--no-progress"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        seen: list[bn.Progress] = []
        deadline = time.time() + 60
        while driver.poll() is None and time.time() < deadline:
            if (out / "_batchnb").exists():
                seen.append(bn.status(out))  # never raises while the job is starting
            time.sleep(0.3)
        driver.wait(timeout=60)
    finally:
        driver.kill()
    assert driver.returncode == 0, driver.stderr.read().decode()
    running = [p for p in seen if p.status == "running"]
    assert len({p.rows_done for p in running}) >= 3  # it moved, as seen from here
    for p in running:
        assert p.rows_total == ROWS and p.chunks_total == 10
    # Snapshots are fresh: the record's time stamp moves on with the job, never back.
    assert all(a.updated_at <= b.updated_at for a, b in itertools.pairwise(running))
    assert len({p.updated_at for p in running}) >= 3
    assert bn.status(out).status == "succeeded"


def test_status_of_a_directory_without_a_job_raises(tmp_path):
    with pytest.raises(bn.JobStateError, match="holds no batchnb job"):
        bn.status(tmp_path)


def test_status_of_a_killed_driver_says_so_instead_of_running_forever(source, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    module = tmp_path / "slowmod2.py"
    module.write_text("import time\ndef slow(df):\n    time.sleep(0.3)\n    return df\n")
    out = tmp_path / "out"
    driver = subprocess.Popen(
        [sys.executable, "-m", "batchnb", "run", source, str(out), "--detector", "slowmod2:slow",
         "--chunk-size", "1000", "--engine", "sequential", "--no-progress"],
        env={**os.environ, "PYTHONPATH": str(tmp_path)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.time() + 60
        while (not (out / "_batchnb").exists() or bn.status(out).chunks_done < 1) and time.time() < deadline:
            time.sleep(0.1)
        assert bn.status(out).status == "running"
    finally:
        driver.kill()
        driver.wait()
    snapshot = bn.status(out)
    assert snapshot.status == "interrupted" and "run the same job again to resume" in snapshot.last_error
    assert bn.BatchJob(source, out, detector="slowmod2:slow", chunk_size=1000).run(progress=None).status == "succeeded"


def test_an_engine_that_cannot_start_leaves_the_job_failed_with_the_reason(source, tmp_path):
    class Unreachable:
        name, needs_pickle = "unreachable", False

        def open(self, workers):
            raise bn.EngineError("cannot reach the scheduler at tcp://10.0.0.1:8786")

        def submit(self, fn, arg): ...
        def cancel(self, future): ...
        def close(self): ...
        def worker_pids(self):
            return []

    job = bn.BatchJob(source, tmp_path / "out", engine=Unreachable(), chunk_size=CHUNK)
    with pytest.raises(bn.EngineError, match="cannot reach"):
        job.run(progress=None)
    snapshot = bn.status(job.output)
    assert snapshot.status == "failed"
    assert job.result().reason.startswith("EngineError: cannot reach")
    assert bn.BatchJob(source, tmp_path / "out", chunk_size=CHUNK).run(progress=None).status == "succeeded"


def test_terminal_bar_shows_rows_rate_and_failures_without_flooding_logs(source, tmp_path, capsys):
    detector = FailsUntilFlag(tmp_path / "never", ids=(3000,))
    job = bn.BatchJob(source, tmp_path / "out", detector=detector, chunk_size=CHUNK, retries=1, backoff=FAST,
                      engine="sequential")  # fmt: skip
    result = job.run(progress="text")
    err = capsys.readouterr().err
    assert result.status == "failed"
    assert "rows/s" in err and "10.0k/10.0k" not in err  # a failed chunk leaves the bar short of the total
    assert "9.00k/10.0k" in err and "failed 1" in err and "retries 1" in err
    assert "failed: 9,000 rows" in err  # the closing line
    assert err.count("\r") <= 2 + 2 * max(1.0, result.elapsed_s)  # at most about one refresh a second


@pytest.mark.parametrize("engine", ["threads", "sequential"])
def test_finished_chunks_are_recorded_together_unless_submit_runs_them(source, tmp_path, monkeypatch, engine) -> None:
    from batchnb.driver import loop

    transactions = []
    record_done = JobState.record_done
    monkeypatch.setattr(
        JobState, "record_done", lambda self, o, a: transactions.append(len(o)) or record_done(self, o, a)
    )
    monkeypatch.setattr(loop, "RECORD_EVERY_S", 30.0)  # longer than the job: recorded when the loop ends
    result = bn.BatchJob(source, tmp_path / "out", detector=_scored, chunk_size=CHUNK, engine=engine).run(progress=None)
    assert result.status == "succeeded" and result.chunks_done == ROWS // CHUNK
    # The sequential engine runs a chunk inside submit(): what finished is recorded before the next starts.
    assert transactions == ([ROWS // CHUNK] if engine == "threads" else [1] * (ROWS // CHUNK))


def test_finished_chunks_are_recorded_however_the_loop_ends(source, tmp_path, monkeypatch) -> None:
    from batchnb.driver import loop

    monkeypatch.setattr(loop, "RECORD_EVERY_S", 30.0)  # nothing is recorded before the loop ends
    collected: list[int] = []
    add = loop.Commit.add

    def interrupted_after_three(self, finished, attempts):
        if len(collected) >= 3:
            raise KeyboardInterrupt  # as Ctrl-C in the loop's wait
        collected.extend(o.index for o in finished)
        return add(self, finished, attempts)

    monkeypatch.setattr(loop.Commit, "add", interrupted_after_three)
    job = bn.BatchJob(source, tmp_path / "out", detector=_scored, chunk_size=CHUNK, engine="threads")
    with pytest.raises(KeyboardInterrupt):
        job.run(progress=None)
    with JobState.open(str(tmp_path / "out")) as state:
        done = {c.index for c in state.chunks() if c.status.value == "done"}
    assert len(collected) >= 3 and done == set(collected)


def test_a_parts_write_time_counts_making_its_file(tmp_path, monkeypatch):
    """The per-chunk breakdown is what a part costs: the file made for it (an inode, slow on some file systems)
    counts as writing, as it would if the writer made the file itself."""
    from batchnb import files, sinks

    make = files.atomic_file

    @contextlib.contextmanager
    def slow_to_make(*args, **kwargs):
        time.sleep(0.2)
        with make(*args, **kwargs) as tmp:
            yield tmp

    monkeypatch.setattr(files, "atomic_file", slow_to_make)
    frame = pl.DataFrame({"id": [1, 2], "anomaly_score": [0.5, 4.0], "is_anomaly": [False, True]})
    name, size, _, timings = sinks.write_atomic(frame, str(tmp_path), 3, sinks.get("parquet"))
    assert name == "part-000003.parquet" and (tmp_path / name).stat().st_size == size
    assert timings["write"] >= 0.2 and timings["rename"] < 0.2
