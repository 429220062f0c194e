"""Files written at test time by pyarrow: Parquet codecs and encodings, Arrow types, Feather v1/v2, IPC streams."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

import batchnb as bn
from corpus.spec import OK, Entry, fails, ok_or, sample_frame

__all__ = ["ARROW"]

ROWS = 2_300


def base(n: int = ROWS, seed: int = 5) -> pa.Table:
    return sample_frame(n, seed).to_arrow()


def with_column(name: str, values: pa.Array | list, n: int | None = None) -> pa.Table:
    table = base(n if n is not None else len(values))
    return table.append_column(name, values if isinstance(values, pa.Array) else pa.array(values))


def typed_table(n: int = 1_100) -> pa.Table:
    """Many Arrow types beside the numbers: what a warehouse export holds."""
    rng = np.random.default_rng(6)
    idx = np.arange(n)
    cols = {
        "i8": pa.array(rng.integers(-128, 127, n).astype(np.int8)),
        "i16": pa.array(rng.integers(-30_000, 30_000, n).astype(np.int16)),
        "i32": pa.array(rng.integers(-(2**31), 2**31 - 1, n).astype(np.int32)),
        "u8": pa.array(rng.integers(0, 255, n).astype(np.uint8)),
        "u16": pa.array(rng.integers(0, 65_535, n).astype(np.uint16)),
        "u32": pa.array(rng.integers(0, 2**32 - 1, n, dtype=np.uint64).astype(np.uint32)),
        "u64": pa.array(rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2)),
        "f32": pa.array(rng.normal(0, 1, n).astype(np.float32)),
        "flag": pa.array(idx % 3 == 0),
        "label": pa.array([f"row {i}" for i in idx], pa.large_string()),
        "day": pa.array([dt.date(2020, 1, 1) + dt.timedelta(days=int(i)) for i in idx], pa.date32()),
    }
    return pa.table(cols)


def zoned(unit: str, tz: str | None) -> pa.Table:
    n = 1_400
    minutes = np.datetime64("2024-03-30T00:00") + np.arange(n).astype("timedelta64[m]") * 37
    stamps = pa.array(minutes.astype("datetime64[s]"))  # over the spring DST change in Europe
    return with_column("at", stamps.cast(pa.timestamp(unit, tz=tz)), n)


def decimals(precision: int = 12, scale: int = 3) -> pa.Table:
    rng = np.random.default_rng(7)
    values = [decimal.Decimal(int(v)).scaleb(-scale) for v in rng.integers(-(10**8), 10**8, 1_300)]
    values[10] = None
    return with_column("amount", pa.array(values, pa.decimal128(precision, scale)), 1_300)


def nested() -> pa.Table:
    n = 1_200
    lists = pa.array([[i, i + 1] if i % 5 else None for i in range(n)], pa.list_(pa.int64()))
    structs = pa.array([{"a": i, "b": f"s{i}"} for i in range(n)], pa.struct([("a", pa.int64()), ("b", pa.string())]))
    return with_column("tags", lists, n).append_column("info", structs)


def specials() -> pa.Table:
    n = 1_500
    x = np.random.default_rng(8).normal(0, 1, n)
    x[[3, 800]] = np.inf
    x[[4]] = -np.inf
    x[[5, 6]] = np.nan
    return (
        with_column("z", pa.array(x), n)
        .append_column("none", pa.nulls(n))
        .append_column("empty_f", pa.nulls(n, pa.float64()))
    )


def parquet(table_fn, name: str = "a.parquet", **options):
    def make(folder: Path) -> str:
        pq.write_table(table_fn(), folder / name, **options)
        return str(folder / name)

    return make


def feather_file(table_fn, name: str = "a.feather", **options):
    def make(folder: Path) -> str:
        feather.write_feather(table_fn(), folder / name, **options)
        return str(folder / name)

    return make


def ipc_batches(name: str, new_writer, max_chunksize: int):
    """The base table written record batch by record batch, as an IPC file or stream (`ipc.new_file` or
    `ipc.new_stream`)."""

    def make(folder: Path) -> str:
        table = base()
        with pa.OSFile(str(folder / name), "wb") as sink, new_writer(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=max_chunksize):
                writer.write_batch(batch)
        return str(folder / name)

    return make


def parquet_glob(*tables):
    """Several Parquet files of one dataset; the job reads them by a glob."""

    def make(folder: Path) -> str:
        for i, table_fn in enumerate(tables):
            pq.write_table(table_fn(i), folder / f"part-{i}.parquet")
        return str(folder / "*.parquet")

    return make


def _id_as(dtype: pa.DataType):
    return lambda i: base(700, seed=i).set_column(0, "id", base(700, seed=i).column("id").cast(dtype))


def _big_uint64(i: int) -> pa.Table:
    """ids above 2**60: Float64 cannot hold them, so only a lossless unification keeps the values."""
    table = base(700, seed=i)
    ids = pa.array(np.arange(700, dtype=np.uint64) + np.uint64(2**60))
    return table.set_column(0, "id", ids.cast(pa.uint64() if i == 0 else pa.int64()))


def _x_as_string(i: int) -> pa.Table:
    table = base(700, seed=i)
    return table.set_column(1, "x", table.column("x").cast(pa.string())) if i == 1 else table


def _e(id, make, fmt="parquet", expect=OK, **kw) -> Entry:
    return Entry(id=id, origin="pyarrow", fmt=fmt, make=make, expect=expect, **kw)


ARROW: list[Entry] = [
    *[_e(f"pa-parquet-{codec}", parquet(base, compression=codec)) for codec in
      ("snappy", "gzip", "zstd", "brotli", "lz4", "none")],
    _e("pa-parquet-no-dictionary", parquet(base, use_dictionary=False)),
    _e("pa-parquet-row-groups-137", parquet(base, row_group_size=137)),
    _e("pa-parquet-page-v2", parquet(base, data_page_version="2.0", data_page_size=4_096)),
    _e("pa-parquet-v1-format", parquet(base, version="1.0")),
    _e("pa-parquet-no-stats", parquet(base, write_statistics=False)),
    _e("pa-parquet-byte-stream-split", parquet(base, use_dictionary=False, column_encoding={"x": "BYTE_STREAM_SPLIT"})),
    _e("pa-parquet-typed", parquet(typed_table, row_group_size=250)),
    _e("pa-parquet-dictionary-type",
       parquet(lambda: with_column("d", pa.array(["u", "v", None] * 400).dictionary_encode(), 1_200))),
    _e("pa-parquet-decimal", parquet(decimals)),
    _e("pa-parquet-decimal-38", parquet(lambda: decimals(38, 10))),
    *[_e(f"pa-parquet-ts-{unit}-{(tz or 'naive').replace('/', '-')}", parquet(lambda u=unit, z=tz: zoned(u, z)))
      for unit, tz in (("ms", "Europe/Paris"), ("us", "UTC"), ("ns", "Asia/Kolkata"), ("s", None))],
    _e("pa-parquet-int96", parquet(lambda: zoned("ns", None), use_deprecated_int96_timestamps=True)),
    _e("pa-parquet-nested", parquet(nested)),
    _e("pa-parquet-map", parquet(lambda: with_column(
        "m", pa.array([[("k", i)] for i in range(900)], pa.map_(pa.string(), pa.int64())), 900))),
    _e("pa-parquet-binary", parquet(lambda: with_column("blob", pa.array([bytes([i % 256]) * 3 for i in range(900)]),
                                                        900))),
    _e("pa-parquet-float16", parquet(lambda: with_column(
        "half", pa.array(np.linspace(-5, 5, 900).astype(np.float16)), 900)), expect=ok_or(bn.SourceError, "half")),
    _e("pa-parquet-inf-nan-nulls", parquet(specials)),
    _e("pa-parquet-time-duration", parquet(lambda: with_column(
        "t", pa.array([dt.time(i % 24, i % 60) for i in range(900)]), 900).append_column(
        "dur", pa.array([dt.timedelta(seconds=i) for i in range(900)])))),
    _e("pa-parquet-empty", parquet(lambda: base(1_000).slice(0, 0))),
    _e("pa-parquet-all-strings", parquet(lambda: pa.table({"s": ["a", "b"] * 600})),
       expect=fails(bn.ConfigError, "numeric")),
    _e("pa-feather-v1", feather_file(lambda: base(), version=1), fmt="feather",
       expect=ok_or(bn.SourceError, "a.feather")),
    *[_e(f"pa-feather-v2-{codec}", feather_file(base, compression=codec, chunksize=500), fmt="feather")
      for codec in ("lz4", "zstd", "uncompressed")],
    _e("pa-feather-typed", feather_file(typed_table), fmt="feather"),
    _e("pa-feather-nested", feather_file(nested), fmt="feather"),
    _e("pa-ipc-file-small-batches", ipc_batches("a.ipc", ipc.new_file, 333), fmt="feather"),
    _e("pa-ipc-stream", ipc_batches("a.arrow", ipc.new_stream, 600), fmt="feather", expect=ok_or(bn.SourceError, "a.arrow", "stream"),
       reference=lambda p: pl.read_ipc_stream(p)),
    _e("pa-glob-same-schema", parquet_glob(lambda i: base(700, seed=i), lambda i: base(900, seed=i),
                                           lambda i: base(400, seed=i))),
    _e("pa-glob-int32-int64", parquet_glob(_id_as(pa.int32()), _id_as(pa.int64()))),
    _e("pa-glob-int64-float64", parquet_glob(_id_as(pa.int64()), _id_as(pa.float64()))),
    _e("pa-glob-null-then-float", parquet_glob(
        lambda i: base(500, i).append_column("late", pa.nulls(500)),
        lambda i: base(500, i).append_column("late", pa.array(np.arange(500, dtype=np.float64))))),
    _e("pa-glob-float-vs-string", parquet_glob(_x_as_string, _x_as_string),
       expect=fails(bn.SourceError, "'x'|\"x\"|`x`", "part-0.parquet|part-1.parquet")),
    _e("pa-glob-missing-column", parquet_glob(lambda i: base(500, i), lambda i: base(500, i).drop_columns(["y"])),
       expect=fails(bn.SourceError, "'y'|\"y\"|`y`", "part-1.parquet")),
    # Polars widens to Int128, which does not cross Arrow; Int64 holds every id exactly (a strict cast)
    _e("pa-glob-uint64-int64", parquet_glob(_big_uint64, _big_uint64),
       expect=ok_or(bn.SourceError, "'id'|\"id\"|`id`", "part-0.parquet|part-1.parquet"),
       reference=lambda src: pl.concat([pl.read_parquet(p) for p in sorted(Path(src).parent.glob("*.parquet"))],
                                       how="vertical_relaxed").cast({"id": pl.Int64}, strict=True)),
]  # fmt: skip
