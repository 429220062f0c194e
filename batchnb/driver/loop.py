"""The driver loop: submit chunk tasks, collect them, retry with backoff, commit to state, report.

Which failures are retried: a chunk that raises is retried with backoff up to `retries` times, except
for an error that the same chunk raises again on every attempt (`errors.fails_again`: a `DataError` such
as a parse error or a schema mismatch, a Polars panic, which the worker turns into a `DataError`, a
`ConfigError`, and a `TypeError` such as a detector returning something other than a DataFrame): that one
is recorded as failed after one attempt. A `SourceError` (an OS error while reading) is retried. A full disk (ENOSPC, EDQUOT) is no chunk's
fault and every chunk would meet it: the job stops, ends failed with the cause, and resumes when run again.
"""

from __future__ import annotations

import errno
import heapq
import logging
import threading
import time
import traceback
from collections.abc import Callable, Hashable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass

from batchnb.config import JobConfig
from batchnb.driver.memory import MemoryGuard, recommend_chunk_size
from batchnb.driver.sampling import RateWindow, ResourceSampler
from batchnb.driver.task import ChunkOutcome, ChunkTask, run_chunk
from batchnb.engines.base import Engine
from batchnb.errors import ChunkError, EngineError, describe, fails_again
from batchnb.record.snapshot import Progress
from batchnb.record.status import ChunkStatus, JobStatus
from batchnb.record.store import JobState
from batchnb.sources.dataset import ChunkSpec

__all__ = ["Runner"]

log = logging.getLogger("batchnb")

PROGRESS_EVERY_S = 0.5
ENGINE_POLL_S = 1.0  # cluster engines: liveness and size checks
MEMORY_EVERY_S = 0.1  # while chunks run, memory is sampled this often (own process and known workers only)


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


def interleave(specs: list[ChunkSpec], key: Callable[[ChunkSpec], Hashable | None], lanes: int) -> list[ChunkSpec]:
    """Input order, regrouped so that `lanes` workers each work through their own run of chunks sharing a key.

    Runs of chunks with the same key (a Parquet row group) are taken `lanes` at a time and dealt in
    turn, so the chunks in flight at any moment come from `lanes` different runs: a worker keeps one
    run, and no worker waits for another's.
    """
    runs: list[list[ChunkSpec]] = []
    last: object = object()
    for spec in specs:
        k = key(spec)
        if k is None or k != last:
            runs.append([])
        runs[-1].append(spec)
        last = k
    out: list[ChunkSpec] = []
    for i in range(0, len(runs), max(1, lanes)):
        block = runs[i : i + max(1, lanes)]
        for depth in range(max(len(r) for r in block)):
            out.extend(r[depth] for r in block if depth < len(r))
    return out


