"""The one HTML renderer of a job's Progress and JobResult: `_repr_html_` and the live view both use it.

Static markup (it survives nbconvert exports and needs no widget front end); every text a job state or an
output names is escaped, and a link to an output is always a path (`_link`).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from batchnb.record.status import JobStatus
from batchnb.views.panels import chunk_counts, fmt_bytes, fmt_duration, fmt_rate, heartbeat

if TYPE_CHECKING:  # types only: Progress._repr_html_ imports this module
    from batchnb.record.snapshot import ChunkBoard, Progress

__all__ = ["CSS", "chunk_map_html", "errors_html", "progress_html", "result_html", "stats_html", "status_html"]

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
    "succeeded": "#2ca25f", "failed": "#de2d26", "cancelled": "#e6550d", "interrupted": "#e6550d",
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


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table class='batchnb'>{body}</table>"


def _link(output) -> str:
    """A link to the output directory that a browser can only open as a file.

    Under the notebook's folder the href is relative and starts with `./` (Jupyter opens those), so a
    directory named `javascript:alert(1)` or `data:text/html,...` stays a path and never becomes a URL
    scheme; elsewhere it is the `file://` URI of the resolved path. Both are percent-encoded, then
    escaped for the attribute; the text shows the name as given, escaped.
    """
    text = f"<code>{html.escape(str(output))}</code>"
    if "://" in str(output):  # an object-store output: its URL is no local link
        return text
    try:
        path = Path(output).resolve()
        try:
            href = "./" + quote(path.relative_to(Path.cwd().resolve()).as_posix())
        except ValueError:
            href = path.as_uri()
    except (OSError, ValueError):  # no working directory, or a name no path can hold: show it unlinked
        return text
    return f"<a href=\"{html.escape(href)}\" target='_blank' rel='noopener noreferrer'>{text}</a>"


def result_html(result) -> str:
    rows = [
        ("status", f"<b>{html.escape(result.status)}</b>"),
        ("rows", f"{result.rows_in:,} in, {result.rows_out:,} out"),
        ("anomalies", f"{result.anomalies:,}"),
        ("chunks", f"{result.chunks_done}/{result.chunks_total} done, {result.chunks_failed} failed, "
                   f"{result.chunks_skipped} skipped, {result.retries} retries"),
        ("throughput", f"{result.rows_per_s:,.0f} rows/s in {result.elapsed_s:.2f} s"),
        ("output", _link(result.output)),
    ]  # fmt: skip
    if result.reason:
        rows.append(("reason", html.escape(result.reason)))
    errors = "".join(
        f"<details><summary>{html.escape(str(e))}</summary><pre>{html.escape(e.traceback)}</pre></details>"
        for e in result.errors[:20]
    )
    return _table(rows) + errors


def status_html(name: str, status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#777")
    return (
        f"{CSS}<b>{html.escape(name)}</b>"
        f"<span class='bn-badge batchnb-status-text' style='background:{colour}'>{html.escape(status)}</span>"
    )


def stats_html(p: Progress, board: ChunkBoard | None = None) -> str:
    counts = chunk_counts(p, board)
    total = f"{p.rows_total:,}" if p.rows_total else "?"
    beat = heartbeat(board) if p.status == JobStatus.RUNNING else None
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


def progress_html(p: Progress, board: ChunkBoard | None = None) -> str:
    """A whole snapshot: the status badge, the figures the live view shows, the last error, the chunk board."""
    last = (
        f"<div class='bn-last-error'>last error: <code>{html.escape(p.last_error)}</code></div>" if p.last_error else ""
    )
    return (
        status_html(p.name or "batchnb", p.status)
        + stats_html(p, board)
        + last
        + chunk_map_html(board)
        + errors_html(board)
    )
