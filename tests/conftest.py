"""Shared fixtures: small real datasets in every input format, engines, and a leak check.

Every dataset has an `id` column equal to its row number (0..n-1), so a test can check that the
output holds every input row exactly once and in input order just by looking at `id`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import psutil
import pytest

import batchnb as bn
from batchnb.engines.processes import ProcessesEngine

ENGINES = ("sequential", "threads", "processes")
INPUT_FORMATS = ("csv", "parquet", "json", "pickle", "hdf5", "feather")
OUTPUT_FORMATS = ("parquet", "csv", "json", "feather", "hdf5", "pickle")
SUFFIX = {"csv": ".csv", "parquet": ".parquet", "json": ".jsonl", "json_array": ".json",
          "pickle": ".pkl", "hdf5": ".h5", "feather": ".feather"}  # fmt: skip

FEATURES = ("x1", "x2", "x3", "flat", "const", "count")  # numeric columns besides `id`
BASE_ROWS = 6_000
BIG_ROWS = 20_000


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------
def make_frame(n: int, seed: int = 0, *, all_missing: bool = True) -> pl.DataFrame:
    """A frame with an `id` column and features that exercise every detector rule.

    - x1: normal with a handful of large injected outliers, a few NaN and a few nulls
    - x2: log-normal (skewed) with injected outliers and a few nulls
    - x3: heavy-tailed (Student t, 3 dof) with a few NaN
    - flat: 7.0 for ~95% of rows, spread out otherwise: MAD = 0 and IQR = 0, but std > 0
    - const: always 3.0 (spread 0 for every detector)
    - count: small non-negative integers (many ties)
    - label: a string column (never a feature)
    With `all_missing`, rows 13 and n // 2 + 1 have no usable float feature at all.
    """
    rng = np.random.default_rng(seed)
    x1 = rng.normal(100.0, 15.0, n)
    x2 = rng.lognormal(0.0, 0.5, n)
    x3 = rng.standard_t(3, n)
    flat = np.where(rng.random(n) < 0.05, rng.normal(7.0, 40.0, n), 7.0)
    const = np.full(n, 3.0)
    count = rng.integers(0, 5, n).astype(np.int64)

    outliers = rng.choice(np.arange(20, n), size=max(4, n // 400), replace=False)
    x1[outliers] += rng.choice([-1.0, 1.0], outliers.size) * rng.uniform(80.0, 250.0, outliers.size)
    x2[outliers[::2]] *= rng.uniform(8.0, 30.0, outliers[::2].size)

    x1_nan = rng.choice(n, size=max(2, n // 1000), replace=False)
    x3_nan = rng.choice(n, size=max(2, n // 1000), replace=False)
    x1[x1_nan] = np.nan
    x3[x3_nan] = np.nan
    x1_null = np.zeros(n, dtype=bool)
    x1_null[rng.choice(n, size=max(2, n // 1500), replace=False)] = True
    x2_null = np.zeros(n, dtype=bool)
    x2_null[rng.choice(n, size=max(2, n // 1000), replace=False)] = True

    float_missing = np.zeros(n, dtype=bool)
    if all_missing:
        float_missing[[13, n // 2 + 1]] = True
        x1[float_missing] = np.nan  # NaN in one feature, null in the others: both are "missing"
        x3[float_missing] = np.nan
        x2_null |= float_missing

    labels = np.array(["alpha", "beta", "gamma", "delta, with comma", "eps"])[rng.integers(0, 5, n)]
    frame = pl.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64),
            "x1": x1,
            "x2": x2,
            "x3": x3,
            "flat": flat,
            "const": const,
            "count": count,
            "label": labels,
        }
    )
    return frame.with_columns(
        pl.when(pl.Series(x1_null)).then(None).otherwise(pl.col("x1")).alias("x1"),
        pl.when(pl.Series(x2_null)).then(None).otherwise(pl.col("x2")).alias("x2"),
        pl.when(pl.Series(float_missing)).then(None).otherwise(pl.col("flat")).alias("flat"),
        pl.when(pl.Series(float_missing)).then(None).otherwise(pl.col("const")).alias("const"),
    )


def write_source(frame: pl.DataFrame, fmt: str, path: str | Path) -> str:
    """Write `frame` in input format `fmt` (one of INPUT_FORMATS or "json_array") and return the path."""
    path = str(path)
    if fmt == "csv":
        frame.write_csv(path)
    elif fmt == "parquet":
        # Row groups that do not line up with chunk sizes, so chunks straddle row groups.
        frame.write_parquet(path, row_group_size=1_500)
    elif fmt == "json":
        frame.write_ndjson(path)
    elif fmt == "json_array":
        frame.write_json(path)
    elif fmt == "pickle":
        frame.to_pandas().to_pickle(path)
    elif fmt == "hdf5":
        frame.to_pandas().to_hdf(path, key="data", format="table", index=False)
    elif fmt == "feather":
        frame.write_ipc(path, record_batch_size=700)
    else:
        raise ValueError(fmt)
    return path


def as_read(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with NaN turned into null: what a format without NaN (JSON, pandas-based) gives back."""
    return frame.with_columns(pl.col(pl.Float64).fill_nan(None))


