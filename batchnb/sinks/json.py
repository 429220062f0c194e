"""Newline-delimited JSON parts, read back with the job's output schema."""

from __future__ import annotations

import polars as pl

from batchnb.sinks.base import Sink

__all__ = ["SINK"]


def _write_ndjson(frame: pl.DataFrame, path: str) -> None:
    frame.write_ndjson(path)


def _scan_ndjson(paths: list[str], schema: pl.Schema | None) -> pl.LazyFrame:
    return pl.scan_ndjson(paths, schema=schema)


# Named functions, not lambdas: a chunk task carries its Sink, and these pickle as references.
SINK = Sink("json", ".jsonl", _write_ndjson, _scan_ndjson)
