"""Frames a worker process keeps between chunk tasks, bounded in bytes, each computed once."""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable

import polars as pl

__all__ = ["WORKER_PROCESSES", "FrameCache", "forget_all", "host_share"]

WORKER_PROCESSES = "BATCHNB_WORKER_PROCESSES"  # a job's worker processes on this machine, set where they start

_EVERY: weakref.WeakSet[FrameCache] = weakref.WeakSet()


def forget_all() -> None:
    """Empty every cache of this process: a job ended, and a kernel or an idle worker keeps no frames of it."""
    for cache in list(_EVERY):
        cache.forget()


def host_share(nbytes: int) -> int:
    """This process's share of `nbytes` meant for the machine: worker processes started together split it
    (two workers keeping a full cache each held 1 GB between them on a 10 GB job); a kernel keeps it whole."""
    try:
        processes = int(os.environ.get(WORKER_PROCESSES, "1"))
    except ValueError:
        processes = 1
    return nbytes // max(1, processes)


class FrameCache:
    """The newest frames by key, up to `max_bytes` (always at least one); `None` stands for "not computable"
    and is kept too, so the chunks that share a key ask once."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._frames: OrderedDict[Hashable, pl.DataFrame | None] = OrderedDict()
        self._loading: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()
        _EVERY.add(self)

    def forget(self) -> None:
        with self._lock:
            self._frames.clear()

    def peek(self, key: Hashable) -> pl.DataFrame | None:
        """The frame if it is here now; never loads."""
        with self._lock:
            return self._frames.get(key)

    def get(self, key: Hashable, load: Callable[[], pl.DataFrame | None]) -> pl.DataFrame | None:
        with self._lock:
            if key in self._frames:
                self._frames.move_to_end(key)
                return self._frames[key]
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:  # single flight: a second thread waits for the first load instead of repeating it
            with self._lock:
                if key in self._frames:
                    return self._frames[key]
            frame, loaded = None, False
            try:
                frame, loaded = load(), True
            finally:
                with self._lock:  # stored before its gate goes: a thread arriving now finds it, never loads again
                    if loaded:
                        self._frames[key] = frame
                        while len(self._frames) > 1 and self._bytes() > self.max_bytes:
                            self._frames.popitem(last=False)
                    self._loading.pop(key, None)
            return frame

    def _bytes(self) -> int:
        return sum(int(f.estimated_size()) for f in self._frames.values() if f is not None)