def run_job(source, output, **options) -> bn.JobResult:
    """Run a job without a progress view; processes get at most 2 workers (the CI box has 2 cores)."""
    options.setdefault("resources", bn.Resources(max_workers=2))
    options.setdefault("backoff", bn.Backoff(base=0.0, max=0.0, jitter=False))
    job = bn.BatchJob(source, output, **options)
    return job.run(progress=None)


@pytest.fixture(scope="session")
def frame() -> pl.DataFrame:
    return make_frame(BASE_ROWS, seed=0)


GROUP = 3_000  # the row group size of `grouped`


@pytest.fixture
def grouped(frame: pl.DataFrame, tmp_path: Path) -> str:
    """The shared test frame (6,000 rows) as Parquet in two row groups of 3,000 rows, written by pyarrow."""
    import pyarrow.parquet as pq

    path = tmp_path / "grouped.parquet"
    pq.write_table(frame.to_arrow(), path, row_group_size=GROUP)
    return str(path)


@pytest.fixture(scope="session")
def big_frame() -> pl.DataFrame:
    return make_frame(BIG_ROWS, seed=1)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def sources(frame, data_dir) -> dict[str, str]:
    """The base frame in the six input formats, plus "json_array" (a JSON array file)."""
    return {fmt: write_source(frame, fmt, data_dir / f"base{SUFFIX[fmt]}") for fmt in (*INPUT_FORMATS, "json_array")}


@pytest.fixture(scope="session")
def big_sources(big_frame, data_dir) -> dict[str, str]:
    """20k rows as Parquet and CSV: more rows than the `fit_sample` the sampled-fit tests use."""
    return {fmt: write_source(big_frame, fmt, data_dir / f"big{SUFFIX[fmt]}") for fmt in ("parquet", "csv")}


@pytest.fixture(scope="session")
def multi_parquet(data_dir) -> tuple[str, pl.DataFrame]:
    """A glob over 3 Parquet files of uneven sizes; returns (glob, the dataset in sorted file order)."""
    folder = data_dir / "multi_parquet"
    folder.mkdir()
    frame = make_frame(2_500 + 1_700 + 1_800, seed=2)
    pieces = [frame.slice(0, 2_500), frame.slice(2_500, 1_700), frame.slice(4_200, 1_800)]
    # Written out of order, so creation order and directory order do not give the answer by luck.
    for i in (2, 0, 1):
        write_source(pieces[i], "parquet", folder / f"part-{'abc'[i]}.parquet")
    return str(folder / "part-*.parquet"), frame


@pytest.fixture(scope="session")
def multi_csv(data_dir) -> tuple[list[str], pl.DataFrame]:
    """Two CSV files; returns ([paths in sorted order], the dataset in that order)."""
    folder = data_dir / "multi_csv"
    folder.mkdir()
    frame = make_frame(2_300 + 1_900, seed=3)
    a = write_source(frame.slice(0, 2_300), "csv", folder / "a.csv")
    b = write_source(frame.slice(2_300), "csv", folder / "b.csv")
    return [a, b], frame


