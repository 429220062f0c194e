"""Line-oriented formats (CSV, NDJSON): chunks are record-aligned byte ranges (`byte_ranges`).

Each worker proves its own cut: a chunk whose bytes hold an odd number of quotes began or ended inside a
quoted field, and fails with a message instead of splitting a record. Chained from the first chunk, which
starts at a known record, every cut is right when every chunk is balanced.

`read_options={"exact_rows": True}` plans instead from one vectorized pass over the bytes (memory-
mapped windows counted in parallel): chunks become exact row ranges, at the cost of reading the
file once more before the job starts.

Column types are decided once for the dataset, from the header and a fixed stratified sample of
blocks (at least one per file), each parsed by Polars with full inference: a block where a column is
all empty says nothing about its type, a file's blocks merge as Polars merges types reading the whole
file, and files unify only by lossless widening. A chunk holding a value the sample did not see that
breaks its column's type fails with a DataError naming the line, the column and the override that
reads it; finding that line costs a bisection over the failed chunk's records, nothing on success.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import polars as pl

from batchnb import storage
from batchnb.errors import ConfigError, SourceError
from batchnb.sources.base import SAMPLE_BLOCKS, RowFormat, conform, parallel_map, sample_starts
from batchnb.sources.byte_ranges import FileSpan, byte_range_specs, record_start, sample_blocks
from batchnb.sources.dataset import ChunkSpec, DatasetInfo, Piece
from batchnb.sources.facts import TextFacts
from batchnb.sources.record_index import FileIndex, build_index, offset_of_row
from batchnb.sources.schema import schema_to_ipc, schema_to_text, unify_schemas
from batchnb.sources.staging import Workdir
from batchnb.sources.text_options import BOOL, Check, dtypes_option
from batchnb.sources.text_records import TextRecords

__all__ = ["TextFormat", "text_facts"]

INFER_BLOCK = 64 * 1024  # bytes per block of the type-inference sample
EXACT_TYPE_SAMPLE = 20_000  # records of the type sample when rows are exact


def text_facts(info: DatasetInfo) -> TextFacts:
    return info.facts_as(TextFacts)


def unify_blocks(
    named: Sequence[tuple[str, pl.DataFrame]], names: Sequence[str] | None, merge: Callable[..., pl.DataType]
) -> pl.Schema:
    """Per file, the types its blocks (file, frame) agree on (`merge`); across files, `unify_schemas`
    (lossless widening only). A block where a column is all empty says nothing about its type: Null there."""
    per_file: dict[str, dict[str, pl.DataType]] = {}
    for path, frame in named:
        if not frame.height:
            continue
        merged = per_file.setdefault(path, {})
        for column, dtype in frame.schema.items():
            dtype = pl.Null() if frame[column].null_count() == frame.height else dtype
            merged[column] = dtype if column not in merged else merge(merged[column], dtype)
    order = list(names) if names is not None else list(dict.fromkeys(c for _, f in named for c in f.columns))
    files = [(path, pl.Schema({c: types.get(c, pl.Null()) for c in order})) for path, types in per_file.items()]
    schema = dict(unify_schemas(files)) if files else {}
    return pl.Schema({c: pl.String() if schema.get(c, pl.Null()) == pl.Null else schema[c] for c in order})


class TextFormat(TextRecords, RowFormat):
    """Shared planning for CSV and NDJSON; subclasses parse bytes."""

    name: ClassVar[str] = ""
    options: ClassVar[dict[str, Check]] = {"exact_rows": BOOL}  # the read_options keys this format honours

    def separator(self, read_options: Mapping[str, Any], path: str) -> str | None:
        """The field separator the dataset is read with, decided once from the options and the first file."""
        return None

    def layout(self, path: str, read_options: dict[str, Any], where: str) -> tuple[bytes, int]:
        """(the header record, or the first record where there is none; offset of the first data record);
        `where` names the file in messages."""
        return b"", 0

    def header_names(
        self, where: str, header: bytes, read_options: dict[str, Any], separator: str | None
    ) -> list[str] | None:
        return None

    def sample_header(
        self, header: bytes, names: list[str] | None, read_options: dict[str, Any], separator: str | None
    ) -> str | None:
        """The header that sample blocks are parsed behind, kept as latin-1 text so any bytes round-trip."""
        return header.decode("latin-1") if header else None

    def merge_types(self, a: pl.DataType, b: pl.DataType) -> pl.DataType:
        """The type of a column that one block of a file inferred as `a` and another as `b`."""
        frames = [pl.DataFrame(schema={"c": a}), pl.DataFrame(schema={"c": b})]
        return pl.concat(frames, how="vertical_relaxed").dtypes[0]

    def decided_schema(
        self, inferred: pl.Schema, names: Sequence[str] | None, read_options: dict[str, Any]
    ) -> pl.Schema:
        """The dataset's schema from the sample's types and the user's `schema_overrides`."""
        if read_options.get("schema"):
            return pl.Schema(dtypes_option(read_options, "schema"))
        overrides = dtypes_option(read_options, "schema_overrides")
        if names is not None:
            unknown = sorted(set(overrides) - set(names))
            if unknown:
                raise ConfigError(
                    f"`read_options['schema_overrides']` names column(s) {unknown} that the file does not have: "
                    f"its columns are {list(names)}"
                )
        return pl.Schema({**dict(inferred), **overrides})

    # --- inspect: layout, record index, the type sample --------------------------------------------------------
    def inspect(
        self,
        paths: tuple[str, ...],
        read_options: dict[str, Any],
        *,
        workdir: Workdir,
        origins: Mapping[str, str] | None = None,
    ) -> DatasetInfo:
        draft = self._draft(paths, read_options, dict(origins or {}))
        # Types come from a fixed stratified sample of records, independent of chunk size and seed.
        facts = text_facts(draft)
        if facts.indexes:
            pieces = self._sample_pieces(draft, EXACT_TYPE_SAMPLE)
        else:
            pieces = sample_blocks(self._files(draft), INFER_BLOCK, 0, self._placer(draft))
        pieces = self._with_every_file(draft, pieces)
        parsed = list(zip(pieces, parallel_map(lambda p: self.parse_sample(p, draft, "infer"), pieces), strict=True))
        if parsed and all(f is None or not f.height for _, f in parsed) and not read_options.get("schema"):
            raise self.unreadable(parsed[0][0], draft)
        blocks = [(p, f) for p, f in parsed if f is not None]
        inferred = unify_blocks([(draft.origin(p.path), f) for p, f in blocks], facts.names, self.merge_types)
        schema = self.decided_schema(inferred, facts.names, read_options)
        info = dataclasses.replace(draft, schema=schema_to_text(schema), dtypes=schema_to_ipc(schema))
        if facts.indexes:
            return info
        # Rows are estimated from the sample's bytes per record until the chunks have run.
        sampled_bytes, sampled_rows = sum(p.stop - p.start for p, _ in blocks), sum(f.height for _, f in blocks)
        per_row = sampled_bytes / sampled_rows if sampled_rows else float(max(1, draft.total_bytes))
        facts = dataclasses.replace(facts, bytes_per_row=per_row)
        return dataclasses.replace(info, total_rows=round(draft.total_bytes / per_row), facts=facts)

    def _draft(self, paths: tuple[str, ...], read_options: dict[str, Any], origins: dict[str, str]) -> DatasetInfo:
        """The dataset before its types are known: where each file's records are, the header, the record index."""
        separator = self.separator(read_options, paths[0])
        layouts = [self.layout(p, read_options, origins.get(p, p)) for p in paths]
        names, header = None, b""
        for p, (file_header, _) in zip(paths, layouts, strict=True):
            file_names = self.header_names(origins.get(p, p), file_header, read_options, separator)
            if names is not None and file_names != names:
                first = origins.get(paths[0], paths[0])
                raise SourceError(f"file {origins.get(p, p)!r} has columns {file_names}, but {first!r} has {names}")
            names, header = file_names, header or file_header
        files = tuple((start, storage.file_size(p)) for p, (_, start) in zip(paths, layouts, strict=True))
        indexes: tuple[FileIndex, ...] = ()
        if read_options.get("exact_rows"):
            if any(storage.is_url(p) for p in paths):
                raise SourceError("read_options={'exact_rows': True} needs local files (it maps them into memory)")
            quote = self.quote(read_options)
            indexes = tuple(build_index(p, start, quote) for p, (start, _) in zip(paths, files, strict=True))
        facts = TextFacts(
            row_counts=tuple(ix.rows for ix in indexes),
            files=files,
            names=None if names is None else tuple(names),
            header=self.sample_header(header, names, read_options, separator),
            separator=separator,
            indexes=indexes,
        )
        return DatasetInfo(
            format=self.name, paths=paths, schema={}, read_options=dict(read_options),
            total_rows=sum(facts.row_counts), total_bytes=sum(size - start for start, size in files),
            facts=facts, origins=origins,
        )  # fmt: skip

    def _with_every_file(self, info: DatasetInfo, pieces: list[Piece]) -> list[Piece]:
        """A file too small to hold a sampled block still gets one, at its start: its types count too."""
        sampled = {p.path for p in pieces}
        place = self._placer(info)
        for path, first, size in self._files(info):
            if path not in sampled and first < size:
                pieces.append(
                    Piece(path=path, start=first, stop=place(path, min(size, first + INFER_BLOCK), first, size))
                )
        return pieces

    def _files(self, info: DatasetInfo) -> list[FileSpan]:
        """(path, offset of the first record, size) of every file."""
        return [(p, start, size) for p, (start, size) in zip(info.paths, text_facts(info).files, strict=True)]

    def _placer(self, info: DatasetInfo) -> Callable[[str, int, int, int], int]:
        """Where the first record at or after a byte starts, in this dataset's files."""
        quote, separator = self.quote(info.read_options), text_facts(info).separator
        sep = ord(separator) if separator else None
        return lambda path, x, first, size: record_start(path, x, first, size, quote, sep)

    # --- plan -------------------------------------------------------------------------------------------------
    def plan(self, info: DatasetInfo, chunk_size: int) -> tuple[ChunkSpec, ...]:
        per_row = text_facts(info).bytes_per_row
        if self.exact(info) or per_row is None:
            return super().plan(info, chunk_size)
        return byte_range_specs(self._files(info), chunk_size, per_row, self._placer(info))

    def pieces(self, info: DatasetInfo, start: int, stop: int) -> tuple[Piece, ...]:
        """Exact rows [start, stop) as byte ranges, through the record index (driver only)."""
        quote, indexes = self.quote(info.read_options), text_facts(info).indexes
        out = []
        for piece in super().pieces(info, start, stop):
            index = indexes[info.paths.index(piece.path)]
            lo = offset_of_row(piece.path, index, piece.start, quote)
            hi = offset_of_row(piece.path, index, piece.stop, quote)
            out.append(Piece(path=piece.path, start=lo, stop=hi))
        return tuple(out)

    # --- samples ----------------------------------------------------------------------------------------------
    def sample(self, info: DatasetInfo, n: int, seed: int, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """`n` records of stratified blocks; only `columns` of them are parsed (the blocks do not depend on it)."""
        info = info.projected(columns)
        per_block, per_row = None, text_facts(info).bytes_per_row
        if self.exact(info) or per_row is None:
            pieces = self._sample_pieces(info, n, seed)
        elif info.total_bytes <= 1.25 * n * per_row:
            # Probably no more than n records: all of them are the sample, as for every other format.
            whole = self.sample_all(info, columns)
            if whole.height <= n:
                return whole
            pieces = sample_blocks(self._files(info), -(-info.total_bytes // SAMPLE_BLOCKS), seed, self._placer(info))
            per_block = -(-n // SAMPLE_BLOCKS)
        else:
            per_block = -(-n // SAMPLE_BLOCKS)
            block_bytes = round(1.25 * per_block * per_row) + 1
            pieces = sample_blocks(self._files(info), block_bytes, seed, self._placer(info))

        def read(piece: Piece) -> pl.DataFrame | None:
            frame = self.parse_sample(piece, info, "lenient")
            frame = frame if frame is None or per_block is None else frame.head(per_block)
            return frame if frame is None or columns is None else frame.select(columns)

        return conform([f for f in parallel_map(read, pieces) if f is not None], info, columns)

    def sample_all(self, info: DatasetInfo, columns: Sequence[str] | None) -> pl.DataFrame:
        whole = [self.parse_sample(Piece(path=p, start=a, stop=b), info, "lenient") for p, a, b in self._files(info)]
        frames = [f if columns is None else f.select(columns) for f in whole if f is not None]
        return conform(frames, info, columns)

    def _sample_pieces(self, info: DatasetInfo, n: int, seed: int = 0) -> list[Piece]:
        out: list[Piece] = []
        for start, stop in sample_starts(info.total_rows, n, seed=seed):
            out.extend(self.pieces(info, start, stop))
        return out
