"""Parquet: row counts from the footer; a chunk is cut from its decoded row group(s).

Decoding a 100k-row slice of a 1M-row row group costs almost half as much as decoding the whole
group, so ten chunks of one group would decode it about five times over. Workers keep the last
few decoded row groups (bounded in bytes) and cut chunks from them without copying; a row group
too large for the cache is sliced lazily as before. On a cluster, where each worker process has
its own cache, `locality` lets the runner send every chunk of a row group to the same worker.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import polars as pl

from batchnb import storage
from batchnb.errors import SourceError, cause_of
from batchnb.frame_cache import FrameCache, host_share
from batchnb.sources.base import RowFormat, conform, parallel_map, reading, sample_starts
from batchnb.sources.dataset import ChunkSpec, DatasetInfo, Piece
from batchnb.sources.facts import ParquetFacts
from batchnb.sources.schema import polars_schema_of

__all__ = ["Parquet"]

CACHE_BYTES = 256 * 2**20
MAX_CACHED_GROUP = 192 * 2**20  # uncompressed bytes; larger groups are sliced lazily
WHOLE_GROUP_BLOCKS = 2  # sample blocks in one row group from which decoding it whole costs less CPU (measured:
# two 3,125-row slices of a 1M-row group of 8 float columns 26 ms, the group whole 21 ms; Polars reads the column
# chunks whole for a slice)


_CACHE = FrameCache(host_share(CACHE_BYTES))  # decoded row groups shared by the chunk tasks of one worker process


class Parquet(RowFormat):
    name = "parquet"

    def facts(self, paths: tuple[str, ...], read_options: dict[str, Any]) -> ParquetFacts:
        import pyarrow.parquet as pq

        groups, versions = [], []
        for p in paths:
            try:
                meta = pq.ParquetFile(storage.open_input(p) if storage.is_url(p) else p).metadata
            except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a bad footer
                msg = f"cannot read Parquet file {p!r}: {cause_of(exc)}; is it a complete Parquet file?"
                raise SourceError(msg) from exc
            groups.append(
                tuple(
                    (meta.row_group(i).num_rows, meta.row_group(i).total_byte_size) for i in range(meta.num_row_groups)
                )
            )
            versions.append((storage.info(p) or {}).get("version") if storage.is_url(p) else None)
        return ParquetFacts(
            row_counts=tuple(sum(rows for rows, _ in file) for file in groups),
            row_groups=tuple(groups),
            versions=tuple(versions),
        )

    def value_ranges(
        self, path: str, columns: Sequence[str], read_options: dict[str, Any]
    ) -> dict[str, tuple[Any, Any]]:
        """The least and greatest value of each column over the row groups whose statistics have them."""
        import pyarrow.parquet as pq

        found: dict[str, list[Any]] = {}
        with (
            reading(path, "Parquet"),
            storage.open_input(path) if storage.is_url(path) else contextlib.nullcontext(path) as f,
        ):
            meta = pq.ParquetFile(f).metadata  # once per file, whatever the number of columns
            for i in range(meta.num_row_groups):
                group = meta.row_group(i)
                for j in range(group.num_columns):
                    column, stats = group.column(j).path_in_schema, group.column(j).statistics
                    if column in columns and stats is not None and stats.has_min_max:
                        found.setdefault(column, []).extend((stats.min, stats.max))
        return {column: (min(values), max(values)) for column, values in found.items()}

    def read_schema(self, path: str, read_options: dict[str, Any]) -> pl.Schema:
        with reading(path, "Parquet"):
            return self._schema(path)

    def _schema(self, path: str) -> pl.Schema:
        if storage.is_url(path):
            import pyarrow.parquet as pq

            with storage.open_input(path) as f:
                return polars_schema_of(pq.ParquetFile(f).schema_arrow)
        return pl.Schema(pl.read_parquet_schema(path))

    def sample(self, info: DatasetInfo, n: int, seed: int, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """The same stratified blocks as every format (`sample_starts`), read so that a row group holding
        `WHOLE_GROUP_BLOCKS` or more of them is decoded once (projected) and the blocks cut from it; a group
        holding fewer gets a small projected read per block, which costs less than decoding it whole."""
        pieces = [p for start, stop in sample_starts(info.total_rows, n, seed) for p in self.pieces(info, start, stop)]
        # (path, group index, group offset, group rows, group bytes, lo, hi) of each block's part in each group
        cuts = [(p.path, *cut) for p in pieces for cut in _group_cuts(info, p.path, p.start, p.stop)]
        groups: dict[tuple[str, int], list[int]] = {}
        for k, (path, i, *_) in enumerate(cuts):
            groups.setdefault((path, i), []).append(k)

        def read(members: list[int]) -> list[tuple[int, pl.DataFrame]]:
            path, i, offset, _, nbytes, _, _ = cuts[members[0]]
            if len(members) < WHOLE_GROUP_BLOCKS or nbytes > MAX_CACHED_GROUP:
                return [(k, self.read_sample_rows(info, path, cuts[k][5], cuts[k][6], columns)) for k in members]
            with reading(path, "Parquet", chunk=True):
                group = _sample_group(info, path, i, offset, columns)
            # Copied out: a slice keeps its group's buffers, and the sample would hold every group it cut from.
            return [(k, group.gather(pl.int_range(cuts[k][5] - offset, cuts[k][6] - offset, eager=True)))
                    for k in members]  # fmt: skip

        frames = sorted((pair for found in parallel_map(read, list(groups.values())) for pair in found), key=_first)
        return conform([f for _, f in frames], info, columns, paths=[cuts[k][0] for k, _ in frames])

    def read_sample_rows(self, info, path, start, stop, columns):
        # Sample blocks are small and scattered: slicing them out of cached groups would pin every group.
        # Each block still reads its row group's column chunks whole, so read only the fitted columns.
        with reading(path, "Parquet", chunk=True):
            if storage.is_url(path):
                return _remote_rows(info, path, start, stop, columns)
            return _scan(path, columns).slice(start, stop - start).collect()

    def locality(self, info: DatasetInfo, spec: ChunkSpec) -> tuple[str, int] | None:
        """The row group this chunk starts in: a worker that decoded it for one chunk has it cached."""
        if not spec.pieces:
            return None
        piece, offset = spec.pieces[0], 0
        for i, (rows, _) in enumerate(_groups(info, piece.path)):
            offset += rows
            if piece.start < offset:
                return piece.path, i
        return None

    def units(self, info: DatasetInfo, spec: ChunkSpec) -> list[tuple[Hashable, ChunkSpec]] | None:
        """The local row groups this chunk's rows lie in, when it shares one with another chunk."""
        if len(spec.pieces) != 1 or storage.is_url(spec.pieces[0].path):
            return None
        piece, first = spec.pieces[0], spec.rows[0] - spec.pieces[0].start  # the file's row 0 in the dataset
        cuts = _group_cuts(info, piece.path, piece.start, piece.stop)
        if any(nbytes > MAX_CACHED_GROUP for _, _, _, nbytes, _, _ in cuts):
            return None
        if all(hi - lo == rows for _, _, rows, _, lo, hi in cuts):
            return None  # the chunk is its groups: nothing to share
        stat = os.stat(piece.path)
        return [
            (
                (piece.path, stat.st_size, stat.st_mtime_ns, offset),
                ChunkSpec(index=spec.index, pieces=(Piece(path=piece.path, start=offset, stop=offset + rows),),
                          rows=(first + offset, first + offset + rows), nbytes=nbytes),
            )
            for _, offset, rows, nbytes, _, _ in cuts
        ]  # fmt: skip

    def scan_unit(self, info: DatasetInfo, unit: ChunkSpec) -> pl.LazyFrame | None:
        """A unit of `units` (one local row group) as a query of the projection's columns, when the file holds
        them with the dataset's own types; None: `read` it (and cast it) instead.

        A detector's scoring then joins the decode in one query, which never holds the decoded columns whole:
        decoding a 1M-row group and then scoring it held 72 MB for a moment and cost a quarter more CPU
        (measured, two chunks at once on two cores).
        """
        path = unit.pieces[0].path
        scan = _scan(path, info.columns)
        with reading(path, "Parquet", chunk=True):
            if scan.collect_schema() != info.read_schema():
                return None
        return scan.slice(unit.pieces[0].start, unit.n_rows)

    def read_rows(self, info: DatasetInfo, path: str, start: int, stop: int) -> pl.DataFrame:
        with reading(path, "Parquet", chunk=True):
            return self._rows(info, path, start, stop)

    def _rows(self, info: DatasetInfo, path: str, start: int, stop: int) -> pl.DataFrame:
        """Rows [start, stop) of `path`, only the columns of the projection (`info.columns`): a row group is
        decoded with those columns alone, and cached under the projection it was decoded with."""
        columns = info.columns
        if storage.is_url(path):
            return _remote_rows(info, path, start, stop, columns, cache=True)
        stat = os.stat(path)
        version = (path, stat.st_size, stat.st_mtime_ns, columns)  # a rewritten file never hits a stale group

        def cut(i: int, offset: int, rows: int, nbytes: int, lo: int, hi: int) -> pl.DataFrame:
            if nbytes > MAX_CACHED_GROUP:
                return _scan(path, columns).slice(lo, hi - lo).collect()
            key = (*version, offset)
            if (lo, hi) == (offset, offset + rows) and _CACHE.peek(key) is None:
                return _local_group(path, offset, rows, columns)  # a unit to score: no chunk cuts from it
            return _decoded(key, lambda: _local_group(path, offset, rows, columns)).slice(lo - offset, hi - lo)

        return _joined(_cut_groups(info, path, start, stop, cut), lambda: _scan(path, columns).head(0).collect())


