"""JobQueue: several jobs share one worker and memory budget; higher priority starts first.

Workers are handed out as slots when a job starts (a job takes what it asks for, up to what is free,
at least one) and returned when it ends. Every job runs in this process, so each job's memory guard
watches the same RSS and keeps the whole queue under the shared `memory_limit`.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import os
import threading
from typing import TYPE_CHECKING

from batchnb.config import Resources, parse_memory
from batchnb.driver.run import run_job
from batchnb.errors import ConfigError, JobStateError
from batchnb.record.snapshot import Progress, status
from batchnb.record.status import JobStatus
from batchnb.result import JobResult

if TYPE_CHECKING:
    from batchnb.job import BatchJob

__all__ = ["JobHandle", "JobQueue"]


class JobHandle:
    """One submitted job: its status, its result, and a way to cancel it."""

    def __init__(self, queue: JobQueue, job: BatchJob, priority: int, seq: int) -> None:
        self.job, self.priority, self.seq = job, priority, seq
        self._queue = queue
        self._done = threading.Event()
        self.state = "queued"  # queued -> running -> finished | cancelled
        self.result_: JobResult | None = None
        self._cancel = threading.Event()
        self.error: BaseException | None = None
        self.workers = 0

    @property
    def name(self) -> str:
        return self.job.config.name or ""

    def status(self) -> Progress:
        if self.state == "queued":
            return Progress(name=self.name, status=JobStatus.PENDING)
        if self.state == "cancelled" and self.result_ is None:
            return Progress(name=self.name, status=JobStatus.CANCELLED)
        return status(self.job.output, missing_ok=True)

    def wait(self, timeout: float | None = None) -> JobResult:
        if not self._done.wait(timeout):
            raise TimeoutError(f"job {self.name!r} still {self.state} after {timeout}s")
        if self.error is not None:
            raise self.error
        if self.result_ is None:
            raise JobStateError(f"job {self.name!r} was cancelled before it started")
        return self.result_

    def cancel(self) -> None:
        self._queue._cancel(self)

    def __repr__(self) -> str:
        return f"JobHandle({self.name!r}, priority={self.priority}, {self.state})"


class JobQueue:
    """Run submitted jobs concurrently within `max_workers` and `memory_limit`, by priority then FIFO."""

    def __init__(self, max_workers: int | None = None, memory_limit: float | int | str | None = None) -> None:
        if max_workers is not None and (
            isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1
        ):
            raise ConfigError(f"`max_workers` must be a positive integer or None, got {max_workers!r}")
        self.max_workers = max_workers or os.cpu_count() or 1
        self.memory_limit = parse_memory(memory_limit if memory_limit is not None else 0.8)
        self._lock = threading.Condition()
        self._pending: list[tuple[int, int, JobHandle]] = []
        self._handles: list[JobHandle] = []
        self._free = self.max_workers
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self.started: list[str] = []  # job names in the order they started

    def submit(self, job: BatchJob, priority: int = 0) -> JobHandle:
        handle = JobHandle(self, job, priority, next(self._seq))
        with self._lock:
            heapq.heappush(self._pending, (-priority, handle.seq, handle))
            self._handles.append(handle)
            self._dispatch()
        return handle

    def _dispatch(self) -> None:
        """Start queued jobs while workers are free (called with the lock held)."""
        while self._pending and self._free > 0:
            _, _, handle = heapq.heappop(self._pending)
            if handle.state != "queued":
                continue
            wanted = handle.job.config.resources.max_workers or self.max_workers
            handle.workers = max(1, min(wanted, self._free))
            self._free -= handle.workers
            handle.state = "running"
            self.started.append(handle.name)
            thread = threading.Thread(
                target=self._run, args=(handle,), name=f"batchnb-queue-{handle.name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _run(self, handle: JobHandle) -> None:
        config = handle.job.config
        resources = Resources(**{
            **dataclasses.asdict(config.resources), "max_workers": handle.workers, "memory_limit": self.memory_limit,
        })  # fmt: skip
        config = dataclasses.replace(config, resources=resources)  # same identity: budget is not part of it
        try:
            handle.result_ = run_job(config, cancel=handle._cancel)
        except BaseException as exc:  # noqa: BLE001 - delivered by wait()
            handle.error = exc
        finally:
            with self._lock:
                self._free += handle.workers
                if handle.state == "running":
                    handle.state = (
                        "cancelled" if handle.result_ and handle.result_.status == "cancelled" else "finished"
                    )
                self._dispatch()
                self._lock.notify_all()
            handle._done.set()

    def _cancel(self, handle: JobHandle) -> None:
        with self._lock:
            if handle.state == "queued":
                handle.state = "cancelled"
                handle._done.set()
                return
        if handle.state == "running":
            handle._cancel.set()

    def status(self) -> list[dict]:
        """Every job of the queue with its state and progress: the queue's state, visible like a job's."""
        with self._lock:
            handles = list(self._handles)
        return [
            {"name": h.name, "priority": h.priority, "state": h.state, "workers": h.workers, **h.status().to_dict()}
            for h in handles
        ]

    def wait(self, timeout: float | None = None) -> list[JobResult]:
        """Wait for every submitted job; results in submission order (cancelled-before-start ones left out)."""
        for handle in list(self._handles):
            handle._done.wait(timeout)
        for thread in list(self._threads):
            thread.join(timeout)
        return [h.result_ for h in self._handles if h.result_ is not None]
