"""Per-feature distance detectors: z-score, median absolute deviation, interquartile range."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from batchnb.detectors.base import INF, feature, sample_values

__all__ = ["IQR", "MAD", "ZScore"]

# Per feature: [center, spread] for zscore/mad, [q1, q3] for iqr; None when the sample had no values.
# Lists of floats, so the job state stores them as JSON and gives them back equal.
Stats = dict[str, list[float] | None]


def _distance(column: str, center: float, spread: float) -> pl.Expr:
    """|x - center| / spread, which is +inf for x = +-inf; a feature without spread contributes 0 (or +inf)."""
    x = feature(column)
    if not np.isfinite(spread) or spread == 0:
        return _flat(x)
    return (x - center).abs() / spread


def _flat(x: pl.Expr) -> pl.Expr:
    return pl.when(x.is_infinite()).then(pl.lit(INF)).when(x.is_null()).then(None).otherwise(pl.lit(0.0))


def _unfitted(column: str) -> pl.Expr:
    """A feature with no finite value in the sample: only an infinite value scores (+inf), others are unusable."""
    x = feature(column)
    return pl.when(x.is_infinite()).then(pl.lit(INF)).otherwise(pl.lit(None, dtype=pl.Float64))


def _center_spread_expr(columns: Sequence[str], state: Stats) -> pl.Expr:
    """max over features of |x - center| / spread: z-score and MAD differ only in their fit."""
    return _max_over_features(
        [_distance(c, *fit) if (fit := state.get(c)) is not None else _unfitted(c) for c in columns]
    )


def _max_over_features(exprs: list[pl.Expr]) -> pl.Expr:
    if not exprs:
        return pl.lit(None, dtype=pl.Float64).alias("anomaly_score")
    return pl.max_horizontal(exprs).alias("anomaly_score")


def _score(frame: pl.DataFrame, expr: pl.Expr) -> pl.Series:
    scores = frame.select(expr).to_series()
    if scores.len() != frame.height:  # no usable feature: a bare literal does not broadcast on its own
        scores = pl.Series("anomaly_score", [None] * frame.height, dtype=pl.Float64)
    return scores


@dataclass(frozen=True)
class ZScore:
    name: str = "zscore"
    description: str = "max over features of |x - mean| / std (ddof=1); flags score > 3"
    default_threshold: float | None = 3.0
    default_contamination: float | None = None

    def fit(self, sample: pl.DataFrame, columns: Sequence[str], *, seed: int) -> Stats:
        stats: Stats = {}
        for c in columns:
            v = sample_values(sample, c)
            stats[c] = [float(np.mean(v)), float(np.std(v, ddof=1)) if v.size > 1 else 0.0] if v.size else None
        return stats

    def score(self, frame: pl.DataFrame, columns: Sequence[str], state: Stats) -> pl.Series:
        return _score(frame, self.score_expr(columns, state))

    def score_expr(self, columns: Sequence[str], state: Stats) -> pl.Expr:
        return _center_spread_expr(columns, state)


@dataclass(frozen=True)
class MAD:
    name: str = "mad"
    description: str = "max over features of |x - median| / (1.4826 * MAD); flags score > 3.5"
    default_threshold: float | None = 3.5
    default_contamination: float | None = None

    def fit(self, sample: pl.DataFrame, columns: Sequence[str], *, seed: int) -> Stats:
        stats: Stats = {}
        for c in columns:
            v = sample_values(sample, c)
            if v.size == 0:
                stats[c] = None
                continue
            median = float(np.median(v))
            stats[c] = [median, 1.4826 * float(np.median(np.abs(v - median)))]
        return stats

    def score(self, frame: pl.DataFrame, columns: Sequence[str], state: Stats) -> pl.Series:
        return _score(frame, self.score_expr(columns, state))

    def score_expr(self, columns: Sequence[str], state: Stats) -> pl.Expr:
        return _center_spread_expr(columns, state)


@dataclass(frozen=True)
class IQR:
    name: str = "iqr"
    description: str = "max over features of distance outside [q1, q3] / (q3 - q1); flags score > 1.5"
    default_threshold: float | None = 1.5
    default_contamination: float | None = None

    def fit(self, sample: pl.DataFrame, columns: Sequence[str], *, seed: int) -> Stats:
        stats: Stats = {}
        for c in columns:
            v = sample_values(sample, c)
            stats[c] = [float(np.quantile(v, 0.25)), float(np.quantile(v, 0.75))] if v.size else None
        return stats

    def score(self, frame: pl.DataFrame, columns: Sequence[str], state: Stats) -> pl.Series:
        return _score(frame, self.score_expr(columns, state))

    def score_expr(self, columns: Sequence[str], state: Stats) -> pl.Expr:
        exprs = []
        for c in columns:
            quartiles = state.get(c)
            if quartiles is None:
                exprs.append(_unfitted(c))
                continue
            q1, q3 = quartiles
            x = feature(c)
            if not q3 > q1:
                exprs.append(_flat(x))
                continue
            outside = pl.max_horizontal(q1 - x, x - q3, pl.lit(0.0)) / (q3 - q1)  # +inf for x = +-inf
            exprs.append(pl.when(x.is_null()).then(None).otherwise(outside))
        return _max_over_features(exprs)
