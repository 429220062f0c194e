"""Chunks waiting to start: in order, dealt to workers by what they share, and failed ones after their backoff."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Hashable

from batchnb.config import Backoff
from batchnb.sources.dataset import ChunkSpec

__all__ = ["ChunkQueue", "RetrySchedule", "interleave"]


def interleave(specs: list[ChunkSpec], key: Callable[[ChunkSpec], Hashable | None], lanes: int) -> list[ChunkSpec]:
    """Input order, regrouped so that `lanes` workers each work through their own run of chunks sharing a key.

    Runs of chunks with the same key (a Parquet row group) are taken `lanes` at a time and dealt in
    turn, so the chunks in flight at any moment come from `lanes` different runs: a worker keeps one
    run, and no worker waits for another's.
    """
    runs: list[list[ChunkSpec]] = []
    last: object = object()
    for spec in specs:
        k = key(spec)
        if k is None or k != last:
            runs.append([])
        runs[-1].append(spec)
        last = k
    out: list[ChunkSpec] = []
    for i in range(0, len(runs), max(1, lanes)):
        block = runs[i : i + max(1, lanes)]
        for depth in range(max(len(r) for r in block)):
            out.extend(r[depth] for r in block if depth < len(r))
    return out


class ChunkQueue:
    """Chunks waiting to start, next one last, and how many attempts each has had in this run."""

    def __init__(self, specs: list[ChunkSpec]) -> None:
        self._specs = specs[::-1]  # pop() from the end keeps the given order
        self.attempts: dict[int, int] = {}

    def __bool__(self) -> bool:
        return bool(self._specs)

    def pop(self) -> tuple[ChunkSpec, int]:
        """The next chunk and the number of the attempt it starts now."""
        spec = self._specs.pop()
        attempt = self.attempts[spec.index] = self.attempts.get(spec.index, 0) + 1
        return spec, attempt

    def pop_run(self, key: Callable[[ChunkSpec], Hashable | None], most: int) -> list[tuple[ChunkSpec, int]]:
        """The next chunk and up to `most - 1` after it that share its key (a row group): one task's worth."""
        run = [self.pop()]
        first = key(run[0][0]) if most > 1 else None
        while first is not None and len(run) < most and self._specs and key(self._specs[-1]) == first:
            run.append(self.pop())
        return run

    def again(self, spec: ChunkSpec, attempts_so_far: int) -> None:
        self._specs.append(spec)
        self.attempts[spec.index] = attempts_so_far


class RetrySchedule:
    """Failed attempts waiting out their backoff delay, earliest first."""

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff
        self._heap: list[tuple[float, int, ChunkSpec, int]] = []

    def __bool__(self) -> bool:
        return bool(self._heap)

    def add(self, spec: ChunkSpec, attempt: int) -> float:
        """Schedule the attempt after `attempt`; returns its delay."""
        delay = self.backoff.delay(attempt)
        heapq.heappush(self._heap, (time.monotonic() + delay, spec.index, spec, attempt))
        return delay

    def due(self, now: float) -> list[tuple[ChunkSpec, int]]:
        """The (chunk, attempts so far) whose delay has passed."""
        ready = []
        while self._heap and self._heap[0][0] <= now:
            _, _, spec, attempt = heapq.heappop(self._heap)
            ready.append((spec, attempt))
        return ready

    def wait_s(self, longest: float) -> float:
        """How long the loop may wait before the next retry is due."""
        if not self._heap:
            return longest
        return max(0.0, min(longest, self._heap[0][0] - time.monotonic()))
