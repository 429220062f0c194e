"""The driver loop: submit chunk tasks, collect them, retry with backoff, commit to state, report.

Which failures are retried: a chunk that raises is retried with backoff up to `retries` times, except
for an error that the same chunk raises again on every attempt (`errors.fails_again`: a `DataError` such
as a parse error or a schema mismatch, a Polars panic, which the worker turns into a `DataError`, a
`ConfigError`, and a `TypeError` such as a detector returning something other than a DataFrame): that one
is recorded as failed after one attempt. A `SourceError` (an OS error while reading) is retried. A full disk (ENOSPC, EDQUOT) is no chunk's
fault and every chunk would meet it: the job stops, ends failed with the cause, and resumes when run again.

The loop is small objects with one job each: `ChunkQueue` (chunks to start, attempt counts), `RetrySchedule`
(backoff), `Deadlines` (chunk and job timeouts), `Admission` (engine slots, memory guard), `Commit` (finished
chunks) and `Reporter` (progress from the record to the view and the timeline).
"""

from __future__ import annotations

import errno
import logging
import threading
import time
import traceback
from collections.abc import Callable, Hashable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import TypeGuard

from batchnb.config import JobConfig, Resources
from batchnb.driver.batches import Tasks, run_length
from batchnb.driver.memory import Admission, MemoryGuard, recommend_chunk_size
from batchnb.driver.pending import ChunkQueue, RetrySchedule, interleave
from batchnb.driver.sampling import PROGRESS_EVERY_S, Reporter
from batchnb.driver.task import ChunkOutcome, ChunkTask
from batchnb.engines.base import Engine
from batchnb.errors import ChunkError, EngineError, describe, fails_again
from batchnb.place import remove_part
from batchnb.record.snapshot import Progress, begin_run
from batchnb.record.status import ChunkStatus, JobStatus
from batchnb.record.store import JobState
from batchnb.sources.dataset import ChunkSpec

__all__ = ["Runner"]

log = logging.getLogger("batchnb")


@dataclass
class _Inflight:
    spec: ChunkSpec
    attempt: int
    started: float


def _traceback_text(exc: BaseException | None) -> str:
    """The worker's traceback when the chunk ran elsewhere (engines attach it as the cause), else the local one."""
    if exc is None:
        return ""
    cause = exc.__cause__
    if cause is not None and type(cause).__name__ == "RemoteTraceback":
        return str(cause)
    return "".join(traceback.format_exception(exc))


def _disk_full(exc: BaseException | None) -> TypeGuard[OSError]:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _disk_full_reason(output: str, index: int, exc: OSError) -> str:
    return (
        f"no space left on the disk of the output {output!r} (chunk {index}: {describe(exc)}): "
        "free some space or use another output, then run again to resume; finished parts are kept"
    )


class OutputCheckError(Exception):
    """A part that does not match the others (schema, row count): a failed attempt, never a silent pass."""


class Deadlines:
    """`chunk_timeout` for each running chunk and `job_timeout` for the run, on the monotonic clock."""

    def __init__(self, resources: Resources, start: float) -> None:
        self.chunk_s, self.job_s, self.start = resources.chunk_timeout, resources.job_timeout, start
        self.job_over = False  # stays True once the job ran over

    def check_job(self, now: float) -> bool:
        if self.job_s is not None and now - self.start > self.job_s:
            self.job_over = True
        return self.job_over

    def overdue(self, flight: dict[Future, _Inflight], now: float) -> list[tuple[Future, _Inflight]]:
        if self.chunk_s is None:
            return []
        return [(future, job) for future, job in flight.items() if now - job.started > self.chunk_s]


RECORD_EVERY_S = 0.05  # finished chunks wait at most this long to be recorded together (a crash redoes them)


