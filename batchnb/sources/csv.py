"""CSV and TSV: header from the first record, chunks as record-aligned byte ranges parsed by Polars.

Every `read_options` key is one of `OPTIONS`, honoured wherever the file is read (finding the header,
inferring types, the fit sample, every chunk) the way `pl.read_csv` reads the whole file with it.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import polars as pl

from batchnb import storage
from batchnb.errors import ConfigError, DataError, PanicException, SourceError, cause_of
from batchnb.sources.dataset import ChunkSpec, DatasetInfo, Piece
from batchnb.sources.record_index import READ, lines_before, real_newlines
from batchnb.sources.text import TextFormat, text_facts
from batchnb.sources.text_options import BOOL, SCHEMA, Check, ParseMode, dtypes_option, type_message

__all__ = ["CSV"]

_ASCII_PROBE = '\n\r,;\t"#'


def _is_byte_char(value: Any) -> bool:
    return isinstance(value, str) and len(value.encode()) == 1


def _is_encoding(value: Any) -> bool:
    """utf8, utf8-lossy, or a codec that writes newlines, separators and quotes as ASCII (not UTF-16)."""
    if value in ("utf8", "utf8-lossy"):
        return True
    try:
        return isinstance(value, str) and codecs.encode(_ASCII_PROBE, value) == _ASCII_PROBE.encode()
    except LookupError:
        return False


def _is_null_values(value: Any) -> bool:
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    return isinstance(value, str) or (isinstance(value, list | tuple) and all(isinstance(v, str) for v in value))


OPTIONS: dict[str, Check] = {
    "exact_rows": BOOL,
    "has_header": BOOL,
    "truncate_ragged_lines": BOOL,
    "try_parse_dates": BOOL,
    "skip_rows": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a whole number >= 0"),
    "separator": (_is_byte_char, "one single-byte character, like ';' or '\\t'"),
    "quote_char": (lambda v: v is None or _is_byte_char(v), "one single-byte character, or None for no quoting"),
    "comment_prefix": (
        lambda v: v is None or (isinstance(v, str) and 1 <= len(v.encode()) <= 5),
        "a string of 1 to 5 characters, or None",
    ),
    "encoding": (_is_encoding, "'utf8', 'utf8-lossy' or an ASCII-compatible codec such as 'latin-1'"),
    "null_values": (_is_null_values, "a string, a list of strings, or a dict of column -> string"),
    "schema_overrides": SCHEMA,
    "schema": SCHEMA,
}


def _records(path: str, quote: int | None) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) of each record from the start of a file; a quoted newline stays inside its record."""
    with storage.open_input(path) as f:
        buf, base, step = b"", 0, 64 * 1024  # buf always starts at a record start, so its quote parity is 0
        while True:
            more = f.read(step)
            step = min(READ, 4 * step)  # the header is usually in the first read: keep it small
            buf += more
            pos = 0
            for end in real_newlines(np.frombuffer(buf, dtype=np.uint8), quote, 0).tolist():
                yield base + pos, buf[pos : end + 1]
                pos = end + 1
            buf, base = buf[pos:], base + pos
            if not more:
                if buf:
                    yield base, buf
                return


