"""Worker processes (spawn + cloudpickle, so notebook functions work); a stuck chunk is killed with its worker."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any

from batchnb.engines.base import Engine
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

    def __init__(self) -> None:
        self._pool: WorkerPool | None = None

    def open(self, workers: int) -> None:
        self._pool = WorkerPool(workers)

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
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def worker_pids(self) -> list[int]:
        return self._pool.pids() if self._pool is not None else []
