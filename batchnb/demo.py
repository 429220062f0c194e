"""A sample dataset with known anomalies, for `batchnb demo`, the notebooks and the tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl

__all__ = ["make_transactions"]


def make_transactions(path: str | Path, rows: int = 2_000_000, *, seed: int = 7, anomaly_rate: float = 0.001) -> Path:
    """Write card-transaction-like rows with `anomaly_rate` injected outliers (column `injected`).

    Written in batches of 500k rows, so memory stays flat whatever `rows` is; the suffix picks the format.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    batches = []
    for start in range(0, rows, 500_000):
        n = min(500_000, rows - start)
        amount = rng.lognormal(mean=3.5, sigma=0.8, size=n)
        latency = rng.gamma(shape=2.0, scale=40.0, size=n)
        items = rng.poisson(3, size=n).astype(np.int64) + 1
        distance = np.abs(rng.normal(5.0, 3.0, size=n))
        injected = rng.random(n) < anomaly_rate
        amount[injected] *= rng.uniform(20, 60, size=injected.sum())
        distance[injected] += rng.uniform(80, 200, size=injected.sum())
        batches.append(
            pl.DataFrame({
                "id": np.arange(start, start + n, dtype=np.int64),
                "amount": amount,
                "latency_ms": latency,
                "items": items,
                "distance_km": distance,
                "merchant": rng.choice(["grocery", "travel", "fuel", "online", "cafe"], size=n),
                "injected": injected,
            })
        )  # fmt: skip
    frame = pl.concat(batches)
    tmp = path.with_name(path.name + ".tmp")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame.write_csv(tmp)
    elif suffix in (".feather", ".arrow", ".ipc"):
        frame.write_ipc(tmp)
    else:
        frame.write_parquet(tmp, row_group_size=250_000)
    os.replace(tmp, path)
    return path
