"""Newline-delimited JSON in byte ranges; a JSON array file is loaded once and kept as Arrow IPC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from batchnb import storage
from batchnb.errors import SourceError
from batchnb.plan import DatasetInfo
from batchnb.sources.feather import Feather
from batchnb.sources.pickle import materialize
from batchnb.sources.text import ParseMode, TextFormat, lines_before

__all__ = ["NDJSON"]


def _first_byte(path: str) -> bytes:
    with storage.open_input(path) as f:
        return f.read(4096).lstrip()[:1]


def _load_array(path: str) -> pl.DataFrame:
    try:
        return pl.read_json(path)
    except Exception as exc:
        raise SourceError(f"cannot read JSON array file {path!r}: {exc}") from exc


class NDJSON(TextFormat):
    name = "json"

    def inspect(self, paths: tuple[str, ...], read_options: dict[str, Any], *, workdir: Path) -> DatasetInfo:
        if any(_first_byte(p) == b"[" for p in paths):
            converted = materialize(paths, workdir, _load_array, "json")
            return Feather().inspect(converted, read_options, workdir=workdir)
        return super().inspect(paths, read_options, workdir=workdir)

    def parse(self, data: bytes, info: DatasetInfo, *, mode: ParseMode) -> pl.DataFrame:
        if not data.strip():
            return pl.DataFrame(schema=info.polars_schema() if info.schema else {})
        if mode == "infer":
            return pl.read_ndjson(data, infer_schema_length=10_000, ignore_errors=True)
        return pl.read_ndjson(data, schema=info.polars_schema(), ignore_errors=mode == "lenient")

    def located_error(self, exc: Exception, info: DatasetInfo, path: str, start: int, data: bytes) -> Exception:
        first_line = lines_before(path, start) + 1
        return ValueError(f"{path}: cannot parse the NDJSON records from line {first_line}: {str(exc).splitlines()[0]}")
