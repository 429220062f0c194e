"""The pace of a job and the psutil sampling behind its CPU and memory figures."""

from __future__ import annotations

import collections
import os
import time
from typing import Any

__all__ = ["RateWindow", "ResourceSampler"]


class RateWindow:
    """Rows per second over the last `seconds`, so the ETA follows the current pace."""

    def __init__(self, seconds: float = 10.0) -> None:
        self.seconds = seconds
        self._points: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, rows_done: int, at: float | None = None) -> None:
        at = time.monotonic() if at is None else at
        self._points.append((at, rows_done))
        while len(self._points) > 2 and at - self._points[0][0] > self.seconds:
            self._points.popleft()

    def rate(self) -> float:
        if len(self._points) < 2:
            return 0.0
        (t0, r0), (t1, r1) = self._points[0], self._points[-1]
        return (r1 - r0) / (t1 - t0) if t1 > t0 else 0.0


class ResourceSampler:
    """CPU% and RSS of this process and every process it started (pool workers, local clusters)."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._me = psutil.Process(os.getpid())
        self._known: dict[int, Any] = {}

    def rss(self, pids: list[int]) -> int:
        """RSS of this process and the given workers: cheap enough to call ten times a second."""
        psutil = self._psutil
        total = 0
        for pid in [self._me.pid, *pids]:
            try:
                total += (self._me if pid == self._me.pid else psutil.Process(pid)).memory_info().rss
            except psutil.Error:
                continue
        return total

    def sample(self) -> tuple[float, int]:
        psutil = self._psutil
        try:
            procs = [self._me, *self._me.children(recursive=True)]
        except psutil.Error:
            procs = [self._me]
        cpu, rss = 0.0, 0
        alive = {}
        for proc in procs:
            proc = self._known.get(proc.pid, proc)
            try:
                cpu += proc.cpu_percent(None)
                rss += proc.memory_info().rss
                alive[proc.pid] = proc
            except psutil.Error:
                continue
        self._known = alive
        return cpu, rss
