"""A Parquet row group is scored once per worker and each chunk's output cut from it (`driver.unit_scores`).

What a user relies on: the output is exactly what scoring every chunk alone gives (chunks inside a row group,
chunks straddling two), each row group is decoded once, and a chunk whose rows make the scoring fail fails
alone, with its own error, while the other chunks of its row group succeed.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pyarrow.parquet as pq
import pytest
from conftest import GROUP, run_job

import batchnb.driver.run as driver_run
from batchnb.detectors.base import FittedDetector
from batchnb.detectors.robust import MAD
from batchnb.sources import parquet


def _output(result) -> pl.DataFrame:
    assert result.status == "succeeded", result.errors
    return result.read().collect()


@pytest.mark.parametrize("engine", ["sequential", "threads", "processes"])
@pytest.mark.parametrize("chunk_size", [1_000, 1_200])  # inside row groups only / some straddling two
def test_unit_scores_equal_chunk_by_chunk(grouped, tmp_path, monkeypatch, engine, chunk_size) -> None:
    opts = {"detector": "mad", "keep": ["id"], "chunk_size": chunk_size, "engine": engine}
    fast = _output(run_job(grouped, tmp_path / "units", **opts))
    monkeypatch.setattr(driver_run, "_scorer_key", lambda scorer: "")
    alone = _output(run_job(grouped, tmp_path / "alone", **opts))
    assert fast.equals(alone)  # bit-identical scores and flags, in input order
    assert fast.get_column("id").to_list() == list(range(6_000))


def test_each_row_group_is_decoded_and_scored_once(grouped, tmp_path, monkeypatch) -> None:
    decoded: list[int] = []
    scored: list[int] = []
    scan_unit, apply_lazy = parquet.Parquet.scan_unit, FittedDetector.apply_lazy

    def counting_scan(self, info, unit):
        decoded.append(unit.pieces[0].start)
        return scan_unit(self, info, unit)

    def counting_score(self, frame, keep):
        scored.append(frame.lazy().select(pl.len()).collect().item())
        return apply_lazy(self, frame, keep)

    monkeypatch.setattr(parquet.Parquet, "scan_unit", counting_scan)
    monkeypatch.setattr(FittedDetector, "apply_lazy", counting_score)
    monkeypatch.setattr(parquet, "WHOLE_GROUP_BLOCKS", 10**9)  # the fit sample reads its own small slices
    _output(run_job(grouped, tmp_path / "out", detector="mad", keep=["id"], chunk_size=1_000, engine="threads"))
    assert sorted(decoded) == [0, GROUP]  # the first row of each group
    assert scored == [GROUP, GROUP]  # one query per row group, not one per chunk


def test_a_file_of_narrower_types_is_read_and_cast_not_scanned(frame, tmp_path, monkeypatch) -> None:
    """Two files whose `x1` and `count` differ in type: the dataset's types are the wider ones, so a row group of
    the narrow file cannot be scanned as it is; it is decoded and cast, and the scores are those of the
    chunks scored one by one."""
    narrow = frame.head(3_000).with_columns(pl.col("x1").cast(pl.Float32), pl.col("count").cast(pl.Int32))
    for name, part in (("a", narrow), ("b", frame.slice(3_000))):
        pq.write_table(part.to_arrow(), tmp_path / f"{name}.parquet", row_group_size=GROUP)
    scanned: list[bool] = []
    scan_unit = parquet.Parquet.scan_unit

    def recording(self, info, unit):
        found = scan_unit(self, info, unit)
        scanned.append(found is not None)
        return found

    monkeypatch.setattr(parquet.Parquet, "scan_unit", recording)
    opts = {"detector": "mad", "columns": ["x1", "count"], "keep": ["id"], "chunk_size": 1_000, "engine": "threads"}
    fast = _output(run_job(str(tmp_path / "*.parquet"), tmp_path / "units", **opts))
    assert sorted(scanned) == [False, True]  # the narrow file's group read and cast, the other's scanned
    monkeypatch.setattr(driver_run, "_scorer_key", lambda scorer: "")
    alone = _output(run_job(str(tmp_path / "*.parquet"), tmp_path / "alone", **opts))
    assert fast.equals(alone)
    assert fast.get_column("id").to_list() == list(range(6_000))


@dataclass(frozen=True)
class Narrow(MAD):
    """MAD, but the score query casts `count` to Int8 strictly: a row holding 1000 fails the query."""

    name: str = "narrow-mad"

    def score_expr(self, columns, state):
        return super().score_expr(columns, state) + pl.col("count").cast(pl.Int8, strict=True).cast(pl.Float64) * 0


def test_a_failing_row_fails_only_its_own_chunk(frame, tmp_path, monkeypatch) -> None:
    """Scoring row group 1 fails because of row 4,500: only chunk 4 (rows 4,000-4,999) fails; the two
    other chunks of that group are scored and written."""
    bad = frame.with_columns(pl.when(pl.col("id") == 4_500).then(1_000).otherwise(pl.col("count")).alias("count"))
    path = tmp_path / "bad.parquet"
    pq.write_table(bad.to_arrow(), path, row_group_size=GROUP)
    result = run_job(str(path), tmp_path / "out", detector=Narrow(), keep=["id"], chunk_size=1_000, retries=0)
    assert result.status == "failed"
    assert [e.chunk for e in result.errors] == [4]
    assert "Int8" in result.errors[0].message or "strict" in result.errors[0].message
    done = result.read().collect().get_column("id")
    assert done.len() == 5_000 and 4_500 not in done and 4_000 not in done and {3_999, 5_000} <= set(done)
