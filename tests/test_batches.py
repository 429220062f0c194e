"""The chunks of one row group as one engine task (`driver.batches`).

What a user relies on: the output is the same as chunk by chunk; a chunk that fails in a batch fails alone,
with its own error and traceback, and is retried alone while the rest of its batch is done once; a task
that fails as a whole (its worker died) fails each of its chunks; a run given up on stops before its next
chunk. A chunk with its own deadline, and a callable detector, still run one chunk per task.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import CancelledError, Future
from typing import Any

import polars as pl
import pytest
from conftest import run_job

import batchnb as bn
from batchnb import sinks
from batchnb.driver import batches
from batchnb.driver.batches import Failed, Tasks, run_chunks
from batchnb.engines.base import Engine
from batchnb.engines.pool import WorkerLostError
from batchnb.engines.threads import ThreadsEngine


@pytest.fixture
def submitted(monkeypatch) -> list[int]:
    """How many chunks each task the threads engine ran carried."""
    sizes: list[int] = []
    submit = ThreadsEngine.submit

    def counting(self, fn, arg, *, affinity=None):
        sizes.append(len(arg) if isinstance(arg, list) else 1)
        return submit(self, fn, arg, affinity=affinity)

    monkeypatch.setattr(ThreadsEngine, "submit", counting)
    return sizes


def _output(result) -> pl.DataFrame:
    assert result.status == "succeeded", result.errors
    return result.read().collect()


def test_a_row_groups_chunks_run_as_one_task_with_the_same_output(grouped, tmp_path, submitted) -> None:
    opts = {"detector": "mad", "keep": ["id"], "chunk_size": 1_000}
    batched = _output(run_job(grouped, tmp_path / "threads", engine="threads", **opts))
    assert sorted(submitted) == [3, 3]
    alone = _output(run_job(grouped, tmp_path / "sequential", engine="sequential", **opts))
    assert batched.equals(alone)


@pytest.mark.parametrize(
    ("opts", "why"),
    [({"detector": "mad", "resources": bn.Resources(max_workers=2, chunk_timeout=60.0)}, "each chunk has its own deadline"),
     ({"detector": lambda frame: frame.select("id")}, "a callable's chunks may each take long")],
)  # fmt: skip
def test_chunks_run_alone_when_batching_would_change_what_they_mean(grouped, tmp_path, submitted, opts, why) -> None:
    _output(run_job(grouped, tmp_path / "out", engine="threads", chunk_size=1_000, **opts))
    assert submitted == [1] * 6, why


def _flaky_write(monkeypatch, chunk: int, times: int) -> list[int]:
    """Writing chunk `chunk`'s part fails with an OSError its first `times` attempts; so does writing the parts
    of a run of chunks that holds it (`write_split_atomic` gives up, and each chunk writes its own)."""
    failures: list[int] = []
    write, write_split = sinks.write_atomic, sinks.write_split_atomic

    def flaky_part_write(out, output, index, sink):
        if index == chunk and len(failures) < times:
            failures.append(index)
            raise OSError(f"flaky disk writing chunk {index}")
        return write(out, output, index, sink)

    def flaky_split_write(frames, output, indices, sink):
        return None if chunk in indices and len(failures) < times else write_split(frames, output, indices, sink)

    monkeypatch.setattr(sinks, "write_atomic", flaky_part_write)
    monkeypatch.setattr(sinks, "write_split_atomic", flaky_split_write)
    return failures


def test_a_chunk_failing_in_a_batch_is_retried_alone(grouped, tmp_path, submitted, monkeypatch) -> None:
    failures = _flaky_write(monkeypatch, chunk=4, times=1)
    result = run_job(grouped, tmp_path / "out", detector="mad", keep=["id"], chunk_size=1_000, engine="threads",
                     retries=1)  # fmt: skip
    assert _output(result).get_column("id").to_list() == list(range(6_000))
    assert failures == [4] and result.retries == 1
    assert sorted(submitted) == [1, 3, 3]  # the retry is a task of its own


def test_a_chunk_failing_in_a_batch_keeps_its_own_error_and_traceback(grouped, tmp_path, monkeypatch) -> None:
    _flaky_write(monkeypatch, chunk=4, times=99)
    result = run_job(grouped, tmp_path / "out", detector="mad", keep=["id"], chunk_size=1_000, engine="threads",
                     retries=0)  # fmt: skip
    assert result.status == "failed" and [e.chunk for e in result.errors] == [4]
    error = result.errors[0]
    assert error.type == "OSError" and "flaky disk writing chunk 4" in error.message
    assert "flaky_part_write" in error.traceback  # the worker's frames, though the error came back as a value
    done = result.read().collect().get_column("id")
    assert done.len() == 5_000 and 4_000 not in done and {3_999, 5_000} <= set(done)


class _Held(Engine):
    """An engine whose tasks run only when the test says so."""

    name = "held"
    needs_pickle = False

    def __init__(self) -> None:
        self.tasks: list[tuple[Callable, Any, Future]] = []
        self.cancelled: list[Future] = []

    def open(self, workers: int) -> None: ...

    def close(self) -> None: ...

    def submit(self, fn: Callable[[Any], Any], arg: Any, *, affinity: Hashable | None = None) -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()
        self.tasks.append((fn, arg, future))
        return future

    def cancel(self, future: Future) -> None:
        self.cancelled.append(future)


class _Boom:
    """A task that must not run: reading its spec fails the test."""

    @property
    def spec(self):
        raise AssertionError("a chunk of a batch given up on ran")


def test_a_batch_given_up_on_is_cancelled_once_and_stops_before_its_next_chunk() -> None:
    engine = _Held()
    tasks = Tasks(engine)
    futures = tasks.submit([_Boom(), _Boom(), _Boom()])  # type: ignore[list-item]
    assert len(engine.tasks) == 1 and tasks.running(futures) == 1
    fn, arg, batch = engine.tasks[0]
    tasks.cancel(futures[0])
    tasks.cancel(futures[1])
    assert engine.cancelled == []  # the runner still waits for one of its chunks
    tasks.cancel(futures[2])
    assert engine.cancelled == [batch]
    with pytest.raises(CancelledError):
        futures[0].result(timeout=0)
    results = fn(arg)  # the in-process task, had it started late: no chunk runs
    assert all(isinstance(r, Failed) for r in results)


def test_a_batch_that_fails_whole_fails_each_of_its_chunks() -> None:
    engine = _Held()
    futures = Tasks(engine).submit([_Boom(), _Boom()])  # type: ignore[list-item]
    engine.tasks[0][2].set_exception(WorkerLostError("the worker running chunks 3-4 died"))
    for future in futures:
        with pytest.raises(WorkerLostError, match="died"):
            future.result(timeout=0)


def test_a_chunk_error_that_does_not_pickle_travels_as_a_runtime_error(monkeypatch) -> None:
    class Local(Exception):
        def __init__(self) -> None:
            super().__init__("held a lock")
            self.lock = threading.Lock()  # cannot be pickled

    def fails(task):
        raise Local() if task else ValueError("plain")

    monkeypatch.setattr(batches, "run_chunk", fails)
    monkeypatch.setattr(batches, "write_together", lambda tasks, stop=None: {})
    unpicklable, plain = run_chunks([1, 0])  # type: ignore[list-item]  # a batch pickled to the driver
    assert isinstance(unpicklable, Failed) and isinstance(plain, Failed)
    assert type(unpicklable.error) is RuntimeError and "Local: held a lock" in str(unpicklable.error)
    assert "Local: held a lock" in unpicklable.traceback  # the worker's traceback still names the original
    assert type(plain.error) is ValueError
    pickle.dumps([unpicklable, plain])
    (in_process,) = run_chunks([1], stop=threading.Event())  # type: ignore[list-item]  # nothing is pickled
    assert isinstance(in_process, Failed) and type(in_process.error) is Local


def test_run_chunks_returns_each_chunks_error_as_a_value(monkeypatch) -> None:
    def fails_on_odd(task):
        if task % 2:
            raise KeyError(task)
        return task

    monkeypatch.setattr(batches, "run_chunk", fails_on_odd)
    monkeypatch.setattr(batches, "write_together", lambda tasks, stop=None: {})
    out = run_chunks([0, 1, 2])  # type: ignore[list-item]
    assert out[0] == 0 and out[2] == 2 and isinstance(out[1], Failed)
    error = out[1].rebuilt()
    assert isinstance(error, KeyError) and "fails_on_odd" in str(error.__cause__)


def test_a_unit_is_one_task_only_where_each_chunk_needs_no_task_of_its_own() -> None:
    from batchnb.driver.batches import run_length
    from batchnb.engines.processes import ProcessesEngine
    from batchnb.engines.sequential import SequentialEngine

    assert run_length(ThreadsEngine(), fitted=True, chunk_timeout=None) == ThreadsEngine.chunks_per_task > 1
    assert run_length(ThreadsEngine(), fitted=False, chunk_timeout=None) == 1
    assert run_length(ThreadsEngine(), fitted=True, chunk_timeout=5.0) == 1
    assert run_length(ProcessesEngine(), fitted=True, chunk_timeout=None) == 1  # the memory guard kills one chunk
    assert run_length(ProcessesEngine(), fitted=True, chunk_timeout=None, known_cost=True) > 1  # it has none to kill
    assert run_length(ProcessesEngine(), fitted=False, chunk_timeout=None, known_cost=True) == 1
    assert run_length(SequentialEngine(), fitted=True, chunk_timeout=None) == 1
