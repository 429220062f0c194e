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
SIZES = {False: {"parquet": 20_000_000, "csv": 5_000_000}, True: {"parquet": 200_000, "csv": 100_000}}
ROW_GROUPS = 20  # Parquet row groups per file (1M rows each at full size)
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

    size = -(-rows // ROW_GROUPS)
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
    path = cache / f"robustz-v{DATA_VERSION}-{rows}.{dataset}"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    t0 = time.perf_counter()
    try:
        (_write_parquet if dataset == "parquet" else _write_csv)(tmp, rows)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    print(
        f"generated {path} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f}s", file=sys.stderr
    )
    return path


def warm_cache(path: Path) -> None:
    """Read the file once so the first case does not pay for a cold page cache that the others skip."""
    with open(path, "rb") as f:
        while f.read(16 * 2**20):
            pass


# --- the workload, shared by the baselines ---------------------------------------------------------


def _scan(src: Path, dataset: str) -> pl.LazyFrame:
    return pl.scan_parquet(src) if dataset == "parquet" else pl.scan_csv(src)


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
    """The fit sample, read the cheapest way measured for each format.

    Parquet: one sliced scan per block (0.5 s for 20M rows; a single query over the concatenated
    slices loses the row-group pushdown and takes 3.5 s). CSV: one pass with a row-index filter
    (about 1.5 s for 5M rows; 32 sliced scans re-read the file from the top and take 4.5 s).
    """
    scan, blocks = _scan(src, dataset).select(FEATURES), sample_blocks(count_rows(src, dataset))
    if dataset == "parquet":
        return pl.concat([scan.slice(a, b - a).collect() for a, b in blocks])
    in_sample = pl.any_horizontal([pl.col("_row").is_between(a, b - 1) for a, b in blocks])
    return scan.with_row_index("_row").filter(in_sample).drop("_row").collect()


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
) -> None:
    """The product: plan, fit, chunks on an engine, checksummed parts, sqlite checkpoints."""
    import batchnb as bn

    job = bn.BatchJob(str(src), str(out), detector="mad", columns=list(FEATURES), chunk_size=chunk_size, engine=engine)
    result = job.run(progress=progress)
    if result.status != "succeeded":
        raise RuntimeError(f"batchnb job {result.status}: {result.errors[:1]}")


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
    if dataset == "parquet":
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


def local_dask_cluster():
    from distributed import LocalCluster

    return LocalCluster(n_workers=N_WORKERS, threads_per_worker=1, host="127.0.0.1", dashboard_address=None)


def local_ray() -> None:
    import ray

    ray.init(  # "local": a new Ray even if a `ray start` cluster on this machine left its address behind
        address="local", num_cpus=N_WORKERS, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False
    )


def warm_dask() -> Callable[[], None]:
    """setup: a LocalCluster that the case joins by address (`BENCH_DASK_ADDRESS`)."""
    cluster = local_dask_cluster()
    os.environ["BENCH_DASK_ADDRESS"] = cluster.scheduler_address
    return cluster.close


def warm_ray() -> Callable[[], None]:
    """setup: the local Ray that every later job of the process reuses."""
    import ray

    local_ray()
    return ray.shutdown


def batchnb_dask_case(src: Path, out: Path, dataset: str, *, warm: bool = False) -> None:
    from batchnb.engines import DaskEngine

    address = os.environ["BENCH_DASK_ADDRESS"] if warm else None
    engine = DaskEngine(address) if warm else DaskEngine(n_workers=N_WORKERS, threads_per_worker=1)
    batchnb_case(src, out, dataset, engine=engine)


def batchnb_ray_case(src: Path, out: Path, dataset: str, *, warm: bool = False) -> None:
    from batchnb.engines import RayEngine

    batchnb_case(src, out, dataset, engine=RayEngine() if warm else RayEngine(num_cpus=N_WORKERS))
    if not warm:
        RayEngine.shutdown()  # cold: the process pays for stopping Ray too, as the Ray Data case does


def _score_pandas(df, center: np.ndarray, spread: np.ndarray):
    score = (np.abs(df[list(FEATURES)].to_numpy() - center) / spread).max(axis=1)
    return df.assign(anomaly_score=score, is_anomaly=score > THRESHOLD)


