"""The format contract: what every source format promises the driver and the workers.

One suite, parametrized over every input format (and a gzip-compressed CSV): the plan covers each row
exactly once, a chunk equals the same rows of a whole read by the format's reference reader, the schema
is exact, and the fit sample depends only on the seed (not on the chunk size or the engine).
A new format joins by adding a writer and a reference reader to `FORMATS`.
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from conftest import SUFFIX, make_frame, write_source

import batchnb as bn
import batchnb.sources
from batchnb.plan import Plan

ROWS, CHUNK = 5_500, 1_000  # a short last chunk


def _gzip_csv(frame: pl.DataFrame, path: Path) -> str:
    plain = write_source(frame, "csv", path.with_suffix(""))
    with open(plain, "rb") as src, gzip.open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return str(path)


def _pandas(reader: Callable[[str], pd.DataFrame]) -> Callable[[str], pl.DataFrame]:
    return lambda path: pl.from_pandas(reader(path))


# name -> (write the frame there, reference reader of the whole file, suffix)
FORMATS: dict[str, tuple[Callable[[pl.DataFrame, Path], str], Callable[[str], pl.DataFrame], str]] = {
    "csv": (lambda f, p: write_source(f, "csv", p), pl.read_csv, SUFFIX["csv"]),
    "csv.gz": (_gzip_csv, pl.read_csv, ".csv.gz"),
    "parquet": (lambda f, p: write_source(f, "parquet", p), pl.read_parquet, SUFFIX["parquet"]),
    "json": (lambda f, p: write_source(f, "json", p), pl.read_ndjson, SUFFIX["json"]),
    "json_array": (lambda f, p: write_source(f, "json_array", p), pl.read_json, SUFFIX["json_array"]),
    "pickle": (lambda f, p: write_source(f, "pickle", p), _pandas(pd.read_pickle), SUFFIX["pickle"]),
    "hdf5": (lambda f, p: write_source(f, "hdf5", p), _pandas(lambda p: pd.read_hdf(p, "data")), SUFFIX["hdf5"]),
    "feather": (lambda f, p: write_source(f, "feather", p), pl.read_ipc, SUFFIX["feather"]),
}
CODE_RUNNING = {"pickle", "hdf5"}


@pytest.fixture(scope="module", params=list(FORMATS))
def source(request, tmp_path_factory) -> tuple[str, str, pl.DataFrame]:
    """(format name, path, the reference reader's whole read) for each format."""
    name = request.param
    write, reference, suffix = FORMATS[name]
    path = write(make_frame(ROWS, seed=7), tmp_path_factory.mktemp("contract") / f"source{suffix}")
    return name, path, reference(path)


def plan_of(name: str, path: str, output: Path, *, chunk_size: int = CHUNK, engine: str = "sequential") -> Plan:
    job = bn.BatchJob(path, str(output), chunk_size=chunk_size, engine=engine, allow_pickle=name in CODE_RUNNING)
    return job.plan()


def read_chunks(plan: Plan) -> list[pl.DataFrame]:
    fmt = batchnb.sources.get(plan.dataset.format)
    return [fmt.read(plan.dataset, spec) for spec in plan.chunks]


def test_the_plan_tiles_the_dataset(source, tmp_path) -> None:
    name, path, whole = source
    plan = plan_of(name, path, tmp_path / "out")
    chunks = plan.chunks
    assert [spec.index for spec in chunks] == list(range(len(chunks)))
    assert chunks[0].rows[0] == 0 and all(a.rows[1] == b.rows[0] for a, b in pairwise(chunks))
    pieces = [piece for spec in chunks for piece in spec.pieces]
    assert all(p.start < p.stop for p in pieces)
    for a, b in pairwise(pieces):  # within a file, each piece starts where the one before stopped
        assert a.path != b.path or a.stop == b.start, (a, b)
    if plan.rows_estimated:  # byte ranges: the last piece ends at the end of the file
        assert pieces[-1].stop == Path(pieces[-1].path).stat().st_size
    else:
        assert chunks[-1].rows[1] == plan.rows_total == whole.height


def test_chunks_are_the_same_rows_as_a_whole_read(source, tmp_path) -> None:
    name, path, whole = source
    plan = plan_of(name, path, tmp_path / "out")
    parts = read_chunks(plan)
    assert pl.concat(parts).equals(whole)  # every row once, in order, same values
    if not plan.rows_estimated:  # row formats know each chunk's rows before it runs
        for spec, part in zip(plan.chunks, parts, strict=True):
            assert part.equals(whole.slice(spec.rows[0], spec.n_rows)), spec.index


def test_the_schema_is_exact(source, tmp_path) -> None:
    name, path, whole = source
    plan = plan_of(name, path, tmp_path / "out")
    assert plan.dataset.polars_schema() == whole.schema
    assert all(part.schema == whole.schema for part in read_chunks(plan))


def test_the_fit_sample_depends_only_on_the_seed(source, tmp_path) -> None:
    name, path, whole = source
    first = plan_of(name, path, tmp_path / "a")
    other = plan_of(name, path, tmp_path / "b", chunk_size=2_500, engine="threads")
    fmt = batchnb.sources.get(first.dataset.format)
    sample = fmt.sample(first.dataset, 200, 0)
    assert 0 < sample.height < whole.height and sample.schema == whole.schema
    assert fmt.sample(first.dataset, 200, 0).equals(sample)
    assert fmt.sample(other.dataset, 200, 0).equals(sample)
    assert not fmt.sample(first.dataset, 200, 1).equals(sample)
    ids = sample.get_column("id")
    assert ids.is_unique().all() and whole.filter(pl.col("id").is_in(ids.implode())).equals(sample)
