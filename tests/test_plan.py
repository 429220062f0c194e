"""job.plan(): chunk count, sizes, memory estimates, recommendations and warnings, before anything runs."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import batchnb as bn


@pytest.fixture
def parquet(tmp_path: Path) -> str:
    path = tmp_path / "in.parquet"
    frame = pl.DataFrame({"id": np.arange(50_000), "x": np.random.default_rng(0).normal(size=50_000)})
    frame.write_parquet(path, row_group_size=10_000)
    return str(path)


def test_plan_counts_and_estimates(parquet, tmp_path):
    plan = bn.BatchJob(parquet, tmp_path / "out", chunk_size=5_000, resources=bn.Resources(max_workers=2)).plan()
    s = plan.summary()
    assert (s["rows"], s["chunks"], s["chunk_size"], s["workers"]) == (50_000, 10, 5_000, 2)
    assert s["memory_per_chunk"] == 5_000 * 16 * 3  # two 8-byte columns, input + scores + output
    assert s["memory_at_concurrency"] == 4 * s["memory_per_chunk"]
    assert s["bytes_per_chunk"] == Path(parquet).stat().st_size // 10
    assert [c.rows for c in plan.chunks][:2] == [(0, 5_000), (5_000, 10_000)]
    assert not (tmp_path / "out" / "_batchnb" / "state.sqlite").exists()  # planning runs nothing


def test_plan_recommends_row_group_aligned_chunks_and_says_why(parquet, tmp_path):
    plan = bn.BatchJob(parquet, tmp_path / "out", chunk_size=2_000).plan()
    assert plan.recommended_chunk_size == 10_000
    assert any("row group is cut into 5 chunks" in w for w in plan.warnings)
    assert not bn.BatchJob(parquet, tmp_path / "o2", chunk_size=10_000).plan().warnings


def test_plan_warns_about_tiny_chunks(tmp_path):
    path = tmp_path / "big.parquet"
    pl.DataFrame({"x": np.zeros(2_000_000)}).write_parquet(path, row_group_size=2_000_000)
    plan = bn.BatchJob(path, tmp_path / "out", chunk_size=1_000).plan()
    assert len(plan.chunks) == 2_000
    [warning] = [w for w in plan.warnings if "chunks of 1,000 rows" in w]
    assert "chunk_size=" in warning


def test_plan_warns_when_chunks_exceed_the_memory_limit(parquet, tmp_path):
    plan = bn.BatchJob(parquet, tmp_path / "out", chunk_size=50_000,
                       resources=bn.Resources(max_workers=2, memory_limit="2MB")).plan()  # fmt: skip
    [warning] = [w for w in plan.warnings if "exceed the memory limit" in w]
    assert "max_workers=" in warning and "chunk_size=" in warning
    assert plan.recommended_chunk_size < 50_000


def test_plan_warns_about_pickle_input_and_unpicklable_functions(tmp_path):
    frame = pl.DataFrame({"x": [1.0, 2.0, 3.0]})
    frame.to_pandas().to_pickle(tmp_path / "in.pkl")
    plan = bn.BatchJob(tmp_path / "in.pkl", tmp_path / "out", allow_pickle=True).plan()
    assert any("pickle input is loaded whole" in w for w in plan.warnings)

    lock = threading.Lock()

    def holds_a_lock(df: pl.DataFrame) -> pl.DataFrame:
        with lock:
            return df

    frame.write_parquet(tmp_path / "in.parquet")
    plan = bn.BatchJob(tmp_path / "in.parquet", tmp_path / "o2", detector=holds_a_lock, engine="processes").plan()
    assert any("cannot be pickled" in w for w in plan.warnings)


def test_plan_renders_as_html_with_the_recommendation(parquet, tmp_path):
    html = bn.BatchJob(parquet, tmp_path / "out", chunk_size=2_000).plan()._repr_html_()
    assert "chunk_size=10_000" in html and "row group" in html and "<table" in html


def test_interleave_deals_runs_of_a_key_to_lanes_in_turn() -> None:
    """Chunks sharing a row group stay in order on one lane; `lanes` row groups are in flight at once."""
    from batchnb.driver.pending import interleave
    from batchnb.sources.dataset import ChunkSpec

    specs = [ChunkSpec(index=i, pieces=(), rows=(i, i + 1), nbytes=0) for i in range(11)]
    group = {i: i // 3 for i in range(9)}  # groups 0,0,0 1,1,1 2,2,2; chunks 9 and 10 have no key
    key = lambda spec: group.get(spec.index)  # noqa: E731
    order = [s.index for s in interleave(specs, key, lanes=2)]
    assert order == [0, 3, 1, 4, 2, 5, 6, 9, 7, 8, 10]
    assert [s.index for s in interleave(specs, key, lanes=1)] == list(range(11))
    assert sorted(s.index for s in interleave(specs, key, lanes=5)) == list(range(11))


def test_pool_worker_takes_its_own_row_group_then_an_unclaimed_one_then_any() -> None:
    from collections import deque

    from batchnb.engines.pool import pick

    a, b = object(), object()
    homes = {"g0": a, "g1": b}
    queue = deque((None, b"", key) for key in ["g1", "g0", "g2", "g0"])
    assert pick(queue, a, homes) == 1  # its own group first, even behind another worker's
    assert pick(queue, b, homes) == 0
    assert pick(deque((None, b"", k) for k in ["g1", "g2"]), a, homes) == 1  # then a group nobody holds
    assert pick(deque((None, b"", k) for k in ["g1", None]), a, homes) == 1  # (a chunk without a key is anyone's)
    # another worker's group: only when that worker has been busy a while (waiting costs less than a decode)
    assert pick(deque((None, b"", k) for k in ["g1", "g1"]), a, homes) is None
    assert pick(deque((None, b"", k) for k in ["g1", "g1"]), a, homes, slow={b}) == 0
    assert pick(deque((None, b"", k) for k in ["g1", "g0"]), b, {"g0": a, "g1": a}, slow={a}) == 0