class Commit:
    """Finished chunks: each part checked against the others, then recorded together, a few at a time."""

    def __init__(
        self, state: JobState, config: JobConfig, *, one_row_per_row: bool, driver_s: dict, every_s: float
    ) -> None:
        self.state, self.output, self.one_row_per_row, self.every_s = state, config.output, one_row_per_row, every_s
        self.schema = state.get("output_schema")
        self.driver_s = driver_s
        self._waiting: list[ChunkOutcome] = []  # finished and checked, not yet in the record
        self._since = 0.0

    def outcome(self, future: Future) -> tuple[ChunkOutcome | None, BaseException | None]:
        try:
            outcome = future.result()
        except BaseException as exc:  # noqa: BLE001 - any chunk failure is recorded, never fatal
            return None, exc
        try:
            self._check(outcome)
        except OutputCheckError as exc:
            remove_part(self.output, outcome.part)
            return None, exc
        return outcome, None

    def _check(self, outcome: ChunkOutcome) -> None:
        if self.one_row_per_row and outcome.rows_out != outcome.rows_in:
            raise OutputCheckError(
                f"chunk {outcome.index} wrote {outcome.rows_out} rows for {outcome.rows_in} input rows"
            )
        if self.schema is None:
            self.schema = outcome.schema
            self.state.set(output_schema=outcome.schema, output_dtypes=outcome.dtypes)
        elif outcome.schema != self.schema:
            msg = f"chunk {outcome.index} output columns {outcome.schema} differ from the other parts' {self.schema}"
            raise OutputCheckError(msg)

    def add(self, finished: list[ChunkOutcome], attempts: dict[int, int]) -> list[ChunkOutcome]:
        """Finished chunks, recorded together once the oldest has waited `every_s`: the chunks recorded now.
        A transaction per chunk cost the driver 0.3-0.6 ms where chunks finish every 25 ms."""
        if finished and not self._waiting:
            self._since = time.monotonic()
        self._waiting.extend(finished)
        due = bool(self._waiting) and time.monotonic() - self._since >= self.every_s
        return self.flush(attempts) if due else []

    def wait_s(self, most: float) -> float:
        """How long the loop may wait before the chunks waiting here are due (at most `most`)."""
        if not self._waiting:
            return most
        return min(most, max(0.0, self._since + self.every_s - time.monotonic()))

    def flush(self, attempts: dict[int, int]) -> list[ChunkOutcome]:
        recorded, self._waiting = self._waiting, []
        if recorded:
            t = time.perf_counter()
            self.state.record_done(recorded, attempts)
            self.driver_s["commit"] += time.perf_counter() - t
        return recorded