def _decoded(key: Hashable, load: Callable[[], pl.DataFrame]) -> pl.DataFrame:
    """A decoded row group from this process's cache, decoded (once) if it is not there."""
    group = _CACHE.get(key, load)
    assert group is not None  # `load` always returns a frame
    return group


def _scan(path: str, columns: Sequence[str] | None) -> pl.LazyFrame:
    """The file as a lazy frame of `columns` (None: all): Polars decodes only those."""
    scan = pl.scan_parquet(path)
    return scan if columns is None else scan.select(columns)


def _local_group(path: str, offset: int, rows: int, columns: Sequence[str] | None) -> pl.DataFrame:
    """The row group of rows [offset, offset + rows) of the file (only `columns`, None: all) decoded by Polars:
    the slice reaches only that group, and Polars' decoder costs about 40 % less CPU per group than pyarrow's
    plus the conversion (measured on 1M-row groups of floats; with two chunks decoding at once on two cores,
    CPU is what a job waits for)."""
    return _scan(path, columns).slice(offset, rows).collect()


def _first(pair: tuple[int, Any]) -> int:
    return pair[0]


def _sample_group(info: DatasetInfo, path: str, i: int, offset: int, columns: Sequence[str] | None) -> pl.DataFrame:
    """Row group `i` of `path`, only `columns`, for the sample: never cached (the sample would pin its groups)."""
    if not storage.is_url(path):
        return _local_group(path, offset, _groups(info, path)[i][0], columns)
    with storage.open_input(path) as f:
        import pyarrow.parquet as pq

        return pl.DataFrame(pq.ParquetFile(f).read_row_group(i, columns=None if columns is None else list(columns)))


