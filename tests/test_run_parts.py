"""The parts of a row group's chunks written by one query (`driver.run_parts`, `sinks.write_split_atomic`).

What a user relies on: each chunk still gets its own part holding exactly its rows, checksummed and verified;
the output equals writing chunk by chunk; a split write that fails, or that writes files other than the chunks'
rows, leaves no temporary file and no wrong part: each chunk then writes its own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl
import pytest
from conftest import run_job

import batchnb as bn
from batchnb import sinks
from batchnb.driver import batches
from batchnb.sinks import parquet


@pytest.fixture
def split_calls(monkeypatch) -> list[list[int]]:
    """The chunk indices of every run whose parts were written together."""
    calls: list[list[int]] = []
    write = sinks.write_split_atomic

    def recording(frames, output, indices, sink):
        calls.append(list(indices))
        return write(frames, output, indices, sink)

    monkeypatch.setattr(sinks, "write_split_atomic", recording)
    return calls


def _parquet_split(monkeypatch, write_split) -> None:
    """Parquet parts written by `write_split` instead of Polars' partitioned sink."""
    monkeypatch.setitem(sinks.REGISTRY._entries, "parquet", dataclasses.replace(parquet.SINK, write_split=write_split))


def _parts_hold_their_chunks(out: Path, chunk_size: int, rows: int) -> None:
    """Each part file, read alone, holds exactly the ids of its chunk's rows."""
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) == -(-rows // chunk_size)
    for index, part in enumerate(parts):
        assert part.name == f"part-{index:06d}.parquet"
        ids = pl.read_parquet(part).get_column("id").to_list()
        assert ids == list(range(index * chunk_size, min(rows, (index + 1) * chunk_size)))


def _no_temp_files(out: Path) -> None:
    assert list((out / "_batchnb" / "tmp").iterdir()) == []


@pytest.mark.parametrize("chunk_size", [1_000, 1_100])  # three per row group / straddling, a short last chunk
def test_a_row_groups_parts_are_written_together_and_equal_parts_written_alone(
    grouped, tmp_path, monkeypatch, split_calls, chunk_size
) -> None:
    opts = {"detector": "mad", "keep": ["id"], "chunk_size": chunk_size, "engine": "threads"}
    result = run_job(grouped, tmp_path / "together", **opts)
    assert result.status == "succeeded", result.errors
    assert split_calls and all(len(run) >= 2 for run in split_calls)
    written_together = sorted(i for run in split_calls for i in run)
    assert len(written_together) >= result.chunks_total - 2  # at most a chunk per row group alone
    _parts_hold_their_chunks(tmp_path / "together", chunk_size, 6_000)
    _no_temp_files(tmp_path / "together")
    assert bn.BatchJob(grouped, str(tmp_path / "together"), **opts).verify().ok  # checksums and row counts

    monkeypatch.setattr(batches, "write_together", lambda tasks, stop=None: {})
    alone = run_job(grouped, tmp_path / "alone", **opts)
    assert result.read().collect().equals(alone.read().collect())
    assert (result.rows_out, result.anomalies) == (alone.rows_out, alone.anomalies)


def test_a_split_write_that_fails_leaves_no_temp_and_each_chunk_writes_its_own(grouped, tmp_path, monkeypatch) -> None:
    def failing(frame, paths, rows):
        Path(paths[0]).write_bytes(b"half a part")
        raise OSError("the disk went away for a moment")

    _parquet_split(monkeypatch, failing)
    result = run_job(grouped, tmp_path / "out", detector="mad", keep=["id"], chunk_size=1_000, engine="threads")
    assert result.status == "succeeded", result.errors
    _parts_hold_their_chunks(tmp_path / "out", 1_000, 6_000)
    _no_temp_files(tmp_path / "out")


def test_files_that_are_not_exactly_the_chunks_rows_are_never_kept(grouped, tmp_path, monkeypatch) -> None:
    """The split write loses the last row of a run: its files hold other rows than the chunks, so none becomes a
    part (a part short of a row, recorded with the chunk's row count, would be a wrong result)."""

    def short(frame, paths, rows):
        return parquet.SINK.write_split(frame.head(frame.height - 1), paths, rows)

    _parquet_split(monkeypatch, short)
    result = run_job(grouped, tmp_path / "out", detector="mad", keep=["id"], chunk_size=1_000, engine="threads")
    assert result.status == "succeeded", result.errors
    assert result.rows_out == 6_000
    _parts_hold_their_chunks(tmp_path / "out", 1_000, 6_000)
    _no_temp_files(tmp_path / "out")


def test_write_split_atomic_takes_only_runs_of_equal_parts_with_a_shorter_last(tmp_path) -> None:
    (tmp_path / "_batchnb" / "tmp").mkdir(parents=True)
    frame = pl.DataFrame({"id": range(5)})
    written = sinks.write_split_atomic([frame.head(3), frame.tail(2)], str(tmp_path), [7, 8], parquet.SINK)
    assert written is not None and [name for name, *_ in written] == ["part-000007.parquet", "part-000008.parquet"]
    assert pl.read_parquet(tmp_path / "part-000008.parquet").get_column("id").to_list() == [3, 4]
    assert sinks.write_split_atomic([frame.head(2), frame.tail(3)], str(tmp_path), [0, 1], parquet.SINK) is None
    assert sinks.write_split_atomic([frame], str(tmp_path), [0], parquet.SINK) is None
    assert not (tmp_path / "part-000000.parquet").exists()
    _no_temp_files(tmp_path)


def test_on_processes_a_row_groups_chunks_run_as_one_task_and_write_their_parts_together(grouped, tmp_path) -> None:
    """A detector scoring with one query has a known cost, so the memory guard never needs to stop one chunk
    alone: a row group's chunks go to one worker as one task, and share one write (each chunk's share of its
    time recorded)."""
    import json
    import sqlite3

    opts = {"detector": "mad", "keep": ["id"], "chunk_size": 1_000}
    result = run_job(grouped, tmp_path / "out", engine="processes", **opts)
    assert result.status == "succeeded", result.errors
    _parts_hold_their_chunks(tmp_path / "out", 1_000, 6_000)
    with sqlite3.connect(tmp_path / "out" / "_batchnb" / "state.sqlite") as db:
        rows = db.execute("SELECT idx, worker, timings FROM chunks ORDER BY idx").fetchall()
    for group in (rows[:3], rows[3:]):
        assert len({worker for _, worker, _ in group}) == 1
        assert len({json.loads(timings)["write"] for *_, timings in group}) == 1
    alone = run_job(grouped, tmp_path / "threads", engine="threads", **opts)
    assert result.read().collect().equals(alone.read().collect())
