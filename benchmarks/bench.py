"""Robust-z benchmark: batchnb's engines side by side with plain Polars and pandas.

Usage::

    python benchmarks/bench.py [--quick] [--out DIR] [--cases PATTERNS] [--datasets parquet,csv] [--repeat N]

The data is generated once and cached under ``benchmarks/.cache/`` (see ``README.md``). Every case
runs in a fresh child process, one after another, so that its peak memory is its own: the parent
samples the RSS of the child and all its descendants every 50 ms, the child times its own wall
clock. The machine is shared and noisy, so read the results as ratios within one run (and use
``--repeat`` to keep the fastest of several round-robin trials).

A case is a function ``(src, out, dataset)`` in ``CASES``; it may return extra figures (a dict), and a
``setup`` run before the clock (its time reported as ``startup_s``) gives the warm-cluster cases a
running Dask or Ray, so that start-up is shown apart from the work.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatch
from functools import partial
from importlib.metadata import version
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
CACHE_DIR = HERE / ".cache"
RESULTS_DIR = HERE / "results"

FEATURES = tuple(f"f{i}" for i in range(8))
COLUMNS = ("id", *FEATURES, "anomaly_score", "is_anomaly")
# Dataset name -> rows (full, quick). The format is the name up to its first "-". The "-10g" files are
# about 10 GB on disk: 142M rows of Parquet (~70 bytes a row), 63M rows of CSV (~159 bytes a row).
DATASETS = {
    "parquet": (20_000_000, 200_000),
    "csv": (20_000_000, 100_000),
    "parquet-10g": (142_000_000, 400_000),
    "csv-10g": (63_000_000, 200_000),
}
SIZES = {quick: {name: rows[quick] for name, rows in DATASETS.items()} for quick in (False, True)}
ROW_GROUP_ROWS = 1_000_000  # Parquet row group size (smaller for small files: at least 20 groups a file)
CSV_BATCH = 1_000_000  # rows generated and written per step for CSV
DATA_VERSION = 1  # bump when the generator changes, so old caches are not reused
CHUNK_SIZE = 100_000  # batchnb's default; also the chunk of every hand-rolled loop
FIT_SAMPLE, SEED = 100_000, 0  # batchnb's defaults
MAD_SCALE, THRESHOLD = 1.4826, 3.5
BASELINE = "polars-stream"
SAMPLE_EVERY_S = 0.05

Stats = dict[str, tuple[float, float]]  # feature -> (median, 1.4826 * MAD)


# --- data ------------------------------------------------------------------------------------------


def make_batch(start: int, n: int) -> pl.DataFrame:
    """Rows [start, start + n) of the dataset; seeded by `start`, so any batch size gives the same rows
    whenever batches start at the same offsets (the CSV is the Parquet file's first rows).

    Features are normal with different centers and scales; 0.1% of rows get one feature pushed
    6-12 standard deviations away, the anomalies the detector should find.
    """
    rng = np.random.default_rng([SEED, start])
    centers, scales = np.linspace(-50, 50, len(FEATURES)), np.geomspace(0.1, 100, len(FEATURES))
    x = rng.normal(size=(n, len(FEATURES))) * scales + centers
    k = max(1, n // 1000)
    rows, cols = rng.choice(n, k, replace=False), rng.integers(0, len(FEATURES), k)
    x[rows, cols] += rng.choice([-1.0, 1.0], k) * rng.uniform(6, 12, k) * scales[cols]
    return pl.DataFrame({"id": np.arange(start, start + n, dtype=np.int64), **dict(zip(FEATURES, x.T, strict=True))})


def _batches(total: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(size, total - s)) for s in range(0, total, size)]


def _write_parquet(path: Path, rows: int) -> None:
    import pyarrow.parquet as pq

    size = min(ROW_GROUP_ROWS, -(-rows // 20))
    writer = None
    for start, n in _batches(rows, size):
        table = make_batch(start, n).to_arrow()
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=n)
    writer.close()


def _write_csv(path: Path, rows: int) -> None:
    with open(path, "wb") as f:
        for start, n in _batches(rows, CSV_BATCH):
            make_batch(start, n).write_csv(f, include_header=start == 0)


def ensure_dataset(dataset: str, rows: int, cache: Path = CACHE_DIR) -> Path:
    """The cached file for (dataset, rows), generated batch by batch only when missing.

    It is written under a temporary name and renamed, so an interrupted run never leaves a
    truncated file that a later run would trust.
    """
    fmt = file_format(dataset)
    path = cache / f"robustz-v{DATA_VERSION}-{rows}.{fmt}"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    t0 = time.perf_counter()
    try:
        (_write_parquet if fmt == "parquet" else _write_csv)(tmp, rows)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    print(
        f"generated {path} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f}s", file=sys.stderr
    )
    return path


def file_format(dataset: str) -> str:
    return dataset.split("-")[0]


def warm_cache(path: Path) -> None:
    """Read the file once so the first case does not pay for a cold page cache that the others skip."""
    with open(path, "rb") as f:
        while f.read(16 * 2**20):
            pass


# --- the workload, shared by the baselines ---------------------------------------------------------


def _scan(src: Path, dataset: str) -> pl.LazyFrame:
    return pl.scan_parquet(src) if file_format(dataset) == "parquet" else pl.scan_csv(src)


def sample_blocks(total: int, n: int = FIT_SAMPLE) -> list[tuple[int, int]]:
    """Row ranges of the stratified block sample that batchnb fits on (its own rule, seed 0).

    The baselines fit on the very same rows, so every case scores with the same medians and
    MADs and their anomaly counts must agree: a correctness check that costs nothing.
    """
    from batchnb.sources.base import sample_starts

    return sample_starts(total, n, SEED)


def count_rows(src: Path, dataset: str) -> int:
    return _scan(src, dataset).select(pl.len()).collect().item()


def read_sample(src: Path, dataset: str) -> pl.DataFrame:
    """The fit sample batchnb takes, read the cheapest way measured for each format.

    Parquet: one sliced scan per block of batchnb's row ranges (0.5 s for 20M rows; a single query
    over the concatenated slices loses the row-group pushdown and takes 3.5 s). CSV: batchnb samples
    whole records at seeded byte offsets (no row numbers without a pass over the file), so the
    baselines call its sampler, which reads about 2 MB.
    """
    if file_format(dataset) == "parquet":
        scan, blocks = _scan(src, dataset).select(FEATURES), sample_blocks(count_rows(src, dataset))
        return pl.concat([scan.slice(a, b - a).collect() for a, b in blocks])
    from batchnb.sources import get, open_dataset

    with tempfile.TemporaryDirectory() as workdir:
        info = open_dataset(str(src), "csv", {}, workdir=Path(workdir), allow_pickle=False)
    return get("csv").sample(info, FIT_SAMPLE, SEED, FEATURES)


def fit_mad(src: Path, dataset: str) -> Stats:
    """Median and 1.4826 * MAD per feature of the fit sample."""
    sample = read_sample(src, dataset)
    stats = {}
    for c in FEATURES:
        v = sample.get_column(c).to_numpy()
        median = float(np.median(v))
        stats[c] = (median, MAD_SCALE * float(np.median(np.abs(v - median))))
    return stats


def add_scores(frame: pl.LazyFrame | pl.DataFrame, stats: Stats) -> pl.LazyFrame | pl.DataFrame:
    """Input columns + anomaly_score (max robust z over features) + is_anomaly."""
    score = pl.max_horizontal([(pl.col(c) - m).abs() / s for c, (m, s) in stats.items()]).alias("anomaly_score")
    return frame.with_columns(score).with_columns((pl.col("anomaly_score") > THRESHOLD).alias("is_anomaly"))


# --- cases: each runs in its own child process ------------------------------------------------------


def batchnb_case(
    src: Path, out: Path, dataset: str, *, engine: str, chunk_size: int = CHUNK_SIZE, progress: str | None = None
) -> dict:
    """The product: plan, fit, chunks on an engine, checksummed parts, sqlite checkpoints."""
    import batchnb as bn

    job = bn.BatchJob(str(src), str(out), detector="mad", columns=list(FEATURES), chunk_size=chunk_size, engine=engine)
    result = job.run(progress=progress)
    if result.status != "succeeded":
        raise RuntimeError(f"batchnb job {result.status}: {result.errors[:1]}")
    return breakdown(out)


def breakdown(out: Path) -> dict:
    """Where a job's time went, from its own state: preparation (seconds), and per chunk (milliseconds)
    the worker's read/score/write/checksum/rename and the driver's submit/commit/progress."""
    from batchnb.record.store import JobState

    with JobState.open(str(out)) as state:
        per_chunk = state.timings()
        driver, prepare = state.get("driver_s") or {}, state.get("prepare_s") or {}
    n = max(1, len(per_chunk))
    steps = {k: sum(t.get(k, 0.0) for t in per_chunk) for k in ("read", "score", "write", "checksum", "rename")}
    return {
        "chunks": len(per_chunk),
        "prepare_s": prepare,
        "per_chunk_ms": {k: 1000 * v / n for k, v in {**steps, **driver}.items()},
    }


def polars_stream_case(src: Path, out: Path, dataset: str, *, compression: str = "zstd") -> None:
    """What a Polars user writes first: one streaming scan -> score -> sink, no chunks, no checkpoints.

    Polars' default codec is zstd; batchnb writes snappy parts, so the same query with snappy is run
    too: the ratio to it is what chunks and checkpoints cost, the codec aside.
    """
    stats = fit_mad(src, dataset)
    out.mkdir(parents=True)
    add_scores(_scan(src, dataset), stats).sink_parquet(out / "part-000000.parquet", compression=compression)


def polars_slices_case(src: Path, out: Path, dataset: str) -> None:
    """The fastest loop measured by hand: 2 threads of scan.slice -> collect -> score -> write_parquet."""
    stats, total = fit_mad(src, dataset), count_rows(src, dataset)
    out.mkdir(parents=True)

    def one(i: int) -> None:
        chunk = _scan(src, dataset).slice(i * CHUNK_SIZE, CHUNK_SIZE).collect()
        add_scores(chunk, stats).write_parquet(out / f"part-{i:06d}.parquet")

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(one, range(-(-total // CHUNK_SIZE))))


def pandas_chunks_case(src: Path, out: Path, dataset: str) -> None:
    """The classic pandas loop: a row group (or `read_csv` chunk) at a time, numpy scores, `to_parquet`."""
    import pandas as pd
    import pyarrow.parquet as pq

    stats = fit_mad(src, dataset)
    center, spread = (np.array([stats[c][k] for c in FEATURES]) for k in (0, 1))
    if file_format(dataset) == "parquet":
        pf = pq.ParquetFile(src)
        frames = (pf.read_row_group(i).to_pandas() for i in range(pf.num_row_groups))
    else:
        frames = pd.read_csv(src, chunksize=CHUNK_SIZE)
    out.mkdir(parents=True)
    for i, df in enumerate(frames):
        score = (np.abs(df[list(FEATURES)].to_numpy() - center) / spread).max(axis=1)
        df["anomaly_score"], df["is_anomaly"] = score, score > THRESHOLD
        df.to_parquet(out / f"part-{i:06d}.parquet", index=False)


# --- distributed: batchnb on Dask and Ray beside each engine's own dataframe API --------------------
# Cold cases start their cluster inside the clock and stop it there too (what one job in a fresh
# process pays); warm cases get a cluster started by `setup` before the clock (what every job after
# the first pays in a kernel that keeps its cluster) and report that start-up as `startup_s`.

N_WORKERS = 2  # one single-threaded worker process per core, for every distributed case


def local_dask_cluster(n_workers: int = N_WORKERS):
    from distributed import LocalCluster

    return LocalCluster(n_workers=n_workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None)


def local_ray(n_workers: int = N_WORKERS) -> None:
    import ray

    ray.init(  # "local": a new Ray even if a `ray start` cluster on this machine left its address behind
        address="local", num_cpus=n_workers, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False
    )


def warm_dask(n_workers: int = N_WORKERS) -> Callable[[], None]:
    """setup: a LocalCluster that the case joins by address (`BENCH_DASK_ADDRESS`)."""
    cluster = local_dask_cluster(n_workers)
    os.environ["BENCH_DASK_ADDRESS"] = cluster.scheduler_address
    return cluster.close


def warm_ray(n_workers: int = N_WORKERS) -> Callable[[], None]:
    """setup: the local Ray that every later job of the process reuses."""
    import ray

    local_ray(n_workers)
    return ray.shutdown


def batchnb_dask_case(src: Path, out: Path, dataset: str, *, warm: bool = False) -> dict:
    from batchnb.engines import DaskEngine

    address = os.environ["BENCH_DASK_ADDRESS"] if warm else None
    engine = DaskEngine(address) if warm else DaskEngine(n_workers=N_WORKERS, threads_per_worker=1)
    return batchnb_case(src, out, dataset, engine=engine)


def batchnb_ray_case(src: Path, out: Path, dataset: str, *, warm: bool = False) -> dict:
    from batchnb.engines import RayEngine

    figures = batchnb_case(src, out, dataset, engine=RayEngine() if warm else RayEngine(num_cpus=N_WORKERS))
    if not warm:
        RayEngine.shutdown()  # cold: the process pays for stopping Ray too, as the Ray Data case does
    return figures


def _score_pandas(df, center: np.ndarray, spread: np.ndarray):
    score = (np.abs(df[list(FEATURES)].to_numpy() - center) / spread).max(axis=1)
    return df.assign(anomaly_score=score, is_anomaly=score > THRESHOLD)


def _center_spread(src: Path, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    stats = fit_mad(src, dataset)
    return tuple(np.array([stats[c][k] for c in FEATURES]) for k in (0, 1))


def dask_dataframe_case(src: Path, out: Path, dataset: str, *, warm: bool = False) -> dict:
    """dask.dataframe: read_parquet (one partition per row group) or read_csv -> map_partitions -> to_parquet."""
    import dask.dataframe as dd
    from distributed import Client

    t0 = time.perf_counter()
    cluster = None if warm else local_dask_cluster()
    client = Client(os.environ["BENCH_DASK_ADDRESS"] if warm else cluster)
    startup = time.perf_counter() - t0
    center, spread = _center_spread(src, dataset)
    if file_format(dataset) == "parquet":
        frame = dd.read_parquet(src, split_row_groups=True)
    else:
        frame = dd.read_csv(src, blocksize="64MiB")
    frame.map_partitions(_score_pandas, center, spread).to_parquet(out, write_index=False)
    client.close()
    if cluster is not None:
        cluster.close()
    return {} if warm else {"startup_s": startup}


def _score_numpy(batch: dict, center: np.ndarray, spread: np.ndarray) -> dict:
    score = (np.abs(np.column_stack([batch[c] for c in FEATURES]) - center) / spread).max(axis=1)
    return {**batch, "anomaly_score": score, "is_anomaly": score > THRESHOLD}


def ray_data_case(src: Path, out: Path, dataset: str, *, warm: bool = False) -> dict:
    """Ray Data: read_parquet -> map_batches (numpy batches: faster here than pandas) -> write_parquet."""
    import ray

    t0 = time.perf_counter()
    if not warm:
        local_ray()
    startup = time.perf_counter() - t0
    center, spread = _center_spread(src, dataset)
    data = ray.data.read_parquet(str(src)) if file_format(dataset) == "parquet" else ray.data.read_csv(str(src))
    data.map_batches(_score_numpy, fn_args=(center, spread), batch_format="numpy").write_parquet(str(out))
    if not warm:
        ray.shutdown()
    return {} if warm else {"startup_s": startup}


@dataclass(frozen=True)
class Case:
    run: Callable[[Path, Path, str], dict | None]  # may return extra figures, e.g. {"startup_s": 3.1}
    datasets: tuple[str, ...]
    preload: tuple[str, ...] = ()  # imported before the clock starts: import time is not the workload
    setup: Callable[[], Callable[[], None]] | None = None  # before the clock (timed as startup_s); returns teardown


P20, C20, P10G, C10G = "parquet", "csv", "parquet-10g", "csv-10g"
SWEEP = {1_000: "batchnb-threads-chunk1k", 10_000: "batchnb-threads-chunk10k", 100_000: "batchnb-threads",
         1_000_000: "batchnb-threads-chunk1m"}  # fmt: skip
SCALING = (1, 2, 4)  # local workers of the warm Dask and Ray scaling cases

CASES: dict[str, Case] = {
    "batchnb-sequential": Case(partial(batchnb_case, engine="sequential"), (P20, C20, P10G, C10G), ("batchnb",)),
    "batchnb-threads": Case(partial(batchnb_case, engine="threads"), (P20, C20, P10G, C10G), ("batchnb",)),
    "batchnb-processes": Case(partial(batchnb_case, engine="processes"), (P20, C20, P10G, C10G), ("batchnb",)),
    # The same job with the terminal progress bar on: monitoring must cost (almost) nothing.
    "batchnb-threads-progress": Case(
        partial(batchnb_case, engine="threads", progress="text"), (P20,), ("batchnb", "tqdm")
    ),
    # The chunk-size sweep (100k is the default case above): what each chunk costs, step by step.
    **{
        name: Case(partial(batchnb_case, engine="threads", chunk_size=size), (P20,), ("batchnb",))
        for size, name in SWEEP.items()
        if size != CHUNK_SIZE
    },
    BASELINE: Case(polars_stream_case, (P20, C20, P10G, C10G)),
    "polars-stream-snappy": Case(partial(polars_stream_case, compression="snappy"), (P20, C20, P10G, C10G)),
    "polars-slices-2t": Case(polars_slices_case, (P20,)),
    "pandas-chunks": Case(pandas_chunks_case, (P20, C20, P10G, C10G), ("pandas", "pyarrow.parquet")),
    "batchnb-dask": Case(batchnb_dask_case, (P20, C20, P10G), ("batchnb", "distributed")),
    "batchnb-dask-warm": Case(partial(batchnb_dask_case, warm=True), (P20, C20), ("batchnb", "distributed"), warm_dask),
    "dask-dataframe": Case(dask_dataframe_case, (P20, C20, P10G), ("dask.dataframe", "distributed")),
    "dask-dataframe-warm": Case(
        partial(dask_dataframe_case, warm=True), (P20, C20), ("dask.dataframe", "distributed"), warm_dask
    ),
    "batchnb-ray": Case(batchnb_ray_case, (P20, C20, P10G), ("batchnb", "ray")),
    "batchnb-ray-warm": Case(partial(batchnb_ray_case, warm=True), (P20, C20), ("batchnb", "ray"), warm_ray),
    "ray-data": Case(ray_data_case, (P20, C20, P10G), ("ray", "ray.data")),
    "ray-data-warm": Case(partial(ray_data_case, warm=True), (P20, C20), ("ray", "ray.data"), warm_ray),
    # Scaling: the same warm job on 1, 2 and 4 local workers (2 cores here: 4 shows oversubscription).
    **{
        f"batchnb-{engine}-warm-w{n}": Case(partial(case, warm=True), (P20,), ("batchnb", module), partial(setup, n))
        for engine, case, module, setup in (
            ("dask", batchnb_dask_case, "distributed", warm_dask),
            ("ray", batchnb_ray_case, "ray", warm_ray),
        )
        for n in SCALING
        if n != N_WORKERS  # 2 workers: the -warm cases above
    },
}


def child_main(spec: dict) -> None:
    """Run one case and print one JSON line: wall time, then what the output holds (checked untimed)."""
    case, src, out = CASES[spec["case"]], Path(spec["src"]), Path(spec["out"])
    for module in case.preload:
        importlib.import_module(module)
    t0 = time.perf_counter()
    teardown = case.setup() if case.setup is not None else None
    extra = {"startup_s": time.perf_counter() - t0} if case.setup is not None else {}
    t0 = time.perf_counter()
    extra.update(case.run(src, out, spec["dataset"]) or {})
    wall = time.perf_counter() - t0
    if teardown is not None:
        teardown()
    output = pl.scan_parquet(str(out / "*.parquet"))
    rows, anomalies = output.select(pl.len(), pl.col("is_anomaly").sum()).collect().row(0)
    ok = tuple(output.collect_schema().names()) == COLUMNS and rows == spec["rows"]
    print(json.dumps({"wall_s": wall, "rows_out": rows, "anomalies": anomalies, "output_ok": ok, **extra}))


# --- the parent: runs cases, measures memory, writes the table ---------------------------------------


def tree_rss(proc) -> int:
    """Summed RSS of a process and all its descendants (pool workers, spawned helpers)."""
    import psutil

    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_case(name: str, dataset: str, src: Path, rows: int, work: Path, keep: bool) -> dict:
    """One case in a fresh child; peak RSS of its process tree sampled every 50 ms."""
    import psutil

    out = work / f"{name}-{dataset}"
    spec = {"case": name, "dataset": dataset, "src": str(src), "out": str(out), "rows": rows}
    record = {"case": name, "dataset": dataset, "rows": rows}
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        child = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)], stdout=stdout, stderr=stderr
        )
        proc, peak = psutil.Process(child.pid), 0
        while child.poll() is None:
            peak = max(peak, tree_rss(proc))
            time.sleep(SAMPLE_EVERY_S)
        stdout.seek(0)
        stderr.seek(0)
        lines = stdout.read().strip().splitlines()
        if child.returncode != 0 or not lines:
            record["error"] = f"exit {child.returncode}: {stderr.read()[-2000:]}"
        else:
            record.update(json.loads(lines[-1]))
            record["rows_per_s"] = rows / record["wall_s"]
    record["peak_rss_mib"] = peak / 2**20
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return record


def add_ratios(records: list[dict]) -> None:
    base = {r["dataset"]: r["rows_per_s"] for r in records if r["case"] == BASELINE and "rows_per_s" in r}
    for r in records:
        if "rows_per_s" in r and r["dataset"] in base:
            r["vs_" + BASELINE.replace("-", "_")] = r["rows_per_s"] / base[r["dataset"]]


def batchnb_commit() -> str:
    """The commit the package was measured at, `+dirty` when batchnb/ has uncommitted changes."""
    git = ["git", "-C", str(HERE.parent)]
    try:
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "batchnb"], capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def environment(quick: bool, repeat: int) -> dict:
    import psutil

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "repeat": repeat,
        "batchnb_commit": batchnb_commit(),
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "chunk_size": CHUNK_SIZE,
        "versions": {"python": platform.python_version(),
                     **{m: version(m) for m in ("polars", "pyarrow", "pandas", "batchnb")}},
    }  # fmt: skip


def scaling_case(engine: str, n: int) -> str:
    return f"batchnb-{engine}-warm" if n == N_WORKERS else f"batchnb-{engine}-warm-w{n}"


SECTION_CASES = {*SWEEP.values(), *(scaling_case(e, n) for e in ("dask", "ray") for n in SCALING)} - {
    "batchnb-threads", "batchnb-dask-warm", "batchnb-ray-warm"
}  # fmt: skip


def _ratio(r: dict) -> str:
    ratio = r.get("vs_" + BASELINE.replace("-", "_"))
    return "" if ratio is None else f"{ratio:.2f}"


def results_table(records: list[dict]) -> list[str]:
    lines = [f"| case | dataset | wall s | rows/s | peak RSS MiB | rows/s vs {BASELINE} | anomalies | start-up s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in records:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['dataset']} | failed | | {r['peak_rss_mib']:.0f} | | | |")
            continue
        flag = "" if r["output_ok"] else " (bad output)"
        startup = f"{r['startup_s']:.2f}" if "startup_s" in r else ""
        lines.append(
            f"| {r['case']} | {r['dataset']} | {r['wall_s']:.2f} | {r['rows_per_s'] / 1e6:.2f}M | "
            f"{r['peak_rss_mib']:.0f} | {_ratio(r)} | {r['anomalies']}{flag} | {startup} |"
        )
    return lines


def memory_table(found: dict) -> list[str]:
    """Peak RSS of every batchnb case run on both a 20M-row file and a ~10 GB file of one format."""
    lines = [
        "| case | format | peak RSS MiB, `parquet`/`csv` | peak RSS MiB, `-10g` | growth |",
        "|---|---|---:|---:|---:|",
    ]
    for (case, dataset), small in found.items():
        big = found.get((case, f"{dataset}-10g"))
        if "-" in dataset or not case.startswith("batchnb") or big is None:
            continue
        a, b = small["peak_rss_mib"], big["peak_rss_mib"]
        lines.append(f"| {case} | {dataset} | {a:.0f} | {b:.0f} | {100 * (b - a) / a:+.0f} % |")
    return lines if len(lines) > 2 else []


def planning_table(records: list[dict]) -> list[str]:
    """Time before the first chunk (CSV: the record index pass) as a share of the whole job."""
    lines = ["| case | dataset | inspect + plan s | sample + fit s | wall s | planning share |",
             "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in records:
        prep = r.get("prepare_s")
        if not prep or not r["case"].startswith("batchnb-threads") or r["case"] in SECTION_CASES:
            continue
        plan, fit = prep.get("inspect", 0) + prep.get("plan", 0), prep.get("sample", 0) + prep.get("fit", 0)
        lines.append(
            f"| {r['case']} | {r['dataset']} | {plan:.2f} | {fit:.2f} | {r['wall_s']:.2f} | "
            f"{100 * plan / r['wall_s']:.1f} % |"
        )
    return lines if len(lines) > 2 else []


STEPS = ("read", "score", "write", "checksum", "rename", "submit", "commit", "progress")


def sweep_table(found: dict) -> list[str]:
    """Chunk size against speed, with each step's milliseconds per chunk (worker steps run in parallel)."""
    lines = [f"| chunk size | chunks | wall s | rows/s vs {BASELINE} | peak RSS MiB | "
             + " | ".join(f"{s} ms" for s in STEPS) + " | per-chunk total ms |",
             "|---:|---:|---:|---:|---:|" + "---:|" * (len(STEPS) + 1)]  # fmt: skip
    for size, case in SWEEP.items():
        r = found.get((case, "parquet"))
        if r is None or "error" in r:
            continue
        ms = r.get("per_chunk_ms", {})
        lines.append(
            f"| {size:,} | {r.get('chunks', '')} | {r['wall_s']:.2f} | {_ratio(r)} | {r['peak_rss_mib']:.0f} | "
            + " | ".join(f"{ms.get(s, 0):.2f}" for s in STEPS)
            + f" | {sum(ms.get(s, 0) for s in STEPS):.2f} |"
        )
    return lines if len(lines) > 2 else []


