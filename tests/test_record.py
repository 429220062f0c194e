"""The record is the one owner of every count: SQL only in record/store.py, Progress built from the record
for the loop and for bn.status alike, the tally kept by the record, and the loop's small objects."""

from __future__ import annotations

import re
import time
from pathlib import Path

import polars as pl
import pytest

import batchnb as bn
from batchnb.config import Backoff, Resources
from batchnb.driver.loop import Deadlines, _Inflight
from batchnb.driver.pending import ChunkQueue, RetrySchedule
from batchnb.record.snapshot import begin_run, progress
from batchnb.record.status import ChunkStatus, JobStatus
from batchnb.record.store import JobState
from batchnb.sources.dataset import ChunkSpec

ROWS, CHUNK = 6_000, 1_000
FAIL = {"chunk_2": True}


@pytest.fixture
def source(tmp_path: Path) -> str:
    path = tmp_path / "data.parquet"
    pl.DataFrame({"id": range(ROWS), "x": [float(i % 97) for i in range(ROWS)]}).write_parquet(path)
    return str(path)


def flaky(df: pl.DataFrame) -> pl.DataFrame:
    if FAIL["chunk_2"] and int(df["id"][0]) == 2 * CHUNK:
        raise ValueError("bad chunk two")
    return df.with_columns(pl.col("x").alias("anomaly_score"))


def job_for(source: str, out: Path, **options) -> bn.BatchJob:
    options.setdefault("backoff", bn.Backoff(base=0.0, max=0.0, jitter=False))
    return bn.BatchJob(source, out, detector=flaky, chunk_size=CHUNK, engine="sequential", **options)


def test_no_sql_outside_the_record_store() -> None:
    package = Path(bn.__file__).parent
    sql = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|PRAGMA|CREATE TABLE)\b")
    found = [
        f"{path.relative_to(package)}:{n}"
        for path in package.rglob("*.py")
        if path != package / "record" / "store.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if sql.search(line)
    ]
    assert not found, found


def test_the_record_tally_matches_its_chunks_after_failures_retries_and_skips(source, tmp_path, monkeypatch):
    monkeypatch.setitem(FAIL, "chunk_2", True)
    job = job_for(source, tmp_path / "out", retries=2)
    result = job.run(progress=None)
    assert result.status == "failed" and result.retries == 2
    job.skip([2])
    with JobState.open(job.output) as state:
        chunks = state.chunks()
        tally = state.tally()
    expected: dict[str, tuple[int, int, int]] = {}
    for c in chunks:
        n, rows, planned = expected.get(c.status.value, (0, 0, 0))
        expected[c.status.value] = (n + 1, rows + (c.rows_in or 0), planned + c.rows[1] - c.rows[0])
    assert tally == expected == {"done": (5, 5_000, 5_000), "skipped": (1, 0, 1_000)}


def test_status_and_the_view_show_the_same_figures_from_the_record(source, tmp_path, monkeypatch):
    monkeypatch.setitem(FAIL, "chunk_2", True)
    seen: list[bn.Progress] = []

    class View:
        def update(self, p: bn.Progress) -> None:
            seen.append(p)

        def close(self) -> None: ...

        def finish(self, result, error=None) -> None: ...

    job = job_for(source, tmp_path / "out", retries=1)
    result = job.run(progress=View())
    last, status = seen[-1], bn.status(job.output)
    for p in (last, status):
        assert (p.status, p.chunks_total, p.chunks_done, p.chunks_failed, p.chunks_running) == ("failed", 6, 5, 1, 0)
        assert (p.rows_done, p.rows_total, p.retries) == (5_000, 6_000, 1)
        assert p.last_error == "chunk 2 failed after 2 attempt(s): ValueError: bad chunk two"
    assert status.elapsed_s == result.elapsed_s  # the record's; the view's is the loop's clock a moment later
    assert last.elapsed_s >= result.elapsed_s
    assert status.updated_at > 0 and round(status.percent, 1) == 83.3
    running = [p for p in seen if p.status == "running"]
    assert running and all(p.rows_done == 1_000 * p.chunks_done for p in running)


def test_status_shows_the_last_error_of_this_run_only(source, tmp_path, monkeypatch):
    monkeypatch.setitem(FAIL, "chunk_2", True)
    job = job_for(source, tmp_path / "out", retries=0)
    assert job.run(progress=None).status == "failed"
    assert "bad chunk two" in bn.status(job.output).last_error
    monkeypatch.setitem(FAIL, "chunk_2", False)
    assert job.run(progress=None).status == "succeeded"  # resumes: only chunk 2 runs again
    again = bn.status(job.output)
    assert again.last_error is None and (again.chunks_done, again.rows_done, again.retries) == (6, ROWS, 0)


