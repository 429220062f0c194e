"""Worker processes (spawn + cloudpickle, so notebook functions work); a stuck chunk is killed with its worker.

Spawning a worker and importing Polars, pyarrow and batchnb costs about half a second of CPU per worker, much
of a job of a few seconds. The pool is kept warm between the jobs of one process: when a job ends with every
worker idle, the pool waits `KEEP_WARM_S` for the next job that asks for as many workers (its workers drop what
they cached first), and is closed after that, at `ProcessesEngine.shutdown()`, or when the interpreter exits.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any

from batchnb.engines.base import Engine, worker_env
from batchnb.engines.pool import WorkerPool

__all__ = ["ProcessesEngine", "call_pickled"]


def call_pickled(payload: bytes) -> Any:
    """Entry point for engines that ship (fn, arg) as cloudpickle bytes (Dask, Ray)."""
    import cloudpickle

    fn, arg = cloudpickle.loads(payload)
    return fn(arg)


class ProcessesEngine(Engine):
    name = "processes"
    needs_pickle = True
    can_kill = True  # cancel() kills the worker running the chunk
    # A row group's chunks as one task where their cost is known (`driver.batches.run_length`): one pickled task and
    # one partitioned write for ten parts, instead of ten of each.
    chunks_per_task = 32

    def __init__(self) -> None:
        self._pool: WorkerPool | None = None

    def open(self, workers: int) -> None:
        self._pool = _warm.take(workers) or WorkerPool(workers)

    def affinity_lanes(self) -> int:
        """Each worker process caches the row groups it decodes: chunks of one group go to one worker."""
        return len(self._pool.pids()) if self._pool is not None else 1

    def submit(self, fn: Callable[[Any], Any], arg: Any, *, affinity: Hashable | None = None) -> Future:
        assert self._pool is not None, "open() first"
        return self._pool.submit(fn, arg, affinity)

    def cancel(self, future: Future) -> None:
        if self._pool is not None:
            self._pool.kill(future)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            _warm.keep(pool)

    @staticmethod
    def shutdown() -> None:
        """Stop the worker processes kept warm for the next job of this process, if any."""
        _warm.close()

    def worker_pids(self) -> list[int]:
        return self._pool.pids() if self._pool is not None else []


KEEP_WARM_S = 300.0  # an idle pool waits this long for the next job of this process


class _Warm:
    """At most one idle pool per process, closed when no job took it within `KEEP_WARM_S`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: WorkerPool | None = None
        self._timer: threading.Timer | None = None

    def keep(self, pool: WorkerPool) -> None:
        if KEEP_WARM_S <= 0 or not pool.idle(len(pool.pids()), pool.env):
            pool.close()  # a worker still runs a chunk given up on, or one is gone
            return
        pool.forget()
        self.close()
        timer = threading.Timer(KEEP_WARM_S, self.close)
        timer.daemon = True
        with self._lock:
            self._pool, self._timer = pool, timer
        timer.start()

    def take(self, workers: int) -> WorkerPool | None:
        """The idle pool if it has `workers` workers started as a new pool's would be; else None (and it closes)."""
        with self._lock:
            pool, timer, self._pool, self._timer = self._pool, self._timer, None, None
        if timer is not None:
            timer.cancel()
        if pool is not None and pool.idle(workers, worker_env(workers)):
            return pool
        if pool is not None:
            pool.close()
        return None

    def close(self) -> None:
        with self._lock:
            pool, timer, self._pool, self._timer = self._pool, self._timer, None, None
        if timer is not None:
            timer.cancel()
        if pool is not None:
            pool.close()


_warm = _Warm()
atexit.register(_warm.close)
