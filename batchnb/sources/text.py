"""Line-oriented formats (CSV, NDJSON): one vectorized pass over the bytes indexes record boundaries.

The pass counts quotes and newlines per 256 KiB block (C-speed `bytearray.count`, numpy only for
blocks that contain quotes), so a newline inside a quoted field never splits a record. With the
index, any row number maps to a byte offset by re-reading one block, which makes text chunks exact
row ranges like every other format. The index stays on the driver; workers get byte ranges.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import polars as pl

from batchnb.plan import DatasetInfo, Piece
from batchnb.sources.base import RowFormat, conform, parallel_map, sample_starts, schema_to_text

__all__ = ["TextFormat"]

ParseMode = Literal["strict", "lenient", "infer"]

BLOCK = 256 * 1024
READ = 64 * BLOCK
BLOCKS_PER_WINDOW = 64  # blocks mapped at a time while indexing
NEWLINE = 10


@dataclass(frozen=True)
class FileIndex:
    """Record boundaries of one file: rows (real newlines) before each block start."""

    data_start: int
    size: int
    offsets: np.ndarray  # block start offsets (data_start, data_start + BLOCK, ...)
    rows_before: np.ndarray  # records ending before each block start
    parity: np.ndarray  # quote parity at each block start
    rows: int


def _real_newlines(buf: np.ndarray, quote: int | None, parity: int) -> np.ndarray:
    """Positions of newlines outside quotes in `buf`, given the quote parity at its start."""
    newlines = np.flatnonzero(buf == NEWLINE)
    if quote is None or newlines.size == 0:
        return newlines
    quotes = np.flatnonzero(buf == quote)
    if quotes.size == 0:
        return newlines if parity == 0 else newlines[:0]
    inside = (parity + np.searchsorted(quotes, newlines)) & 1
    return newlines[inside == 0]


def first_record_end(path: str, quote: int | None) -> int:
    """Offset just past the first record (the CSV header)."""
    with open(path, "rb") as f:
        head = f.read(READ)
        parity, pos = 0, 0
        while True:
            arr = np.frombuffer(head, dtype=np.uint8)
            real = _real_newlines(arr[pos:], quote, parity)
            if real.size:
                return pos + int(real[0]) + 1
            if quote is not None:
                parity = (parity + head.count(bytes([quote]), pos)) & 1
            pos = len(head)
            more = f.read(READ)
            if not more:
                return len(head)
            head += more


def _window_counts(fd: int, start: int, stop: int, quote: int | None) -> np.ndarray:
    """Per block of one window: (real newlines if the block starts outside quotes, if inside, quotes).

    The window is memory-mapped on its own and unmapped before returning, so a 100 GB file never
    counts as resident memory; numpy's comparisons release the GIL, so windows count in parallel.
    """
    base = start - start % mmap.ALLOCATIONGRANULARITY
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)  # one fault-in call, not one per page
    with mmap.mmap(fd, stop - base, flags=flags, prot=mmap.PROT_READ, offset=base) as view:
        arr = np.frombuffer(view, dtype=np.uint8)[start - base :]
        quoted = quote is not None and view.find(bytes([quote]), start - base) != -1  # memchr: most files have none
        counts = np.zeros((-(-arr.size // BLOCK), 3), dtype=np.int64)
        for k, s in enumerate(range(0, arr.size, BLOCK)):
            block = arr[s : s + BLOCK]
            quotes = int(np.count_nonzero(block == quote)) if quoted else 0
            if quotes == 0:
                counts[k, 0] = np.count_nonzero(block == NEWLINE)  # block by block: stays in the CPU cache
            else:
                counts[k] = (_real_newlines(block, quote, 0).size, _real_newlines(block, quote, 1).size, quotes)
        del arr, block  # a mapping cannot close while numpy still points into it
    return counts


def build_index(path: str, data_start: int, quote: int | None) -> FileIndex:
    """One parallel pass: rows and quote parity at every block start, so any record is found by one read."""
    size = os.path.getsize(path)
    window = BLOCK * BLOCKS_PER_WINDOW
    starts = range(data_start, size, window)
    with open(path, "rb") as f:
        counts = parallel_map(lambda w: _window_counts(f.fileno(), w, min(w + window, size), quote), list(starts))
        f.seek(max(size - 1, 0))
        last_byte = f.read(1)
    per_block = np.concatenate(counts) if counts else np.zeros((0, 3), dtype=np.int64)
    parity = np.concatenate(([0], np.cumsum(per_block[:, 2]) & 1))[:-1].astype(np.int8)
    rows_in_block = np.where(parity == 0, per_block[:, 0], per_block[:, 1])
    rows_before = np.concatenate(([0], np.cumsum(rows_in_block)))
    rows = int(rows_before[-1])
    if size > data_start and last_byte != b"\n":
        rows += 1  # a last record without a trailing newline
    return FileIndex(
        data_start=data_start,
        size=size,
        offsets=np.arange(data_start, size, BLOCK, dtype=np.int64),
        rows_before=rows_before[:-1].astype(np.int64),
        parity=parity,
        rows=rows,
    )


def offset_of_row(path: str, index: FileIndex, row: int, quote: int | None) -> int:
    """Byte offset where record `row` (0-based, after the header) starts."""
    if row <= 0:
        return index.data_start
    if row >= index.rows:
        return index.size
    j = int(np.searchsorted(index.rows_before, row, side="left")) - 1
    wanted = row - int(index.rows_before[j])  # the wanted-th real newline at or after offsets[j]
    parity = int(index.parity[j])
    with open(path, "rb") as f:
        f.seek(int(index.offsets[j]))
        chunk = f.read(2 * BLOCK)
    real = _real_newlines(np.frombuffer(chunk, dtype=np.uint8), quote, parity)
    return int(index.offsets[j]) + int(real[wanted - 1]) + 1


def lines_before(path: str, offset: int) -> int:
    """Newlines before `offset`: a line number for error messages (quoted newlines count too)."""
    lines = 0
    with open(path, "rb") as f:
        while offset > 0:
            block = f.read(min(READ, offset))
            if not block:
                break
            lines += block.count(b"\n")
            offset -= len(block)
    return lines


class TextFormat(RowFormat):
    """Shared planning for CSV and NDJSON; subclasses parse bytes."""

    name: ClassVar[str] = ""
    has_header: ClassVar[bool] = False

    def quote(self, read_options: dict[str, Any]) -> int | None:
        return None

    def header_names(self, path: str, header: bytes, read_options: dict[str, Any]) -> list[str] | None:
        return None

    def parse(self, data: bytes, info: DatasetInfo, *, mode: ParseMode) -> pl.DataFrame:
        """`strict` for chunks (a bad record fails the chunk); `infer` and `lenient` for samples, which
        must not fail the whole job over one bad record that its own chunk will report."""
        raise NotImplementedError

    def inspect(self, paths: tuple[str, ...], read_options: dict[str, Any], *, workdir: Path) -> DatasetInfo:
        quote = self.quote(read_options)
        indexes, names, header = [], None, None
        for p in paths:
            start = first_record_end(p, quote) if self.has_header else 0
            if self.has_header:
                with open(p, "rb") as f:
                    header = f.read(start)
                file_names = self.header_names(p, header, read_options)
                if names is not None and file_names != names:
                    from batchnb.errors import SourceError

                    raise SourceError(f"file {p!r} has columns {file_names}, but {paths[0]!r} has {names}")
                names = file_names
            indexes.append(build_index(p, start, quote))
        counts = [ix.rows for ix in indexes]
        draft = DatasetInfo(
            format=self.name,
            paths=paths,
            schema={},
            read_options={
                **read_options,
                "_row_counts": counts,
                "_names": names,
                "_header": header.decode("utf-8", errors="replace") if header else None,
                "__indexes": indexes,
            },
            total_rows=sum(counts),
            total_bytes=sum(ix.size for ix in indexes),
        )
        # Types come from a fixed stratified sample of records, independent of chunk size and seed.
        frames = [self.parse(self.read_bytes(p), draft, mode="infer") for p in self._sample_pieces(draft, 20_000)]
        schema = _unify(frames, names)
        overrides = read_options.get("schema_overrides") or {}
        schema = pl.Schema({**dict(schema), **overrides})
        return DatasetInfo(**{**draft.__dict__, "schema": schema_to_text(schema)})

    def _sample_pieces(self, info: DatasetInfo, n: int, seed: int = 0) -> list[Piece]:
        out = []
        for start, stop in sample_starts(info.total_rows, n, seed=seed):
            out.extend(self.pieces(info, start, stop))
        return out

    def pieces(self, info: DatasetInfo, start: int, stop: int) -> tuple[Piece, ...]:
        quote = self.quote(info.read_options)
        indexes = info.read_options["__indexes"]
        out = []
        for piece in super().pieces(info, start, stop):
            index = indexes[info.paths.index(piece.path)]
            lo = offset_of_row(piece.path, index, piece.start, quote)
            hi = offset_of_row(piece.path, index, piece.stop, quote)
            out.append(Piece(path=piece.path, start=lo, stop=hi))
        return tuple(out)

    @staticmethod
    def read_bytes(piece: Piece) -> bytes:
        with open(piece.path, "rb") as f:
            f.seek(piece.start)
            return f.read(piece.stop - piece.start)

    def sample(self, info: DatasetInfo, n: int, seed: int, columns: Sequence[str] | None = None) -> pl.DataFrame:
        def read(piece: Piece) -> pl.DataFrame:
            frame = self.parse(self.read_bytes(piece), info, mode="lenient")
            return frame if columns is None else frame.select(columns)

        return conform(parallel_map(read, self._sample_pieces(info, n, seed)), info, columns)

    def read_rows(self, info: DatasetInfo, path: str, start: int, stop: int) -> pl.DataFrame:
        data = self.read_bytes(Piece(path=path, start=start, stop=stop))
        try:
            return self.parse(data, info, mode="strict")
        except pl.exceptions.PolarsError as exc:
            raise self.located_error(exc, info, path, start, data) from None

    def located_error(self, exc: Exception, info: DatasetInfo, path: str, start: int, data: bytes) -> Exception:
        raise NotImplementedError


def _unify(frames: list[pl.DataFrame], names: list[str] | None) -> pl.Schema:
    frames = [f for f in frames if f.width]
    if not frames:
        return pl.Schema({n: pl.String for n in names or []})
    merged = pl.concat([f.head(0) for f in frames], how="diagonal_relaxed")
    schema = dict(merged.schema)
    for name, dtype in schema.items():
        if dtype == pl.Null:
            schema[name] = pl.String
    if names is not None:
        schema = {n: schema.get(n, pl.String) for n in names}
    return pl.Schema(schema)
