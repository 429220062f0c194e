"""A glob of files is one dataset with one schema: types widen without loss, or the job is refused."""

from __future__ import annotations

import datetime as dt
import pickle
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import run_job

import batchnb as bn
from batchnb.sources import Workdir, open_dataset
from batchnb.sources.base import conform, exact_range
from batchnb.sources.schema import unify_schemas, widen

FORMATS = ("parquet", "feather", "hdf5", "pickle")
SUFFIX = {"parquet": ".parquet", "feather": ".feather", "hdf5": ".h5", "pickle": ".pkl"}


def write(frame: pl.DataFrame, fmt: str, path: Path) -> None:
    if fmt == "parquet":
        frame.write_parquet(path)
    elif fmt == "feather":
        frame.write_ipc(path)
    elif fmt == "hdf5":
        frame.to_pandas().to_hdf(path, key="data", format="table", index=False)
    else:
        path.write_bytes(pickle.dumps(frame))  # a pickled Polars frame keeps its exact types


def two_files(tmp_path: Path, fmt: str, first: pl.Series, second: pl.Series) -> str:
    """Files f1 and f2 holding column `a` as given and a numeric feature `x`; returns the glob."""
    for name, a in (("f1", first), ("f2", second)):
        frame = pl.DataFrame({"a": a, "x": np.arange(len(a), dtype=np.float64)})
        write(frame, fmt, tmp_path / f"{name}{SUFFIX[fmt]}")
    return str(tmp_path / f"f*{SUFFIX[fmt]}")


def run(source: str, tmp_path: Path, **options) -> bn.JobResult:
    return run_job(source, tmp_path / "out", columns=["x"], engine="sequential", allow_pickle=True, **options)


