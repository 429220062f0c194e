"""Output formats: write one part atomically, read all parts back as one LazyFrame in input order."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from batchnb import formats
from batchnb.errors import ConfigError
from batchnb.formats import CODE_RUNNING_FORMATS, PART_NAME, TEMP_NAME, code_running_message
from batchnb.registry import Registry

__all__ = [
    "PART_NAME",
    "REGISTRY",
    "TEMP_NAME",
    "Sink",
    "check_readable",
    "get",
    "names",
    "part_name",
    "register",
    "runs_code",
    "scan_parts",
    "write_atomic",
]


@dataclass(frozen=True)
class Sink:
    """One output format: how a part is written (`write`, or `write_lazy` streaming a query) and read back.

    A plugin registers one in `batchnb.sinks.REGISTRY` (or the "batchnb.sinks" entry point group); its name is
    then accepted as `output_format=`. Workers receive the Sink itself with each chunk, so one registered at
    run time in a notebook also reaches worker processes.
    """

    name: str
    extension: str  # ".parquet": a dot and 1-16 letters or digits (formats.EXTENSION)
    write: Callable[[pl.DataFrame, str], None]
    scan: Callable[[list[str], pl.Schema | None], pl.LazyFrame]
    write_lazy: Callable[[pl.LazyFrame, str], None] | None = None  # streams a query into the file

    def __post_init__(self) -> None:
        if not isinstance(self.extension, str) or not re.fullmatch(formats.EXTENSION, self.extension):
            msg = (
                f"sink {self.name!r}: `extension` {self.extension!r} must be a dot and 1 to 16 letters or digits, "
                "such as '.parquet'"
            )
            raise ConfigError(msg)


def _write_hdf5(frame: pl.DataFrame, path: str) -> None:
    # PyTables stores no nullable booleans: they travel as float (NaN for null) and are cast back on read.
    nullable_bools = [c for c, t in frame.schema.items() if t == pl.Boolean and frame[c].null_count()]
    frame = frame.with_columns(pl.col(nullable_bools).cast(pl.Float64)) if nullable_bools else frame
    frame.to_pandas().to_hdf(path, key="data", format="table", index=False)


def _write_pickle(frame: pl.DataFrame, path: str) -> None:
    frame.to_pandas().to_pickle(path)


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
class _DeferredScan:
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


def _read_hdf5(path: str) -> pl.DataFrame:
    import pandas as pd

    return pl.from_pandas(pd.read_hdf(path, key="data"), include_index=False)


def _read_pickle(path: str) -> pl.DataFrame:
    import pandas as pd

    return pl.from_pandas(pd.read_pickle(path), include_index=False)


def _write_parquet(frame: pl.DataFrame, path: str) -> None:
    # Snappy, the Parquet default of pyarrow, pandas and Spark: encoding a part costs 40 % less CPU
    # than zstd (level 1) for about 13 % more bytes on float data (benchmarks/README.md).
    frame.write_parquet(path, compression="snappy")


def _sink_parquet(query: pl.LazyFrame, path: str) -> None:
    query.sink_parquet(path, compression="snappy")


def _scan_parquet(paths: list[str], schema: pl.Schema | None) -> pl.LazyFrame:
    return pl.scan_parquet(paths)


def _write_csv(frame: pl.DataFrame, path: str) -> None:
    frame.write_csv(path)


def _scan_csv(paths: list[str], schema: pl.Schema | None) -> pl.LazyFrame:
    return pl.scan_csv(paths, schema=schema)


def _write_ndjson(frame: pl.DataFrame, path: str) -> None:
    frame.write_ndjson(path)


def _scan_ndjson(paths: list[str], schema: pl.Schema | None) -> pl.LazyFrame:
    return pl.scan_ndjson(paths, schema=schema)


def _write_ipc(frame: pl.DataFrame, path: str) -> None:
    frame.write_ipc(path)


def _scan_ipc(paths: list[str], schema: pl.Schema | None) -> pl.LazyFrame:
    return pl.scan_ipc(paths)


# Named functions, not lambdas: a chunk task carries its Sink, and these pickle as references.
_BUILT_IN = (
    Sink("parquet", ".parquet", _write_parquet, _scan_parquet, _sink_parquet),
    Sink("csv", ".csv", _write_csv, _scan_csv),
    Sink("json", ".jsonl", _write_ndjson, _scan_ndjson),
    Sink("feather", ".feather", _write_ipc, _scan_ipc),
    Sink("hdf5", ".h5", _write_hdf5, _DeferredScan(_read_hdf5)),
    Sink("pickle", ".pkl", _write_pickle, _DeferredScan(_read_pickle)),
)


# Output formats by name; plugins: entry points in the group "batchnb.sinks" naming a Sink.
def _checked(item: object) -> Sink:
    if not isinstance(item, Sink):
        raise ConfigError(f"an output format must be a batchnb.sinks.Sink, got {item!r}")
    return item


REGISTRY: Registry[Sink] = Registry("sinks", noun="output format", convert=_checked)
for _sink in _BUILT_IN:
    REGISTRY.register(_sink.name, _sink)


def register(sink: Sink) -> Sink:
    """Make `sink` an output format: `output_format=sink.name` then writes and reads its parts."""
    return REGISTRY.register(sink.name, sink)


def get(name: str) -> Sink:
    return REGISTRY.get(name)


def names() -> list[str]:
    return REGISTRY.names()


def part_name(index: int, sink: Sink) -> str:
    return formats.part_name(index, sink.extension)


_TEMP_DIRS: dict[str, Path] = {}  # per process: output -> its checked `_batchnb/tmp`


def _temp_dir(output: str) -> Path:
    """`_batchnb/tmp`, made and checked for a planted link once per output in this process, not per chunk.

    The driver's JobLock checks it before any chunk is written; a worker on another machine holds no lock,
    so its first chunk makes and checks the directory there.
    """
    key = os.path.abspath(output)
    found = _TEMP_DIRS.get(key)
    if found is None:
        from batchnb.files import private_dir

        found = _TEMP_DIRS[key] = private_dir(output, "tmp")
    return found


def write_atomic(
    frame: pl.DataFrame | pl.LazyFrame, output: str, index: int, sink: Sink
) -> tuple[str, int, str, dict[str, float]]:
    """Write to a temp name, hash, then rename: a reader never sees a partial part.

    No fsync: a killed process loses nothing that reached the page cache, and after a power cut a part
    whose bytes did not reach the disk fails its checksum when the job resumes and is written again.

    Returns (part file name, size in bytes, checksum, seconds spent writing and hashing).
    """
    from batchnb.checksum import file_checksum
    from batchnb.files import atomic_file

    tmp_dir = _temp_dir(output)
    name = part_name(index, sink)
    # The sink fills the fresh temp (never matches part-*), which then replaces whatever is at the part's name.
    with atomic_file(
        Path(output, name), directory=tmp_dir, prefix=f"tmp-{index:06d}-", suffix=sink.extension, mode=0o644
    ) as tmp:
        t0 = time.perf_counter()
        if isinstance(frame, pl.LazyFrame):
            sink.write_lazy(frame, str(tmp)) if sink.write_lazy else sink.write(frame.collect(), str(tmp))
        else:
            sink.write(frame, str(tmp))
        t1 = time.perf_counter()
        checksum, size = file_checksum(tmp)
        t2 = time.perf_counter()
    return name, size, checksum, {"write": t1 - t0, "checksum": t2 - t1, "rename": time.perf_counter() - t2}


def runs_code(sink: Sink) -> bool:
    return sink.name in CODE_RUNNING_FORMATS


def check_readable(sink: Sink, *, allow_pickle: bool, output: str | os.PathLike) -> None:
    """Refuse to read pickle/HDF5 parts back unless the reader allowed it, whatever the job state says."""
    if runs_code(sink) and not allow_pickle:
        raise ConfigError(code_running_message(f"the parts of {str(output)!r} are", sink.name, trust="the output"))


def scan_parts(
    paths: Sequence[str], sink: Sink, schema: pl.Schema | None = None, *, allow_pickle: bool = False
) -> pl.LazyFrame:
    """All parts as one LazyFrame with the job's output schema (text formats would re-guess types).

    Pickle and HDF5 parts are read only with `allow_pickle=True` from the caller.
    """
    if paths:
        check_readable(sink, allow_pickle=allow_pickle, output=Path(paths[0]).parent)
    return sink.scan(list(paths), schema)
