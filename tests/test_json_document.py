"""A JSON file that is one object (pandas' `to_json` without `lines=True`) is refused with what to do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_job

import batchnb as bn


def frame(n: int = 50) -> pd.DataFrame:
    return pd.DataFrame({"id": np.arange(n), "x": np.linspace(0.0, 1.0, n)})


def assert_refused(path: Path, tmp_path: Path) -> None:
    for call in (
        lambda: bn.BatchJob(str(path), tmp_path / "planned").plan(),
        lambda: run_job(str(path), tmp_path / "out", engine="sequential"),
    ):
        with pytest.raises(bn.SourceError) as err:
            call()
        message = str(err.value)
        assert path.name in message and "single JSON object" in message
        assert "newline-delimited JSON" in message and "JSON array of records" in message
        assert "orient='records', lines=True" in message


@pytest.mark.parametrize("orient", ["columns", "index", "split", "table"])
def test_a_pandas_json_document_is_refused_with_how_to_write_it(orient, tmp_path):
    path = tmp_path / "a.json"
    frame().to_json(path, orient=orient)
    assert_refused(path, tmp_path)


@pytest.mark.parametrize("n", [50, 20_000])  # a small file is parsed whole; a large one is told by its shape
def test_an_indented_or_large_json_document_is_refused(n, tmp_path):
    indented, large = tmp_path / "indented.json", tmp_path / "large.json"
    frame(n).to_json(indented, orient="columns", indent=2)
    frame(n).to_json(large, orient="columns")
    assert_refused(indented, tmp_path / "i")
    assert_refused(large, tmp_path / "l")


def test_the_suggested_file_reads(tmp_path):
    path = tmp_path / "a.jsonl"
    frame(3_000).to_json(path, orient="records", lines=True)
    result = run_job(str(path), tmp_path / "out", engine="sequential", chunk_size=1_000)
    assert result.status == "succeeded" and result.rows_out == 3_000


@pytest.mark.parametrize(
    "text",
    [
        b'{"id": 1, "x": 0.5}\n',
        b'{"meta": {"a": 1}, "x": 0.5}',
        b'{"meta": {"a": 1}, "x": 0.5}\n{"meta": {}, "x": 1}\n',
    ],
)
def test_newline_delimited_json_with_one_record_or_nested_values_still_reads(text, tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(text)
    result = run_job(str(path), tmp_path / "out", engine="sequential", columns=["x"])
    assert result.status == "succeeded" and result.rows_out == text.strip().count(b"\n") + 1


def test_large_newline_delimited_json_whose_records_start_nested_still_reads(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"".join(b'{"meta": {"k": %d}, "x": %d.5}\n' % (i, i % 7) for i in range(5_000)))
    result = run_job(str(path), tmp_path / "out", engine="sequential", columns=["x"], chunk_size=1_000)
    assert result.status == "succeeded" and result.rows_out == 5_000
