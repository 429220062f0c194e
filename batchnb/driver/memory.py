"""Memory backpressure: admit a chunk only when the measured cost of a chunk still fits under the limit.

The cost of one chunk is learnt while the job runs (RSS of the driver and its workers above the idle
baseline, per running chunk), one chunk at a time until the first has finished or run for `SETTLE_S`
(a sample taken as a chunk starts may precede its allocations; a long chunk must not hold the others
back for its whole run), so even a function that allocates far more than its input stays under
`memory_limit`. The chunks of a detector that scores with one Polars expression need what their size says:
they start together at once while a generous multiple of that fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from batchnb.errors import EngineError

if TYPE_CHECKING:
    from batchnb.engines.base import Engine

__all__ = ["Admission", "MemoryGuard", "recommend_chunk_size"]

HEADROOM = 0.9  # admit while the projected peak stays under this share of the limit
SETTLE_S = 1.0  # a chunk running this long has usually read and decoded its input: its cost counts
ENGINE_POLL_S = 1.0  # cluster engines: liveness and size checks
MEMORY_EVERY_S = 0.1  # while chunks run, memory is sampled this often (own process and known workers only)
UNMEASURED_MARGIN = 16  # a known chunk cost, before one is measured, counted this many times over (a task may be a
# row group's ten chunks, whose group a format without one-query scoring decodes whole)


def recommend_chunk_size(chunk_size: int, per_chunk: float, available: float) -> int:
    """The chunk size whose measured cost would fit `available` bytes with room to spare."""
    if per_chunk <= 0:
        return chunk_size
    return max(1_000, min(1_000_000, int(chunk_size * 0.5 * available / per_chunk) // 1_000 * 1_000))


@dataclass
class MemoryGuard:
    limit: int
    estimate: float  # bytes one chunk is expected to need, before any is measured
    # The estimate holds (a detector scoring with one Polars expression: a chunk needs its decoded input and scores,
    # whatever the data): chunks start together while UNMEASURED_MARGIN times it fits. Other needs are learnt first.
    known: bool = False
    baseline: int = 0
    per_chunk: float = 0.0
    measured: bool = False
    peak: int = 0

    def observe(self, rss: int, running: int, oldest_s: float = 0.0) -> None:
        """One sample: `rss` with `running` chunks, the oldest of them started `oldest_s` ago."""
        self.peak = max(self.peak, rss)
        if running == 0:
            self.baseline = rss if not self.baseline else min(self.baseline, rss)
            return
        if not self.baseline:
            return
        self.per_chunk = max(self.per_chunk, (rss - self.baseline) / running)
        if oldest_s >= SETTLE_S:
            self.measured = True  # (the runner also says so when a chunk finishes)

    def cost(self) -> float:
        return self.per_chunk if self.measured else max(self.estimate, self.per_chunk)

    def admit(self, rss: int, running: int) -> bool:
        """May one more chunk start now? Never blocks the first one (it must run to be measured)."""
        if running == 0:
            return True
        if not self.measured:  # slow start: learn what one chunk costs before running several, unless it is known
            margin = self.estimate * UNMEASURED_MARGIN
            return self.known and max(rss, self.baseline + running * margin) + margin <= self.limit * HEADROOM
        # Chunks that just started have not allocated yet: count every running chunk at its full cost.
        projected = max(rss, self.baseline + running * self.cost())
        return projected + self.cost() <= self.limit * HEADROOM

    def too_big(self) -> bool:
        """One chunk alone does not fit: only a smaller chunk size can help."""
        return self.measured and self.baseline + self.per_chunk > self.limit

    def available(self) -> float:
        return max(0.0, self.limit * HEADROOM - self.baseline)


class Admission:
    """Whether one more chunk may start: the engine's slots (a cluster's, polled) and the memory guard."""

    def __init__(self, engine: Engine, workers: int, memory: MemoryGuard | None) -> None:
        self.engine, self.memory = engine, memory
        self.window = max(1, engine.in_flight_per_worker * workers)
        self._default, self._polled = self.window, 0.0

    def poll(self, now: float) -> EngineError | None:
        """Cluster engines: is the cluster still there, and how many chunks can it run at once?"""
        if now - self._polled < ENGINE_POLL_S:
            return None
        self._polled = now
        slots = self.engine.capacity()
        if slots:
            self.window = self.engine.in_flight_per_worker * slots
        try:
            self.engine.check()
        except EngineError as exc:
            return exc
        return None

    def room(self, running: int, rss: int) -> bool:
        if running >= self.window:
            return False
        return self.memory is None or self.memory.admit(rss, running)  # else wait for memory to come back

    def wait_s(self, running: int, longest: float) -> float:
        """How long the loop may wait for chunks: memory is sampled often while chunks run."""
        return longest if self.memory is None or not running else min(longest, MEMORY_EVERY_S)
