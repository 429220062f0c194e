"""Snapshots of a job for every view: `Progress` (and `bn.status(dir)`, readable from any process) and the chunk board."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from batchnb.driver.lock import driver_gone
from batchnb.errors import JobStateError
from batchnb.record.store import JobState, _Connection, connect, state_path

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

_CELLS_SQL = """
SELECT idx / ? AS cell,
       CASE WHEN status = 'running' AND EXISTS (
                SELECT 1 FROM attempts a WHERE a.chunk = chunks.idx AND a.at >= chunks.started AND a.delay IS NOT NULL)
            THEN 'retrying' ELSE status END AS state,
       COUNT(*)
FROM chunks GROUP BY cell, state
"""


class ChunkMonitor:
    """Read-only queries on a job's state for live views; one instance per view thread.

    Every query aggregates in SQLite (which releases the GIL), so a 100_000-chunk job costs the driver
    nothing measurable even when a view refreshes every second.
    """

    def __init__(self, output: str | Path, *, max_cells: int = 400, max_errors: int = 5) -> None:
        self.output = Path(output)
        self.max_cells = max_cells
        self.max_errors = max_errors
        self._conn: _Connection | None = None

    def _connect(self) -> _Connection | None:
        if self._conn is None:
            path = state_path(self.output)
            if not path.exists():
                return None
            self._conn = _Connection(connect(self.output), path)
        return self._conn

    def board(self) -> ChunkBoard:
        """The current ChunkBoard; an empty one while the job has not written its plan yet."""
        conn = self._connect()
        if conn is None:
            return ChunkBoard()
        # The writer creates every table before it saves a plan: with chunks planned, all of them exist.
        rows = conn.lookup("SELECT COUNT(*) FROM chunks")
        total = rows[0][0] if rows else 0
        if not total:
            return ChunkBoard()
        group = -(-total // self.max_cells)
        per_cell: dict[int, dict[str, int]] = {}
        counts: dict[str, int] = {}
        for cell, state, n in conn.execute(_CELLS_SQL, (group,)):
            per_cell.setdefault(cell, {})[state] = n
            counts[state] = counts.get(state, 0) + n
        cells = tuple(_cell_state(per_cell.get(i, {})) for i in range(-(-total // group)))
        now = time.time()
        running = conn.execute(
            "SELECT idx, started FROM chunks WHERE status = 'running' AND started IS NOT NULL AND NOT EXISTS ("
            " SELECT 1 FROM attempts a WHERE a.chunk = chunks.idx AND a.at >= chunks.started AND a.delay IS NOT NULL)"
            " ORDER BY started LIMIT 3"
        )
        (typical,) = conn.execute("SELECT AVG(seconds) FROM chunks WHERE status = 'done'")[0]
        cols = ("chunk", "attempt", "at", "type", "message", "traceback", "delay")
        errors = conn.execute(f"SELECT {', '.join(cols)} FROM attempts ORDER BY rowid DESC LIMIT ?", (self.max_errors,))
        return ChunkBoard(
            chunks_total=total,
            group=group,
            cells=cells,
            counts=counts,
            running=tuple((idx, max(0.0, now - started)) for idx, started in running),
            typical_s=typical,
            errors=tuple(dict(zip(cols, row, strict=True)) for row in errors),
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _cell_state(states: dict[str, int]) -> str:
    for state in _PRIORITY:
        if states.get(state):
            return state
    done, skipped, pending = states.get("done", 0), states.get("skipped", 0), states.get("pending", 0)
    if not pending:
        return "skipped" if skipped and not done else "done"
    return "partial" if done or skipped else "pending"
