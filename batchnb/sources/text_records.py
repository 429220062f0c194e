"""Reading records of a text file: a byte range parsed as the dataset says, and, when it does not parse, the
record that does not and why (a bisection over the records, so a failed chunk costs a few more parses)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from batchnb import storage
from batchnb.errors import DataError, PanicException, SourceError
from batchnb.sources.dataset import DatasetInfo, Piece
from batchnb.sources.read_buffer import read_range
from batchnb.sources.record_index import lines_before, real_newlines
from batchnb.sources.text_options import ParseMode

__all__ = ["SKIPPED_PER_BLOCK", "TextRecords"]

SKIPPED_PER_BLOCK = 8  # records that do not parse left out of one sample block; a block with more is dropped


class TextRecords:
    """Parsing byte ranges of records (CSV and NDJSON define `parse` and `record_error`)."""

    def quote(self, read_options: Mapping[str, Any]) -> int | None:
        return None

    def parse(self, data: bytes, info: DatasetInfo, *, mode: ParseMode) -> pl.DataFrame:
        """`strict` for chunks (a bad record fails the chunk); `infer` and `lenient` for samples, which
        must not fail the whole job over one bad record that its own chunk will report."""
        raise NotImplementedError

    def record_error(self, exc: BaseException, info: DatasetInfo, where: str, record: bytes) -> DataError:
        """Why `record` (at `where`, "file, line n") does not parse, and what to do."""
        raise NotImplementedError

    @staticmethod
    def exact(info: DatasetInfo) -> bool:
        return bool(info.read_options.get("exact_rows"))

    def parse_sample(self, piece: Piece, info: DatasetInfo, mode: ParseMode) -> pl.DataFrame | None:
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

    @staticmethod
    def read_bytes(piece: Piece) -> bytes:
        with storage.open_input(piece.path) as f:
            return read_range(f, piece.start, piece.stop - piece.start)

    def read_rows(self, info: DatasetInfo, path: str, start: int, stop: int) -> pl.DataFrame:
        data = self.read_bytes(Piece(path=path, start=start, stop=stop))
        self.check_balanced(info, path, start, data)
        try:
            return self.parse(data, info, mode="strict")
        except (pl.exceptions.PolarsError, PanicException) as exc:
            raise self.located_error(exc, data, info, "strict", path, start) from None

    def check_balanced(self, info: DatasetInfo, path: str, start: int, data: bytes) -> None:
        """A byte-range chunk must hold whole quoted fields: an odd quote count means a cut inside one."""
        quote = self.quote(info.read_options)
        if self.exact(info) or quote is None or data.find(bytes([quote])) == -1:  # memchr: usually no quotes
            return
        if np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == quote) % 2:
            raise DataError(
                f"{info.origin(path)}: bytes {start}-{start + len(data)} hold an odd number of {chr(quote)!r} "
                "characters, so a chunk boundary fell inside a quoted field (or a field has an unmatched quote); "
                "pass read_options={'exact_rows': True} to plan from a full pass over the file instead"
            )

    def unreadable(self, piece: Piece, info: DatasetInfo) -> SourceError:
        """No sampled block parses: say why the first one does not, rather than plan a dataset of nothing."""
        data = self.read_bytes(piece)
        try:
            self.check_balanced(info, piece.path, piece.start, data)
        except SourceError as exc:
            return SourceError(f"no sampled record can be read: {exc}")
        error = self.parse_error(data, info, "infer")
        if error is None:
            return SourceError(
                f"{info.origin(piece.path)}: cannot read the records at bytes {piece.start}-{piece.stop}"
            )
        located = self.located_error(error, data, info, "infer", piece.path, piece.start)
        return SourceError(f"no sampled record can be read: {located}")

    def located_error(
        self, exc: BaseException, data: bytes, info: DatasetInfo, mode: ParseMode, path: str, start: int
    ) -> DataError:
        """The error of the first record of `data` (read from `path` at `start`) that does not parse."""
        begin, end, first = self.first_bad_record(data, info, mode)
        line = lines_before(path, start) + data.count(b"\n", 0, begin) + 1
        return self.record_error(first or exc, info, f"{info.origin(path)}, line {line}", data[begin:end])

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
