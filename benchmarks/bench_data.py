"""The benchmark's datasets: generated once, cached, and the same rows whatever the batch size.

Two tables share their rows: the narrow one (`id` + `f0..f7` float64) and the wide one, which adds what a
real event table carries beside the features and the job does not use: an event time and a label string.
Each is written as Parquet (row groups of 1M rows) and as CSV; the "-10g" files are narrow and about 10 GB.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
CACHE_DIR = HERE / ".cache"

FEATURES = tuple(f"f{i}" for i in range(8))
KEEP = ("id",)  # what every case copies to its output beside the scores
OUTPUT_COLUMNS = (*KEEP, "anomaly_score", "is_anomaly")
WIDE_EXTRA = ("event_time", "label")  # in the wide table only; no case reads them
# Dataset name -> rows (full, quick). The format is the name up to its first "-". The "-10g" files are
# about 10 GB on disk: 142M rows of Parquet (~70 bytes a row), 63M rows of CSV (~159 bytes a row).
DATASETS = {
    "parquet": (20_000_000, 200_000),
    "parquet-wide": (20_000_000, 200_000),
    "csv": (20_000_000, 100_000),
    "csv-wide": (20_000_000, 100_000),
    "parquet-10g": (142_000_000, 400_000),
    "csv-10g": (63_000_000, 200_000),
}
SIZES = {quick: {name: rows[quick] for name, rows in DATASETS.items()} for quick in (False, True)}
ROW_GROUP_ROWS = 1_000_000  # Parquet row group size (smaller for small files: at least 20 groups a file)
CSV_BATCH = 1_000_000  # rows generated and written per step for CSV
# Bump a table's version when its generator changes, so old caches are not reused.
DATA_VERSION = {"narrow": 1, "wide": 1}
SEED = 0
LABEL_PARTS = (
    ("checkout", "search", "login", "payment", "refund", "signup", "browse", "support"),
    ("eu1", "eu2", "us1", "us2", "ap1", "sa1"),
)
EPOCH = np.datetime64("2025-01-01T00:00:00", "us")


def file_format(dataset: str) -> str:
    return dataset.split("-")[0]


def is_wide(dataset: str) -> bool:
    return dataset.endswith("-wide")


def make_batch(start: int, n: int, *, wide: bool = False) -> pl.DataFrame:
    """Rows [start, start + n) of the dataset; seeded by `start`, so any batch size gives the same rows
    whenever batches start at the same offsets (the CSV is the Parquet file's first rows).

    Features are normal with different centers and scales; 0.1% of rows get one feature pushed
    6-12 standard deviations away, the anomalies the detector should find. The wide table's extra
    columns come from a second generator, so its `id` and features are the narrow table's exactly.
    """
    rng = np.random.default_rng([SEED, start])
    centers, scales = np.linspace(-50, 50, len(FEATURES)), np.geomspace(0.1, 100, len(FEATURES))
    x = rng.normal(size=(n, len(FEATURES))) * scales + centers
    k = max(1, n // 1000)
    rows, cols = rng.choice(n, k, replace=False), rng.integers(0, len(FEATURES), k)
    x[rows, cols] += rng.choice([-1.0, 1.0], k) * rng.uniform(6, 12, k) * scales[cols]
    ids = np.arange(start, start + n, dtype=np.int64)
    frame = pl.DataFrame({"id": ids, **dict(zip(FEATURES, x.T, strict=True))})
    return with_wide_columns(frame, start) if wide else frame


def with_wide_columns(frame: pl.DataFrame, start: int) -> pl.DataFrame:
    """id, event_time, f0..f7, label: an event every ~250 ms and a label of 14-17 characters
    (activity-region-number: ~480k distinct values, so Parquet cannot reduce it to a tiny dictionary)."""
    n = frame.height
    rng = np.random.default_rng([SEED, start, 1])
    offsets = frame.get_column("id").to_numpy() * 250_000 + rng.integers(0, 250_000, n)
    event_time = EPOCH + offsets.astype("timedelta64[us]")
    activity, region = (np.asarray(parts)[rng.integers(0, len(parts), n)] for parts in LABEL_PARTS)
    label = pl.DataFrame({"a": activity, "r": region, "n": rng.integers(0, 10_000, n)}).select(
        pl.format("{}-{}-{}", "a", "r", pl.col("n").cast(pl.String).str.zfill(4))
    )
    return frame.select("id", pl.Series("event_time", event_time), *FEATURES, label.to_series().alias("label"))


def _batches(total: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(size, total - s)) for s in range(0, total, size)]


def _write_parquet(path: Path, rows: int, wide: bool) -> None:
    import pyarrow.parquet as pq

    size = min(ROW_GROUP_ROWS, -(-rows // 20))
    writer = None
    for start, n in _batches(rows, size):
        table = make_batch(start, n, wide=wide).to_arrow()
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=n)
    writer.close()


def _write_csv(path: Path, rows: int, wide: bool) -> None:
    with open(path, "wb") as f:
        for start, n in _batches(rows, CSV_BATCH):
            make_batch(start, n, wide=wide).write_csv(f, include_header=start == 0)


def dataset_path(dataset: str, rows: int, cache: Path = CACHE_DIR) -> Path:
    table = "wide" if is_wide(dataset) else "narrow"
    stem = f"robustz-v{DATA_VERSION[table]}" if table == "narrow" else f"robustz-wide-v{DATA_VERSION[table]}"
    return cache / f"{stem}-{rows}.{file_format(dataset)}"


def ensure_dataset(dataset: str, rows: int, cache: Path = CACHE_DIR) -> Path:
    """The cached file for (dataset, rows), generated batch by batch only when missing.

    It is written under a temporary name and renamed, so an interrupted run never leaves a
    truncated file that a later run would trust.
    """
    path = dataset_path(dataset, rows, cache)
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    t0 = time.perf_counter()
    try:
        write = _write_parquet if file_format(dataset) == "parquet" else _write_csv
        write(tmp, rows, is_wide(dataset))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    size = path.stat().st_size / 2**20
    print(f"generated {path} ({size:.0f} MiB) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return path


def warm_cache(path: Path) -> None:
    """Read the file once so the first case does not pay for a cold page cache that the others skip.

    The other data files leave the page cache first: the two ~10 GB files do not fit in it together here, and a
    case would read part of its file from disk, depending on what ran before it."""
    for other in CACHE_DIR.glob("robustz-*"):
        if other != path:
            drop_from_cache(other)
    with open(path, "rb") as f:
        while f.read(16 * 2**20):
            pass


def drop_from_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
