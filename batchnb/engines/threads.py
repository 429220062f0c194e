"""A thread pool: Polars and pyarrow release the GIL, so threads scale for built-in detectors."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["ThreadsEngine"]


class ThreadsEngine:
    name = "threads"
    needs_pickle = False

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    def open(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batchnb-chunk")

    def submit(self, fn: Callable[[Any], Any], arg: Any) -> Future:
        assert self._pool is not None, "open() first"
        return self._pool.submit(fn, arg)

    def cancel(self, future: Future) -> None:
        future.cancel()  # a running thread cannot be stopped; its result is ignored

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def worker_pids(self) -> list[int]:
        return []