@pytest.mark.parametrize("fmt", FORMATS)
def test_ints_widen_to_the_wider_int_with_every_value_exact(fmt, tmp_path):
    first = pl.Series([1, -2, 3], dtype=pl.Int32)
    second = pl.Series([2**40, -(2**50)], dtype=pl.Int64)
    result = run(two_files(tmp_path, fmt, first, second), tmp_path)
    out = result.read().collect()
    assert result.status == "succeeded"
    assert out.schema["a"] == pl.Int64
    assert out["a"].to_list() == [1, -2, 3, 2**40, -(2**50)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_int_and_float_widen_to_float64(fmt, tmp_path):
    first = pl.Series([1, 2], dtype=pl.Int64)
    second = pl.Series([0.5, -3.25], dtype=pl.Float64)
    out = run(two_files(tmp_path, fmt, first, second), tmp_path).read().collect()
    assert out.schema["a"] == pl.Float64
    assert out["a"].to_list() == [1.0, 2.0, 0.5, -3.25]


@pytest.mark.parametrize("fmt", FORMATS)
def test_int_and_string_is_refused_at_plan_and_run_naming_column_files_and_types(fmt, tmp_path):
    source = two_files(tmp_path, fmt, pl.Series([1, 2], dtype=pl.Int64), pl.Series(["7", "x"]))
    for call in (
        lambda: bn.BatchJob(source, tmp_path / "planned", columns=["x"], allow_pickle=True).plan(),
        lambda: run(source, tmp_path),
    ):
        with pytest.raises(bn.SourceError) as err:
            call()
        message = str(err.value)
        assert "'a'" in message and "Int64" in message and "String" in message
        assert f"f1{SUFFIX[fmt]}" in message and f"f2{SUFFIX[fmt]}" in message
    assert not list((tmp_path / "out").rglob("part-*"))


@pytest.mark.parametrize("fmt", ["parquet", "feather", "pickle"])  # pandas' HDF5 tables have no all-null type
def test_a_null_column_takes_the_other_files_type(fmt, tmp_path):
    source = two_files(tmp_path, fmt, pl.Series([None, None], dtype=pl.Null), pl.Series([1.5, None, 2.5]))
    out = run(source, tmp_path).read().collect()
    assert out.schema["a"] == pl.Float64
    assert out["a"].to_list() == [None, None, 1.5, None, 2.5]


def test_datetimes_widen_to_the_finer_unit(tmp_path):
    first = pl.Series([dt.datetime(2024, 1, 1, 0, 0, 0, 1000)]).cast(pl.Datetime("ms"))
    second = pl.Series([dt.datetime(2024, 1, 2, 0, 0, 0, 7)]).cast(pl.Datetime("us"))
    out = run(two_files(tmp_path, "parquet", first, second), tmp_path).read().collect()
    assert out.schema["a"] == pl.Datetime("us")
    assert out["a"].to_list() == [dt.datetime(2024, 1, 1, 0, 0, 0, 1000), dt.datetime(2024, 1, 2, 0, 0, 0, 7)]


def test_columns_in_another_order_are_read_in_the_first_files_order(tmp_path):
    pl.DataFrame({"a": [1, 2], "x": [1.0, 2.0]}).write_parquet(tmp_path / "f1.parquet")
    pl.DataFrame({"x": [3.0, 4.0], "a": [3, 4]}).write_parquet(tmp_path / "f2.parquet")
    out = run(str(tmp_path / "f*.parquet"), tmp_path, chunk_size=1_000).read().collect()
    assert out.columns[:2] == ["a", "x"]
    assert out["a"].to_list() == [1, 2, 3, 4] and out["x"].to_list() == [1.0, 2.0, 3.0, 4.0]


def test_other_columns_are_refused(tmp_path):
    pl.DataFrame({"a": [1], "x": [1.0]}).write_parquet(tmp_path / "f1.parquet")
    pl.DataFrame({"b": [1], "x": [1.0]}).write_parquet(tmp_path / "f2.parquet")
    with pytest.raises(bn.SourceError, match="one set of columns"):
        bn.BatchJob(str(tmp_path / "f*.parquet"), tmp_path / "out").plan()


@pytest.mark.parametrize(
    ("a", "b", "wide"),
    [
        (pl.Int8, pl.Int32, pl.Int32),
        (pl.UInt8, pl.Int8, pl.Int16),
        (pl.UInt32, pl.Int32, pl.Int64),
        (pl.UInt16, pl.UInt64, pl.UInt64),
        (pl.UInt64, pl.Int64, pl.Int64),
        (pl.UInt64, pl.Int8, pl.Int64),
        (pl.UInt64, pl.Float64, pl.Float64),
        (pl.Int64, pl.Float32, pl.Float64),
        (pl.Float32, pl.Float64, pl.Float64),
        (pl.Null, pl.String, pl.String),
        (pl.Categorical(), pl.String, pl.String),
        (pl.Datetime("ms"), pl.Datetime("ns"), pl.Datetime("ns")),
        (pl.Datetime("ms", "UTC"), pl.Datetime("ms"), None),
        (pl.Int64, pl.String, None),
        (pl.Boolean, pl.Int8, None),
        (pl.Date, pl.Datetime("us"), None),
    ],
)
def test_widening_is_symmetric_and_lossless(a, b, wide):
    assert widen(a, b) == wide and widen(b, a) == wide
    if wide is not None:
        assert unify_schemas([("p", pl.Schema({"c": a})), ("q", pl.Schema({"c": b}))]) == pl.Schema({"c": wide})


def test_a_value_that_does_not_fit_the_dataset_type_is_a_data_error_never_a_null(tmp_path):
    path = tmp_path / "f.parquet"
    pl.DataFrame({"a": [1, 2]}).write_parquet(path)
    info = open_dataset(str(path), None, {}, workdir=Workdir(tmp_path), allow_pickle=False)
    with pytest.raises(bn.DataError, match=r"column 'a' of 'elsewhere.parquet' is String.*Int64.*\"x\""):
        conform([pl.DataFrame({"a": ["3", "x"]})], info, paths=["elsewhere.parquet"])
    assert conform([pl.DataFrame({"a": pl.Series([3], dtype=pl.Int8)})], info).schema["a"] == pl.Int64


@pytest.mark.parametrize("fmt", FORMATS)
def test_uint64_and_a_signed_int_widen_to_int64_with_every_id_exact(fmt, tmp_path):
    first = pl.Series([2**60 + 1, 2**63 - 1], dtype=pl.UInt64)
    second = pl.Series([-5, 2**60 + 2], dtype=pl.Int64)
    result = run(two_files(tmp_path, fmt, first, second), tmp_path)
    out = result.read().collect()
    assert result.status == "succeeded"
    assert out.schema["a"] == pl.Int64
    assert out["a"].to_list() == [2**60 + 1, 2**63 - 1, -5, 2**60 + 2]


def refused_or_failed(source: str, tmp_path: Path, *words: str) -> None:
    """The dataset is refused at plan() and run() (a SourceError), or its chunk fails with a DataError; either
    way the message holds every word and no part holds a value."""
    try:
        bn.BatchJob(source, tmp_path / "planned", columns=["x"], allow_pickle=True).plan()
        result = run(source, tmp_path)
    except bn.SourceError as exc:
        message = str(exc)
        with pytest.raises(bn.SourceError):
            run(source, tmp_path)
    else:
        assert result.status == "failed"
        assert result.errors[0].type == "DataError"
        message = result.errors[0].message
    for word in words:
        assert word in message, message
    assert not list((tmp_path / "out").glob("part-*"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_uint64_value_above_int64_is_refused_never_wrapped(fmt, tmp_path):
    first = pl.Series([1, 2**63 + 5], dtype=pl.UInt64)
    second = pl.Series([-5, 7], dtype=pl.Int64)
    refused_or_failed(two_files(tmp_path, fmt, first, second), tmp_path, "'a'", "f1", "9223372036854775813")


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_int_beyond_2_53_is_never_rounded_into_float64(fmt, tmp_path):
    first = pl.Series([1, 2**60 + 1], dtype=pl.Int64)
    second = pl.Series([0.5, 1.5], dtype=pl.Float64)
    source = two_files(tmp_path, fmt, first, second)
    refused_or_failed(source, tmp_path, "'a'", "f1", str(2**60 + 1), "Float64", "one integer type")


def test_parquet_statistics_refuse_a_lossy_widening_at_plan(tmp_path):
    source = two_files(tmp_path, "parquet", pl.Series([1, 2**60 + 1]), pl.Series([0.5, 1.5]))
    with pytest.raises(bn.SourceError, match=r"column 'a' of '.*f1\.parquet' is Int64.*1152921504606846977"):
        bn.BatchJob(source, tmp_path / "out", columns=["x"]).plan()


def test_parquet_without_statistics_fails_the_chunk_holding_the_value(tmp_path):
    pl.DataFrame({"a": [1, 2**60 + 1], "x": [1.0, 2.0]}).write_parquet(tmp_path / "f1.parquet", statistics=False)
    pl.DataFrame({"a": [0.5, 1.5], "x": [1.0, 2.0]}).write_parquet(tmp_path / "f2.parquet")
    result = run(str(tmp_path / "f*.parquet"), tmp_path)
    assert result.status == "failed" and result.errors[0].type == "DataError"
    assert "1152921504606846977" in result.errors[0].message and "f1.parquet" in result.errors[0].message


@pytest.mark.parametrize("fmt", FORMATS)
def test_ints_up_to_2_53_widen_to_float64_exactly(fmt, tmp_path):
    first = pl.Series([2**53, -(2**53), 3], dtype=pl.Int64)
    second = pl.Series([0.5], dtype=pl.Float64)
    result = run(two_files(tmp_path, fmt, first, second), tmp_path)
    out = result.read().collect()
    assert result.status == "succeeded" and out.schema["a"] == pl.Float64
    assert out["a"].to_list() == [float(2**53), float(-(2**53)), 3.0, 0.5]


def test_conform_refuses_an_inexact_integer_and_names_column_file_and_value(tmp_path):
    path = tmp_path / "f.parquet"
    pl.DataFrame({"a": [0.5]}).write_parquet(path)
    info = open_dataset(str(path), None, {}, workdir=Workdir(tmp_path), allow_pickle=False)
    frame = pl.DataFrame({"a": [-(2**53) - 1, 4]})
    with pytest.raises(bn.DataError, match=r"column 'a' of 'other.parquet' is Int64.*-9007199254740993"):
        conform([frame], info, paths=["other.parquet"])
    assert conform([pl.DataFrame({"a": [2**53]})], info)["a"].to_list() == [float(2**53)]
    assert exact_range(pl.Int32, pl.Float64) is None and exact_range(pl.UInt64, pl.Int64) == (0, 2**63 - 1)


def test_hdf5_without_a_pandas_table_says_what_it_holds_and_what_to_do(tmp_path):
    import tables

    path = tmp_path / "arrays.h5"
    with tables.open_file(path, "w") as f:
        f.create_array("/", "x", np.arange(10))
        f.create_array(f.create_group("/", "grp"), "y", np.arange(3))
    with pytest.raises(bn.SourceError) as err:
        bn.BatchJob(str(path), tmp_path / "out", allow_pickle=True).plan()
    message = str(err.value)
    assert "no pandas table" in message and "0 tables" not in message
    assert "arrays /x, /grp/y" in message and "groups /grp" in message
    assert "format='table'" in message and "Parquet" in message


def test_hdf5_object_column_with_a_leading_null_is_text(tmp_path):
    import pandas as pd

    path = tmp_path / "f.h5"
    pd.DataFrame({"s": [None, "a", "b"], "x": [1.0, 2.0, 3.0]}).to_hdf(path, key="t", format="table", index=False)
    out = run(str(path), tmp_path).read().collect()
    assert out["s"].to_list() == [None, "a", "b"]


@pytest.mark.parametrize(
    ("fmt", "cause"), [("parquet", "magic bytes"), ("feather", "too small"), ("hdf5", "signature")]
)
def test_a_file_of_another_format_is_a_source_error_with_the_cause(fmt, cause, tmp_path):
    path = tmp_path / f"f{SUFFIX[fmt]}"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(bn.SourceError, match=cause) as err:
        bn.BatchJob(str(path), tmp_path / "out", allow_pickle=True).plan()
    assert "back trace" not in str(err.value)


def test_parquet_pages_that_do_not_decode_fail_their_chunk_with_a_data_error(tmp_path):
    path = tmp_path / "f.parquet"
    pl.DataFrame({"x": np.arange(5_000, dtype=np.float64)}).write_parquet(path, compression="uncompressed")
    data = bytearray(path.read_bytes())
    data[4:40] = b"\xab" * 36  # the first page header: its footer is intact, so the file plans
    path.write_bytes(bytes(data))
    result = run_job(str(path), tmp_path / "out", detector=lambda f: f, engine="sequential", chunk_size=5_000)
    assert result.status == "failed"
    assert result.errors[0].type == "DataError" and str(path) in result.errors[0].message
    with pytest.raises(bn.DataError, match="cannot read Parquet file"):
        run(str(path), tmp_path / "fit")


def test_hdf5_categorical_column_reads_in_chunks_as_pandas_reads_it(tmp_path):
    import pandas as pd

    path = tmp_path / "f.h5"
    n = 2_500
    frame = pd.DataFrame({"c": pd.Categorical(np.array(["a", "b", "c"])[np.arange(n) % 3]), "x": np.arange(n) * 1.0})
    frame.to_hdf(path, key="data", format="table")
    out = run(str(path), tmp_path, chunk_size=1_000).read().collect()
    expected = pl.from_pandas(pd.read_hdf(path))
    assert out.select("c", "x").equals(expected)
    assert out.schema["c"] == expected.schema["c"]


def test_hdf5_categorical_metadata_is_not_a_table_to_pick(tmp_path):
    import pandas as pd

    path = tmp_path / "f.h5"
    pd.DataFrame({"c": pd.Categorical(["a", "b"]), "x": [1.0, 2.0]}).to_hdf(path, key="one", format="table")
    pd.DataFrame({"x": [3.0]}).to_hdf(path, key="two", format="table")
    with pytest.raises(bn.SourceError, match=r"holds 2 tables \['/one', '/two'\]"):
        bn.BatchJob(str(path), tmp_path / "out", allow_pickle=True).plan()
    out = run(str(path), tmp_path, read_options={"key": "one"}).read().collect()
    assert out["c"].to_list() == ["a", "b"]