def test_status_of_a_record_written_by_the_previous_version(tmp_path):
    stored = {"status": "running", "chunks_total": 4, "chunks_done": 3, "rows_done": 3_000, "rows_total": 4_000,
              "percent": 75.0, "rows_per_s": 1_500.0, "name": "old", "updated_at": 1_700_000_000.0}  # fmt: skip
    with JobState.open(tmp_path, create=True) as state:
        state.save_plan([ChunkSpec(index=i, pieces=(), rows=(i * 1_000, (i + 1) * 1_000), nbytes=1) for i in range(4)])
        state.set(progress=stored)
        state.set_status(JobStatus.SUCCEEDED)
    snapshot = bn.status(tmp_path)
    assert snapshot.status == "succeeded"  # the record's status, as before
    assert (snapshot.chunks_done, snapshot.rows_done, snapshot.percent, snapshot.name) == (3, 3_000, 75.0, "old")


def test_status_while_running_counts_chunks_as_the_record_commits_them(tmp_path):
    with JobState.open(tmp_path, create=True) as state:
        state.save_plan([ChunkSpec(index=i, pieces=(), rows=(i * 1_000, (i + 1) * 1_000), nbytes=1) for i in range(4)])
        state.set_status(JobStatus.RUNNING)
        begin_run(state)
        state.mark_running(0, 1)
        state.mark_running(1, 1)
        state.append_timeline(rows_done=0, chunks_done=0, rows_per_s=250.0, cpu=12.5, rss=2**20)
        state.mark([0], ChunkStatus.DONE)  # done, rows not recorded: counts, with no rows
        snapshot = progress(state)
    assert (snapshot.status, snapshot.chunks_done, snapshot.chunks_running, snapshot.rows_total) == (
        "running", 1, 1, 3_000)  # fmt: skip
    assert (snapshot.rows_per_s, snapshot.cpu_percent, snapshot.rss_bytes) == (250.0, 12.5, 2**20)
    assert snapshot.eta_s == pytest.approx(3_000 / 250.0)


def _spec(i: int) -> ChunkSpec:
    return ChunkSpec(index=i, pieces=(), rows=(i, i + 1), nbytes=1)


def test_retry_schedule_hands_back_attempts_when_their_backoff_has_passed():
    schedule = RetrySchedule(Backoff(base=100.0, factor=1.0, max=100.0, jitter=False))
    assert schedule.add(_spec(3), 1) == 100.0
    now = time.monotonic()
    assert schedule.due(now) == [] and schedule and schedule.wait_s(0.5) == 0.5
    assert [(s.index, a) for s, a in schedule.due(now + 101)] == [(3, 1)] and not schedule


def test_queue_keeps_order_and_counts_attempts():
    queue = ChunkQueue([_spec(0), _spec(1)])
    first, attempt = queue.pop()
    assert (first.index, attempt) == (0, 1)
    queue.again(first, 1)  # a retry: the next attempt is the second
    assert [(s.index, a) for s, a in (queue.pop(), queue.pop())] == [(0, 2), (1, 1)] and not queue


def test_deadlines_for_the_job_and_each_chunk():
    deadlines = Deadlines(Resources(chunk_timeout=5.0, job_timeout=60.0), start=1_000.0)
    assert not deadlines.check_job(1_059.0) and deadlines.check_job(1_061.0) and deadlines.check_job(1_000.0)
    flight = {"a": _Inflight(_spec(0), 1, started=1_000.0), "b": _Inflight(_spec(1), 1, started=1_010.0)}
    assert [job.spec.index for _, job in deadlines.overdue(flight, 1_012.0)] == [0]  # type: ignore[arg-type]


@pytest.mark.parametrize("status", ["finished", "RUNNING", 7])
def test_a_job_status_batchnb_never_writes_is_a_clear_error(source, tmp_path, monkeypatch, status):
    """Views and the CLI compare against JobStatus: a record naming another status is refused as damaged."""
    monkeypatch.setitem(FAIL, "chunk_2", False)
    out = tmp_path / "out"
    job_for(source, out).run(progress=None)
    with JobState.open(out, create=True) as state:
        state.set(status=status)
    with pytest.raises(bn.JobStateError, match=r"holds a value batchnb does not write"):
        bn.status(out)


def test_a_trigger_planted_in_the_record_cannot_turn_a_failed_chunk_into_a_done_one(source, tmp_path, monkeypatch):
    """A record from someone else may hold triggers; the writer drops every one before it writes, so a run
    whose chunk fails ends failed however the file was prepared."""
    import sqlite3

    monkeypatch.setitem(FAIL, "chunk_2", True)
    out = tmp_path / "out"
    assert job_for(source, out, retries=0).run(progress=None).status == "failed"
    with sqlite3.connect(out / "_batchnb" / "state.sqlite") as conn:
        conn.execute(
            "CREATE TRIGGER hide_failures AFTER UPDATE OF status ON chunks WHEN NEW.status = 'failed' "
            "BEGIN UPDATE chunks SET status = 'done' WHERE idx = NEW.idx; END"
        )
    result = job_for(source, out, retries=0).run(progress=None)
    assert result.status == "failed"
    assert result.chunks_failed == 1 and bn.status(out).chunks_failed == 1
    with sqlite3.connect(out / "_batchnb" / "state.sqlite") as conn:
        triggers = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")]
    assert triggers == ["tally_update"]
