"""A spawn-based process pool; tasks travel as cloudpickle bytes so notebook functions work."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

__all__ = ["ProcessesEngine", "call_pickled"]


def call_pickled(payload: bytes) -> Any:
    import cloudpickle

    fn, arg = cloudpickle.loads(payload)
    return fn(arg)


class ProcessesEngine:
    name = "processes"
    needs_pickle = True

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def open(self, workers: int) -> None:
        self._workers = workers
        # spawn, never fork: Polars' and pyarrow's thread pools do not survive a fork.
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, fn: Callable[[Any], Any], arg: Any) -> Future:
        from concurrent.futures.process import BrokenProcessPool

        import cloudpickle

        assert self._pool is not None, "open() first"
        payload = cloudpickle.dumps((fn, arg))
        try:
            return self._pool.submit(call_pickled, payload)
        except BrokenProcessPool:
            # A worker died (killed, out of memory): its chunks fail and are retried; the pool is rebuilt.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self.open(self._workers)
            return self._pool.submit(call_pickled, payload)

    def cancel(self, future: Future) -> None:
        future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def worker_pids(self) -> list[int]:
        if self._pool is None:
            return []
        return [p.pid for p in list(getattr(self._pool, "_processes", {}).values()) if p.pid]
