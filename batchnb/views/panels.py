"""Plain-text figures of a job, computed from a Progress and a ChunkBoard: numbers, counts, the heartbeat.

No widget library and no markup here: the HTML renderer (views/html.py), the plain-text line and the tests
share these functions, so every front end shows the same numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchnb.record.status import JobStatus

if TYPE_CHECKING:  # types only: Progress._repr_html_ reaches this module through views/html.py
    from batchnb.record.snapshot import ChunkBoard, Progress

__all__ = ["chunk_counts", "fmt_bytes", "fmt_duration", "fmt_rate", "heartbeat", "text_line"]


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(max(0.0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def fmt_rate(rows_per_s: float) -> str:
    for limit, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if rows_per_s >= limit:
            return f"{rows_per_s / limit:.2f}{unit} rows/s"
    return f"{rows_per_s:.0f} rows/s"


def fmt_bytes(n: int | float) -> str:
    for limit, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= limit:
            return f"{n / limit:.1f} {unit}"
    return f"{n:.0f} B"


def chunk_counts(p: Progress, board: ChunkBoard | None) -> dict[str, int]:
    """done/running/failed/retrying/skipped: the driver's counts, plus retrying (waiting out a backoff) from the
    chunk table."""
    retrying = board.counts.get("retrying", 0) if board is not None else 0
    return {
        "done": p.chunks_done,
        "running": p.chunks_running if p.status == JobStatus.RUNNING else 0,
        "failed": p.chunks_failed,
        "retrying": retrying if p.status == JobStatus.RUNNING else 0,
        "skipped": p.chunks_skipped,
    }


def heartbeat(board: ChunkBoard | None, *, slow_factor: float = 4.0, min_s: float = 10.0) -> str | None:
    """ "chunk 812 running for 4 min" when the oldest running chunk runs far longer than its peers."""
    if board is None or not board.running:
        return None
    chunk, age = board.running[0]
    limit = max(min_s, slow_factor * board.typical_s) if board.typical_s else min_s
    if age < limit:
        return None
    age_text = f"{age / 60:.0f} min" if age >= 120 else f"{age:.0f} s"
    peers = f" (others take ~{board.typical_s:.1f} s)" if board.typical_s else ""
    return f"chunk {chunk} running for {age_text}{peers}"


def text_line(p: Progress, board: ChunkBoard | None = None) -> str:
    """One plain-text line (papermill logs, nbconvert, a kernel without a widget front end)."""
    counts = chunk_counts(p, board)
    total = f"{p.rows_total:,}" if p.rows_total else "?"
    line = (
        f"{p.name or 'batchnb'}: {p.status} {p.percent:5.1f}% | {p.rows_done:,}/{total} rows | "
        f"{fmt_rate(p.rows_per_s)} | elapsed {fmt_duration(p.elapsed_s)} | ETA "
        f"{fmt_duration(p.eta_s) if p.status == 'running' else '-'} | chunks {p.chunks_done:,}/{p.chunks_total:,} done, "
        + ", ".join(f"{v:,} {k}" for k, v in counts.items() if k != "done" and v)
    ).rstrip(", ")
    beat = heartbeat(board) if p.status == JobStatus.RUNNING else None
    return f"{line} | {beat}" if beat else line