@pytest.fixture(scope="session")
def quoted_csv(data_dir) -> tuple[str, pl.DataFrame]:
    """A CSV whose `note` field often holds quoted newlines, commas and doubled quotes."""
    n = 3_200
    rng = np.random.default_rng(4)
    notes = []
    for i in range(n):
        kind = i % 5
        padding = "lorem, ipsum " * (i % 41)  # ~600 KB in all: several blocks of the record index
        if kind == 0:
            notes.append(f"line one of {i}\nline two, with a comma\n{padding}line three")
        elif kind == 1:
            notes.append(f'he said "hi", then\n"bye" ({i})')
        elif kind == 2:
            notes.append(f"plain {i} {padding}")
        elif kind == 3:
            notes.append("\n" * (1 + i % 3) + f"starts with newlines {i}")
        else:
            notes.append(f"ends with a newline, {i} {padding}\n")
    frame = pl.DataFrame({"id": np.arange(n, dtype=np.int64), "note": notes, "value": rng.normal(0.0, 1.0, n)})
    path = data_dir / "quoted.csv"
    frame.write_csv(path)
    data = path.read_bytes()
    assert data.count(b"\n") > 2 * n and len(data) > 2 * 256 * 1024  # quoted newlines, several index blocks
    return str(path), frame


@pytest.fixture
def make_source(tmp_path) -> Callable[..., str]:
    """Factory: write a frame in a format under this test's tmp_path and return its path."""

    def make(frame: pl.DataFrame, fmt: str = "parquet", name: str = "source") -> str:
        return write_source(frame, fmt, tmp_path / f"{name}{SUFFIX[fmt]}")

    return make


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    return request.param


# --------------------------------------------------------------------------------------------------
# Leak check
# --------------------------------------------------------------------------------------------------
def _is_resource_tracker(proc: psutil.Process) -> bool:
    """multiprocessing's resource tracker lives as long as the interpreter by design: not a leak."""
    try:
        return any("resource_tracker" in part for part in proc.cmdline())
    except psutil.Error:
        return True  # it is gone


def _is_ours(thread: threading.Thread) -> bool:
    """A thread the test must have ended: any non-daemon thread, and batchnb's daemon threads (view
    updaters, samplers, collectors, background `job.start()` runs), which are all named `batchnb-...`."""
    return not thread.daemon or thread.name.startswith("batchnb")


def _started_before(proc: psutil.Process, before_children: set[int]) -> bool:
    """A process of a cluster that a module fixture started (a worker under its nanny or raylet) belongs to
    that fixture, which stops it with the cluster."""
    try:
        return any(parent.pid in before_children for parent in proc.parents())
    except psutil.Error:
        return True  # it is gone


def _leftovers(before_threads: set[int], before_children: set[int]) -> tuple[list, list]:
    threads = [
        t
        for t in threading.enumerate()
        if t.is_alive() and _is_ours(t) and t is not threading.main_thread() and t.ident not in before_threads
    ]
    children = []
    for proc in psutil.Process().children(recursive=True):
        if proc.pid in before_children or _is_resource_tracker(proc) or _started_before(proc, before_children):
            continue
        try:
            children.append(f"pid {proc.pid} ({proc.status()}): {' '.join(proc.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            continue
    return threads, children


@pytest.fixture(autouse=True)
def no_leaks():
    """Fail a test that leaves threads (non-daemon, or batchnb's own) or child processes running after it, or
    Ctrl-C handled otherwise than before (a kernel whose SIGINT handler changed cannot interrupt a job)."""
    before_threads = {t.ident for t in threading.enumerate()}
    before_children = {p.pid for p in psutil.Process().children(recursive=True)}
    sigint = signal.getsignal(signal.SIGINT)
    yield
    changed = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, sigint)  # restored before anything else can fail, so later tests keep Ctrl-C
    ProcessesEngine.shutdown()  # the worker pool kept warm for the next job is closed, not left to a later test
    deadline = time.monotonic() + 30.0  # pools and views that are shutting down get time to exit
    while True:
        threads, children = _leftovers(before_threads, before_children)
        if not threads and not children:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"test left running: threads {[t.name for t in threads]}, child processes {children}")
        time.sleep(0.05)
    if changed is not sigint:
        pytest.fail(f"test left SIGINT handled by {changed!r}")


@pytest.fixture(scope="module")
def s3_server():
    """A moto S3 server on loopback, reached through the environment as any S3 client would (for one test
    module, so the environment is restored after it); yields an s3fs filesystem on it."""
    s3fs = pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    s3fs.S3FileSystem.clear_instance_cache()
    yield s3fs.S3FileSystem()
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
