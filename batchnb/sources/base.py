"""The source contract: plan chunks from metadata on the driver, read one chunk on a worker."""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import polars as pl

from batchnb import storage
from batchnb.errors import BatchError, ConfigError, DataError, PanicException, SourceError, cause_of
from batchnb.sources.dataset import ChunkSpec, DatasetInfo, Piece
from batchnb.sources.facts import RowCounts
from batchnb.sources.schema import check_exact, exact_range, range_message, schema_to_ipc, schema_to_text, unify_schemas

if TYPE_CHECKING:
    from batchnb.sources.staging import Workdir

__all__ = ["Check", "Format", "RowFormat", "conform", "reading", "resolve_paths", "sample_starts"]

SAMPLE_BLOCKS = 32
Check = tuple[Callable[[Any], bool], str]  # is the value right, and what the message says it must be


_GLOB_CHARS = set("*?[")


def resolve_paths(source: str | tuple[str, ...]) -> tuple[str, ...]:
    """Files of the dataset in sorted order; a glob or list is one dataset, a job output dir its parts."""
    items = (source,) if isinstance(source, str) else tuple(sorted(source))
    paths: list[str] = []
    for item in items:
        if storage.is_url(item):
            paths.extend(_resolve_url(item))
        elif _GLOB_CHARS & set(item):
            matched = sorted(p for p in glob.glob(item) if os.path.isfile(p))
            if not matched:
                raise SourceError(f"source {item!r} matches no file: check the pattern and the working directory")
            paths.extend(matched)
        elif os.path.isdir(item):
            parts = sorted(p for p in glob.glob(os.path.join(item, "part-*")) if os.path.isfile(p))
            if not parts:
                raise SourceError(
                    f"source {item!r} is a directory with no part-* files: point at a file, a glob or a job output"
                )
            paths.extend(parts)
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise SourceError(f"source file {item!r} does not exist: check the path (relative to {os.getcwd()!r})")
    for p in paths:
        if storage.file_size(p) == 0:
            raise SourceError(f"source file {p!r} is empty (0 bytes): nothing to read; check that it was fully written")
    return tuple(paths)


def _resolve_url(item: str) -> list[str]:
    if _GLOB_CHARS & set(item.split("://", 1)[1]):
        matched = storage.glob(item)
        if not matched:
            raise SourceError(f"source {item!r} matches no object: check the pattern and the credentials")
        return matched
    found = storage.info(item)
    if found is None:
        raise SourceError(f"source {item!r} does not exist: check the URL and the credentials in the environment")
    if found["type"] == "directory":
        parts = storage.list_parts(item)
        if not parts:
            raise SourceError(f"source {item!r} is a directory with no part-* files: point at a file or a glob")
        return parts
    return [item]


def fingerprint(paths: Sequence[str]) -> list[list[Any]]:
    """Cheap identity of the input: a changed file changes it (an object store's ETag stands for mtime)."""
    out = []
    for p in paths:
        if storage.is_url(p):
            found = storage.info(p) or {}
            out.append([p, found.get("size"), found.get("version")])
            continue
        st = os.stat(p)
        out.append([os.path.abspath(p), st.st_size, st.st_mtime_ns])
    return out


def sample_starts(total: int, n: int, seed: int) -> list[tuple[int, int]]:
    """Row ranges of a stratified block sample: depends only on `total`, `n` and `seed`."""
    if total <= n:
        return [(0, total)] if total else []
    blocks = min(SAMPLE_BLOCKS, n)
    per_block = n // blocks
    rng = np.random.default_rng(seed)
    ranges = []
    for j in range(blocks):
        lo, hi = j * total // blocks, (j + 1) * total // blocks
        start = lo + int(rng.integers(0, max(1, hi - lo - per_block + 1)))
        ranges.append((start, min(start + per_block, hi)))
    return ranges


def parallel_map(fn, items: list) -> list:
    """Sample blocks are independent small reads: overlap them (Polars and file reads release the GIL)."""
    if len(items) < 2:
        return [fn(i) for i in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(fn, items))


@contextlib.contextmanager
def reading(path: str, kind: str, *, chunk: bool = False) -> Iterator[None]:
    """Errors of the library reading `path` as the user's error, with the cause in the message: a SourceError,
    or for a chunk whose bytes do not decode a DataError (the same bytes fail again). An error of the operating
    system (one with an errno) stays a SourceError: it may pass (a network file system), so its chunk is retried;
    pyarrow raises OSError without one for bytes it cannot decode."""
    try:
        yield
    except BatchError:
        raise
    except (Exception, PanicException) as exc:
        if isinstance(exc, MemoryError):
            raise
        system = isinstance(exc, OSError) and exc.errno is not None
        cls = DataError if chunk and not system else SourceError
        msg = f"cannot read {kind} file {path!r}: {cause_of(exc)}; is it a complete {kind} file?"
        raise cls(msg) from exc


