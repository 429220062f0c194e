"""Snapshots of a job for every view: `Progress` (and `bn.status(dir)`, readable from any process) and the chunk board."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from batchnb.driver.lock import driver_gone
from batchnb.errors import JobStateError
from batchnb.record.store import JobState, state_path

__all__ = ["ChunkBoard", "ChunkMonitor", "Progress", "status"]


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


def status(output: str | Path, *, missing_ok: bool = False) -> Progress:
    """The latest snapshot the driver wrote (at most ~1 s old while it runs).

    Until the job has written its state, the answer is `status="pending"` with zero counts.
    Raises JobStateError only when `output` holds no job at all.
    """
    path = state_path(output)
    if not path.exists():
        if missing_ok or Path(output, "_batchnb").exists():
            return Progress(name=Path(output).name)
        raise JobStateError(f"{str(output)!r} holds no batchnb job: check the output directory")
    with JobState.open(output) as state:
        data = state.get("progress")
        status_now = state.get("status", "pending")
    extra = {}
    if status_now in ("planning", "running") and driver_gone(output):
        extra = {"status": "failed", "chunks_running": 0, "eta_s": None,
                 "last_error": "the driver stopped without finishing (killed or crashed): run() again to resume"}  # fmt: skip
    if data is None:
        return Progress.from_dict({"name": Path(output).name, "status": status_now, **extra})
    return Progress.from_dict({**data, "status": status_now, **extra})


@dataclass(frozen=True, kw_only=True)
class ChunkBoard:
    """Per-chunk detail for live views: a chunk map, the oldest running chunks and the latest errors.

    `cells[i]` is the state of chunks `[i * group, (i + 1) * group)`: one of pending, partial (some done),
    done, running, retrying, failed, skipped. The map has at most `max_cells` cells whatever the chunk count.
    """

    chunks_total: int = 0
    group: int = 1
    cells: tuple[str, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)
    running: tuple[tuple[int, float], ...] = ()  # (chunk, seconds running), oldest first
    typical_s: float | None = None  # mean seconds of a done chunk
    errors: tuple[dict[str, Any], ...] = ()  # latest failed attempts, newest first


# Cell colour: the most notable state of the chunks in it wins.
_PRIORITY = ("failed", "retrying", "running")


class ChunkMonitor:
    """Read-only questions to a job's record for live views; one instance (one connection) per view thread.

    Every question is aggregated by SQLite (which releases the GIL), so a 100_000-chunk job costs the driver
    nothing measurable even when a view refreshes every second.
    """

    def __init__(self, output: str | Path, *, max_cells: int = 400, max_errors: int = 5) -> None:
        self.output = Path(output)
        self.max_cells = max_cells
        self.max_errors = max_errors
        self._state: JobState | None = None

    def _open(self) -> JobState | None:
        if self._state is None:
            if not state_path(self.output).exists():
                return None
            self._state = JobState.open(self.output)
        return self._state

    def board(self) -> ChunkBoard:
        """The current ChunkBoard; an empty one while the job has not written its plan yet."""
        state = self._open()
        if state is None:
            return ChunkBoard()
        with state.reading():
            # The writer creates every table before it saves a plan: with chunks planned, all of them exist.
            total = state.chunk_count()
            if not total:
                return ChunkBoard()
            group = -(-total // self.max_cells)
            per_cell: dict[int, dict[str, int]] = {}
            counts: dict[str, int] = {}
            for cell, kind, n in state.board_cells(group):
                per_cell.setdefault(cell, {})[kind] = n
                counts[kind] = counts.get(kind, 0) + n
            running, typical = state.oldest_running(3), state.typical_seconds()
            errors = state.newest_attempts(self.max_errors)
        now = time.time()
        return ChunkBoard(
            chunks_total=total,
            group=group,
            cells=tuple(_cell_state(per_cell.get(i, {})) for i in range(-(-total // group))),
            counts=counts,
            running=tuple((idx, max(0.0, now - started)) for idx, started in running),
            typical_s=typical,
            errors=tuple(errors),
        )

    def close(self) -> None:
        if self._state is not None:
            self._state.close()
            self._state = None


def _cell_state(states: dict[str, int]) -> str:
    for state in _PRIORITY:
        if states.get(state):
            return state
    done, skipped, pending = states.get("done", 0), states.get("skipped", 0), states.get("pending", 0)
    if not pending:
        return "skipped" if skipped and not done else "done"
    return "partial" if done or skipped else "pending"
