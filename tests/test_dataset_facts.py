"""Each format's planning facts ride on `DatasetInfo.facts`, typed: the user's `read_options` stay as given, the
facts cross JSON (the record) and pickling (the tasks) exactly, and a record written while the facts rode in
`read_options` still resumes."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import make_frame, write_source

import batchnb as bn
from batchnb import sources
from batchnb.record.status import ChunkStatus
from batchnb.record.store import JobState
from batchnb.sources import Workdir, open_dataset
from batchnb.sources.dataset import DatasetInfo
from batchnb.sources.facts import HDF5Facts, ParquetFacts, RowCounts, TextFacts

ROWS = 4_000
CASES = {  # format, user's read_options, the facts type
    "csv": ("csv", {"separator": ";", "null_values": ["NA"]}, TextFacts),
    "csv exact": ("csv", {"exact_rows": True}, TextFacts),
    "json": ("json", {"schema_overrides": {"count": pl.Float64}}, TextFacts),
    "parquet": ("parquet", {}, ParquetFacts),
    "hdf5": ("hdf5", {"key": "data"}, HDF5Facts),
    "feather": ("feather", {}, RowCounts),
    "pickle": ("pickle", {}, RowCounts),
    "json array": ("json_array", {}, RowCounts),
}


def _source(tmp_path: Path, fmt: str, read_options: dict) -> str:
    frame = make_frame(ROWS).drop("label")
    suffix = {"json_array": ".json", "json": ".jsonl", "hdf5": ".h5", "pickle": ".pkl"}.get(fmt, f".{fmt}")
    path = tmp_path / f"in{suffix}"
    if read_options.get("separator") == ";":
        frame.write_csv(path, separator=";")
        return str(path)
    return write_source(frame, fmt, path)


def _inspected(tmp_path: Path, case: str) -> tuple[DatasetInfo, dict]:
    fmt, read_options, _ = CASES[case]
    source = _source(tmp_path, fmt, read_options)
    given = json.loads(json.dumps(read_options, default=str))
    info = open_dataset(source, None, dict(read_options), workdir=Workdir(tmp_path / "out"), allow_pickle=True)
    return info, given


@pytest.mark.parametrize("case", CASES)
def test_read_options_after_inspect_are_what_the_user_passed(tmp_path, case):
    _, read_options, kind = CASES[case]
    info, _ = _inspected(tmp_path, case)
    assert info.read_options == read_options
    assert type(info.facts) is kind
    assert sum(info.facts.row_counts) == info.total_rows or info.facts.rows_estimated


@pytest.mark.parametrize("case", CASES)
def test_facts_round_trip_through_json_and_pickle(tmp_path, case):
    info, _ = _inspected(tmp_path, case)
    shipped = info.for_workers()
    again = DatasetInfo.from_json(json.loads(json.dumps(shipped.to_json(), default=str)))
    assert again.facts == shipped.facts and type(again.facts) is type(shipped.facts)
    assert (again.paths, again.schema, again.dtypes, again.total_rows, again.origins) == (
        shipped.paths, shipped.schema, shipped.dtypes, shipped.total_rows, shipped.origins
    )  # fmt: skip
    assert pickle.loads(pickle.dumps(shipped)) == shipped
    fmt = bn.sources.get(info.format)
    specs = fmt.plan(info, 1_000)
    assert [fmt.read(again, s).height for s in specs] == [fmt.read(info, s).height for s in specs]


def test_the_record_index_stays_on_the_driver(tmp_path):
    info, _ = _inspected(tmp_path, "csv exact")
    assert isinstance(info.facts, TextFacts) and len(info.facts.indexes) == 1
    shipped = info.for_workers()
    assert shipped.facts.indexes == () and "indexes" not in shipped.to_json()["facts"]
    assert shipped.facts.row_counts == info.facts.row_counts == (ROWS,)
    assert len(pickle.dumps(shipped)) < len(pickle.dumps(info))


def _legacy(dataset: dict) -> dict:
    """The dataset as the previous version recorded it: facts as "_" keys inside read_options."""
    facts = {k: v for k, v in dataset.pop("facts").items() if k != "kind"}
    dataset.pop("origins", None)
    dataset["read_options"] = {**dataset["read_options"], **{f"_{k}": v for k, v in facts.items()}}
    return dataset


@pytest.mark.parametrize("fmt", ["csv", "parquet", "hdf5"])
def test_a_record_of_the_previous_version_resumes(tmp_path, fmt):
    source = write_source(make_frame(ROWS), fmt, tmp_path / f"in.{ {'hdf5': 'h5'}.get(fmt, fmt) }")
    job = bn.BatchJob(source, tmp_path / "out", chunk_size=1_000, engine="sequential", allow_pickle=True)
    expected = job.run(progress=None).read().collect()
    with JobState.open(job.output, create=True) as state:
        state.set(dataset=_legacy(state.get("dataset")))
        state.mark([1, 2], ChunkStatus.PENDING)
    for part in sorted(Path(job.output).glob("part-*"))[1:3]:
        part.unlink()
    result = job.run(progress=None)
    assert result.status == "succeeded", result.errors
    assert result.read().collect().equals(expected)


def test_a_record_that_cannot_be_read_asks_for_a_restart(tmp_path):
    source = write_source(make_frame(ROWS), "parquet", tmp_path / "in.parquet")
    job = bn.BatchJob(source, tmp_path / "out", chunk_size=1_000, engine="sequential")
    job.run(progress=None)
    with JobState.open(job.output, create=True) as state:
        dataset = state.get("dataset")
        state.set(dataset={**dataset, "facts": {"kind": "parquet", "row_groups": [], "unknown": 1}})
        state.mark([1], ChunkStatus.PENDING)
    with pytest.raises(bn.JobStateError, match=r"restart=True"):
        job.run(progress=None)
    assert job.run(progress=None, restart=True).status == "succeeded"


def test_parquet_statistics_are_read_once_per_file(tmp_path, monkeypatch):
    """Int64 columns in one file and Float64 in another: each Int64 column is checked against 2**53 from the
    first file's statistics, which come from one read of its metadata, not one per column."""
    import pyarrow.parquet as pq

    ints = pl.DataFrame({c: list(range(100)) for c in ("a", "b", "c", "d")})
    ints.write_parquet(tmp_path / "p0.parquet")
    ints.cast(pl.Float64).write_parquet(tmp_path / "p1.parquet")
    opened: list[str] = []
    real = pq.ParquetFile

    def counting(source, *args, **kwargs):
        opened.append(str(source))
        return real(source, *args, **kwargs)

    monkeypatch.setattr(pq, "ParquetFile", counting)
    info = open_dataset(str(tmp_path / "p*.parquet"), None, {}, workdir=Workdir(tmp_path / "out"), allow_pickle=False)
    assert info.schema == dict.fromkeys("abcd", "Float64")
    assert sorted(opened) == sorted([str(tmp_path / "p0.parquet")] * 2 + [str(tmp_path / "p1.parquet")])


