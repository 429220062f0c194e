"""Pure text and HTML fragments of the live view, computed from a Progress and a ChunkBoard.

No widget library here: the widget view, the plain-text line and the tests share these functions, so every
front end shows the same numbers.
"""

from __future__ import annotations

import html

from batchnb.record.snapshot import ChunkBoard, Progress

__all__ = [
    "CSS",
    "chunk_counts",
    "chunk_map_html",
    "errors_html",
    "fmt_bytes",
    "fmt_duration",
    "fmt_rate",
    "heartbeat",
    "stats_html",
    "status_html",
    "text_line",
]

# Colours of chunk states (also the legend). Kept small: the whole map is re-sent when it changes.
COLOURS = {
    "pending": "#d9d9d9",
    "partial": "#a6dba0",
    "done": "#2ca25f",
    "running": "#3182bd",
    "retrying": "#fd8d3c",
    "failed": "#de2d26",
    "skipped": "#969696",
}
STATUS_COLOURS = {
    "pending": "#777", "planning": "#777", "running": "#3182bd",
    "succeeded": "#2ca25f", "failed": "#de2d26", "cancelled": "#e6550d",
}  # fmt: skip

CSS = (
    "<style>"
    ".bn-map{display:flex;flex-wrap:wrap;gap:1px;max-width:640px;line-height:0}"
    ".bn-map i{display:inline-block;width:8px;height:8px}"
    + "".join(f".bn-map i.{k},.bn-legend i.{k}{{background:{v}}}" for k, v in COLOURS.items())
    + ".bn-legend{font-size:11px;color:#555}.bn-legend i{display:inline-block;width:8px;height:8px;margin:0 3px 0 8px}"
    ".bn-stats{font-family:var(--jp-code-font-family,monospace);font-size:12px;line-height:1.5}"
    ".bn-beat{color:#e6550d}.bn-errors pre{max-height:240px;overflow:auto;font-size:11px}"
    ".bn-badge{color:#fff;border-radius:3px;padding:1px 6px;margin-left:6px;font-size:12px}"
    "</style>"
)


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
        "running": p.chunks_running if p.status == "running" else 0,
        "failed": p.chunks_failed,
        "retrying": retrying if p.status == "running" else 0,
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


def status_html(name: str, status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#777")
    return (
        f"{CSS}<b>{html.escape(name)}</b>"
        f"<span class='bn-badge batchnb-status-text' style='background:{colour}'>{html.escape(status)}</span>"
    )


def stats_html(p: Progress, board: ChunkBoard | None = None) -> str:
    counts = chunk_counts(p, board)
    total = f"{p.rows_total:,}" if p.rows_total else "?"
    beat = heartbeat(board) if p.status == "running" else None
    parts = [
        f"<span class='bn-rows'>{p.rows_done:,} / {total} rows</span> ({p.percent:.1f}%)",
        f"<span class='bn-rate'>{fmt_rate(p.rows_per_s)}</span>",
        f"elapsed <span class='bn-elapsed'>{fmt_duration(p.elapsed_s)}</span>",
        f"ETA <span class='bn-eta'>{fmt_duration(p.eta_s) if p.status == 'running' else '-'}</span>",
        f"CPU {p.cpu_percent:.0f}%",
        f"RSS {fmt_bytes(p.rss_bytes)}",
    ]
    chunk_line = f"chunks {p.chunks_done:,}/{p.chunks_total:,} done · " + " · ".join(
        f"<span class='bn-{k}'>{v:,} {k}</span>" for k, v in counts.items() if k != "done"
    )
    lines = [" · ".join(parts), chunk_line]
    if p.retries:
        lines.append(f"{p.retries:,} retries so far")
    if beat:
        lines.append(f"<span class='bn-beat'>{html.escape(beat)}</span>")
    return "<div class='bn-stats'>" + "<br>".join(lines) + "</div>"


def chunk_map_html(board: ChunkBoard | None) -> str:
    """One 8px cell per chunk (or per group of chunks): at most `max_cells` elements, whatever the job size."""
    if board is None or not board.cells:
        return ""
    cells = "".join(f"<i class={state}></i>" for state in board.cells)
    per = "chunk" if board.group == 1 else f"{board.group:,} chunks"
    legend = "".join(f"<i class={k}></i>{k}" for k in COLOURS)
    return f"<div class=bn-map>{cells}</div><div class=bn-legend>one cell = {per}:{legend}</div>"


def errors_html(board: ChunkBoard | None) -> str:
    """The latest failed attempts, newest first, each with its traceback behind a <details>."""
    if board is None or not board.errors:
        return ""
    items = []
    for e in board.errors:
        then = "retrying" if e["delay"] is not None else "gave up"
        summary = f"chunk {e['chunk']}, attempt {e['attempt']} ({then}): {e['type']}: {e['message']}"
        items.append(
            f"<details><summary>{html.escape(summary[:300])}</summary><pre>{html.escape(e['traceback'] or '')}</pre>"
            "</details>"
        )
    return "<div class=bn-errors><b>latest errors</b>" + "".join(items) + "</div>"


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
    beat = heartbeat(board) if p.status == "running" else None
    return f"{line} | {beat}" if beat else line
