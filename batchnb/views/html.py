"""Static HTML for results and snapshots: survives nbconvert exports, needs no widget front end."""

from __future__ import annotations

import html
from pathlib import Path

__all__ = ["progress_html", "result_html"]


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table class='batchnb'>{body}</table>"


def _link(output) -> str:
    """A link to the output directory: relative when it is under the notebook's folder (Jupyter opens those)."""
    path = Path(output).resolve()
    try:
        href = path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        href = path.as_uri()
    text = html.escape(str(output))
    return f"<a href='{html.escape(href)}' target='_blank'><code>{text}</code></a>"


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


def progress_html(p) -> str:
    eta = f"{p.eta_s:.0f} s" if p.eta_s is not None else "-"
    rows = [
        ("status", f"<b>{html.escape(p.status)}</b>"),
        ("progress", f"{p.percent:.1f}% ({p.rows_done:,} of {p.rows_total:,} rows)"),
        ("chunks", f"{p.chunks_done}/{p.chunks_total} done, {p.chunks_running} running, {p.chunks_failed} failed, "
                   f"{p.chunks_skipped} skipped, {p.retries} retries"),
        ("speed", f"{p.rows_per_s:,.0f} rows/s, elapsed {p.elapsed_s:.1f} s, ETA {eta}"),
        ("resources", f"CPU {p.cpu_percent:.0f}%, RSS {p.rss_bytes / 2**20:,.0f} MiB"),
    ]  # fmt: skip
    if p.last_error:
        rows.append(("last error", f"<code>{html.escape(p.last_error)}</code>"))
    return _table(rows)
