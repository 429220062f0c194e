"""Isolation forest from scikit-learn, imported only when the detector is used."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from batchnb.detectors.base import feature, sample_values

__all__ = ["IsolationForest"]


def _matrix(frame: pl.DataFrame, columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Features with null, NaN and +-inf as NaN, and which rows had an infinite value."""
    x = frame.select([feature(c) for c in columns]).to_numpy().astype(np.float64, copy=True)
    infinite = np.isinf(x)
    x[infinite] = np.nan
    return x, np.asarray(infinite.any(axis=1))  # an array per row, whatever numpy's stubs say any() may return


@dataclass(frozen=True)
class IsolationForest:
    name: str = "isolation_forest"
    description: str = "scikit-learn IsolationForest (100 trees); flags the top 1% of the sample's scores"
    default_threshold: float | None = None
    default_contamination: float | None = 0.01

    def fit(self, sample: pl.DataFrame, columns: Sequence[str], *, seed: int) -> dict[str, Any]:
        from sklearn.ensemble import IsolationForest as SkIsolationForest

        medians = []
        for c in columns:
            v = sample_values(sample, c)
            medians.append(float(np.median(v)) if v.size else 0.0)
        medians_arr = np.asarray(medians)
        x, infinite = _matrix(sample, columns)
        # Rows with an infinite value are left out of the fit; a row with no usable value has nothing to fit.
        usable = ~np.isnan(x).all(axis=1) & ~infinite if x.size else np.zeros(0, dtype=bool)
        x = np.where(np.isnan(x), medians_arr, x)[usable]
        model = SkIsolationForest(n_estimators=100, random_state=seed, n_jobs=1)
        model.fit(x if len(x) else np.zeros((1, len(columns))))
        return {"model": model, "medians": medians_arr}

    def score(self, frame: pl.DataFrame, columns: Sequence[str], state: dict[str, Any]) -> pl.Series:
        x, infinite = _matrix(frame, columns)
        if x.shape[0] == 0:
            return pl.Series("anomaly_score", [], dtype=pl.Float64)
        missing = np.isnan(x).all(axis=1)
        filled = np.where(np.isnan(x), state["medians"], x)
        scores = -state["model"].score_samples(filled)
        scores[missing] = np.nan
        scores[infinite] = np.inf
        return pl.Series("anomaly_score", scores, dtype=pl.Float64).fill_nan(None)
