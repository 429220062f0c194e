"""Projection: a chunk and the fit sample read only the columns the job uses (its features and `keep`).

Every format is asked for those columns alone (asserted on what its reader was asked for), and the output is
the same as reading every column. A callable detector receives `columns` + `keep` (each defaulting to what
the job would otherwise use), so with `keep=None` it sees the whole table.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from conftest import SUFFIX, run_job, write_source

import batchnb as bn
import batchnb.driver.prepare as prepare
import batchnb.driver.unit_scores as unit_scores
from batchnb.frame_cache import FrameCache
from batchnb.record.store import JobState
from batchnb.sources import parquet

N, CHUNK = 3_000, 1_000
USED = ["id", "a", "b"]  # keep=["id"], columns=["a", "b"]; "s" (text) and "t" (a timestamp) are not used


def wide_frame(n: int = N) -> pl.DataFrame:
    rng = np.random.default_rng(7)
    a = rng.standard_normal(n)
    a[::500] = 40.0  # anomalies
    return pl.DataFrame(
        {
            "id": np.arange(n),
            "s": [f"text {i}" for i in range(n)],
            "a": a,
            "t": [dt.datetime(2024, 1, 1) + dt.timedelta(seconds=i) for i in range(n)],
            "b": rng.standard_normal(n),
        }
    )


class Reads:
    """What each reader was asked for, by wrapping the reading functions the formats call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
        self.scans: list[str] = []  # explained Polars queries over the source file
        self.row_groups: list[list[str] | None] = []  # `columns` of each whole row-group decode
        self.units: list[list[str]] = []  # columns of each row group scanned to be scored in one query
        self.csv: list[dict[str, Any]] = []
        self.csv_queries: list[str] = []  # explained one-pass queries over a CSV chunk's bytes
        self.ndjson: list[dict[str, Any]] = []
        self.hdf5: list[list[str] | None] = []  # `columns=` of each HDF5 read but the schema's (one row)
        self._wrap(monkeypatch, Path(source).name)

    def _wrap(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        import pandas as pd

        collect, read_group, scan_unit = pl.LazyFrame.collect, parquet._local_group, parquet.Parquet.scan_unit
        read_csv, read_ndjson, select = pl.read_csv, pl.read_ndjson, pd.HDFStore.select

        def on_collect(lf: pl.LazyFrame, *args: Any, **kwargs: Any) -> Any:
            plan = lf.explain()
            if re.search(r"(Parquet|Ipc) SCAN", plan) and (name in plan or "_batchnb" in plan):
                self.scans.append(plan)
            if "Csv SCAN [" in plan and "in-mem bytes]" in plan:  # a chunk parsed and scored in one query
                self.csv_queries.append(plan)
            return collect(lf, *args, **kwargs)

        def on_group(path: str, offset: int, rows: int, columns: Any) -> Any:
            self.row_groups.append(None if columns is None else list(columns))
            return read_group(path, offset, rows, columns)

        def on_unit(fmt: Any, info: Any, unit: Any) -> Any:
            found = scan_unit(fmt, info, unit)
            if found is not None:
                self.units.append(found.collect_schema().names())
            return found

        def on_csv(source: Any, **kwargs: Any) -> Any:
            self.csv.append(kwargs)
            return read_csv(source, **kwargs)

        def on_ndjson(source: Any, **kwargs: Any) -> Any:
            self.ndjson.append(kwargs)
            return read_ndjson(source, **kwargs)

        def on_select(store: Any, key: str, *args: Any, columns: Any = None, **kwargs: Any) -> Any:
            if kwargs.get("stop") != 1:
                self.hdf5.append(columns)
            return select(store, key, *args, columns=columns, **kwargs)

        monkeypatch.setattr(pl.LazyFrame, "collect", on_collect)
        monkeypatch.setattr(parquet, "_local_group", on_group)
        monkeypatch.setattr(parquet.Parquet, "scan_unit", on_unit)
        monkeypatch.setattr(pl, "read_csv", on_csv)
        monkeypatch.setattr(pl, "read_ndjson", on_ndjson)
        monkeypatch.setattr(pd.HDFStore, "select", on_select)

    def projections(self) -> list[tuple[int, int]]:
        """(columns read, columns in the file) of every explained scan."""
        found = [re.search(r"PROJECT (\d+)/(\d+) COLUMNS", plan) for plan in self.scans]
        return [(int(m.group(1)), int(m.group(2))) if m else (5, 5) for m in found]


def job_output(source: str, out: Path, **options: Any) -> pl.DataFrame:
    options = {"detector": "zscore", "columns": ["a", "b"], "keep": ["id"], "chunk_size": CHUNK, **options}
    result = run_job(source, out, engine="sequential", **options)
    assert result.status == "succeeded", result.errors
    return result.read().collect()


def unprojected(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the driver read every column, as before projection."""
    monkeypatch.setattr(prepare, "projection", lambda info, features, keep: info)


FORMATS = ["parquet", "feather", "csv", "json", "hdf5", "pickle"]


@pytest.fixture(params=FORMATS)
def wide_source(request, tmp_path) -> tuple[str, str]:
    fmt = request.param
    return fmt, write_source(wide_frame(), fmt, tmp_path / f"wide{SUFFIX[fmt]}")


def test_same_output_as_reading_every_column(wide_source, tmp_path, monkeypatch) -> None:
    fmt, source = wide_source
    allow = fmt in ("pickle", "hdf5")
    projected = job_output(source, tmp_path / "projected", allow_pickle=allow)
    with monkeypatch.context() as m:
        unprojected(m)
        whole = job_output(source, tmp_path / "whole", allow_pickle=allow)
    assert projected.columns == ["id", "anomaly_score", "is_anomaly"]
    assert projected.equals(whole)
    assert projected.height == N and projected.get_column("is_anomaly").sum() >= N // 500


def test_readers_are_asked_for_the_used_columns_only(wide_source, tmp_path, monkeypatch) -> None:
    fmt, source = wide_source
    reads = Reads(monkeypatch, source)
    job_output(source, tmp_path / "out", allow_pickle=fmt in ("pickle", "hdf5"))
    if fmt == "parquet":
        assert reads.units and all(cols == USED for cols in reads.units)  # chunks: groups scanned and scored
        assert all(cols == ["a", "b"] for cols in reads.row_groups)  # groups decoded for the fit sample
        assert (2, 5) in reads.projections()  # the fit sample: the features only
        assert all(seen < total for seen, total in reads.projections())
    elif fmt in ("feather", "pickle"):  # a pickle is read as its staged Arrow IPC copy
        assert set(reads.projections()) == {(3, 5), (2, 5)}  # chunks, and the fit sample
    elif fmt == "csv":  # chunks are parsed and scored in one query each (`scan_chunk`), never read eagerly
        assert not [kw for kw in reads.csv if kw.get("has_header") is False and "schema" in kw]
        assert len(reads.csv_queries) == N // CHUNK
        assert all("PROJECT 3/5 COLUMNS" in plan for plan in reads.csv_queries), reads.csv_queries[0]
        samples = [kw for kw in reads.csv if kw.get("infer_schema") is False]
        assert samples and all(kw["columns"] == ["a", "b"] for kw in samples)
    elif fmt == "json":
        read = [list(kw["schema"]) for kw in reads.ndjson if "schema" in kw]
        assert read.count(USED) == N // CHUNK and ["a", "b"] in read and len(read) > N // CHUNK
        assert all(names in (USED, ["a", "b"]) for names in read)
    else:
        assert reads.hdf5.count(USED) == N // CHUNK and ["a", "b"] in reads.hdf5
        assert all(cols in (USED, ["a", "b"]) for cols in reads.hdf5)


def test_the_projection_is_stored_and_a_resumed_run_reads_with_it(tmp_path, monkeypatch) -> None:
    source = write_source(wide_frame(), "parquet", tmp_path / "wide.parquet")
    out = tmp_path / "out"
    first = job_output(source, out)
    with JobState.open(out) as state:
        assert state.get("dataset")["columns"] == USED
    (out / "part-000001.parquet").unlink()  # the resumed run redoes chunk 1
    monkeypatch.setattr(parquet, "_CACHE", FrameCache(parquet.CACHE_BYTES))  # as in a new process
    monkeypatch.setattr(unit_scores, "_SCORES", FrameCache(unit_scores.SCORES_BYTES))
    reads = Reads(monkeypatch, source)
    assert job_output(source, out).equals(first)
    assert reads.units and all(cols == USED for cols in reads.units)


def test_a_record_without_a_projection_resumes_with_the_stored_features_and_keep(tmp_path, monkeypatch) -> None:
    """A record written before the projection was stored: its features and kept columns give it."""
    source = write_source(wide_frame(), "feather", tmp_path / "wide.feather")
    out = tmp_path / "out"
    first = job_output(source, out)
    with JobState.open(out, create=True) as state:
        dataset = state.get("dataset")
        del dataset["columns"]
        state.set(dataset=dataset)
    (out / "part-000002.parquet").unlink()
    reads = Reads(monkeypatch, source)
    assert job_output(source, out).equals(first)
    assert reads.projections() == [(3, 5)]  # one chunk, no refit: the zscore fit is stored


def test_row_group_cache_is_keyed_by_the_projection(tmp_path) -> None:
    """Two jobs in one process over the same row groups, reading different columns: neither gets the other's."""
    frame = wide_frame()
    source = write_source(frame, "parquet", tmp_path / "wide.parquet")
    narrow = job_output(source, tmp_path / "narrow", columns=["a"], keep=["id"])
    wide = job_output(source, tmp_path / "wide", columns=["a", "b"], keep=["id", "s", "t"])
    assert narrow.columns == ["id", "anomaly_score", "is_anomaly"]
    assert wide.select("id", "s", "t").equals(frame.select("id", "s", "t"))


def _recording(seen: list[list[str]]) -> Callable[[pl.DataFrame], pl.DataFrame]:
    def detect(chunk: pl.DataFrame) -> pl.DataFrame:
        seen.append(chunk.columns)
        return chunk.select(pl.col("id"), (pl.col("a").abs() > 3).alias("is_anomaly"))

    return detect


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, ["id", "s", "a", "t", "b"]),  # keep=None: every column
        ({"columns": ["a", "b"]}, ["id", "s", "a", "t", "b"]),  # keep=None still means every column
        ({"columns": ["a"], "keep": ["id"]}, ["id", "a"]),  # both given: only those, in the file's order
        ({"keep": ["id", "s"]}, ["id", "s", "a", "b"]),  # columns=None: every numeric column, and keep
    ],
    ids=["default", "columns-only", "columns-and-keep", "keep-only"],
)
def test_a_callable_receives_columns_and_keep(tmp_path, options, expected) -> None:
    source = write_source(wide_frame(), "parquet", tmp_path / "wide.parquet")
    seen: list[list[str]] = []
    result = run_job(
        source, tmp_path / "out", detector=_recording(seen), engine="sequential", chunk_size=CHUNK, **options
    )
    assert result.status == "succeeded", result.errors
    assert seen and all(columns == expected for columns in seen)
    assert result.read().collect().height == N


def test_the_parquet_sample_decodes_a_shared_row_group_once_with_the_features_only(tmp_path, monkeypatch) -> None:
    """Blocks of the fit sample that share a row group are cut from one projected decode: the same rows as
    every format's stratified blocks (`sample_starts`), whatever the row groups."""
    from batchnb.sources.base import sample_starts

    frame = wide_frame(20_000)
    path = str(tmp_path / "one_group.parquet")
    frame.write_parquet(path, row_group_size=20_000)
    plan = bn.BatchJob(path, tmp_path / "out", fit_sample=1_000).plan()
    reads = Reads(monkeypatch, path)
    sample = parquet.Parquet().sample(plan.dataset, 1_000, 0, ["b", "a"])
    expected = pl.concat([frame.slice(lo, hi - lo) for lo, hi in sample_starts(20_000, 1_000, 0)]).select("b", "a")
    assert sample.equals(expected)
    assert reads.row_groups == [["b", "a"]]  # one decode for the 32 blocks
