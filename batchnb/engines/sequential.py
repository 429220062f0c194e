"""Runs each chunk in the calling thread: the reference engine for tests and debugging."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any

from batchnb.engines.base import Engine, completed

__all__ = ["SequentialEngine"]


class SequentialEngine(Engine):
    name = "sequential"
    max_workers = 1
    in_flight_per_worker = 1  # a chunk runs inside submit(): nothing to keep waiting
    runs_in_submit = True

    def open(self, workers: int) -> None:
        pass

    def submit(self, fn: Callable[[Any], Any], arg: Any, *, affinity: Hashable | None = None) -> Future:
        return completed(fn, arg)

    def close(self) -> None:
        pass
