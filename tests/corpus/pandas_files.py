"""Files written at test time by pandas with its own options (CSV dialects, Parquet, Feather, HDF5, pickle, JSON)."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

import batchnb as bn
from corpus.spec import OK, Entry, fails, ok_or, sample_frame

__all__ = ["PANDAS"]

ROWS = 2_500  # three chunks of 1_000


def frame(n: int = ROWS, seed: int = 1) -> pd.DataFrame:
    df = sample_frame(n, seed).to_pandas()
    df["when"] = pd.date_range("2024-01-01", periods=n, freq="h")
    return df


def to_csv(name: str, **options):
    def make(folder: Path) -> str:
        path = folder / name
        frame().to_csv(path, **options)
        return str(path)

    return make


def write(name: str, method: str, data=None, **options):
    """`make` calling `DataFrame.<method>(path, **options)`."""

    def make(folder: Path) -> str:
        path = folder / name
        getattr(frame() if data is None else data(), method)(path, **options)
        return str(path)

    return make


def two_tables(folder: Path) -> str:
    path = folder / "two.h5"
    frame().to_hdf(path, key="a", format="table")
    frame(300, seed=2).to_hdf(path, key="b", format="table")
    return str(path)


def typed() -> pd.DataFrame:
    """pandas' own dtypes: nullable ints, categorical, tz-aware timestamps, bool."""
    df = frame(1_500, seed=3)
    df["small"] = pd.array(np.where(np.arange(len(df)) % 7 == 0, None, np.arange(len(df)) % 100), dtype="Int16")
    df["cat"] = pd.Categorical(df["name"])
    df["zoned"] = df["when"].dt.tz_localize("America/New_York")
    df["flag"] = df["k"] > 3
    return df


def infinite() -> pd.DataFrame:
    df = frame(1_200, seed=4)
    df.loc[[5, 700], "x"] = np.inf
    df.loc[9, "y"] = -np.inf
    return df


def gunzipped(path: str) -> pl.DataFrame:
    return pl.read_csv(gzip.decompress(Path(path).read_bytes()), infer_schema_length=None)


def _e(id, make, fmt="csv", expect=OK, **kw) -> Entry:
    return Entry(id=id, origin="pandas", fmt=fmt, make=make, expect=expect, **kw)


COMPRESSED = ok_or(bn.SourceError, "compress|decompress")
NO_KEY = "key"