def scaling_table(found: dict) -> list[str]:
    lines = ["| engine | workers | wall s | rows/s | rows/s per worker | speed-up vs 1 worker | peak RSS MiB |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for engine in ("dask", "ray"):
        one = found.get((scaling_case(engine, 1), "parquet"))
        for n in SCALING:
            r = found.get((scaling_case(engine, n), "parquet"))
            if r is None or "error" in r:
                continue
            speedup = f"{r['rows_per_s'] / one['rows_per_s']:.2f}" if one and "error" not in one else ""
            lines.append(
                f"| {engine} | {n} | {r['wall_s']:.2f} | {r['rows_per_s'] / 1e6:.2f}M | "
                f"{r['rows_per_s'] / n / 1e6:.2f}M | {speedup} | {r['peak_rss_mib']:.0f} |"
            )
    return lines if len(lines) > 2 else []


def markdown(env: dict, records: list[dict]) -> str:
    v = env["versions"]
    head = (
        f"Robust-z benchmark ({'quick' if env['quick'] else 'full'}, best of {env['repeat']}), {env['date']}, "
        f"{env['cores']} cores, {env['ram_gib']} GiB RAM; "
        + ", ".join(f"{k} {v[k]}" for k in v)
        + f" ({env['batchnb_commit']})"
    )
    found = {(r["case"], r["dataset"]): r for r in records}
    main = [r for r in records if r["case"] not in SECTION_CASES]
    sections = [
        ("", results_table([r for r in main if "-10g" not in r["dataset"]])),
        ("About 10 GB per file", results_table([r for r in main if "-10g" in r["dataset"]])),
        ("Peak memory against dataset size", memory_table(found)),
        ("Planning (for CSV, the record index) against the whole job", planning_table(records)),
        ("Chunk-size sweep: batchnb threads on the `parquet` dataset", sweep_table(found)),
        ("Scaling: warm local clusters on the `parquet` dataset", scaling_table(found)),
    ]
    out = [head]
    for title, lines in sections:
        if len(lines) > 2:
            out += ["", f"**{title}**", ""] if title else [""]
            out += lines
    return "\n".join(out) + "\n"


def best_of(trials: list[dict]) -> dict:
    """The fastest trial of a case, with every trial's wall time and the highest peak memory.

    Noise on a shared machine only ever adds time, so the minimum is the steadiest estimate;
    a failed trial fails the case.
    """
    failed = [t for t in trials if "error" in t]
    best = dict(failed[0] if failed else min(trials, key=lambda t: t["wall_s"]))
    best["walls_s"] = [t.get("wall_s") for t in trials]
    best["peak_rss_mib"] = max(t["peak_rss_mib"] for t in trials)
    return best


def run_all(runs: list[tuple[str, str]], sizes: dict[str, int], repeat: int, keep: bool) -> list[dict]:
    """Every (case, dataset) `repeat` times, round-robin, so that a slow spell of the machine is
    spread over all cases instead of landing on one."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE_DIR))  # same disk as the data
    trials: dict[tuple[str, str], list[dict]] = {}
    try:
        for trial in range(repeat):
            for dataset in dict.fromkeys(d for _, d in runs):
                src = ensure_dataset(dataset, sizes[dataset])
                warm_cache(src)
                for name in (n for n, d in runs if d == dataset):
                    print(f"[{trial + 1}/{repeat}] {name} on {dataset} ...", file=sys.stderr, flush=True)
                    trials.setdefault((name, dataset), []).append(
                        run_case(name, dataset, src, sizes[dataset], work / str(trial), keep)
                    )
    finally:
        if keep:
            print(f"outputs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return [best_of(t) for t in trials.values()]


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def select_runs(patterns: list[str] | None, datasets: list[str]) -> list[tuple[str, str]]:
    """(case, dataset) pairs in run order: dataset by dataset, cases in `CASES` order."""
    names = [n for n in CASES if patterns is None or any(fnmatch(n, p) for p in patterns)]
    return [(n, d) for d in datasets for n in names if d in CASES[n].datasets]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="every dataset at 100k-400k rows: seconds, for smoke tests"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where latest.json and latest.md go")
    parser.add_argument("--cases", help=f"comma-separated names or globs, e.g. 'batchnb-*,{BASELINE}' (default: all)")
    parser.add_argument(
        "--datasets", default=",".join(DATASETS), help=f"comma-separated, of {list(DATASETS)} (default: all)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="trials per case, round-robin; the fastest is reported")
    parser.add_argument("--keep-outputs", action="store_true", help="keep each case's output under the cache dir")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    patterns = args.cases.split(",") if args.cases else None
    unknown = [p for p in patterns or () if not any(fnmatch(n, p) for n in CASES)]
    if unknown:
        parser.error(f"--cases {unknown} match no case; cases are {list(CASES)}")
    args.runs = select_runs(patterns, [d for d in args.datasets.split(",") if d])
    if not args.runs and not args.child:
        parser.error("nothing to run: check --cases and --datasets")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return 0
    env = environment(args.quick, args.repeat)
    records = run_all(args.runs, SIZES[args.quick], args.repeat, args.keep_outputs)
    add_ratios(records)
    table = markdown(env, records)
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "latest.json", json.dumps({**env, "results": records}, indent=2) + "\n")
    write_atomic(args.out / "latest.md", table)
    print(table)
    return 1 if any("error" in r or not r.get("output_ok") for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
