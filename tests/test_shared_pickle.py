"""A chunk task crosses to a worker as its spec plus the job's shared part, pickled once per job.

What a user relies on: every task arrives with its own chunk and its own job's dataset, scorer and options,
also when two jobs (a refit, another input) run one after the other in the same kernel; the shared part costs
one cloudpickle per job, not one per chunk."""

from __future__ import annotations

import pickle

import cloudpickle
import polars as pl

from batchnb.driver import shared_pickle
from batchnb.driver.task import ChunkTask
from batchnb.sources.dataset import ChunkSpec, DatasetInfo, Piece


def _maker(scorer, path: str = "/data/in.parquet"):
    dataset = DatasetInfo(format="parquet", paths=(path,), schema={"x": "Float64"}, total_rows=300)

    def make(index: int) -> ChunkTask:
        spec = ChunkSpec(
            index=index,
            rows=(index * 100, index * 100 + 100),
            pieces=(Piece(path=path, start=index * 100, stop=index * 100 + 100),),
            nbytes=800,
        )
        return ChunkTask(
            spec=spec, dataset=dataset, scorer=scorer, keep=("id",), output="/out", output_format="parquet"
        )

    return make


def _double(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(pl.col("x") * 2)


def _triple(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(pl.col("x") * 3)


def test_each_task_arrives_with_its_own_chunk_and_its_jobs_shared_part() -> None:
    make = _maker(_double)
    tasks = [make(i) for i in range(3)]
    back = [cloudpickle.loads(cloudpickle.dumps(t)) for t in tasks]
    assert [t.spec for t in back] == [t.spec for t in tasks]
    assert all(b.dataset == tasks[0].dataset and b.keep == ("id",) and b.output == "/out" for b in back)
    assert back[0].scorer(pl.DataFrame({"x": [1.0]})).item() == 2.0
    assert back[1].dataset is back[0].dataset  # unpickled once in this process, shared by the chunks


def test_the_shared_part_is_pickled_once_per_job(monkeypatch) -> None:
    calls = []
    dumps = cloudpickle.dumps
    monkeypatch.setattr(shared_pickle.cloudpickle, "dumps", lambda obj, *a, **k: calls.append(1) or dumps(obj, *a, **k))
    make = _maker(_double, "/data/once.parquet")
    for i in range(20):
        pickle.dumps(make(i))
    assert len(calls) == 1


def test_a_second_job_never_gets_the_first_ones_scorer_or_dataset() -> None:
    first, second = _maker(_double, "/data/a.parquet"), _maker(_triple, "/data/b.parquet")
    for _ in range(2):  # alternating jobs, as two runs in one kernel, each kept by the caches
        a, b = (cloudpickle.loads(cloudpickle.dumps(m(0))) for m in (first, second))
        assert a.dataset.paths == ("/data/a.parquet",) and b.dataset.paths == ("/data/b.parquet",)
        assert a.scorer(pl.DataFrame({"x": [1.0]})).item() == 2.0
        assert b.scorer(pl.DataFrame({"x": [1.0]})).item() == 3.0
    for i in range(shared_pickle.KEPT + 2):  # more jobs than are kept: the oldest is pickled again, not confused
        job = _maker(_double if i % 2 else _triple, f"/data/{i}.parquet")
        assert cloudpickle.loads(cloudpickle.dumps(job(0))).dataset.paths == (f"/data/{i}.parquet",)
