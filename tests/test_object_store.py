"""Sources on an object store: s3:// URLs read through fsspec, against a local S3 server on 127.0.0.1."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from conftest import run_job

import batchnb as bn

BUCKET = "batchnb-test"


@pytest.fixture(scope="module")
def s3(s3_server):
    s3_server.mkdir(BUCKET)
    return s3_server


@pytest.fixture(scope="module")
def data(s3, tmp_path_factory):
    """Two Parquet files of several row groups, and the same rows as one CSV, locally and in the bucket."""
    local = tmp_path_factory.mktemp("s3data")
    rng = np.random.default_rng(7)
    frame = pl.DataFrame({"id": np.arange(9_000), "x": rng.normal(size=9_000), "y": rng.gamma(2.0, size=9_000)})
    frame[:4_000].write_parquet(local / "a.parquet", row_group_size=1_500)
    frame[4_000:].write_parquet(local / "b.parquet", row_group_size=1_500)
    frame.write_csv(local / "all.csv")
    frame.write_ndjson(local / "all.jsonl")
    for name in ("a.parquet", "b.parquet", "all.csv", "all.jsonl"):
        s3.put(str(local / name), f"{BUCKET}/data/{name}")
    return local, frame


@pytest.mark.parametrize("engine", ["threads", "processes"])
def test_parquet_glob_on_s3_scores_like_the_local_files(data, engine, tmp_path):
    local, frame = data
    remote = run_job(f"s3://{BUCKET}/data/*.parquet", tmp_path / "remote", chunk_size=1_000, engine=engine)
    assert remote.status == "succeeded", remote.errors
    here = run_job(str(local / "*.parquet"), tmp_path / "local", chunk_size=1_000, engine="sequential")
    out = remote.read().collect()
    assert out.get_column("id").to_list() == list(range(frame.height))
    assert out.equals(here.read().collect())


@pytest.mark.parametrize("name", ["all.csv", "all.jsonl"])
def test_text_files_on_s3_score_like_the_local_file(data, name, tmp_path):
    """CSV and NDJSON cuts are placed with small range reads around each cut, never a download of the file."""
    local, frame = data
    remote = run_job(f"s3://{BUCKET}/data/{name}", tmp_path / "remote", chunk_size=1_000, engine="threads")
    assert remote.status == "succeeded", remote.errors
    here = run_job(str(local / name), tmp_path / "local", chunk_size=1_000, engine="threads")
    assert remote.read().collect().equals(here.read().collect())
    assert remote.rows_in == frame.height


def test_s3_job_resumes_and_notices_a_rewritten_object(s3, data, tmp_path):
    """The fingerprint of an object is its size and ETag: a rerun redoes nothing, a new upload is refused."""
    local, _ = data
    s3.put(str(local / "a.parquet"), f"{BUCKET}/resume/a.parquet")
    url = f"s3://{BUCKET}/resume/a.parquet"
    first = run_job(url, tmp_path / "out", chunk_size=1_000, engine="threads")
    assert first.status == "succeeded"
    parts = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("part-*")}
    again = run_job(url, tmp_path / "out", chunk_size=1_000, engine="threads")
    assert again.status == "succeeded"
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("part-*")} == parts
    s3.put(str(local / "b.parquet"), f"{BUCKET}/resume/a.parquet")  # the object changes under the job
    with pytest.raises(bn.JobStateError, match="changed"):
        run_job(url, tmp_path / "out", chunk_size=1_000, engine="threads")


def test_bad_object_store_sources_say_what_is_wrong(s3, data, tmp_path):
    with pytest.raises(bn.SourceError, match="does not exist"):
        bn.BatchJob(f"s3://{BUCKET}/data/missing.parquet", tmp_path / "o1").plan()
    with pytest.raises(bn.SourceError, match="matches no object"):
        bn.BatchJob(f"s3://{BUCKET}/nothing/*.parquet", tmp_path / "o2").plan()
    s3.pipe(f"{BUCKET}/data/x.feather", b"not really")
    with pytest.raises(bn.SourceError, match="must be local files"):
        bn.BatchJob(f"s3://{BUCKET}/data/x.feather", tmp_path / "o3").plan()
    with pytest.raises(bn.SourceError, match="install the filesystem for 'nosuchproto'"):
        bn.BatchJob("nosuchproto://bucket/x.parquet", tmp_path / "o5").plan()
    with pytest.raises(bn.SourceError, match="exact_rows"):
        bn.BatchJob(f"s3://{BUCKET}/data/all.csv", tmp_path / "o4", read_options={"exact_rows": True}).plan()
