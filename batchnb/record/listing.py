"""The jobs under a folder, for a user who forgot where an output went."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from batchnb.errors import JobStateError
from batchnb.record.snapshot import status

__all__ = ["jobs"]

SKIPPED_DIRS = {"node_modules", "site-packages", "__pycache__"}


def jobs(path: str | os.PathLike = ".", *, depth: int = 4) -> pl.DataFrame:
    """One row per job whose output lies under `path` (at most `depth` folders down; hidden folders and
    virtual environments are not searched): output, name, status (running, succeeded, failed, cancelled,
    interrupted, ...), chunks done, total and failed, rows done and the last error. Links are not followed."""
    root = Path(path)
    rows = []
    for folder, dirs, _ in os.walk(root, followlinks=False):
        here = Path(folder)
        if len(here.relative_to(root).parts) >= depth:
            dirs.clear()
        if "_batchnb" in dirs and (here / "_batchnb" / "state.sqlite").is_file():
            rows.append(_row(here))
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")) and d not in SKIPPED_DIRS)
    schema = {"output": pl.String, "name": pl.String, "status": pl.String, "chunks_done": pl.Int64,
              "chunks_total": pl.Int64, "chunks_failed": pl.Int64, "rows_done": pl.Int64, "last_error": pl.String}  # fmt: skip
    return pl.DataFrame(rows, schema=schema, orient="row")


def _row(output: Path) -> tuple:
    try:
        p = status(output)
    except JobStateError as exc:  # a damaged or foreign record: listed, with why it cannot be read
        return (str(output), output.name, "unreadable", None, None, None, None, str(exc))
    return (str(output), p.name, str(p.status), p.chunks_done, p.chunks_total, p.chunks_failed, p.rows_done,
            p.last_error)  # fmt: skip
