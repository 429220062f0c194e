"""Files written at test time by Polars (write_csv/parquet/ndjson/ipc options) and DuckDB (COPY ... TO)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

import batchnb as bn
from corpus.spec import OK, Entry, ok_or, sample_frame

__all__ = ["DUCKDB", "POLARS"]

ROWS = 2_200


def frame(n: int = ROWS, seed: int = 11) -> pl.DataFrame:
    return sample_frame(n, seed).with_columns(
        pl.datetime_range(pl.datetime(2024, 1, 1), pl.datetime(2024, 1, 1) + pl.duration(minutes=n - 1),
                          "1m", eager=True).alias("at"),
    )  # fmt: skip


def nested(n: int = 1_300) -> pl.DataFrame:
    return frame(n).with_columns(
        pl.concat_list("k", "k").alias("pair"), pl.struct(pl.col("name"), pl.col("k").alias("kk")).alias("info")
    )


def written(name: str, method: str, data=frame, **options):
    def make(folder: Path) -> str:
        getattr(data(), method)(folder / name, **options)
        return str(folder / name)

    return make


def _e(id, make, fmt, expect=OK, **kw) -> Entry:
    return Entry(id=id, origin="polars", fmt=fmt, make=make, expect=expect, **kw)


POLARS: list[Entry] = [
    _e("pl-csv-default", written("a.csv", "write_csv"), "csv"),
    _e("pl-csv-tab", written("a.csv", "write_csv", separator="\t"), "csv", read_options={"separator": "\t"}),
    _e("pl-csv-quote-always", written("a.csv", "write_csv", quote_style="always"), "csv"),
    _e("pl-csv-quote-nonnumeric", written("a.csv", "write_csv", quote_style="non_numeric"), "csv"),
    _e("pl-csv-null-value", written("a.csv", "write_csv", null_value="NULL"), "csv",
       read_options={"null_values": ["NULL"]}),
    _e("pl-csv-precision", written("a.csv", "write_csv", float_precision=2), "csv"),
    _e("pl-csv-scientific", written("a.csv", "write_csv", float_scientific=True), "csv"),
    _e("pl-csv-datetime-format", written("a.csv", "write_csv", datetime_format="%Y/%m/%d %H.%M"), "csv"),
    _e("pl-csv-no-header", written("a.csv", "write_csv", include_header=False), "csv",
       read_options={"has_header": False}),
    _e("pl-csv-crlf-bom", written("a.csv", "write_csv", line_terminator="\r\n", include_bom=True), "csv"),
    _e("pl-csv-gzip", written("a.csv.gz", "write_csv", compression="gzip", check_extension=False), "csv",
       expect=ok_or(bn.SourceError, "compress|decompress")),
    _e("pl-csv-zstd", written("a.csv.zst", "write_csv", compression="zstd", check_extension=False), "csv",
       expect=ok_or(bn.SourceError, "compress|decompress")),
    _e("pl-csv-exact-rows", written("a.csv", "write_csv"), "csv", read_options={"exact_rows": True}),
    _e("pl-csv-try-parse-dates", written("a.csv", "write_csv"), "csv", read_options={"try_parse_dates": True}),
    _e("pl-csv-schema-overrides", written("a.csv", "write_csv"), "csv",
       read_options={"schema_overrides": {"k": pl.Float64, "id": pl.Int32}}),
    *[_e(f"pl-parquet-{codec}", written("a.parquet", "write_parquet", compression=codec), "parquet")
      for codec in ("zstd", "lz4", "gzip", "uncompressed")],
    _e("pl-parquet-small-groups-pages", written("a.parquet", "write_parquet", row_group_size=300, data_page_size=1_024,
                                                statistics=False), "parquet"),
    _e("pl-parquet-nested", written("a.parquet", "write_parquet", nested), "parquet"),
    _e("pl-parquet-categorical", written("a.parquet", "write_parquet",
                                         lambda: frame().with_columns(pl.col("name").cast(pl.Categorical))), "parquet"),
    _e("pl-parquet-enum", written("a.parquet", "write_parquet", lambda: frame().with_columns(
        pl.col("name").cast(pl.Enum(["a", "b,c", 'd"e', "f g", "héllo"])))), "parquet"),
    _e("pl-parquet-int128", written("a.parquet", "write_parquet", lambda: frame().with_columns(
        pl.col("k").cast(pl.Int128).alias("big"))), "parquet", expect=ok_or(bn.SourceError, "a.parquet")),
    _e("pl-ndjson", written("a.jsonl", "write_ndjson"), "json"),
    _e("pl-ndjson-nested", written("a.ndjson", "write_ndjson", nested), "json"),
    _e("pl-json-array", written("a.json", "write_json"), "json"),
    *[_e(f"pl-ipc-{codec}", written("a.arrow", "write_ipc", compression=codec, record_batch_size=450), "feather")
      for codec in ("uncompressed", "lz4", "zstd")],
    _e("pl-ipc-nested", written("a.ipc", "write_ipc", nested), "feather"),
    _e("pl-ipc-stream", written("a.arrow", "write_ipc_stream"), "feather",
       expect=ok_or(bn.SourceError, "a.arrow", "stream"), reference=lambda p: pl.read_ipc_stream(p)),
]  # fmt: skip


def duckdb_copy(name: str, options: str, select: str | None = None):
    """`COPY (select) TO name (options)` with DuckDB's own writers."""

    def make(folder: Path) -> str:
        import duckdb

        path = folder / name
        query = select or DUCK_SELECT
        with duckdb.connect() as con:
            con.execute(f"COPY ({query}) TO '{path}' ({options})")
        return str(path)

    return make