def _center_spread(src: Path, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    stats = fit_mad(src, dataset)
    return tuple(np.array([stats[c][k] for c in FEATURES]) for k in (0, 1))


def dask_dataframe_case(src: Path, out: Path, dataset: str, *, warm: bool = False) -> dict:
    """dask.dataframe: read_parquet (one partition per row group) -> map_partitions -> to_parquet."""
    import dask.dataframe as dd
    from distributed import Client

    t0 = time.perf_counter()
    cluster = None if warm else local_dask_cluster()
    client = Client(os.environ["BENCH_DASK_ADDRESS"] if warm else cluster)
    startup = time.perf_counter() - t0
    center, spread = _center_spread(src, dataset)
    frame = dd.read_parquet(src, split_row_groups=True)
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
    data = ray.data.read_parquet(str(src))
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


CASES: dict[str, Case] = {
    "batchnb-sequential": Case(partial(batchnb_case, engine="sequential"), ("parquet",), ("batchnb",)),
    "batchnb-threads": Case(partial(batchnb_case, engine="threads"), ("parquet", "csv"), ("batchnb",)),
    "batchnb-processes": Case(partial(batchnb_case, engine="processes"), ("parquet",), ("batchnb",)),
    # The same job with the terminal progress bar on: monitoring must cost (almost) nothing.
    "batchnb-threads-progress": Case(
        partial(batchnb_case, engine="threads", progress="text"), ("parquet",), ("batchnb", "tqdm")
    ),
    # One chunk per 1M-row row group: shows what the default chunk size costs on this file.
    "batchnb-threads-chunk1m": Case(
        partial(batchnb_case, engine="threads", chunk_size=1_000_000), ("parquet",), ("batchnb",)
    ),
    BASELINE: Case(polars_stream_case, ("parquet", "csv")),
    "polars-stream-snappy": Case(partial(polars_stream_case, compression="snappy"), ("parquet", "csv")),
    "polars-slices-2t": Case(polars_slices_case, ("parquet",)),
    "pandas-chunks": Case(pandas_chunks_case, ("parquet", "csv"), ("pandas", "pyarrow.parquet")),
    "batchnb-dask": Case(batchnb_dask_case, ("parquet",), ("batchnb", "distributed")),
    "batchnb-dask-warm": Case(
        partial(batchnb_dask_case, warm=True), ("parquet",), ("batchnb", "distributed"), warm_dask
    ),
    "dask-dataframe": Case(dask_dataframe_case, ("parquet",), ("dask.dataframe", "distributed")),
    "dask-dataframe-warm": Case(
        partial(dask_dataframe_case, warm=True), ("parquet",), ("dask.dataframe", "distributed"), warm_dask
    ),
    "batchnb-ray": Case(batchnb_ray_case, ("parquet",), ("batchnb", "ray")),
    "batchnb-ray-warm": Case(partial(batchnb_ray_case, warm=True), ("parquet",), ("batchnb", "ray"), warm_ray),
    "ray-data": Case(ray_data_case, ("parquet",), ("ray", "ray.data")),
    "ray-data-warm": Case(partial(ray_data_case, warm=True), ("parquet",), ("ray", "ray.data"), warm_ray),
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


def markdown(env: dict, records: list[dict]) -> str:
    v = env["versions"]
    head = (
        f"Robust-z benchmark ({'quick' if env['quick'] else 'full'}, best of {env['repeat']}), {env['date']}, "
        f"{env['cores']} cores, {env['ram_gib']} GiB RAM; "
        + ", ".join(f"{k} {v[k]}" for k in v)
        + f" ({env['batchnb_commit']})"
    )
    lines = [head, "", f"| case | dataset | wall s | rows/s | peak RSS MiB | rows/s vs {BASELINE} | anomalies | start-up s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in records:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['dataset']} | failed | | {r['peak_rss_mib']:.0f} | | | |")
            continue
        ratio = r.get("vs_" + BASELINE.replace("-", "_"))
        flag = "" if r["output_ok"] else " (bad output)"
        startup = f"{r['startup_s']:.2f}" if "startup_s" in r else ""
        lines.append(
            f"| {r['case']} | {r['dataset']} | {r['wall_s']:.2f} | {r['rows_per_s'] / 1e6:.2f}M | "
            f"{r['peak_rss_mib']:.0f} | {'' if ratio is None else f'{ratio:.2f}'} | {r['anomalies']}{flag} | "
            f"{startup} |"
        )
    return "\n".join(lines) + "\n"


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
        "--quick", action="store_true", help="200k-row Parquet and 100k-row CSV: seconds, for smoke tests"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where latest.json and latest.md go")
    parser.add_argument("--cases", help=f"comma-separated names or globs, e.g. 'batchnb-*,{BASELINE}' (default: all)")
    parser.add_argument("--datasets", default="parquet,csv", help="comma-separated: parquet, csv")
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