def _disk_full(exc: BaseException | None) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class OutputCheckError(Exception):
    """A part that does not match the others (schema, row count): a failed attempt, never a silent pass."""


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
        self.config = config
        self.state = state
        self.engine = engine
        self.workers = workers
        self.make_task = make_task
        self.one_row_per_row = one_row_per_row
        self.cancel_event = cancel
        self.on_progress = on_progress
        self.memory = memory
        self._rate = RateWindow()
        self._sampler = ResourceSampler()
        self._last_error: str | None = None
        self._timed_out = False
        self._polled = 0.0
        self._window: int | None = None
        self._stop: str | None = None  # why the job stops early although every chunk could still run

    # --- the loop ----------------------------------------------------------------------------------
    def run(self, todo: list[ChunkSpec]) -> JobStatus:
        self._t0 = time.monotonic()
        self._elapsed_before = float(self.state.get("elapsed_s", 0.0))
        self._counts = self.state.counts()
        self._rows_done = self.state.totals()["rows_in"]
        specs = self.state.specs()
        # Planned rows, corrected by what each finished chunk really held (CSV chunk rows are estimates).
        self._rows_total = sum(
            c.rows_in if c.status == ChunkStatus.DONE else c.rows[1] - c.rows[0] for c in self.state.chunks()
        )
        self._chunks_total = len(specs)
        self._retries = self.state.retries()
        self._schema = self.state.get("output_schema")
        # Driver seconds per activity, for the overhead breakdown (workers time their own steps per chunk).
        self._driver_s = {"submit": 0.0, "commit": 0.0, "progress": 0.0}
        lanes = self.engine.affinity_lanes()
        queue = interleave(list(todo), self._locality, lanes) if lanes > 1 else list(todo)
        queue.reverse()  # pop() from the end keeps input order
        retry_heap: list[tuple[float, int, ChunkSpec, int]] = []
        inflight: dict[Future, _Inflight] = {}
        attempts: dict[int, int] = {}
        window = max(1, self.engine.in_flight_per_worker * self.workers)
        last_written = time.monotonic()
        self._report(running=0, force=True)
        lost: EngineError | None = None  # the cluster went away: the job ends failed, no chunk is to blame
        while queue or inflight or retry_heap:
            now = time.monotonic()
            lost = lost or self._poll_engine(now)
            window = self._window or window
            if lost or self._stop or self.cancel_event.is_set() or self._job_timed_out(now):
                for future in inflight:
                    self.engine.cancel(future)
                break
            while retry_heap and retry_heap[0][0] <= now:
                _, _, spec, attempt = heapq.heappop(retry_heap)
                queue.append(spec)
                attempts[spec.index] = attempt
            rss = self._watch_memory(inflight, queue, attempts, retry_heap)
            while queue and len(inflight) < window and not self.cancel_event.is_set():
                if self.memory is not None and not self.memory.admit(rss, len(inflight)):
                    break  # backpressure: wait for running chunks to give memory back
                spec = queue.pop()
                attempt = attempts.get(spec.index, 0) + 1
                attempts[spec.index] = attempt
                t = time.perf_counter()
                self.state.mark_running(spec.index, attempt)
                try:
                    task = self.make_task(spec)
                    affinity = self._locality(spec, task) if lanes > 1 else None
                    future = self.engine.submit(run_chunk, task, affinity=affinity)
                except EngineError as exc:
                    lost = exc
                    self.state.mark([spec.index], ChunkStatus.PENDING)
                    break
                inflight[future] = _Inflight(spec, attempt, time.monotonic())
                self._driver_s["submit"] += time.perf_counter() - t
            timeout = PROGRESS_EVERY_S if self.memory is None or not inflight else MEMORY_EVERY_S
            if retry_heap:
                timeout = max(0.0, min(timeout, retry_heap[0][0] - time.monotonic()))
            if inflight:
                done, _ = wait(list(inflight), timeout=timeout, return_when=FIRST_COMPLETED)
            else:
                done = set()
                time.sleep(timeout)
            finished: list[ChunkOutcome] = []
            for future in done:
                job = inflight.pop(future)
                outcome, exc = self._outcome(future)
                if isinstance(exc, EngineError):  # not the chunk's fault: no attempt is spent
                    lost = lost or exc
                    self.state.mark([job.spec.index], ChunkStatus.PENDING)
                elif outcome is not None:
                    finished.append(outcome)
                    self._rows_total += outcome.rows_in - job.spec.n_rows
                elif _disk_full(exc):  # not the chunk's fault either: it runs again when the job resumes
                    self._stop = self._stop or self._disk_full_reason(job.spec.index, exc)
                    self.state.mark([job.spec.index], ChunkStatus.PENDING)
                else:
                    self._failed_attempt(job, exc, retry_heap)
            self._expire(inflight, retry_heap)
            if finished:
                if self.memory is not None:
                    self.memory.measured = True  # a whole chunk ran while we sampled: its cost is known
                t = time.perf_counter()
                self.state.record_done(finished, attempts)
                self._driver_s["commit"] += time.perf_counter() - t
                self._counts[ChunkStatus.DONE.value] = self._counts.get(ChunkStatus.DONE.value, 0) + len(finished)
                self._rows_done += sum(o.rows_in for o in finished)
            # An engine that runs the next chunk inside submit() keeps the driver there for a whole chunk:
            # write what just finished now, or bn.status() would show it only after that chunk.
            due = time.monotonic() - last_written >= PROGRESS_EVERY_S or bool(finished and self.engine.runs_inline)
            if due or finished:
                t = time.perf_counter()
                self._report(running=len(inflight), force=due)
                self._driver_s["progress"] += time.perf_counter() - t
                if due:
                    last_written = time.monotonic()
        status = self._finish(inflight, lost)
        if lost is not None:
            raise lost
        return status

    def _disk_full_reason(self, index: int, exc: BaseException) -> str:
        return (
            f"no space left on the disk of the output {self.config.output!r} (chunk {index}: {describe(exc)}): "
            "free some space or use another output, then run again to resume; finished parts are kept"
        )

    def _locality(self, spec: ChunkSpec, task: ChunkTask | None = None) -> Hashable | None:
        from batchnb import sources

        dataset = (task or self.make_task(spec)).dataset
        return sources.get(dataset.format).locality(dataset, spec)

    def _poll_engine(self, now: float) -> EngineError | None:
        """Cluster engines: is the cluster still there, and how many chunks can it run at once?"""
        if now - self._polled < ENGINE_POLL_S:
            return None
        self._polled = now
        slots = self.engine.capacity()
        self._window = self.engine.in_flight_per_worker * slots if slots else None
        try:
            self.engine.check()
        except EngineError as exc:
            return exc
        return None

    def _watch_memory(self, inflight: dict[Future, _Inflight], queue: list, attempts: dict, retry_heap: list) -> int:
        """Sample the RSS of the driver and its workers; above the limit, give back the newest chunk.

        Returns the RSS to project new admissions from.
        """
        if self.memory is None:
            return 0
        rss = self._sampler.rss(self.engine.worker_pids())
        oldest = min((job.started for job in inflight.values()), default=time.monotonic())
        self.memory.observe(rss, len(inflight), oldest_s=time.monotonic() - oldest)
        if rss <= self.memory.limit or not inflight or not self.engine.can_kill:
            return rss  # an engine that cannot stop a running chunk relies on admission alone
        future, job = max(inflight.items(), key=lambda item: item[1].started)
        self.engine.cancel(future)
        del inflight[future]
        if inflight:  # others share the blame: run it again later, this attempt does not count
            attempts[job.spec.index] = job.attempt - 1
            queue.append(job.spec)
            self.state.mark([job.spec.index], ChunkStatus.PENDING)
            log.warning("memory %.0f MiB over the limit: chunk %d postponed", rss / 2**20, job.spec.index)
            return rss
        size = recommend_chunk_size(self.config.chunk_size, rss - self.memory.baseline, self.memory.available())
        msg = (
            f"chunk {job.spec.index} alone needs about {(rss - self.memory.baseline) / 2**20:,.0f} MiB, but "
            f"memory_limit={self.memory.limit / 2**20:,.0f} MiB leaves {self.memory.available() / 2**20:,.0f} MiB "
            f"beside the driver's {self.memory.baseline / 2**20:,.0f} MiB: use chunk_size={size:_} or less"
        )
        self._failed_attempt(job, MemoryError(msg), retry_heap, final=True)
        return rss

    def _outcome(self, future: Future) -> tuple[ChunkOutcome | None, BaseException | None]:
        try:
            outcome = future.result()
        except BaseException as exc:  # noqa: BLE001 - any chunk failure is recorded, never fatal
            return None, exc
        try:
            self._check(outcome)
        except OutputCheckError as exc:
            from pathlib import Path

            Path(self.config.output, outcome.part).unlink(missing_ok=True)
            return None, exc
        return outcome, None

    def _check(self, outcome: ChunkOutcome) -> None:
        if self.one_row_per_row and outcome.rows_out != outcome.rows_in:
            raise OutputCheckError(
                f"chunk {outcome.index} wrote {outcome.rows_out} rows for {outcome.rows_in} input rows"
            )
        if self._schema is None:
            self._schema = outcome.schema
            self.state.set(output_schema=outcome.schema, output_dtypes=outcome.dtypes)
        elif outcome.schema != self._schema:
            msg = f"chunk {outcome.index} output columns {outcome.schema} differ from the other parts' {self._schema}"
            raise OutputCheckError(msg)

    def _failed_attempt(
        self, job: _Inflight, exc: BaseException | None, retry_heap: list, *, final: bool = False
    ) -> None:
        spec = job.spec
        error = ChunkError(
            chunk=spec.index,
            attempts=job.attempt,
            type=type(exc).__name__,
            message=str(exc),
            traceback=_traceback_text(exc),
            rows=spec.rows,
        )
        self._last_error = str(error)
        final = final or fails_again(exc)
        if job.attempt <= self.config.retries and not self.cancel_event.is_set() and not final:
            delay = self.config.backoff.delay(job.attempt)
            self.state.record_attempt(error, delay=delay)
            heapq.heappush(retry_heap, (time.monotonic() + delay, spec.index, spec, job.attempt))
            self._retries += 1
            log.warning("%s; retrying in %.2fs", error, delay)
        else:
            self.state.record_attempt(error, delay=None)
            self.state.record_failed(error)
            self._counts[ChunkStatus.FAILED.value] = self._counts.get(ChunkStatus.FAILED.value, 0) + 1
            log.error("%s; giving up", error)

    def _expire(self, inflight: dict[Future, _Inflight], retry_heap: list) -> None:
        limit = self.config.resources.chunk_timeout
        if limit is None:
            return
        now = time.monotonic()
        for future, job in list(inflight.items()):
            if now - job.started > limit:
                self.engine.cancel(future)
                del inflight[future]
                self._failed_attempt(
                    job, TimeoutError(f"chunk {job.spec.index} ran over chunk_timeout={limit}s"), retry_heap
                )

    def _job_timed_out(self, now: float) -> bool:
        limit = self.config.resources.job_timeout
        if limit is not None and now - self._t0 > limit:
            self._timed_out = True
        return self._timed_out

    def _finish(self, inflight: dict[Future, _Inflight], lost: EngineError | None = None) -> JobStatus:
        self._counts = self.state.counts()
        failed = self._counts.get(ChunkStatus.FAILED.value, 0)
        unfinished = sum(self._counts.get(s.value, 0) for s in (ChunkStatus.PENDING, ChunkStatus.RUNNING))
        if lost is not None:
            status = JobStatus.FAILED
            self._last_error = str(lost)
        elif self._timed_out:
            status = JobStatus.FAILED
            self._last_error = f"job ran over job_timeout={self.config.resources.job_timeout}s"
        elif self._stop is not None:
            status = JobStatus.FAILED
            self._last_error = self._stop
        elif self.cancel_event.is_set() and unfinished:
            status = JobStatus.CANCELLED
        elif failed or unfinished:
            status = JobStatus.FAILED
        else:
            status = JobStatus.SUCCEEDED
        self.state.mark([i.spec.index for i in inflight.values()], ChunkStatus.PENDING)
        elapsed = self._elapsed_before + time.monotonic() - self._t0
        reason = self._last_error if self._timed_out or lost is not None or self._stop is not None else None
        self.state.set(elapsed_s=elapsed, finished_at=time.time(), reason=reason, driver_s=self._driver_s)
        self.state.set_status(status)
        self._report(running=0, force=True, status=status)
        return status

    # --- progress -----------------------------------------------------------------------------------
    def _report(self, *, running: int, force: bool, status: JobStatus = JobStatus.RUNNING) -> None:
        now = time.monotonic()
        if force or not hasattr(self, "_resources"):
            self._resources = self._sampler.sample()  # a /proc walk: twice a second, not once per chunk
            extra = self.engine.remote_resources()  # cluster workers psutil cannot see
            if extra is not None:
                self._resources = (self._resources[0] + extra[0], self._resources[1] + extra[1])
        self._rate.add(self._rows_done, now)
        rate = self._rate.rate()
        elapsed = self._elapsed_before + now - self._t0
        remaining = max(0, self._rows_total - self._rows_done)
        progress = Progress(
            name=self.config.name or "",
            status=status.value,
            chunks_total=self._chunks_total,
            chunks_done=self._counts.get(ChunkStatus.DONE.value, 0),
            chunks_failed=self._counts.get(ChunkStatus.FAILED.value, 0),
            chunks_skipped=self._counts.get(ChunkStatus.SKIPPED.value, 0),
            chunks_running=running,
            rows_done=self._rows_done,
            rows_total=self._rows_total,
            percent=100.0 * self._rows_done / self._rows_total if self._rows_total else 100.0,
            rows_per_s=rate,
            eta_s=remaining / rate if rate > 0 else None,
            elapsed_s=elapsed,
            retries=self._retries,
            last_error=self._last_error,
            updated_at=time.time(),
            cpu_percent=self._resources[0],
            rss_bytes=self._resources[1],
        )
        if force:
            self.state.set(progress=progress.to_dict())
            self.state.append_timeline(
                rows_done=progress.rows_done, chunks_done=progress.chunks_done, rows_per_s=rate,
                cpu=progress.cpu_percent, rss=progress.rss_bytes,
            )  # fmt: skip
        if self.on_progress is not None:
            try:
                self.on_progress(progress)
            except Exception:  # a broken view is logged, never kills the job
                log.exception("progress view failed")
