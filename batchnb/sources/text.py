"""Line-oriented formats (CSV, NDJSON): chunks are record-aligned byte ranges.

Planning reads a few KiB around each chunk boundary, never the whole file: the record that starts
at or after the boundary is found from the quote parity there, inferred from the roles of nearby
quotes (an opening quote follows a separator or newline, a closing one precedes one). Each worker
then proves its own cut: a chunk whose bytes hold an odd number of quotes began or ended inside a
quoted field, and fails with a message instead of splitting a record. Chained from the first chunk,
which starts at a known record, every cut is right when every chunk is balanced.

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

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import polars as pl

from batchnb import storage
from batchnb.errors import ConfigError, DataError, PanicException, SourceError
from batchnb.sources.base import SAMPLE_BLOCKS, Check, RowFormat, conform, parallel_map, sample_starts
from batchnb.sources.dataset import ChunkSpec, DatasetInfo, Piece
from batchnb.sources.record_index import READ, build_index, lines_before, offset_of_row, parity_at_start, real_newlines
from batchnb.sources.schema import dtype_from_text, schema_to_ipc, schema_to_text, unify_schemas
from batchnb.sources.staging import origin_of

__all__ = ["BOOL", "READ", "SCHEMA", "Check", "TextFormat", "as_dtype", "dtypes_option", "type_message"]

ParseMode = Literal["strict", "lenient", "infer"]


def as_dtype(value: Any) -> pl.DataType | None:
    """A Polars dtype from a dtype, a dtype class or its name ("String", "Float64"); None if it is none."""
    if isinstance(value, str):
        value = getattr(pl, value, None)
    if isinstance(value, type) and issubclass(value, pl.DataType):
        return value()
    return value if isinstance(value, pl.DataType) else None


def dtypes_option(read_options: Mapping[str, Any], key: str) -> dict[str, pl.DataType]:
    """`read_options[key]` (a column -> dtype mapping) with every dtype as a Polars dtype; a dtype kept as
    text in a job's state ("Datetime(time_unit='us', ...)") is read back from that text."""
    return {name: as_dtype(t) or dtype_from_text(str(t)) for name, t in (read_options.get(key) or {}).items()}


def _is_schema(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(k, str) and as_dtype(t) is not None for k, t in value.items())


def type_message(where: str, column: str, value: str, dtype: pl.DataType) -> str:
    """A value the sampled rows did not show breaks the column's type: say which, and the option that reads it."""
    wider = "String"
    if dtype.is_integer():
        try:
            float(value)
            wider = "Float64"
        except ValueError:
            pass
    return (
        f"{where}: column {column!r} holds {value!r}, which is not {dtype} (the type the sampled rows of the file "
        f"gave it): pass read_options={{'schema_overrides': {{{column!r}: pl.{wider}}}}} (or {wider!r}) to read "
        "the column as that type, or fix the value"
    )


BOOL: Check = (lambda v: isinstance(v, bool), "True or False")
SCHEMA: Check = (_is_schema, 'a dict of column name -> Polars dtype (pl.Float64, or its name "Float64")')

LOOK = 64 * 1024  # bytes read on each side of a chunk boundary to place it
INFER_BLOCK = 64 * 1024  # bytes per block of the type-inference sample
SKIPPED_PER_BLOCK = 8  # records that do not parse left out of one sample block; a block with more is dropped


def record_start(path: str, x: int, lo_limit: int, size: int, quote: int | None, separator: int | None) -> int:
    """Offset of the first record that starts at or after byte `x` (`lo_limit` is a known record start)."""
    if x <= lo_limit:
        return lo_limit
    look = LOOK
    while True:
        lo = max(lo_limit, x - look)
        with storage.open_input(path) as f:
            f.seek(lo)
            buf = np.frombuffer(f.read(min(size, x + look) - lo), dtype=np.uint8)
        parity = 0
        if quote is not None and lo > lo_limit:  # from lo_limit on, the parity is known to be 0
            parity = parity_at_start(buf, quote, separator) or 0
        real = real_newlines(buf, quote, parity)
        after = real[real >= x - 1 - lo]  # a record starts just past each real newline
        if after.size:
            return lo + int(after[0]) + 1
        if x + look >= size:
            return size
        look *= 4  # a record longer than the window: look further


