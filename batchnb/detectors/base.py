"""The Detector protocol and the rule that turns scores into flags."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import polars as pl

__all__ = ["INF", "Detector", "FittedDetector", "feature", "flag_cutoff", "sample_values"]

INF = float("inf")


@runtime_checkable
class Detector(Protocol):
    """Fit on a sample on the driver, score chunks on the workers.

    ``fit`` returns small state; ``score`` must be a pure function of one row and that state, so
    results do not depend on chunking or engine. Make the state JSON data (dicts with string keys,
    lists, numbers, strings, None): the job state then keeps it and a resumed job scores with it.
    Any other state (tuples included) is kept only in memory for the run and fitted again from the
    same sample when the job resumes, since a job state never holds a pickle. Engines that cross a
    process boundary ship the state to workers with cloudpickle, so it must pickle.
    """

    # Read-only members, so that a frozen dataclass is a Detector.
    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def default_threshold(self) -> float | None: ...

    @property
    def default_contamination(self) -> float | None: ...

    def fit(self, sample: pl.DataFrame, columns: Sequence[str], *, seed: int) -> Any: ...

    def score(self, frame: pl.DataFrame, columns: Sequence[str], state: Any) -> pl.Series: ...


def feature(column: str) -> pl.Expr:
    """A feature as float64 with NaN turned into null, so both are skipped alike; +-inf stay (they score +inf)."""
    return pl.col(column).cast(pl.Float64).fill_nan(None)


def sample_values(sample: pl.DataFrame, column: str) -> np.ndarray:
    """Finite values of one feature in the fit sample: null and NaN are skipped, and one +-inf would make the
    mean and std inf and NaN and switch the feature off."""
    values = sample.get_column(column).cast(pl.Float64).drop_nulls().to_numpy()
    return values[np.isfinite(values)]


def flag_cutoff(
    sample_scores: np.ndarray,
    *,
    threshold: float | None,
    contamination: float | None,
    detector: Detector | None,
) -> float:
    """Scores strictly above the cutoff are anomalies (DESIGN.md section 3). A contamination cutoff is the
    quantile of the sample's finite scores: rows scored +inf (an infinite feature) are flagged anyway, and
    counting them would make the quantile inf and flag nothing else."""
    if threshold is not None:
        return float(threshold)
    if contamination is None and detector is not None and detector.default_threshold is not None:
        return float(detector.default_threshold)
    if contamination is None:
        contamination = detector.default_contamination if detector is not None else None
    if contamination is None:
        contamination = 0.01
    scores = sample_scores[np.isfinite(sample_scores)]
    if scores.size == 0:
        return float("inf")
    return float(np.quantile(scores, 1.0 - float(contamination)))


@dataclass(frozen=True, kw_only=True)
class FittedDetector:
    """What a worker needs to score a chunk: the detector, its fitted state and the cutoff."""

    detector: Detector
    columns: tuple[str, ...]
    state: Any
    cutoff: float

    def apply(self, frame: pl.DataFrame, keep: Sequence[str]) -> pl.DataFrame:
        scores = self.detector.score(frame, self.columns, self.state).cast(pl.Float64).alias("anomaly_score")
        out = frame.select(keep).with_columns(scores)
        return out.with_columns(self._flag())

    def apply_lazy(self, frame: pl.DataFrame | pl.LazyFrame, keep: Sequence[str]) -> pl.LazyFrame | None:
        """The same output as one lazy query, for detectors that score with a Polars expression: Polars
        then selects, scores and flags in one optimized pass, without the intermediate frames of `apply`."""
        scores = self._scores(keep)
        if scores is None:
            return None
        return frame.lazy().select(*keep, scores).with_columns(self._flag())

    def scores_in_query(self, keep: Sequence[str]) -> bool:
        """Whether `apply_lazy` gives a query, known before any data is read."""
        return self._scores(keep) is not None

    def _scores(self, keep: Sequence[str]) -> pl.Expr | None:
        score_expr = getattr(self.detector, "score_expr", None)
        if score_expr is None or not keep:
            return None
        expr = score_expr(self.columns, self.state)
        if expr.meta.is_literal(allow_aliasing=True):
            return None  # no usable feature: the eager path broadcasts the null score
        return expr.cast(pl.Float64).alias("anomaly_score")

    def _flag(self) -> pl.Expr:
        score = pl.col("anomaly_score")
        return ((score > self.cutoff) | (score == INF)).fill_null(False).alias("is_anomaly")