def _group_cuts(info: DatasetInfo, path: str, start: int, stop: int) -> list[tuple[int, int, int, int, int, int]]:
    """(group index, group offset, group rows, group bytes, lo, hi) of each row group rows [start, stop) of
    `path` fall in."""
    return _cut_groups(info, path, start, stop, lambda *cut: cut)


def _groups(info: DatasetInfo, path: str) -> tuple[tuple[int, int], ...]:
    """(rows, uncompressed bytes) of each row group of `path`."""
    return info.facts_as(ParquetFacts).row_groups[info.paths.index(path)]


def _cut_groups(info: DatasetInfo, path: str, start: int, stop: int, cut) -> list[Any]:
    """Rows [start, stop) of one file, one frame per row group they fall in, each from
    `cut(group index, group offset, group rows, group bytes, lo, hi)`."""
    frames, offset = [], 0
    for i, (rows, nbytes) in enumerate(_groups(info, path)):
        lo, hi = max(start, offset), min(stop, offset + rows)
        if lo < hi:
            frames.append(cut(i, offset, rows, nbytes, lo, hi))
        offset += rows
    return frames


def _joined(frames: list[pl.DataFrame], empty) -> pl.DataFrame:
    if not frames:
        return empty()
    return frames[0] if len(frames) == 1 else pl.concat(frames, rechunk=False)


def _remote_rows(
    info: DatasetInfo, path: str, start: int, stop: int, columns: Sequence[str] | None, *, cache: bool = False
) -> pl.DataFrame:
    """Rows [start, stop) of an object-store file, only `columns` (None: all): only the row groups they fall in
    are fetched (pyarrow reads a group's column chunks by range requests); with `cache` (chunks, not the
    sample) whole groups are cached like local ones, under their projection."""
    import pyarrow.parquet as pq

    version = (path, info.facts_as(ParquetFacts).versions[info.paths.index(path)])  # known since inspect: no HEAD
    wanted = None if columns is None else list(columns)
    with storage.open_input(path) as f:
        reader = pq.ParquetFile(f)

        def cut(i: int, offset: int, rows: int, nbytes: int, lo: int, hi: int) -> pl.DataFrame:
            def load() -> pl.DataFrame:
                return pl.DataFrame(reader.read_row_group(i, columns=wanted))

            group = _decoded((*version, wanted and tuple(wanted), offset), load) if cache else load()
            return group.slice(lo - offset, hi - lo)

        schema = info.polars_schema()
        empty = pl.Schema({c: schema[c] for c in wanted}) if wanted is not None else schema
        return _joined(_cut_groups(info, path, start, stop, cut), lambda: pl.DataFrame(schema=empty))