DUCK_SELECT = """
SELECT i AS id,
       CASE WHEN i % 97 = 0 THEN NULL ELSE sin(i) * 10 + (CASE WHEN i % 401 = 0 THEN 200 ELSE 0 END) END AS x,
       (i % 13)::INTEGER AS k,
       (i * 7 % 1000)::DECIMAL(9, 2) AS amount,
       TIMESTAMPTZ '2024-01-01 00:00:00+00' + i * INTERVAL 17 MINUTE AS at,
       'item ' || (i % 50) AS name
FROM range(1800) t(i)
"""
DUCK_NESTED = """
SELECT i AS id, i * 1.5 AS x, [i, i + 1] AS pair, {'a': i, 'b': 'v' || i} AS info, i % 2 = 0 AS even
FROM range(1200) t(i)
"""
DUCK_TYPES = """
SELECT i::TINYINT AS t8, i::SMALLINT AS s16, (i * 1000)::BIGINT AS b64, i::UTINYINT AS u8, i::UBIGINT AS u64,
       (i / 3)::FLOAT AS f32, i::HUGEINT AS huge, uuid() AS uid, DATE '2020-01-01' + i::INTEGER AS day,
       CASE WHEN i % 2 = 0 THEN 'x' END AS mostly_null
FROM range(120) t(i)
"""


def _d(id, make, fmt, expect=OK, **kw) -> Entry:
    return Entry(id=id, origin="duckdb", fmt=fmt, make=make, expect=expect, **kw)


DUCKDB: list[Entry] = [
    _d("duck-csv", duckdb_copy("a.csv", "FORMAT csv, HEADER true"), "csv"),
    _d("duck-csv-pipe-quoted", duckdb_copy("a.csv", "FORMAT csv, HEADER true, DELIMITER '|', FORCE_QUOTE *"), "csv",
       read_options={"separator": "|"}),
    _d("duck-csv-dateformat-nullstr", duckdb_copy(
        "a.csv", "FORMAT csv, HEADER true, TIMESTAMPFORMAT '%d.%m.%Y %H:%M', NULLSTR 'n/a'"), "csv",
       read_options={"null_values": "n/a"}),
    _d("duck-csv-gzip", duckdb_copy("a.csv.gz", "FORMAT csv, HEADER true, COMPRESSION gzip"), "csv",
       expect=ok_or(bn.SourceError, "compress|decompress")),
    _d("duck-csv-empty", duckdb_copy("a.csv", "FORMAT csv, HEADER true", DUCK_SELECT + " LIMIT 0"), "csv"),
    _d("duck-parquet-zstd", duckdb_copy("a.parquet", "FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 500"),
       "parquet"),
    _d("duck-parquet-snappy", duckdb_copy("a.parquet", "FORMAT parquet, COMPRESSION snappy"), "parquet"),
    _d("duck-parquet-nested", duckdb_copy("a.parquet", "FORMAT parquet", DUCK_NESTED), "parquet"),
    _d("duck-parquet-types", duckdb_copy("a.parquet", "FORMAT parquet", DUCK_TYPES), "parquet"),
    _d("duck-json", duckdb_copy("a.jsonl", "FORMAT json"), "json"),
    _d("duck-json-array", duckdb_copy("a.json", "FORMAT json, ARRAY true"), "json"),
    _d("duck-json-nested", duckdb_copy("a.ndjson", "FORMAT json", DUCK_NESTED), "json"),
]  # fmt: skip