def test_a_value_beyond_the_exact_range_is_still_refused_by_statistics(tmp_path):
    pl.DataFrame({"a": [1, 2**60]}).write_parquet(tmp_path / "p0.parquet")
    pl.DataFrame({"a": [0.5, 1.5]}).write_parquet(tmp_path / "p1.parquet")
    with pytest.raises(bn.SourceError, match=r"column 'a' of .*p0\.parquet.* cannot hold exactly"):
        open_dataset(str(tmp_path / "p*.parquet"), None, {}, workdir=Workdir(tmp_path / "out"), allow_pickle=False)


def test_the_parquet_sample_holds_its_rows_not_the_row_groups_it_was_cut_from(tmp_path):
    """Sample blocks cut from a row group decoded whole are copied out: holding the sample must not hold every
    group it read (20 groups of 1M rows would be 1.3 GB for a 100k-row sample)."""
    import pyarrow.parquet as pq

    rows = 400_000
    frame = pl.DataFrame({"a": np.arange(rows, dtype=np.float64), "b": np.ones(rows)})
    pq.write_table(frame.to_arrow(), tmp_path / "g.parquet", row_group_size=100_000)
    info = open_dataset(str(tmp_path / "g.parquet"), None, {}, workdir=Workdir(tmp_path / "out"), allow_pickle=False)
    sample = sources.get("parquet").sample(info, 4_000, 0, ["a", "b"])
    assert sample.height == 4_000 and sample.get_column("a").is_unique().all()
    held = sum(buf.size for col in sample.to_arrow().columns for chunk in col.chunks for buf in chunk.buffers() if buf)
    assert held <= 4 * sample.estimated_size()  # a slice would hold 4 groups x 2 columns x 800 kB = 6.4 MB