class Format(Protocol):
    """One input format. `inspect` and `plan` run on the driver; `read` runs on a worker.

    A format may also define `scan_chunk(info, spec) -> pl.LazyFrame | None`: the chunk as a query that a
    built-in detector's scoring joins, so one pass parses and scores (CSV); None, or a query that fails,
    falls back to `read`. `scan_unit(info, unit)` does the same for a storage unit of `units` (Parquet).
    """

    name: ClassVar[str]
    options: ClassVar[dict[str, Check]]  # the `read_options` keys this format honours; any other is refused

    @classmethod
    def check_options(cls, read_options: Mapping[str, Any]) -> None: ...

    def inspect(
        self,
        paths: tuple[str, ...],
        read_options: dict[str, Any],
        *,
        workdir: Workdir,
        origins: Mapping[str, str] | None = None,
    ) -> DatasetInfo:
        """`origins` maps a staged copy among `paths` to the user's file, which messages then name; `workdir`
        is where a format that must convert its files keeps the copies."""
        ...

    def plan(self, info: DatasetInfo, chunk_size: int) -> tuple[ChunkSpec, ...]: ...

    def sample(self, info: DatasetInfo, n: int, seed: int, columns: Sequence[str] | None = None) -> pl.DataFrame: ...

    def read(self, info: DatasetInfo, spec: ChunkSpec) -> pl.DataFrame: ...

    def locality(self, info: DatasetInfo, spec: ChunkSpec) -> Hashable | None:
        """What a worker that read this chunk has already decoded (a Parquet row group), or None: chunks
        with the same key are cheaper on the same worker."""
        ...


class RowFormat:
    """A format whose files know their row counts from metadata: chunks are exact global row ranges."""

    name: ClassVar[str] = ""
    options: ClassVar[dict[str, Check]] = {}  # the `read_options` keys this format honours; any other is refused

    @classmethod
    def check_options(cls, read_options: Mapping[str, Any]) -> None:
        """Refuse, by name, a key this format does not honour or a value of the wrong type."""
        for key, value in read_options.items():
            if key not in cls.options:
                raise ConfigError(
                    f"`read_options` key {key!r} is not supported for {cls.name} sources: accepted keys are "
                    f"{sorted(cls.options)}"
                )
            ok, expected = cls.options[key]
            if not ok(value):
                raise ConfigError(f"`read_options[{key!r}]` must be {expected}, got {value!r}")

    def facts(self, paths: tuple[str, ...], read_options: dict[str, Any]) -> RowCounts:
        """What planning and reading need from the files' metadata: at least their row counts."""
        raise NotImplementedError

    def read_schema(self, path: str, read_options: dict[str, Any]) -> pl.Schema:
        raise NotImplementedError

    def read_rows(self, info: DatasetInfo, path: str, start: int, stop: int) -> pl.DataFrame:
        raise NotImplementedError

    def value_ranges(
        self, path: str, columns: Sequence[str], read_options: dict[str, Any]
    ) -> dict[str, tuple[Any, Any]]:
        """The least and greatest value of each of `columns` in `path` that metadata alone gives (one read
        of the file's metadata); a column it does not know is left out."""
        return {}

    def inspect(
        self,
        paths: tuple[str, ...],
        read_options: dict[str, Any],
        *,
        workdir: Workdir,
        origins: Mapping[str, str] | None = None,
    ) -> DatasetInfo:
        return self.describe(paths, read_options, origins=origins or {})

    def describe(
        self, paths: tuple[str, ...], read_options: dict[str, Any], *, origins: Mapping[str, str]
    ) -> DatasetInfo:
        """The dataset of `paths` (copies named in `origins` stand for the user's files, which errors name)."""
        facts = self.facts(paths, read_options)
        named = [(p, self.read_schema(p, read_options)) for p in paths]
        schema = unify_schemas([(origins.get(p, p), own) for p, own in named])
        self._check_ranges(named, schema, read_options, origins)
        return DatasetInfo(
            format=self.name,
            paths=paths,
            schema=schema_to_text(schema),
            dtypes=schema_to_ipc(schema),
            read_options=dict(read_options),
            total_rows=sum(facts.row_counts),
            total_bytes=sum(storage.file_size(p) for p in paths),
            facts=facts,
            origins=dict(origins),
        )

    def _check_ranges(
        self,
        named: Sequence[tuple[str, pl.Schema]],
        schema: pl.Schema,
        read_options: dict[str, Any],
        origins: Mapping[str, str],
    ) -> None:
        """Refuse before any chunk runs a file whose statistics show a value its column's dataset type cannot
        hold exactly (a UInt64 id above 2**63 - 1, an Int64 beyond 2**53 in Float64); files without
        statistics are checked chunk by chunk (`conform`)."""
        for path, own in named:
            bounds = {c: b for c, dtype in own.items() if (b := exact_range(dtype, schema[c])) is not None}
            found = self.value_ranges(path, list(bounds), read_options) if bounds else {}
            for column, values in found.items():
                lo, hi = bounds[column]
                value = next((v for v in values if not lo <= v <= hi), None)
                if value is not None:
                    where = origins.get(path, path)
                    raise SourceError(range_message(column, where, own[column], schema[column], value, bounds[column]))

    def locality(self, info: DatasetInfo, spec: ChunkSpec) -> Hashable | None:
        return None

    def units(self, info: DatasetInfo, spec: ChunkSpec) -> list[tuple[Hashable, ChunkSpec]] | None:
        """(a key naming its bytes, its rows) of each storage unit this chunk lies in, when reading the chunk
        decodes units that other chunks share (Parquet row groups); None when there are none. A worker may
        then score each unit once and cut its chunks' outputs from the scores (`driver.unit_scores`)."""
        return None

    def pieces(self, info: DatasetInfo, start: int, stop: int) -> tuple[Piece, ...]:
        """Global rows [start, stop) as per-file pieces."""
        out, offset = [], 0
        for path, count in zip(info.paths, info.facts.row_counts, strict=True):
            lo, hi = max(start, offset), min(stop, offset + count)
            if lo < hi:
                out.append(Piece(path=path, start=lo - offset, stop=hi - offset))
            offset += count
        return tuple(out)

    def plan(self, info: DatasetInfo, chunk_size: int) -> tuple[ChunkSpec, ...]:
        total = info.total_rows
        bytes_per_row = info.total_bytes / total if total else 0
        return tuple(
            ChunkSpec(
                index=i,
                pieces=self.pieces(info, start, min(start + chunk_size, total)),
                rows=(start, min(start + chunk_size, total)),
                nbytes=int((min(start + chunk_size, total) - start) * bytes_per_row),
            )
            for i, start in enumerate(range(0, total, chunk_size))
        )

    def read(self, info: DatasetInfo, spec: ChunkSpec) -> pl.DataFrame:
        """The chunk's rows, with only the columns of `info.columns` (every `read_rows` honours it)."""
        frames = [self.read_rows(info, p.path, p.start, p.stop) for p in spec.pieces]
        return conform(frames, info, info.columns, paths=[p.path for p in spec.pieces])

    def sample(self, info: DatasetInfo, n: int, seed: int, columns: Sequence[str] | None = None) -> pl.DataFrame:
        pieces = [p for start, stop in sample_starts(info.total_rows, n, seed) for p in self.pieces(info, start, stop)]
        frames = parallel_map(lambda p: self.read_sample_rows(info, p.path, p.start, p.stop, columns), pieces)
        return conform(frames, info, columns, paths=[p.path for p in pieces])

    def read_sample_rows(
        self, info: DatasetInfo, path: str, start: int, stop: int, columns: Sequence[str] | None
    ) -> pl.DataFrame:
        """Rows for the fit sample, only `columns` of them; a format may read them differently from chunks."""
        frame = self.read_rows(info.projected(columns), path, start, stop)
        return frame if columns is None else frame.select(columns)


