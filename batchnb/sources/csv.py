"""CSV and TSV: header from the first record, chunks as record-aligned byte ranges parsed by Polars."""

from __future__ import annotations

from typing import Any

import polars as pl

from batchnb.plan import DatasetInfo
from batchnb.sources.text import ParseMode, TextFormat, lines_before

__all__ = ["CSV"]

# Options this reader interprets itself; the rest go to `pl.read_csv` as they are.
_OWN = {"separator", "quote_char", "schema_overrides", "has_header", "schema", "key", "exact_rows"}


class CSV(TextFormat):
    name = "csv"
    has_header = True

    def quote(self, read_options: dict[str, Any]) -> int | None:
        quote = read_options.get("quote_char", '"')
        return ord(quote) if quote else None

    def separator_byte(self, read_options: dict[str, Any]) -> int | None:
        separator = read_options.get("_separator", ",")
        return ord(separator) if len(separator) == 1 else None

    @staticmethod
    def separator(info_options: dict[str, Any], path: str | None = None) -> str:
        if "separator" in info_options:
            return info_options["separator"]
        return "\t" if path is not None and path.lower().endswith(".tsv") else ","

    def _options(self, read_options: dict[str, Any]) -> dict[str, Any]:
        passthrough = {k: v for k, v in read_options.items() if k not in _OWN and not k.startswith("_")}
        quote = read_options.get("quote_char", '"')
        return {"separator": read_options["_separator"], "quote_char": quote, **passthrough}

    def inspect(self, paths, read_options, *, workdir):
        read_options = {**read_options, "_separator": self.separator(read_options, paths[0])}
        return super().inspect(paths, read_options, workdir=workdir)

    def header_names(self, path: str, header: bytes, read_options: dict[str, Any]) -> list[str]:
        frame = pl.read_csv(header, has_header=True, n_rows=0, **self._options(read_options))
        return frame.columns

    def parse(self, data: bytes, info: DatasetInfo, *, mode: ParseMode) -> pl.DataFrame:
        options = self._options(info.read_options)
        names = info.read_options["_names"]
        if not data:
            return pl.DataFrame(schema=info.polars_schema() if info.schema else {n: pl.String for n in names})
        if mode == "strict":
            return pl.read_csv(data, has_header=False, schema=info.polars_schema(), missing_columns="insert", **options)
        # Samples parse behind the header, so short records get nulls and long ones are cut, not fatal.
        header = info.read_options["_header"].encode()
        if mode == "infer":
            return pl.read_csv(header + data, infer_schema_length=10_000, truncate_ragged_lines=True, **options)
        return pl.read_csv(
            header + data, schema_overrides=info.polars_schema(), infer_schema=False, truncate_ragged_lines=True,
            ignore_errors=True, **options,
        )  # fmt: skip

    def located_error(self, exc: Exception, info: DatasetInfo, path: str, start: int, data: bytes) -> Exception:
        """Name the file and line of a record with more fields than the header."""
        text = str(exc).splitlines()[0]
        first_line = lines_before(path, start) + 1
        if "more fields" in text:
            sep, width = info.read_options["_separator"].encode(), len(info.read_options["_names"])
            for i, line in enumerate(data.split(b"\n")):
                fields = line.count(sep) + 1
                if fields > width and b'"' not in line:
                    msg = (
                        f"{path}, line {first_line + i}: the record has {fields} fields but the header has {width}; "
                        "fix the line, or pass read_options={'truncate_ragged_lines': True} to drop extra fields"
                    )
                    return ValueError(msg)
        return ValueError(f"{path}: cannot parse the records from line {first_line}: {text}")
