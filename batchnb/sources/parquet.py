"""Parquet: row counts from the footer; a chunk is a lazy slice, so only its row groups are decoded."""

from __future__ import annotations

from typing import Any

import polars as pl

from batchnb.errors import SourceError
from batchnb.plan import DatasetInfo
from batchnb.sources.base import RowFormat

__all__ = ["Parquet"]


class Parquet(RowFormat):
    name = "parquet"

    def row_counts(self, paths: tuple[str, ...], read_options: dict[str, Any]) -> list[int]:
        import pyarrow.parquet as pq

        counts = []
        for p in paths:
            try:
                counts.append(pq.ParquetFile(p).metadata.num_rows)
            except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a bad footer
                raise SourceError(f"cannot read Parquet file {p!r}: {exc}; is it a complete Parquet file?") from exc
        return counts

    def read_schema(self, path: str, read_options: dict[str, Any]) -> pl.Schema:
        return pl.read_parquet_schema(path)

    def read_rows(self, info: DatasetInfo, path: str, start: int, stop: int) -> pl.DataFrame:
        return pl.scan_parquet(path).slice(start, stop - start).collect()
