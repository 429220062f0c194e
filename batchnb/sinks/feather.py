"""Feather (Arrow IPC) parts."""

from __future__ import annotations

import polars as pl

from batchnb.sinks.base import Sink

__all__ = ["SINK"]


def _write_ipc(frame: pl.DataFrame, path: str) -> None:
    frame.write_ipc(path)


def _scan_ipc(paths: list[str], schema: pl.Schema | None) -> pl.LazyFrame:
    return pl.scan_ipc(paths)


# Named functions, not lambdas: a chunk task carries its Sink, and these pickle as references.
SINK = Sink("feather", ".feather", _write_ipc, _scan_ipc)