PANDAS: list[Entry] = [
    _e("pd-csv-default-index", to_csv("a.csv")),
    _e("pd-csv-noindex", to_csv("a.csv", index=False)),
    _e("pd-csv-semicolon", to_csv("a.csv", sep=";", index=False), read_options={"separator": ";"}),
    _e("pd-tsv-suffix", to_csv("a.tsv", sep="\t", index=False)),
    _e("pd-csv-pipe", to_csv("a.csv", sep="|", index=False), read_options={"separator": "|"}),
    _e("pd-csv-quote-all", to_csv("a.csv", index=False, quoting=csv.QUOTE_ALL)),
    _e("pd-csv-quote-nonnumeric", to_csv("a.csv", index=False, quoting=csv.QUOTE_NONNUMERIC)),
    _e("pd-csv-crlf", to_csv("a.csv", index=False, lineterminator="\r\n")),
    _e("pd-csv-bom", to_csv("a.csv", index=False, encoding="utf-8-sig")),
    _e("pd-csv-latin1-option", to_csv("a.csv", index=False, encoding="latin-1"),
       read_options={"encoding": "latin1"}, expect=ok_or(bn.ConfigError, "encoding")),
    _e("pd-csv-latin1-plain", to_csv("a.csv", index=False, encoding="latin-1"),
       expect=fails(bn.SourceError, "utf|encoding")),
    _e("pd-csv-utf16", to_csv("a.csv", index=False, encoding="utf-16"), expect=fails(bn.SourceError, "utf|encoding")),
    _e("pd-csv-gzip", to_csv("a.csv.gz", index=False), expect=COMPRESSED),
    _e("pd-csv-bz2", to_csv("a.csv.bz2", index=False), expect=COMPRESSED),
    _e("pd-csv-xz", to_csv("a.csv.xz", index=False), expect=COMPRESSED),
    _e("pd-csv-zip", to_csv("a.csv.zip", index=False), expect=COMPRESSED),
    _e("pd-csv-gzip-no-suffix", to_csv("a.csv", index=False, compression="gzip"),
       expect=ok_or(bn.SourceError, "compress|gzip"), reference=gunzipped),
    _e("pd-csv-na-rep", to_csv("a.csv", index=False, na_rep="NA"), read_options={"null_values": "NA"}),
    _e("pd-csv-na-rep-unread", to_csv("a.csv", index=False, na_rep="NA")),
    _e("pd-csv-date-format", to_csv("a.csv", index=False, date_format="%d/%m/%Y %H:%M")),
    _e("pd-csv-float-format", to_csv("a.csv", index=False, float_format="%.4e")),
    _e("pd-csv-decimal-comma", to_csv("a.csv", index=False, sep=";", decimal=","),
       read_options={"separator": ";", "decimal_comma": True}, expect=ok_or(bn.ConfigError, "decimal_comma")),
    _e("pd-csv-no-header", to_csv("a.csv", index=False, header=False), read_options={"has_header": False}),
    _e("pd-parquet", write("a.parquet", "to_parquet", engine="pyarrow"), fmt="parquet"),
    _e("pd-parquet-index", write("a.parquet", "to_parquet", lambda: frame().set_index("name"), engine="pyarrow"),
       fmt="parquet"),
    _e("pd-parquet-typed", write("a.parquet", "to_parquet", typed, engine="pyarrow", row_group_size=400),
       fmt="parquet"),
    _e("pd-parquet-inf", write("a.parquet", "to_parquet", infinite, engine="pyarrow"), fmt="parquet"),
    _e("pd-feather", write("a.feather", "to_feather"), fmt="feather"),
    _e("pd-feather-zstd-typed", write("a.feather", "to_feather", typed, compression="zstd"), fmt="feather"),
    _e("pd-hdf-table", write("a.h5", "to_hdf", key="data", format="table"), fmt="hdf5"),
    _e("pd-hdf-blosc-datacols", write("a.h5", "to_hdf", key="data", format="table", data_columns=True,
                                     complib="blosc", complevel=5), fmt="hdf5"),
    _e("pd-hdf-typed", write("a.h5", "to_hdf", lambda: typed().drop(columns=["small"]), key="data", format="table"),
       fmt="hdf5"),
    _e("pd-hdf-inf", write("a.h5", "to_hdf", infinite, key="data", format="table"), fmt="hdf5"),
    _e("pd-hdf-fixed", write("a.h5", "to_hdf", key="data", format="fixed"), fmt="hdf5",
       expect=ok_or(bn.SourceError, "a.h5", "table")),
    _e("pd-hdf-two-keys", two_tables, fmt="hdf5", expect=fails(bn.SourceError, "two.h5", NO_KEY)),
    _e("pd-hdf-two-keys-key", two_tables, fmt="hdf5", read_options={"key": "b"}),
    _e("pd-pickle", write("a.pkl", "to_pickle"), fmt="pickle"),
    _e("pd-pickle-typed", write("a.pkl", "to_pickle", typed), fmt="pickle"),
    _e("pd-pickle-inf", write("a.pkl", "to_pickle", infinite), fmt="pickle"),
    _e("pd-pickle-series", write("a.pkl", "to_pickle", lambda: frame()["x"]), fmt="pickle",
       expect=ok_or(bn.SourceError, "a.pkl", "dataframe"),
       reference=lambda p: pl.from_pandas(pd.read_pickle(p).to_frame())),
    _e("pd-pickle-dict", lambda d: (pd.to_pickle({"x": [1, 2]}, d / "a.pkl"), str(d / "a.pkl"))[1], fmt="pickle",
       expect=fails(bn.SourceError, "a.pkl", "dataframe")),
    _e("pd-jsonl", write("a.jsonl", "to_json", orient="records", lines=True, date_format="iso"), fmt="json"),
    _e("pd-json-array", write("a.json", "to_json", orient="records", date_format="iso"), fmt="json"),
    _e("pd-json-columns", write("a.json", "to_json", orient="columns", date_format="iso"), fmt="json",
       expect=fails(bn.BatchError, "a.json")),
]  # fmt: skip
