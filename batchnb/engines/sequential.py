"""Runs each chunk in the calling thread: the reference engine for tests and debugging."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from batchnb.engines.base import completed

__all__ = ["SequentialEngine"]


class SequentialEngine:
    name = "sequential"
    needs_pickle = False

    def open(self, workers: int) -> None:
        pass

    def submit(self, fn: Callable[[Any], Any], arg: Any) -> Future:
        return completed(fn, arg)

    def cancel(self, future: Future) -> None:
        future.cancel()

    def close(self) -> None:
        pass

    def worker_pids(self) -> list[int]:
        return []