class CSV(TextFormat):
    name = "csv"
    options = OPTIONS

    def quote(self, read_options: Mapping[str, Any]) -> int | None:
        quote = read_options.get("quote_char", '"')
        return ord(quote) if quote else None

    def separator(self, read_options: Mapping[str, Any], path: str) -> str:
        if "separator" in read_options:
            return read_options["separator"]
        return "\t" if path.lower().endswith(".tsv") else ","

    @staticmethod
    def _polars_options(read_options: Mapping[str, Any], separator: str | None) -> dict[str, Any]:
        """What every parse passes to `pl.read_csv`, as the user gave it."""
        options = {
            "separator": separator or ",",
            "quote_char": read_options.get("quote_char", '"'),
            "encoding": read_options.get("encoding", "utf8"),
        }
        options.update({k: read_options[k] for k in ("comment_prefix", "null_values") if k in read_options})
        return options

    def layout(self, path: str, read_options: dict[str, Any], where: str) -> tuple[bytes, int]:
        """Skip what Polars skips before the header (blank lines at the start, `skip_rows` records,
        comment lines): the header record (or, without one, the first record) and the data's offset."""
        skip, comment = read_options.get("skip_rows", 0), read_options.get("comment_prefix")
        prefix = comment.encode() if comment else None
        leading = True
        for offset, record in _records(path, self.quote(read_options)):
            if prefix is not None and record.startswith(prefix):
                continue
            if leading and not record.strip(b"\r\n"):
                continue
            leading = False
            if skip:
                skip -= 1
                continue
            return record, offset + len(record) if read_options.get("has_header", True) else offset
        if read_options.get("has_header", True):
            raise SourceError(f"{where}: no header record (after skip_rows and comment lines): nothing to read")
        return b"", storage.file_size(path)

    def header_names(self, where: str, header: bytes, read_options: dict[str, Any], separator: str | None) -> list[str]:
        has_header = read_options.get("has_header", True)
        if b"\x00" in header:
            raise SourceError(
                f"{where}: the {'header' if has_header else 'first record'} holds NUL bytes, so this is not a text "
                "CSV file (UTF-16 text, or a binary file?): convert it to UTF-8 text"
            )
        if read_options.get("encoding", "utf8") == "utf8":
            try:
                header.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SourceError(
                    f"{where}: the header is not UTF-8 text (byte {header[exc.start]:#04x} at offset {exc.start}): "
                    "pass read_options={'encoding': 'utf8-lossy'} to read invalid bytes as \ufffd, or the file's "
                    "own encoding, e.g. read_options={'encoding': 'latin-1'}"
                ) from None
        try:
            options = self._polars_options(read_options, separator)
            names = pl.read_csv(header, has_header=has_header, n_rows=0, **options).columns
        except (pl.exceptions.NoDataError, ValueError):
            names = []
        except (pl.exceptions.PolarsError, PanicException) as exc:
            raise SourceError(f"{where}: cannot read the header: {cause_of(exc)}") from None
        if "schema" not in read_options:
            return names
        given = list(read_options["schema"])
        if has_header and set(given) != set(names):
            raise ConfigError(f"`read_options['schema']` has columns {given}, but the header of {where!r} has {names}")
        return names if has_header else given

    def sample_header(
        self, header: bytes, names: list[str] | None, read_options: dict[str, Any], separator: str | None
    ) -> str | None:
        if read_options.get("has_header", True):
            return super().sample_header(header, names, read_options, separator)
        # Without a header, sample blocks parse behind one made of the names, so every block has their width.
        quote = read_options.get("quote_char", '"')
        line = pl.DataFrame(schema=dict.fromkeys(names or [], pl.String)).write_csv(
            separator=separator or ",", quote_char=quote or '"', quote_style="never" if not quote else None
        )
        return line.encode().decode("latin-1")

    def merge_types(self, a: pl.DataType, b: pl.DataType) -> pl.DataType:
        """As Polars types a column reading the whole file: numbers widen, any other mix is text."""
        if a == b or b == pl.Null:
            return a
        if a == pl.Null:
            return b
        if a.is_numeric() and b.is_numeric():
            return pl.Float64() if a.is_float() or b.is_float() else pl.Int64()
        return pl.String()

    def parse(self, data: bytes, info: DatasetInfo, *, mode: ParseMode) -> pl.DataFrame:
        """Records of `data` as the dataset says; chunks and samples parse only the projection's columns
        (`info.columns`: the others are split off but never converted), type inference parses them all."""
        ro, facts = info.read_options, text_facts(info)
        options, names = self._polars_options(ro, facts.separator), list(facts.names or ())
        schema = info.polars_schema() if info.schema else pl.Schema(dict.fromkeys(names, pl.String))
        wanted = schema.names() if info.columns is None else list(info.columns)
        if not data:
            return pl.DataFrame(schema={c: schema[c] for c in wanted})
        in_file = pl.Schema({n: schema[n] for n in names}) if info.schema else None
        truncate = ro.get("truncate_ragged_lines", False)
        if mode == "strict":
            frame = pl.read_csv(data, **_strict(info))
            return frame if frame.columns == wanted else frame.select(wanted)
        # Samples parse behind the header: short records get nulls; a long one fails as in a chunk (and is left
        # out of the sample), never cut to the header's width unless the user asked for that.
        header = (facts.header or "").encode("latin-1")
        if mode == "infer":
            overrides = dtypes_option(ro, "schema") or dtypes_option(ro, "schema_overrides")
            return pl.read_csv(
                header + data, infer_schema_length=None, truncate_ragged_lines=truncate, schema_overrides=overrides,
                try_parse_dates=ro.get("try_parse_dates", False), **options,
            )  # fmt: skip
        frame = pl.read_csv(
            header + data, schema_overrides=in_file, infer_schema=False, truncate_ragged_lines=truncate,
            ignore_errors=True, columns=info.columns and list(info.columns), **options,
        )  # fmt: skip
        return frame.select(wanted)

    def scan_chunk(self, info: DatasetInfo, spec: ChunkSpec) -> pl.LazyFrame | None:
        """The chunk as a query that its scoring joins: one pass parses and scores, where `read` then scoring
        builds every column first (8 % less CPU per chunk). None where only `read` applies: a chunk of several
        pieces, a dataset without a decided schema, a codec Polars' scan does not take. A record that does not
        parse fails the query; the caller then reads the chunk with `read`, which names the record."""
        ro = info.read_options
        if len(spec.pieces) != 1 or not info.schema or ro.get("encoding", "utf8") not in ("utf8", "utf8-lossy"):
            return None
        piece = spec.pieces[0]
        data = self.read_bytes(piece)
        self.check_balanced(info, piece.path, piece.start, data)
        if not data:
            return None
        options = _strict(info)
        positions = options.pop("columns")
        query = pl.scan_csv(data, **options)
        if positions is not None:
            query = query.select(pl.nth(positions))
        return query.select(info.polars_schema().names() if info.columns is None else list(info.columns))

    def _width(self, record: bytes, info: DatasetInfo) -> int | None:
        """How many fields `record` has, as the file's options split it; None if it does not parse."""
        options = {**self._polars_options(info.read_options, text_facts(info).separator), "encoding": "utf8-lossy"}
        try:
            return pl.read_csv(record, has_header=False, infer_schema=False, **options).width
        except (pl.exceptions.PolarsError, PanicException):
            return None

    def unreadable(self, piece: Piece, info: DatasetInfo) -> SourceError:
        """The sampled records are all wider than the header: the first line is likely no header at all
        (a title or comment line before it), so say which line was taken as the header and how to skip it."""
        error, ro, names = super().unreadable(piece, info), info.read_options, text_facts(info).names or ()
        data = self.read_bytes(piece)
        ends = real_newlines(np.frombuffer(data[:READ], dtype=np.uint8), self.quote(ro), 0)
        width = self._width(data[: int(ends[0]) + 1 if ends.size else len(data)], info)
        if not ro.get("has_header", True) or width is None or width <= len(names):
            return error
        first = next(start for path, start, _ in self._files(info) if path == piece.path)
        line, header = lines_before(piece.path, first), (text_facts(info).header or "").strip("\r\n")
        shown = header if len(header) <= 60 else header[:57] + "..."
        hints = [] if "skip_rows" in ro else [f"{{'skip_rows': {line}}}"]
        if header[:1] in ("#", "%", ";") and "comment_prefix" not in ro:
            hints.append(f"{{'comment_prefix': {header[:1]!r}}}")
        skip = f"pass read_options={' or '.join(hints)} to skip the lines before it" if hints else "skip them"
        return SourceError(
            f"{info.origin(piece.path)}, line {line}: this line was read as the header ({shown!r}, {len(names)} field(s)), "
            f"but the records after it have {width} fields: if the real header comes later, {skip}; if these "
            f"records are the data, pass read_options={{'truncate_ragged_lines': True}} to keep the header's "
            "columns only"
        )

    def record_error(self, exc: BaseException, info: DatasetInfo, where: str, record: bytes) -> DataError:
        text = str(exc)
        if "more fields" in text or "not specified in schema" in text:
            width = self._width(record, info)
            fields = "more" if width is None else str(width)
            return DataError(
                f"{where}: the record has {fields} fields but the header has {len(text_facts(info).names or ())}; fix "
                "the line, or pass read_options={'truncate_ragged_lines': True} to drop the extra fields"
            )
        if "utf-8" in text.lower() or "utf8" in text.lower():
            return DataError(
                f"{where}: the record is not valid UTF-8 text: pass read_options={{'encoding': 'utf8-lossy'}} to read "
                "invalid bytes as \ufffd, or the file's own encoding, e.g. read_options={'encoding': 'latin-1'}"
            )
        found = re.search(r"could not parse `(.*?)` as dtype `.*?` at column '(.*?)'", text, re.S)
        schema = info.polars_schema()
        if found and found.group(2) in schema:
            return DataError(type_message(where, found.group(2), found.group(1), schema[found.group(2)]))
        return DataError(f"{where}: cannot parse the record: {cause_of(exc)}")


def _strict(info: DatasetInfo) -> dict[str, Any]:
    """How a chunk's records parse. A chunk has no header: its first record would set the width, so extra
    fields are cut only on request. Without a header, Polars takes projected columns by position."""
    truncate = info.read_options.get("truncate_ragged_lines", False)
    names, schema = list(text_facts(info).names or ()), info.polars_schema()
    in_file = pl.Schema({n: schema[n] for n in names}) if info.schema else None
    return {
        "has_header": False, "schema": in_file, "missing_columns": "insert", "truncate_ragged_lines": truncate,
        "extra_columns": "ignore" if truncate else "raise",
        "columns": None if info.columns is None else sorted(names.index(c) for c in info.columns),
        **CSV._polars_options(info.read_options, text_facts(info).separator),
    }  # fmt: skip
