"""Newline-delimited JSON in byte ranges; a JSON array file is loaded once and kept as Arrow IPC."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

import polars as pl

from batchnb import storage
from batchnb.errors import ConfigError, DataError, PanicException, SourceError, cause_of
from batchnb.sources.dataset import DatasetInfo
from batchnb.sources.feather import Feather
from batchnb.sources.staging import Workdir, arrow_copies
from batchnb.sources.text import TextFormat
from batchnb.sources.text_options import BOOL, SCHEMA, ParseMode, dtypes_option, type_message

__all__ = ["NDJSON"]


_PEEK = 64 * 1024
_NESTED_FIRST = re.compile(rb'\{\s*"(?:[^"\\]|\\.)*"\s*:\s*[\[{]')


def _shape(path: str) -> Literal["array", "document", "lines"]:
    """What the file holds, from one read of its start (and end): a JSON array of records; one JSON object
    holding the data (pandas' `to_json` orient "columns", "index", "split" or "table"), told by a first line
    that is a lone `{` (indented) or a file of a single line whose values are objects or arrays (checked fully
    up to 64 KiB, from its first value beyond); or newline-delimited JSON."""
    with storage.open_input(path) as f:
        head, tail = f.read(_PEEK), b""
        if len(head) == _PEEK:  # a longer file: its end tells whether it is one line
            f.seek(-_PEEK, 2)
            tail = f.read()
    if head[:4096].lstrip()[:1] == b"[":
        return "array"
    return "document" if _one_document(head, tail) else "lines"


def _one_document(head: bytes, tail: bytes) -> bool:
    text = head.lstrip()
    line, _, rest = text.partition(b"\n")
    if not text.startswith(b"{") or line.strip() == b"{":
        return line.strip() == b"{"
    if rest.strip() or b"\n" in tail.strip():
        return False  # a second line: newline-delimited JSON
    if len(head) < _PEEK:
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            return False
        return bool(document) and all(isinstance(v, (dict, list)) for v in document.values())
    return _NESTED_FIRST.match(text) is not None


def _load_array(path: str) -> pl.DataFrame:
    try:
        return pl.read_json(path)
    except Exception as exc:
        raise SourceError(f"cannot read JSON array file {path!r}: {exc}") from exc


class NDJSON(TextFormat):
    name = "json"
    options = {"exact_rows": BOOL, "schema": SCHEMA, "schema_overrides": SCHEMA}

    def inspect(
        self,
        paths: tuple[str, ...],
        read_options: dict[str, Any],
        *,
        workdir: Workdir,
        origins: Mapping[str, str] | None = None,
    ) -> DatasetInfo:
        shapes = [_shape(p) for p in paths]
        named = {p: (origins or {}).get(p, p) for p in paths}
        document = next((named[p] for p, shape in zip(paths, shapes, strict=True) if shape == "document"), None)
        if document is not None:
            raise SourceError(
                f"{document!r} is a single JSON object (such as pandas' `to_json(orient='columns')` writes), but "
                "batchnb reads newline-delimited JSON (one object per line) or a JSON array of records: write it "
                "with `df.to_json(path, orient='records', lines=True)`"
            )
        if "array" in shapes:
            if set(read_options) - set(TextFormat.options):  # only what every text source honours
                raise ConfigError(
                    f"`read_options` {sorted(read_options)} apply to newline-delimited JSON, but {named[paths[0]]!r} is a "
                    "JSON array: drop them, or convert the file to one JSON object per line"
                )
            converted = arrow_copies(paths, workdir, _load_array)
            originals = {copy: (origins or {}).get(p, p) for copy, p in converted.items()}
            return Feather().describe(tuple(converted), {}, origins=originals)
        return super().inspect(paths, read_options, workdir=workdir, origins=origins)

    def parse(self, data: bytes, info: DatasetInfo, *, mode: ParseMode) -> pl.DataFrame:
        """Lines of `data` as the dataset says; chunks and samples read only the projection's columns (a schema
        of those alone: Polars skips every other key), type inference reads them all."""
        if not data.strip():
            return pl.DataFrame(schema=info.read_schema() if info.schema else {})
        if mode == "infer":
            overrides = dtypes_option(info.read_options, "schema") or dtypes_option(
                info.read_options, "schema_overrides"
            )
            return pl.read_ndjson(data, infer_schema_length=None, schema_overrides=overrides or None)
        return pl.read_ndjson(data, schema=info.read_schema(), ignore_errors=mode == "lenient")

    def record_error(self, exc: BaseException, info: DatasetInfo, where: str, record: bytes) -> DataError:
        """A line that is not JSON, or a value whose type is not its column's."""
        text = cause_of(exc)
        try:
            row = pl.read_ndjson(record)
        except (pl.exceptions.PolarsError, PanicException):
            return DataError(f"{where}: the line is not a JSON object ({text}): fix or remove the line")
        schema = info.read_schema()  # the columns the failed parse read
        for column in row.columns:
            if column not in schema:
                continue
            try:
                pl.read_ndjson(record, schema={column: schema[column]})
            except (pl.exceptions.PolarsError, PanicException):
                value = row[column][0]
                return DataError(type_message(where, column, str(value), schema[column]))
        return DataError(f"{where}: cannot read the line as the dataset's schema says: {text}")
