"""Feather / Arrow IPC files: record-batch metadata gives row counts; chunks are lazy slices."""

from __future__ import annotations

from typing import Any

import polars as pl

from batchnb.errors import SourceError, cause_of
from batchnb.sources.base import RowFormat, reading
from batchnb.sources.dataset import DatasetInfo
from batchnb.sources.facts import RowCounts

__all__ = ["Feather"]


class Feather(RowFormat):
    name = "feather"

    def facts(self, paths: tuple[str, ...], read_options: dict[str, Any]) -> RowCounts:
        import pyarrow as pa
        import pyarrow.ipc as ipc

        counts = []
        for p in paths:
            try:
                with pa.memory_map(p) as source:
                    reader = ipc.open_file(source)
                    counts.append(reader.count_rows())
            except Exception as exc:
                raise SourceError(
                    f"cannot read Feather/Arrow IPC file {p!r}: {cause_of(exc)}; write it with `write_ipc` or "
                    "`to_feather`"
                ) from exc
        return RowCounts(row_counts=tuple(counts))

    def read_schema(self, path: str, read_options: dict[str, Any]) -> pl.Schema:
        with reading(path, "Feather/Arrow IPC"):
            return pl.Schema(pl.read_ipc_schema(path))

    def read_rows(self, info: DatasetInfo, path: str, start: int, stop: int) -> pl.DataFrame:
        """Rows [start, stop), only the projection's columns (`info.columns`): Polars reads only those buffers."""
        with reading(path, "Feather/Arrow IPC", chunk=True):
            scan = pl.scan_ipc(path)
            scan = scan if info.columns is None else scan.select(info.columns)
            return scan.slice(start, stop - start).collect()
