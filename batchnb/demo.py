"""A sample dataset with known anomalies, for `batchnb demo`, the notebooks and the tests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

__all__ = ["DEMO_COLUMNS", "DEMO_CONTAMINATION", "Hits", "injected_hits", "make_transactions"]

DEMO_COLUMNS = ["amount", "latency_ms", "items", "distance_km"]
# The share of rows the demo flags: the injected rate. Amounts are log-normal, so a fixed robust-z cutoff
# (mad's 3.5) flags the ordinary big spenders of the long tail too: 7.7 % of the rows.
DEMO_CONTAMINATION = 0.001


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


@dataclass(frozen=True)
class Hits:
    """How the flags of a job over `make_transactions` data compare with the injected truth."""

    rows: int
    injected: int
    flagged: int
    found: int  # flagged and injected

    @property
    def precision(self) -> float:
        return self.found / self.flagged if self.flagged else 0.0

    @property
    def recall(self) -> float:
        return self.found / self.injected if self.injected else 0.0

    def __str__(self) -> str:
        return (
            f"flagged {self.flagged:,} of {self.rows:,} rows ({self.flagged / max(1, self.rows):.2%}); "
            f"{self.found:,} of the {self.injected:,} injected anomalies: "
            f"precision {self.precision:.1%}, recall {self.recall:.1%}"
        )


def injected_hits(scores: pl.LazyFrame) -> Hits | None:
    """Precision and recall of `is_anomaly` against the `injected` column; None when the output did not keep it."""
    if "injected" not in scores.collect_schema().names():
        return None
    row = (
        scores.select(
            pl.len().alias("rows"),
            pl.col("injected").sum().alias("injected"),
            pl.col("is_anomaly").sum().alias("flagged"),
            (pl.col("injected") & pl.col("is_anomaly")).sum().alias("found"),
        )
        .collect()
        .row(0, named=True)
    )
    return Hits(**{k: int(v) for k, v in row.items()})
