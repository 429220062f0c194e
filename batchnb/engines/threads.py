"""A thread pool: Polars and pyarrow release the GIL, so threads scale for built-in detectors.

A thread cannot be stopped from outside. A chunk over `chunk_timeout` is abandoned: it counts as a
failed attempt, its late result is ignored, and `close()` does not wait for it. Use
`engine="processes"` when chunks can hang for good: there the worker is killed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from batchnb.engines.base import Engine

__all__ = ["ThreadsEngine"]


class ThreadsEngine(Engine):
    name = "threads"
    chunks_per_task = 32  # a task per row group: its chunks' parts committed together (`driver.batches`)

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._abandoned: set[Future] = set()

    def open(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batchnb-chunk")
        self._abandoned.clear()

    def submit(self, fn: Callable[[Any], Any], arg: Any, *, affinity: Hashable | None = None) -> Future:
        assert self._pool is not None, "open() first"
        return self._pool.submit(fn, arg)

    def cancel(self, future: Future) -> None:
        if not future.cancel() and not future.done():
            self._abandoned.add(future)

    def close(self) -> None:
        if self._pool is not None:
            stuck = any(not f.done() for f in self._abandoned)
            self._pool.shutdown(wait=not stuck, cancel_futures=True)
            self._pool = None
