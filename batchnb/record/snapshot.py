"""Snapshots of a job for every view: `Progress` (and `bn.status(dir)`, readable from any process) and the chunk board."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from batchnb.driver.lock import driver_gone
from batchnb.errors import ChunkError, JobStateError
from batchnb.place import output_name
from batchnb.record.guard import BAD_VALUE, bad_value
from batchnb.record.status import JobStatus
from batchnb.record.store import JobState, state_path

__all__ = ["ChunkBoard", "ChunkMonitor", "Live", "Progress", "begin_run", "progress", "status"]


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

    def paced(self, rows_per_s: float) -> Progress:
        """This snapshot at the given pace, with the time left it implies."""
        left = max(0, self.rows_total - self.rows_done)
        return replace(self, rows_per_s=rows_per_s, eta_s=left / rows_per_s if rows_per_s > 0 else None)

    @classmethod
    def from_dict(cls, data: dict[str, Any], **future_fields: Any) -> Progress:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in {**data, **future_fields}.items() if k in known})

    def _repr_html_(self) -> str:
        from batchnb.views.html import progress_html

        return progress_html(self)


@dataclass(frozen=True, kw_only=True)
class Live:
    """What only the running loop knows: the chunks in flight now, its own clock and the resources it sampled."""

    running: int
    elapsed_s: float
    cpu_percent: float
    rss_bytes: int


_META = ("status", "run", "elapsed_s", "reason", "config", "progress")
_GONE = (
    "the driver stopped without finishing (killed, crashed, machine restarted): run the same job again to resume "
    "(job.run(), job.start(detach=True), or `batchnb run` with the same options)"
)


def begin_run(state: JobState) -> float:
    """Note when this run starts and the seconds earlier runs took (what `progress` measures elapsed time from);
    returns those seconds."""
    before = float(state.get("elapsed_s", 0.0))
    state.set(run={"started_at": time.time(), "elapsed_before": before})
    return before


def progress(state: JobState, *, live: Live | None = None) -> Progress:
    """The job's Progress as its record tells it: the one count, whoever asks.

    Chunk counts, rows done, planned rows corrected by what finished chunks held, retries, status and the last
    error come from the record; the pace, CPU and memory from the driver's newest timeline sample unless the
    running loop gives its own (`live`). A record written before runs noted their start holds its last
    Progress as JSON: that one is returned.
    """
    with state.reading():
        meta = state.meta(*_META)
        stored = live is None and "run" not in meta
        if not stored:
            tally, retries, last = state.tally(), state.retries(), state.latest_attempt()
            sample = state.latest_sample() if live is None else None
            waiting = state.waiting_for_retry() if live is None else 0
    try:
        if stored:
            return _stored(meta, name=state.path.parent.parent.name)
        return _built(meta, live=live, tally=tally, retries=retries, last=last, sample=sample, waiting=waiting)
    except BAD_VALUE as exc:
        raise bad_value(state.path, exc) from exc


def _stored(meta: dict[str, Any], *, name: str) -> Progress:
    data, status_now = meta.get("progress"), JobStatus(meta.get("status", JobStatus.PENDING))
    if data is None:
        return Progress(name=name, status=status_now)
    return Progress.from_dict({**data, "status": status_now})


def _built(
    meta: dict[str, Any],
    *,
    live: Live | None,
    tally: dict[str, tuple[int, int, int]],
    retries: int,
    last: tuple[float, ChunkError] | None,
    sample: tuple[float, float, float, int] | None = None,
    waiting: int = 0,
) -> Progress:
    status_now = JobStatus(meta.get("status", JobStatus.PENDING))  # a value batchnb never writes: ValueError
    terminal = status_now.is_terminal
    run = meta.get("run") or {}
    started, before = float(run.get("started_at", 0.0)), float(run.get("elapsed_before", 0.0))
    rows_done = int(tally.get("done", (0, 0, 0))[1])
    rows_total = sum(int(rows if state == "done" else planned) for state, (_, rows, planned) in tally.items())
    if live is None:
        at, rate, cpu, rss = sample or (0.0, 0.0, 0.0, 0)
        running = 0 if terminal else max(0, int(tally.get("running", (0, 0, 0))[0]) - waiting)
        elapsed = float(meta.get("elapsed_s", 0.0)) if terminal else before + max(0.0, float(at) - started)
        live = Live(running=running, elapsed_s=elapsed, cpu_percent=float(cpu), rss_bytes=int(rss))
        updated, rate = float(at), float(rate)
    else:
        updated, rate = time.time(), 0.0  # the loop adds its own pace
    this_run = str(last[1]) if last is not None and last[0] >= started else None
    return Progress(
        name=str((meta.get("config") or {}).get("name") or ""),
        status=status_now,
        chunks_total=sum(int(n) for n, _, _ in tally.values()),
        chunks_done=int(tally.get("done", (0, 0, 0))[0]),
        chunks_failed=int(tally.get("failed", (0, 0, 0))[0]),
        chunks_skipped=int(tally.get("skipped", (0, 0, 0))[0]),
        chunks_running=live.running,
        rows_done=rows_done,
        rows_total=rows_total,
        percent=100.0 * rows_done / rows_total if rows_total else 100.0,
        elapsed_s=live.elapsed_s,
        cpu_percent=live.cpu_percent,
        rss_bytes=live.rss_bytes,
        retries=retries,
        last_error=(meta.get("reason") if terminal else None) or this_run,
        updated_at=updated,
    ).paced(rate)


def status(output: str | Path, *, missing_ok: bool = False) -> Progress:
    """The job's progress from its record, from any process (the driver samples its pace every ~0.5 s).

    Until the job has written its state, the answer is `status="pending"` with zero counts; a job whose
    driver is gone (killed, crashed) reads "interrupted", with how to resume as its last error. Raises JobStateError only when `output` holds no job.
    """
    path = state_path(output)
    if not path.exists():
        if missing_ok or path.parent.exists():
            return Progress(name=output_name(output))
        raise JobStateError(f"{str(output)!r} holds no batchnb job: check the output directory")
    with JobState.open(output) as state:
        snapshot = progress(state)
    if snapshot.status in (JobStatus.PLANNING, JobStatus.RUNNING) and driver_gone(output):
        return replace(snapshot, status=JobStatus.INTERRUPTED, chunks_running=0, eta_s=None, last_error=_GONE)
    return snapshot


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
        self.output = os.fspath(output)
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