class Runner:
    """Runs the given chunks of one job to a terminal status; the state is written as it goes."""

    def __init__(
        self,
        *,
        config: JobConfig,
        state: JobState,
        engine: Engine,
        workers: int,
        make_task: Callable[[ChunkSpec], ChunkTask],
        one_row_per_row: bool,
        cancel: threading.Event,
        on_progress: Callable[[Progress], None] | None = None,
        memory: MemoryGuard | None = None,
    ) -> None:
        self.config, self.state, self.engine, self.make_task = config, state, engine, make_task
        self.cancel_event, self.memory = cancel, memory
        self.admission, self.retries = Admission(engine, workers, memory), RetrySchedule(config.backoff)
        # Driver seconds per activity, for the overhead breakdown (workers time their own steps per chunk).
        self.driver_s = {"submit": 0.0, "commit": 0.0, "progress": 0.0}
        every_s = 0.0 if engine.runs_in_submit else RECORD_EVERY_S  # the next submit may take a chunk's time
        self.commit = Commit(state, config, one_row_per_row=one_row_per_row, driver_s=self.driver_s, every_s=every_s)
        self.reporter = Reporter(state, engine, on_progress)
        self.flight: dict[Future, _Inflight] = {}
        self.lost: EngineError | None = None  # the cluster went away: the job ends failed, no chunk is to blame
        self._stop: str | None = None  # why the job stops early although every chunk could still run
        self._lanes = self._batch = 1  # workers dealt runs of a key; chunks of one unit sent as one task
        self.queue, self.tasks = ChunkQueue([]), Tasks(engine)

    def run(self, todo: list[ChunkSpec]) -> JobStatus:
        self._t0 = time.monotonic()
        self.deadlines = Deadlines(self.config.resources, self._t0)
        self._elapsed_before = begin_run(self.state)
        fitted = bool(todo) and bool(self.make_task(todo[0]).scorer_key)
        known, timeout = self.memory is not None and self.memory.known, self.config.resources.chunk_timeout
        self._batch = run_length(self.engine, fitted=fitted, chunk_timeout=timeout, known_cost=known)
        self._lanes = self.engine.affinity_lanes() if self._batch == 1 else 1
        self.queue = ChunkQueue(interleave(list(todo), self._locality, self._lanes) if self._lanes > 1 else list(todo))
        self._report(force=True)
        try:
            while self.queue or self.flight or self.retries:
                now = time.monotonic()
                self.lost = self.lost or self.admission.poll(now)
                if self.lost or self._stop or self.cancel_event.is_set() or self.deadlines.check_job(now):
                    for future in self.flight:
                        self.tasks.cancel(future)
                    break
                for spec, attempts_so_far in self.retries.due(now):
                    self.queue.again(spec, attempts_so_far)
                self._submit(self._watch_memory())
                finished = self._collect(self.retries.wait_s(self.admission.wait_s(len(self.flight), PROGRESS_EVERY_S)))
                # Recorded chunks reach the view now; the resource sample and timeline row only every PROGRESS_EVERY_S.
                due = self.reporter.due(time.monotonic())
                if due or finished:
                    self._report(force=due)
        finally:  # the finished chunks waiting to be recorded are recorded, however the loop ends
            self.commit.flush(self.queue.attempts)
        status = self._finish()
        if self.lost is not None:
            raise self.lost
        return status

    def _submit(self, rss: int) -> None:
        """Start chunks while the window and the memory guard have room: alone, or a unit's run as one task."""
        while (
            self.queue and not self.cancel_event.is_set() and self.admission.room(self.tasks.running(self.flight), rss)
        ):
            run = self.queue.pop_run(self._locality, self._batch)
            t = time.perf_counter()
            for spec, attempt in run:
                self.state.mark_running(spec.index, attempt)
            try:
                tasks = [self.make_task(spec) for spec, _ in run]
                affinity = self._locality(run[0][0], tasks[0]) if self._lanes > 1 else None
                futures = self.tasks.submit(tasks, affinity)
            except EngineError as exc:
                self.lost = exc
                self.state.mark([spec.index for spec, _ in run], ChunkStatus.PENDING)
                return
            started = time.monotonic()
            for (spec, attempt), future in zip(run, futures, strict=True):
                self.flight[future] = _Inflight(spec, attempt, started)
            self.driver_s["submit"] += time.perf_counter() - t

    def _collect(self, timeout: float) -> list[ChunkOutcome]:
        """Wait up to `timeout` for chunks to finish; record them, and what failed, timed out or went away."""
        timeout = self.commit.wait_s(timeout)  # finished chunks waiting to be recorded are not kept waiting
        if self.flight:
            done, _ = wait(list(self.flight), timeout=timeout, return_when=FIRST_COMPLETED)
        else:
            done = set()
            time.sleep(timeout)
        finished: list[ChunkOutcome] = []
        for future in done:
            job = self.flight.pop(future)
            outcome, error = self.commit.outcome(future)
            if isinstance(error, EngineError):  # not the chunk's fault: no attempt is spent
                self.lost = self.lost or error
                self.state.mark([job.spec.index], ChunkStatus.PENDING)
            elif outcome is not None:
                finished.append(outcome)
            elif _disk_full(error):  # not the chunk's fault either: it runs again when the job resumes
                self._stop = self._stop or _disk_full_reason(self.config.output, job.spec.index, error)
                self.state.mark([job.spec.index], ChunkStatus.PENDING)
            else:
                self._failed_attempt(job, error)
        for future, job in self.deadlines.overdue(self.flight, time.monotonic()):
            self.tasks.cancel(future)
            del self.flight[future]
            timeout_error = TimeoutError(f"chunk {job.spec.index} ran over chunk_timeout={self.deadlines.chunk_s}s")
            self._failed_attempt(job, timeout_error)
        if finished and self.memory is not None:
            self.memory.measured = True  # a whole chunk ran while we sampled: its cost is known
        return self.commit.add(finished, self.queue.attempts)

    def _locality(self, spec: ChunkSpec, task: ChunkTask | None = None) -> Hashable | None:
        from batchnb import sources

        dataset = (task or self.make_task(spec)).dataset
        return sources.get(dataset.format).locality(dataset, spec)

    def _watch_memory(self) -> int:
        """Sample the RSS of the driver and its workers; above the limit, give back the newest chunk.

        Returns the RSS to project new admissions from.
        """
        memory = self.memory
        if memory is None:
            return 0
        rss = self.reporter.rss()
        oldest = min((job.started for job in self.flight.values()), default=time.monotonic())
        memory.observe(rss, len(self.flight), oldest_s=time.monotonic() - oldest)
        if rss <= memory.limit or not self.flight or not self.engine.can_kill:
            return rss  # an engine that cannot stop a running chunk relies on admission alone
        future, job = max(self.flight.items(), key=lambda item: item[1].started)
        self.tasks.cancel(future)
        del self.flight[future]
        if self.flight:  # others share the blame: run it again later, this attempt does not count
            self.queue.again(job.spec, job.attempt - 1)
            self.state.mark([job.spec.index], ChunkStatus.PENDING)
            log.warning("memory %.0f MiB over the limit: chunk %d postponed", rss / 2**20, job.spec.index)
            return rss
        size = recommend_chunk_size(self.config.chunk_size, rss - memory.baseline, memory.available())
        msg = (
            f"chunk {job.spec.index} alone needs about {(rss - memory.baseline) / 2**20:,.0f} MiB, but "
            f"memory_limit={memory.limit / 2**20:,.0f} MiB leaves {memory.available() / 2**20:,.0f} MiB "
            f"beside the driver's {memory.baseline / 2**20:,.0f} MiB: use chunk_size={size:_} or less"
        )
        self._failed_attempt(job, MemoryError(msg), final=True)
        return rss

    def _failed_attempt(self, job: _Inflight, exc: BaseException | None, *, final: bool = False) -> None:
        """Record a failed attempt; schedule the next one unless the budget is spent or it would fail again."""
        spec = job.spec
        error = ChunkError(
            chunk=spec.index, attempts=job.attempt, type=type(exc).__name__, message=str(exc),
            traceback=_traceback_text(exc), rows=spec.rows,
        )  # fmt: skip
        final = final or fails_again(exc)
        if job.attempt <= self.config.retries and not self.cancel_event.is_set() and not final:
            delay = self.retries.add(spec, job.attempt)
            self.state.record_attempt(error, delay=delay)
            log.warning("%s; retrying in %.2fs", error, delay)
        else:
            self.state.record_attempt(error, delay=None)
            self.state.record_failed(error)
            log.error("%s; giving up", error)

    def _finish(self) -> JobStatus:
        counts = self.state.counts()
        failed = counts.get(ChunkStatus.FAILED.value, 0)
        unfinished = sum(counts.get(s.value, 0) for s in (ChunkStatus.PENDING, ChunkStatus.RUNNING))
        reason = (  # the job stopped for a reason no chunk is to blame for
            str(self.lost) if self.lost is not None
            else f"job ran over job_timeout={self.config.resources.job_timeout}s" if self.deadlines.job_over
            else self._stop
        )  # fmt: skip
        if reason is not None:
            status = JobStatus.FAILED
        elif self.cancel_event.is_set() and unfinished:
            status = JobStatus.CANCELLED
        elif failed or unfinished:
            status = JobStatus.FAILED
        else:
            status = JobStatus.SUCCEEDED
        self.state.mark([job.spec.index for job in self.flight.values()], ChunkStatus.PENDING)
        self.state.set(elapsed_s=self._elapsed(), finished_at=time.time(), reason=reason, driver_s=self.driver_s)
        self.state.set_status(status)
        self.flight.clear()
        self._report(force=True)
        return status

    def _elapsed(self) -> float:
        return self._elapsed_before + time.monotonic() - self._t0

    def _report(self, *, force: bool) -> None:
        t = time.perf_counter()
        self.reporter.report(running=len(self.flight), elapsed_s=self._elapsed(), force=force)
        self.driver_s["progress"] += time.perf_counter() - t
