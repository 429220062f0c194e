"""Static HTML for results and snapshots: survives nbconvert exports, needs no widget front end."""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

__all__ = ["progress_html", "result_html"]


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
