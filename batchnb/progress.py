"""Progress snapshots (pure data) and the psutil sampling behind their CPU and memory figures."""

from __future__ import annotations

import collections
import os
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["Progress", "RateWindow", "ResourceSampler"]


@dataclass(frozen=True, kw_only=True)
class Progress:
    """One snapshot of a job; every view (widget, tqdm, `bn.status`) renders only this."""

    status: str = "pending"
    chunks_total: int = 0
    chunks_done: int = 0
    chunks_failed: int = 0
    chunks_skipped: int = 0
    chunks_running: int = 0
    rows_done: int = 0
    rows_total: int = 0
    percent: float = 0.0
    rows_per_s: float = 0.0
    eta_s: float | None = None
    elapsed_s: float = 0.0
    cpu_percent: float = 0.0
    rss_bytes: int = 0
    retries: int = 0
    last_error: str | None = None
    updated_at: float = 0.0
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], **future_fields: Any) -> Progress:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in {**data, **future_fields}.items() if k in known})

    def _repr_html_(self) -> str:
        from batchnb.views.html import progress_html

        return progress_html(self)


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
