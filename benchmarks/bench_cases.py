"""The cases: batchnb on each engine, and the code a Polars, pandas, Dask or Ray user writes by hand.

Every case scores robust z on f0..f7 and writes `id` + `anomaly_score` + `is_anomaly` as snappy Parquet (batchnb's
codec), so that a ratio between two cases is the cost of what differs, never of the codec or of extra columns.
Every case fits on the rows batchnb samples, so every case must find the same anomalies: a free correctness check.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
from bench_data import FEATURES, KEEP, OUTPUT_COLUMNS, file_format

CHUNK_SIZE = 100_000  # batchnb's default
FIT_SAMPLE, SEED = 100_000, 0  # batchnb's defaults
MAD_SCALE, THRESHOLD = 1.4826, 3.5
CODEC = "snappy"  # batchnb's part codec, and so every baseline's
BASELINE = "polars-stream"  # the denominator of every ratio: plain Polars writing the same codec
HAND_LOOP = "hand-loop-2t"
HAND_PARTS = "hand-loop-parts"  # batchnb's parts by hand: the cost of a part per chunk, apart from batchnb's code

Stats = dict[str, tuple[float, float]]  # feature -> (median, 1.4826 * MAD)


# --- the workload, shared by the baselines ---------------------------------------------------------


def scan(src: Path, dataset: str) -> pl.LazyFrame:
    return pl.scan_parquet(src) if file_format(dataset) == "parquet" else pl.scan_csv(src)


def count_rows(src: Path, dataset: str) -> int:
    return scan(src, dataset).select(pl.len()).collect().item()


def read_sample(src: Path, dataset: str) -> pl.DataFrame:
    """The fit sample batchnb takes, read the cheapest way measured for each format.

    Parquet: one sliced scan per block of batchnb's row ranges (its stratified rule, seed 0; a single
    query over the concatenated slices loses the row-group pushdown). CSV: batchnb samples whole records
    at seeded byte offsets (no row numbers without a pass over the file), so the baselines call its sampler.
    """
    if file_format(dataset) == "parquet":
        from batchnb.sources.base import sample_starts

        lazy, blocks = scan(src, dataset).select(FEATURES), sample_starts(count_rows(src, dataset), FIT_SAMPLE, SEED)
        return pl.concat([lazy.slice(a, b - a).collect() for a, b in blocks])
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


def scored(frame: pl.LazyFrame | pl.DataFrame, stats: Stats) -> pl.LazyFrame | pl.DataFrame:
    """`id` + anomaly_score (max robust z over features) + is_anomaly: what batchnb writes with keep=["id"]."""
    score = pl.max_horizontal([(pl.col(c) - m).abs() / s for c, (m, s) in stats.items()]).alias("anomaly_score")
    return frame.select(*KEEP, score).with_columns((pl.col("anomaly_score") > THRESHOLD).alias("is_anomaly"))


def center_spread(src: Path, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    stats = fit_mad(src, dataset)
    center, spread = (np.array([stats[c][k] for c in FEATURES]) for k in (0, 1))
    return center, spread


def score_numpy(batch: dict, center: np.ndarray, spread: np.ndarray) -> dict:
    """The output columns of a dict of numpy columns (pandas and Ray Data baselines)."""
    score = (np.abs(np.column_stack([np.asarray(batch[c]) for c in FEATURES]) - center) / spread).max(axis=1)
    return {**{k: np.asarray(batch[k]) for k in KEEP}, "anomaly_score": score, "is_anomaly": score > THRESHOLD}


def score_pandas(df, center: np.ndarray, spread: np.ndarray):
    import pandas as pd

    return pd.DataFrame(score_numpy(df, center, spread))


# --- batchnb ----------------------------------------------------------------------------------------


def batchnb_case(
    src: Path, out: Path, dataset: str, *, engine: object, chunk_size: int = CHUNK_SIZE, progress: str | None = None
) -> dict:
    """The product: plan, fit, chunks on an engine, checksummed parts, sqlite checkpoints."""
    import batchnb as bn

    job = bn.BatchJob(
        str(src), str(out), detector="mad", columns=list(FEATURES), keep=list(KEEP), chunk_size=chunk_size,
        engine=engine,
    )  # fmt: skip
    result = job.run(progress=progress)
    if result.status != "succeeded":
        raise RuntimeError(f"batchnb job {result.status}: {result.errors[:1]}")
    return breakdown(out)


def breakdown(out: Path) -> dict:
    """Where a job's time went, from its own record: preparation (seconds), and per chunk (milliseconds)
    every step the worker timed (read, score, write, checksum, rename, ...) and the driver's (submit,
    commit, progress). Steps are taken as recorded, so a step added to the record shows up here too."""
    from batchnb.record.store import JobState

    with JobState.open(str(out)) as state:
        per_chunk = state.timings()
        driver, prepare = state.get("driver_s") or {}, state.get("prepare_s") or {}
    n = max(1, len(per_chunk))
    steps: dict[str, float] = {}
    for timings in per_chunk:
        for step, seconds in timings.items():
            steps[step] = steps.get(step, 0.0) + seconds
    return {
        "chunks": len(per_chunk),
        "prepare_s": prepare,
        "per_chunk_ms": {k: 1000 * v / n for k, v in {**steps, **driver}.items()},
    }


# --- by hand ----------------------------------------------------------------------------------------


def polars_stream_case(src: Path, out: Path, dataset: str, *, compression: str = CODEC) -> None:
    """What a Polars user writes first: one streaming scan -> score -> sink, no chunks, no checkpoints."""
    stats = fit_mad(src, dataset)
    out.mkdir(parents=True)
    scored(scan(src, dataset), stats).sink_parquet(out / "part-000000.parquet", compression=compression)


def by_row_group(src: Path, dataset: str, write: Callable[[int, int, pl.DataFrame], None]) -> None:
    """2 threads, a task per row group (1M rows): its rows scored by one query, then `write(group, first row,
    scores)`, in the order the pool takes them."""
    import pyarrow.parquet as pq

    stats, meta = fit_mad(src, dataset), pq.ParquetFile(src).metadata
    size = meta.row_group(0).num_rows

    def one(i: int) -> None:
        write(i, i * size, scored(pl.scan_parquet(src).slice(i * size, size), stats).collect())

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(one, range(-(-meta.num_rows // size))))


def hand_loop_case(src: Path, out: Path, dataset: str) -> None:
    """The simple hand-written loop: 2 threads, one row-group-sized slice (1M rows) per task, a snappy
    part each, no checkpoints, no checksums, no progress."""
    out.mkdir(parents=True)

    def write(i: int, first: int, scores: pl.DataFrame) -> None:
        scores.write_parquet(out / f"part-{i:06d}.parquet", compression=CODEC)

    by_row_group(src, dataset, write)


def hand_parts_case(src: Path, out: Path, dataset: str) -> None:
    """batchnb's part protocol by hand, nothing else: the tasks of `hand_loop_case`, then a part per 100k-row
    chunk, the row group's parts written by one partitioned sink to temporary files, each hashed (xxh3-128) and
    renamed. No record, no progress, no retries: what the per-chunk parts themselves cost, apart from batchnb's
    code."""
    import xxhash

    tmp = out / "_tmp"
    tmp.mkdir(parents=True)

    def write(i: int, first: int, scores: pl.DataFrame) -> None:
        names = [f"part-{first + start:012d}.parquet" for start in range(0, scores.height, CHUNK_SIZE)]
        temps = [tmp / name for name in names]  # named by their first row: unique, in order
        target = pl.PartitionBy(
            tmp, file_path_provider=lambda f: temps[f.index_in_partition], max_rows_per_file=CHUNK_SIZE
        )
        scores.lazy().sink_parquet(target, compression=CODEC)
        for path in temps:
            xxhash.xxh3_128(path.read_bytes()).hexdigest()
            path.rename(out / path.name)

    by_row_group(src, dataset, write)
    tmp.rmdir()


def pandas_loop_case(src: Path, out: Path, dataset: str) -> None:
    """The classic pandas loop: `iter_batches` of 100k rows (or `read_csv` chunks), numpy scores, a part each."""
    import pandas as pd
    import pyarrow.parquet as pq

    center, spread = center_spread(src, dataset)
    columns = [*KEEP, *FEATURES]
    if file_format(dataset) == "parquet":
        batches = pq.ParquetFile(src).iter_batches(batch_size=CHUNK_SIZE, columns=columns)
        frames = (b.to_pandas() for b in batches)
    else:
        frames = pd.read_csv(src, usecols=columns, chunksize=CHUNK_SIZE)
    out.mkdir(parents=True)
    for i, df in enumerate(frames):
        score_pandas(df, center, spread).to_parquet(out / f"part-{i:06d}.parquet", index=False, compression=CODEC)


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


def first_job(engine: object) -> None:
    """What a kernel's first job leaves behind for the next: a batchnb job of 200k rows on `engine`, so that its
    workers are started and have imported batchnb, Polars and pyarrow."""
    import tempfile

    import batchnb as bn

    rng = np.random.default_rng(1)
    frame = pl.DataFrame({"id": np.arange(200_000), **{c: rng.normal(size=200_000) for c in FEATURES}})
    with tempfile.TemporaryDirectory(prefix="bench-first-job-") as tmp:
        frame.write_parquet(Path(tmp, "in.parquet"), row_group_size=100_000)
        job = bn.BatchJob(str(Path(tmp, "in.parquet")), str(Path(tmp, "out")), detector="mad", columns=list(FEATURES),
                          keep=list(KEEP), engine=engine)  # fmt: skip
        if job.run(progress=None).status != "succeeded":
            raise RuntimeError("the warm-up job failed")


def warm_dask(n_workers: int = N_WORKERS) -> Callable[[], None]:
    """setup: a LocalCluster that the case joins by address (`BENCH_DASK_ADDRESS`), after a first job on it."""
    from batchnb.engines import DaskEngine

    cluster = local_dask_cluster(n_workers)
    os.environ["BENCH_DASK_ADDRESS"] = cluster.scheduler_address
    first_job(DaskEngine(cluster.scheduler_address))
    return cluster.close


def warm_ray(n_workers: int = N_WORKERS) -> Callable[[], None]:
    """setup: the local Ray that every later job of the process reuses, after a first job on it."""
    import ray

    from batchnb.engines import RayEngine

    local_ray(n_workers)
    first_job(RayEngine())
    return ray.shutdown


def warm_processes() -> Callable[[], None]:
    """setup: the worker pool a first job in this process left warm (`ProcessesEngine` keeps it)."""
    from batchnb.engines.processes import ProcessesEngine

    first_job("processes")
    return ProcessesEngine.shutdown


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


def dask_dataframe_case(src: Path, out: Path, dataset: str, *, warm: bool = False) -> dict:
    """dask.dataframe: read_parquet (one partition per row group) or read_csv -> map_partitions -> to_parquet."""
    import dask.dataframe as dd
    from distributed import Client

    t0 = time.perf_counter()
    cluster = None if warm else local_dask_cluster()
    client = Client(os.environ["BENCH_DASK_ADDRESS"] if warm else cluster)
    startup = time.perf_counter() - t0
    center, spread = center_spread(src, dataset)
    columns = [*KEEP, *FEATURES]
    if file_format(dataset) == "parquet":
        frame = dd.read_parquet(src, columns=columns, split_row_groups=True)
    else:
        frame = dd.read_csv(src, usecols=columns, blocksize="64MiB")
    meta = {"id": "int64", "anomaly_score": "float64", "is_anomaly": "bool"}
    scores = frame.map_partitions(score_pandas, center, spread, meta=meta)
    scores.to_parquet(out, write_index=False, compression=CODEC)
    client.close()
    if cluster is not None:
        cluster.close()
    return {} if warm else {"startup_s": startup}


def ray_data_case(src: Path, out: Path, dataset: str, *, warm: bool = False) -> dict:
    """Ray Data: read_parquet -> map_batches (numpy batches: faster here than pandas) -> write_parquet."""
    import ray

    t0 = time.perf_counter()
    if not warm:
        local_ray()
    startup = time.perf_counter() - t0
    center, spread = center_spread(src, dataset)
    columns = [*KEEP, *FEATURES]
    if file_format(dataset) == "parquet":
        data = ray.data.read_parquet(str(src), columns=columns)
    else:
        from pyarrow import csv

        data = ray.data.read_csv(str(src), convert_options=csv.ConvertOptions(include_columns=columns))
    scores = data.map_batches(score_numpy, fn_args=(center, spread), batch_format="numpy")
    scores.write_parquet(str(out), compression=CODEC)  # the rest of the keywords go to pyarrow
    if not warm:
        ray.shutdown()
    return {} if warm else {"startup_s": startup}


# --- the registry -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    run: Callable[[Path, Path, str], dict | None]  # may return extra figures, e.g. {"startup_s": 3.1}
    datasets: tuple[str, ...]
    preload: tuple[str, ...] = ()  # imported before the clock starts: import time is not the workload
    setup: Callable[[], Callable[[], None]] | None = None  # before the clock (timed as startup_s); returns teardown
    optional: bool = False  # informative only: runs when --cases names it, not by default

    @property
    def needs_cluster(self) -> bool:
        """Starts Dask or Ray: seconds of start-up that a --quick run without --cases skips."""
        return any(m.split(".")[0] in ("distributed", "dask", "ray") for m in self.preload)


P20, PW, C20, CW, P10G, C10G = "parquet", "parquet-wide", "csv", "csv-wide", "parquet-10g", "csv-10g"
ALL = (P20, PW, C20, CW, P10G, C10G)
TABLES = (P20, PW, C20, CW)  # the 20M-row files, narrow and wide
SWEEP = {1_000: "batchnb-threads-chunk1k", 10_000: "batchnb-threads-chunk10k", 100_000: "batchnb-threads",
         1_000_000: "batchnb-threads-chunk1m"}  # fmt: skip
SCALING = (1, 2, 4)  # local workers of the warm Dask and Ray scaling cases
BN = ("batchnb", "batchnb.job")  # the package loads its public names on first use: the job's are loaded here

CASES: dict[str, Case] = {
    "batchnb-sequential": Case(partial(batchnb_case, engine="sequential"), (P20, C20), BN),
    "batchnb-threads": Case(partial(batchnb_case, engine="threads"), ALL, BN),
    "batchnb-processes": Case(partial(batchnb_case, engine="processes"), ALL, BN),
    # A kernel's second job on processes: the pool the first one left (no spawn, no imports).
    "batchnb-processes-warm": Case(partial(batchnb_case, engine="processes"), TABLES, BN, warm_processes),
    # The same job with the terminal progress bar on: monitoring must cost (almost) nothing.
    "batchnb-threads-progress": Case(partial(batchnb_case, engine="threads", progress="text"), (P20,), (*BN, "tqdm")),
    # The chunk-size sweep (100k is the default case above): what each chunk costs, step by step. 1M rows is
    # one chunk per row group, as the hand-written loop does, so it runs on the wide table too.
    **{
        name: Case(
            partial(batchnb_case, engine="threads", chunk_size=size), (P20, PW) if size > CHUNK_SIZE else (P20,), BN
        )
        for size, name in SWEEP.items()
        if size != CHUNK_SIZE
    },
    BASELINE: Case(polars_stream_case, ALL),
    "polars-stream-zstd": Case(partial(polars_stream_case, compression="zstd"), TABLES),  # Polars' default: info
    HAND_LOOP: Case(hand_loop_case, (P20, PW)),
    HAND_PARTS: Case(hand_parts_case, (P20, PW)),
    "pandas-loop": Case(pandas_loop_case, TABLES, ("pandas", "pyarrow.parquet")),
    "batchnb-dask": Case(batchnb_dask_case, (P20, C20, P10G), (*BN, "distributed")),
    "batchnb-dask-warm": Case(partial(batchnb_dask_case, warm=True), (P20, PW, C20), (*BN, "distributed"), warm_dask),
    "dask-dataframe": Case(dask_dataframe_case, (P20, C20), ("dask.dataframe", "distributed")),
    "dask-dataframe-warm": Case(
        partial(dask_dataframe_case, warm=True), (P20, C20), ("dask.dataframe", "distributed"), warm_dask, True
    ),
    "batchnb-ray": Case(batchnb_ray_case, (P20, C20, P10G), (*BN, "ray")),
    "batchnb-ray-warm": Case(partial(batchnb_ray_case, warm=True), (P20, PW, C20), (*BN, "ray"), warm_ray),
    "ray-data": Case(ray_data_case, (P20, C20), ("ray", "ray.data")),
    "ray-data-warm": Case(partial(ray_data_case, warm=True), (P20, C20), ("ray", "ray.data"), warm_ray, True),
    # Scaling: the same warm job on 1, 2 and 4 local workers (2 cores here: 4 shows oversubscription).
    **{
        f"batchnb-{engine}-warm-w{n}": Case(partial(case, warm=True), (P20,), (*BN, module), partial(setup, n))
        for engine, case, module, setup in (
            ("dask", batchnb_dask_case, "distributed", warm_dask),
            ("ray", batchnb_ray_case, "ray", warm_ray),
        )
        for n in SCALING
        if n != N_WORKERS  # 2 workers: the -warm cases above
    },
}


def scaling_case(engine: str, n: int) -> str:
    return f"batchnb-{engine}-warm" if n == N_WORKERS else f"batchnb-{engine}-warm-w{n}"


def check_output(out: Path, rows: int) -> tuple[int, int, bool]:
    """(rows, anomalies, as expected): every case writes exactly the input's rows and the same columns."""
    output = pl.scan_parquet(str(out / "*.parquet"))
    n, anomalies = output.select(pl.len(), pl.col("is_anomaly").sum()).collect().row(0)
    return n, anomalies, tuple(output.collect_schema().names()) == OUTPUT_COLUMNS and n == rows