class TextFormat(RowFormat):
    """Shared planning for CSV and NDJSON; subclasses parse bytes."""

    name: ClassVar[str] = ""
    options: ClassVar[dict[str, Check]] = {"exact_rows": BOOL}  # the read_options keys this format honours

    def quote(self, read_options: dict[str, Any]) -> int | None:
        return None

    def separator_byte(self, read_options: dict[str, Any]) -> int | None:
        return None

    def layout(self, path: str, read_options: dict[str, Any]) -> tuple[bytes, int]:
        """(the header record, or the first record where there is none; offset of the first data record)."""
        return b"", 0

    def header_names(self, path: str, header: bytes, read_options: dict[str, Any]) -> list[str] | None:
        return None

    def parse(self, data: bytes, info: DatasetInfo, *, mode: ParseMode) -> pl.DataFrame:
        """`strict` for chunks (a bad record fails the chunk); `infer` and `lenient` for samples, which
        must not fail the whole job over one bad record that its own chunk will report."""
        raise NotImplementedError

    def merge_types(self, a: pl.DataType, b: pl.DataType) -> pl.DataType:
        """The type of a column that one block of a file inferred as `a` and another as `b`."""
        return pl.concat([pl.DataFrame(schema={"c": a}), pl.DataFrame(schema={"c": b})], how="vertical_relaxed").dtypes[
            0
        ]

    def decided_schema(self, inferred: pl.Schema, names: list[str] | None, read_options: dict[str, Any]) -> pl.Schema:
        """The dataset's schema from the sample's types and the user's `schema_overrides`."""
        if read_options.get("schema"):
            return pl.Schema(dtypes_option(read_options, "schema"))
        overrides = dtypes_option(read_options, "schema_overrides")
        if names is not None:
            unknown = sorted(set(overrides) - set(names))
            if unknown:
                raise ConfigError(
                    f"`read_options['schema_overrides']` names column(s) {unknown} that the file does not have: "
                    f"its columns are {names}"
                )
        return pl.Schema({**dict(inferred), **overrides})

    @staticmethod
    def exact(info: DatasetInfo) -> bool:
        return bool(info.read_options.get("exact_rows"))

    def inspect(self, paths: tuple[str, ...], read_options: dict[str, Any], *, workdir: Path) -> DatasetInfo:
        quote = self.quote(read_options)
        layouts = [self.layout(p, read_options) for p in paths]
        names, header = None, b""
        for p, (file_header, _) in zip(paths, layouts, strict=True):
            file_names = self.header_names(p, file_header, read_options)
            if names is not None and file_names != names:
                raise SourceError(
                    f"file {origin_of(p)!r} has columns {file_names}, but {origin_of(paths[0])!r} has {names}"
                )
            names, header = file_names, header or file_header
        starts = [start for _, start in layouts]
        sizes = [storage.file_size(p) for p in paths]
        options = {
            **read_options,
            "_files": [[start, size] for start, size in zip(starts, sizes, strict=True)],
            "_names": names,
            "_header": self.sample_header(header, names, read_options),
        }
        indexes = None
        if read_options.get("exact_rows"):
            if any(storage.is_url(p) for p in paths):
                raise SourceError("read_options={'exact_rows': True} needs local files (it maps them into memory)")
            indexes = [build_index(p, start, quote) for p, start in zip(paths, starts, strict=True)]
            options.update({"_row_counts": [ix.rows for ix in indexes], "__indexes": indexes})
        draft = DatasetInfo(
            format=self.name, paths=paths, schema={}, read_options=options,
            total_rows=sum(ix.rows for ix in indexes) if indexes else 0,
            total_bytes=sum(size - start for start, size in zip(starts, sizes, strict=True)),
        )  # fmt: skip
        # Types come from a fixed stratified sample of records, independent of chunk size and seed.
        pieces = self._sample_pieces(draft, 20_000) if indexes else self._byte_pieces(draft, INFER_BLOCK, seed=0)
        pieces = self._with_every_file(draft, pieces)
        parsed = list(zip(pieces, parallel_map(lambda p: self._parse_sample(p, draft, "infer"), pieces), strict=True))
        if parsed and all(f is None or not f.height for _, f in parsed) and not read_options.get("schema"):
            raise self.unreadable(parsed[0][0], draft)
        pieces, frames = [p for p, f in parsed if f is not None], [f for _, f in parsed if f is not None]
        schema = self.decided_schema(self._unify(pieces, frames, names), names, read_options)
        info = DatasetInfo(**{**draft.__dict__, "schema": schema_to_text(schema), "dtypes": schema_to_ipc(schema)})
        if indexes is None:  # rows are estimated from the sample's bytes per record until the chunks have run
            sampled_bytes, sampled_rows = sum(p.stop - p.start for p in pieces), sum(f.height for f in frames)
            per_row = sampled_bytes / sampled_rows if sampled_rows else float(max(1, draft.total_bytes))
            options["_bytes_per_row"] = per_row
            info = DatasetInfo(**{**info.__dict__, "total_rows": round(draft.total_bytes / per_row)})
        return info

    def unreadable(self, piece: Piece, info: DatasetInfo) -> SourceError:
        """No sampled block parses: say why the first one does not, rather than plan a dataset of nothing."""
        data = self.read_bytes(piece)
        try:
            self.check_balanced(info, piece.path, piece.start, data)
        except SourceError as exc:
            return SourceError(f"no sampled record can be read: {exc}")
        error = self.parse_error(data, info, "infer")
        if error is None:
            return SourceError(f"{origin_of(piece.path)}: cannot read the records at bytes {piece.start}-{piece.stop}")
        return SourceError(
            f"no sampled record can be read: {self.located_error(error, data, info, 'infer', piece.path, piece.start)}"
        )

    def sample_header(self, header: bytes, names: list[str] | None, read_options: dict[str, Any]) -> str | None:
        """The header that sample blocks are parsed behind, kept as latin-1 text so any bytes round-trip."""
        return header.decode("latin-1") if header else None

    def _unify(self, pieces: list[Piece], frames: list[pl.DataFrame], names: list[str] | None) -> pl.Schema:
        """Per file, the types its blocks agree on; across files, `unify_schemas` (lossless widening only).

        A block where a column is all empty says nothing about its type: it counts as Null there."""
        per_file: dict[str, dict[str, pl.DataType]] = {}
        for piece, frame in zip(pieces, frames, strict=True):
            if not frame.height:
                continue
            merged = per_file.setdefault(piece.path, {})
            for column, dtype in frame.schema.items():
                dtype = pl.Null() if frame[column].null_count() == frame.height else dtype
                merged[column] = dtype if column not in merged else self.merge_types(merged[column], dtype)
        order = names if names is not None else list(dict.fromkeys(c for f in frames for c in f.columns))
        named = [(path, pl.Schema({c: types.get(c, pl.Null()) for c in order})) for path, types in per_file.items()]
        schema = dict(unify_schemas(named)) if named else {}
        return pl.Schema({c: pl.String() if schema.get(c, pl.Null()) == pl.Null else schema[c] for c in order})

    def _with_every_file(self, info: DatasetInfo, pieces: list[Piece]) -> list[Piece]:
        """A file too small to hold a sampled block still gets one, at its start: its types count too."""
        sampled = {p.path for p in pieces}
        for path, first, size in self._files(info):
            if path not in sampled and first < size:
                stop = self._record_start(info, path, min(size, first + INFER_BLOCK), first, size)
                pieces.append(Piece(path=path, start=first, stop=stop))
        return pieces

    def _files(self, info: DatasetInfo) -> list[tuple[str, int, int]]:
        """(path, offset of the first record, size) of every file."""
        return [(p, start, size) for p, (start, size) in zip(info.paths, info.read_options["_files"], strict=True)]

    def _record_start(self, info: DatasetInfo, path: str, x: int, first: int, size: int) -> int:
        return record_start(path, x, first, size, self.quote(info.read_options), self.separator_byte(info.read_options))

    def _byte_pieces(self, info: DatasetInfo, block_bytes: int, seed: int) -> list[Piece]:
        """Stratified blocks of whole records: one at a seeded offset in each of SAMPLE_BLOCKS equal
        slices of the data bytes (so the sample depends only on the source and the seed)."""
        files = self._files(info)
        total = sum(size - first for _, first, size in files)
        rng = np.random.default_rng(seed)
        pieces = []
        for j in range(SAMPLE_BLOCKS if total else 0):
            lo, hi = j * total // SAMPLE_BLOCKS, (j + 1) * total // SAMPLE_BLOCKS
            offset = lo + int(rng.integers(0, max(1, hi - lo - block_bytes + 1)))
            for path, first, size in files:  # the global byte offset -> its file
                if offset < size - first:
                    start = self._record_start(info, path, first + offset, first, size)
                    stop = self._record_start(info, path, min(size, start + block_bytes), first, size)
                    if start < stop:
                        pieces.append(Piece(path=path, start=start, stop=stop))
                    break
                offset -= size - first
        return pieces

    def plan(self, info: DatasetInfo, chunk_size: int) -> tuple[ChunkSpec, ...]:
        if self.exact(info):
            return super().plan(info, chunk_size)
        per_row = info.read_options["_bytes_per_row"]
        target = max(1, round(chunk_size * per_row))
        specs: list[ChunkSpec] = []
        rows = 0
        for path, first, size in self._files(info):
            cuts = [
                first,
                *(self._record_start(info, path, x, first, size) for x in range(first + target, size, target)),
            ]
            bounds = sorted({*cuts, size})  # a record longer than a chunk merges two cuts into one
            for a, b in itertools.pairwise(bounds):
                estimate = max(1, round((b - a) / per_row))
                specs.append(
                    ChunkSpec(index=len(specs), pieces=(Piece(path=path, start=a, stop=b),),
                              rows=(rows, rows + estimate), nbytes=b - a)
                )  # fmt: skip
                rows += estimate
        return tuple(specs)

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
        with storage.open_input(piece.path) as f:
            f.seek(piece.start)
            return f.read(piece.stop - piece.start)

    def sample(self, info: DatasetInfo, n: int, seed: int, columns: Sequence[str] | None = None) -> pl.DataFrame:
        per_block = None
        if self.exact(info):
            pieces = self._sample_pieces(info, n, seed)
        elif info.total_bytes <= 1.25 * n * info.read_options["_bytes_per_row"]:
            # Probably no more than n records: all of them are the sample, as for every other format.
            whole = self.sample_all(info, columns)
            if whole.height <= n:
                return whole
            pieces = self._byte_pieces(info, -(-info.total_bytes // SAMPLE_BLOCKS), seed)
            per_block = -(-n // SAMPLE_BLOCKS)
        else:
            per_block = -(-n // SAMPLE_BLOCKS)
            pieces = self._byte_pieces(info, round(1.25 * per_block * info.read_options["_bytes_per_row"]) + 1, seed)

        def read(piece: Piece) -> pl.DataFrame | None:
            frame = self._parse_sample(piece, info, "lenient")
            frame = frame if frame is None or per_block is None else frame.head(per_block)
            return frame if frame is None or columns is None else frame.select(columns)

        return conform([f for f in parallel_map(read, pieces) if f is not None], info, columns)

    def _parse_sample(self, piece: Piece, info: DatasetInfo, mode: ParseMode) -> pl.DataFrame | None:
        """A sample block cut inside a quoted field is left out; a few records that do not parse are left
        out of their block (the chunk holding them reports them), a block with more is left out."""
        data = self.read_bytes(piece)
        try:
            self.check_balanced(info, piece.path, piece.start, data)
        except SourceError:
            return None
        for _ in range(SKIPPED_PER_BLOCK + 1):
            try:
                return self.parse(data, info, mode=mode)
            except (pl.exceptions.PolarsError, PanicException):
                begin, end, _exc = self.first_bad_record(data, info, mode)
                data = data[:begin] + data[end:]
        return None

    def sample_all(self, info: DatasetInfo, columns: Sequence[str] | None) -> pl.DataFrame:
        whole = [self._parse_sample(Piece(path=p, start=a, stop=b), info, "lenient") for p, a, b in self._files(info)]
        frames = [f if columns is None else f.select(columns) for f in whole if f is not None]
        return conform(frames, info, columns)

    def _sample_pieces(self, info: DatasetInfo, n: int, seed: int = 0) -> list[Piece]:
        out = []
        for start, stop in sample_starts(info.total_rows, n, seed=seed):
            out.extend(self.pieces(info, start, stop))
        return out

    def read_rows(self, info: DatasetInfo, path: str, start: int, stop: int) -> pl.DataFrame:
        data = self.read_bytes(Piece(path=path, start=start, stop=stop))
        self.check_balanced(info, path, start, data)
        try:
            return self.parse(data, info, mode="strict")
        except (pl.exceptions.PolarsError, PanicException) as exc:
            raise self.located_error(exc, data, info, "strict", path, start) from None

    def located_error(
        self, exc: BaseException, data: bytes, info: DatasetInfo, mode: ParseMode, path: str, start: int
    ) -> DataError:
        """The error of the first record of `data` (read from `path` at `start`) that does not parse."""
        begin, end, first = self.first_bad_record(data, info, mode)
        line = lines_before(path, start) + data.count(b"\n", 0, begin) + 1
        return self.record_error(first or exc, info, f"{origin_of(path)}, line {line}", data[begin:end])

    def parse_error(self, data: bytes, info: DatasetInfo, mode: ParseMode) -> BaseException | None:
        try:
            self.parse(data, info, mode=mode)
        except (pl.exceptions.PolarsError, PanicException) as exc:
            return exc
        return None

    def first_bad_record(
        self, data: bytes, info: DatasetInfo, mode: ParseMode
    ) -> tuple[int, int, BaseException | None]:
        """(start, end) in `data` of the first record whose prefix no longer parses, and the error: a
        bisection over record ends, so a failed chunk costs a few more parses, never one per record."""
        ends = (real_newlines(np.frombuffer(data, dtype=np.uint8), self.quote(info.read_options), 0) + 1).tolist()
        if not ends or ends[-1] != len(data):
            ends.append(len(data))
        lo, hi = 0, len(ends) - 1  # data[:ends[hi]] fails
        while lo < hi:
            mid = (lo + hi) // 2
            if self.parse_error(data[: ends[mid]], info, mode) is None:
                lo = mid + 1
            else:
                hi = mid
        return (ends[lo - 1] if lo else 0), ends[lo], self.parse_error(data[: ends[lo]], info, mode)

    def record_error(self, exc: BaseException, info: DatasetInfo, where: str, record: bytes) -> DataError:
        """Why `record` (at `where`, "file, line n") does not parse, and what to do."""
        raise NotImplementedError

    def check_balanced(self, info: DatasetInfo, path: str, start: int, data: bytes) -> None:
        """A byte-range chunk must hold whole quoted fields: an odd quote count means a cut inside one."""
        quote = self.quote(info.read_options)
        if self.exact(info) or quote is None or data.find(bytes([quote])) == -1:  # memchr: usually no quotes
            return
        if np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == quote) % 2:
            raise DataError(
                f"{origin_of(path)}: bytes {start}-{start + len(data)} hold an odd number of {chr(quote)!r} characters, so a "
                "chunk boundary fell inside a quoted field (or a field has an unmatched quote); pass "
                "read_options={'exact_rows': True} to plan from a full pass over the file instead"
            )
