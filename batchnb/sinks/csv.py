"""CSV parts, read back with the job's output schema."""

from __future__ import annotations

import polars as pl

from batchnb.sinks.base import Sink

__all__ = ["SINK"]


def _write_csv(frame: pl.DataFrame, path: str) -> None:
    frame.write_csv(path)


def _scan_csv(paths: list[str], schema: pl.Schema | None) -> pl.LazyFrame:
    return pl.scan_csv(paths, schema=schema)


# Named functions, not lambdas: a chunk task carries its Sink, and these pickle as references.
SINK = Sink("csv", ".csv", _write_csv, _scan_csv)
