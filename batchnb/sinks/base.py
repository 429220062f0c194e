"""The shape of an output format, and the scan for parts that only Python can read back."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import polars as pl

from batchnb import formats
from batchnb.errors import ConfigError

__all__ = ["DeferredScan", "Sink", "conform_to"]


@dataclass(frozen=True)
class Sink:
    """One output format: how a part is written and read back.

    A plugin registers one in `batchnb.sinks.REGISTRY` (or the "batchnb.sinks" entry point group); its name is
    then accepted as `output_format=`. Workers receive the Sink itself with each chunk, so one registered at
    run time in a notebook also reaches worker processes.
    """

    name: str
    extension: str  # ".parquet": a dot and 1-16 letters or digits (formats.EXTENSION)
    write: Callable[[pl.DataFrame, str], None]
    scan: Callable[[list[str], pl.Schema | None], pl.LazyFrame]
    # Optional: `frame` written as consecutive files of `rows` rows, the k-th at `paths[k]`, by one query;
    # returns (path, rows) of each file written. A run of chunks then writes its parts together.
    write_split: Callable[[pl.DataFrame, list[str], int], list[tuple[str, int]]] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.extension, str) or not re.fullmatch(formats.EXTENSION, self.extension):
            msg = (
                f"sink {self.name!r}: `extension` {self.extension!r} must be a dot and 1 to 16 letters or digits, "
                "such as '.parquet'"
            )
            raise ConfigError(msg)


def conform_to(frame: pl.DataFrame, schema: pl.Schema | None) -> pl.DataFrame:
    """Cast a part read through pandas back to the job's output schema (pandas widens ints with nulls)."""
    if schema is None:
        return frame
    exprs = []
    for name, dtype in schema.items():
        if name not in frame.columns or frame.schema[name] == dtype:
            continue
        col = pl.col(name)
        if frame.schema[name].is_float() and not dtype.is_float():
            col = col.fill_nan(None)
        exprs.append(col.cast(dtype, strict=False))
    return frame.with_columns(exprs) if exprs else frame


@dataclass(frozen=True)
class DeferredScan:
    """A LazyFrame over parts that only Python can read: parts are loaded one at a time on collect.

    A class rather than a closure, so that a chunk task carrying its Sink pickles it as a reference.
    """

    read_one: Callable[[str], pl.DataFrame]

    def __call__(self, paths: list[str], schema: pl.Schema | None) -> pl.LazyFrame:
        from polars.io.plugins import register_io_source

        read_one = self.read_one
        known = schema if schema is not None else read_one(paths[0]).schema

        def source(with_columns, predicate, n_rows, batch_size) -> Iterator[pl.DataFrame]:
            remaining = n_rows
            for path in paths:
                frame = conform_to(read_one(path), known)
                if with_columns is not None:
                    frame = frame.select(with_columns)
                if predicate is not None:
                    frame = frame.filter(predicate)
                if remaining is not None:
                    frame = frame.head(remaining)
                    remaining -= frame.height
                yield frame
                if remaining is not None and remaining <= 0:
                    return

        return register_io_source(source, schema=known)