def conform(
    frames: list[pl.DataFrame],
    info: DatasetInfo,
    columns: Sequence[str] | None = None,
    paths: Sequence[str] | None = None,
) -> pl.DataFrame:
    """One frame with the dataset's schema (or those of its columns), whatever each file or block inferred.

    `paths` names the file of each frame for the error when a value does not fit the dataset's type: the cast is
    strict, so such a value fails the chunk (DataError) instead of becoming null.
    """
    schema = info.polars_schema()
    if columns is not None:
        schema = pl.Schema({c: schema[c] for c in columns})
    if not frames:
        return pl.DataFrame(schema=schema)
    frames = [_cast(f, schema, paths[i] if paths else None) for i, f in enumerate(frames)]
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical", rechunk=False)


def _cast(frame: pl.DataFrame, schema: pl.Schema, path: str | None) -> pl.DataFrame:
    if frame.schema == schema:  # the common case costs nothing
        return frame
    if frame.columns != schema.names() and set(frame.columns) >= set(schema.names()):
        frame = frame.select(schema.names())  # same columns in another order, or a reader that read more: no copy
    check_exact(frame, schema, path)
    try:
        return frame.cast(schema, strict=True)
    except pl.exceptions.PolarsError as exc:
        raise _cast_error(frame, schema, path, exc) from exc


def _cast_error(frame: pl.DataFrame, schema: pl.Schema, path: str | None, exc: Exception) -> DataError:
    """Which column of `frame` holds a value its dataset type cannot hold, and where."""
    where = f" of {path!r}" if path else ""
    cause = cause_of(exc)
    for column, dtype in schema.items():
        if column not in frame.schema or frame.schema[column] == dtype:
            continue
        try:
            frame.get_column(column).cast(dtype, strict=True)
        except pl.exceptions.PolarsError:
            return DataError(
                f"column {column!r}{where} is {frame.schema[column]} here but the dataset's type is {dtype}, and "
                f"some values do not fit ({cause}): fix the file, or convert the files to one type"
            )
    return DataError(f"rows{where} do not fit the dataset's schema ({cause})")
