"""+inf and -inf (DESIGN.md section 3): left out of every fit, and a row holding one scores +inf and is an
anomaly under every detector; nulls and NaN are skipped per feature as before. Checked against numpy and
scikit-learn, on the eager (CSV parts) and the lazy (Parquet parts) scoring paths."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from conftest import run_job

from batchnb.detectors import get

N = 1_500
INF_ROWS = {5: np.inf, 17: -np.inf, 1_203: np.inf}
NAN_ROW, NULL_ROW, BOTH_MISSING_ROW = 3, 9, 1_100
THRESHOLDS = {"zscore": 3.0, "mad": 3.5, "iqr": 1.5}
DETECTORS = ("zscore", "mad", "iqr", "isolation_forest")


def make() -> pl.DataFrame:
    rng = np.random.default_rng(7)
    x = rng.normal(10.0, 2.0, N)
    x[[40, 900]] = [30.0, -12.0]  # finite outliers, flagged by the usual rule
    for row, value in INF_ROWS.items():
        x[row] = value
    y = rng.normal(0.0, 1.0, N)
    y[NAN_ROW] = np.nan
    x[BOTH_MISSING_ROW] = np.nan
    y_null = np.zeros(N, dtype=bool)
    y_null[[NULL_ROW, BOTH_MISSING_ROW]] = True
    frame = pl.DataFrame({"id": np.arange(N), "x": x, "y": y})
    return frame.with_columns(pl.when(pl.Series(y_null)).then(None).otherwise(pl.col("y")).alias("y"))


def as_matrix(frame: pl.DataFrame) -> np.ndarray:
    return np.column_stack([frame[c].fill_null(np.nan).to_numpy() for c in ("x", "y")])


def robust_reference(x: np.ndarray, kind: str) -> np.ndarray:
    """max over features of the distance, computed on finite values only; +inf where a feature is infinite."""
    per_feature = np.full(x.shape, np.nan)
    for j, col in enumerate(x.T):
        v = col[np.isfinite(col)]
        if kind == "zscore":
            center, spread = v.mean(), v.std(ddof=1)
            distance = np.abs(col - center) / spread
        elif kind == "mad":
            center = np.median(v)
            spread = 1.4826 * np.median(np.abs(v - center))
            distance = np.abs(col - center) / spread
        else:
            q1, q3 = np.quantile(v, [0.25, 0.75])
            distance = np.maximum(np.maximum(q1 - col, col - q3), 0.0) / (q3 - q1)
        per_feature[:, j] = distance
    with np.errstate(invalid="ignore"):
        return np.fmax.reduce(per_feature, axis=1)


def forest_reference(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.ensemble import IsolationForest

    infinite = np.isinf(x).any(axis=1)
    clean = np.where(np.isinf(x), np.nan, x)
    medians = np.array([np.median(c[~np.isnan(c)]) for c in clean.T])
    filled = np.where(np.isnan(clean), medians, clean)
    fit_rows = ~infinite & ~np.isnan(clean).all(axis=1)
    model = IsolationForest(n_estimators=100, random_state=seed, n_jobs=1).fit(filled[fit_rows])
    scores = -model.score_samples(filled)
    scores[np.isnan(clean).all(axis=1)] = np.nan
    scores[infinite] = np.inf
    return scores


def expected(frame: pl.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    x = as_matrix(frame)
    if name == "isolation_forest":
        scores = forest_reference(x, seed=0)
        cutoff = np.quantile(scores[np.isfinite(scores)], 0.99)  # over finite scores: see flag_cutoff
    else:
        scores, cutoff = robust_reference(x, name), THRESHOLDS[name]
    with np.errstate(invalid="ignore"):
        return scores, np.where(np.isnan(scores), False, (scores > cutoff) | np.isinf(scores))


def check(scores: np.ndarray, flags: np.ndarray, name: str, frame: pl.DataFrame) -> None:
    want, want_flags = expected(frame, name)
    for row in INF_ROWS:
        assert scores[row] == np.inf and flags[row]
    assert np.isnan(scores[BOTH_MISSING_ROW]) and not flags[BOTH_MISSING_ROW]
    np.testing.assert_allclose(scores, want, rtol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(flags, want_flags)
    assert flags[40] and flags[900]  # the finite outliers still count: inf did not switch x off


@pytest.mark.parametrize("name", ["zscore", "mad", "iqr"])
def test_fit_uses_finite_values_only(name):
    frame = make()
    state = get(name).fit(frame, ["x", "y"], seed=0)
    for j, column in enumerate(("x", "y")):
        v = as_matrix(frame)[:, j]
        v = v[np.isfinite(v)]
        want = {
            "zscore": (v.mean(), v.std(ddof=1)),
            "mad": (np.median(v), 1.4826 * np.median(np.abs(v - np.median(v)))),
            "iqr": tuple(np.quantile(v, [0.25, 0.75])),
        }[name]
        np.testing.assert_allclose(state[column], want, rtol=1e-12)
        assert np.isfinite(state[column]).all()


def test_forest_medians_are_of_finite_values():
    frame = make()
    state = get("isolation_forest").fit(frame, ["x", "y"], seed=0)
    x = as_matrix(frame)
    np.testing.assert_allclose(state["medians"], [np.median(c[np.isfinite(c)]) for c in x.T], rtol=1e-12)


@pytest.mark.parametrize("name", DETECTORS)
@pytest.mark.parametrize("source_format", ["parquet", "csv"])
@pytest.mark.parametrize("output_format", ["parquet", "csv"])  # lazy and eager scoring
def test_inf_rows_score_inf_and_are_flagged_end_to_end(name, source_format, output_format, tmp_path):
    frame = make()
    source = tmp_path / f"in.{source_format}"
    frame.write_parquet(source) if source_format == "parquet" else frame.write_csv(source)
    result = run_job(
        str(source), tmp_path / "out", detector=name, columns=["x", "y"], engine="sequential", chunk_size=1_000,
        output_format=output_format,
    )  # fmt: skip
    assert result.status == "succeeded"
    out = result.read().collect().sort("id")
    assert out["x"].to_list()[5] == np.inf and out["x"].to_list()[17] == -np.inf
    scores = out["anomaly_score"].fill_null(np.nan).to_numpy()
    check(scores, out["is_anomaly"].to_numpy(), name, frame)
    assert result.anomalies == int(out["is_anomaly"].sum())


@pytest.mark.parametrize("name", DETECTORS)
def test_a_feature_with_no_finite_value_still_flags_its_inf_rows(name):
    frame = pl.DataFrame({"x": [1.0, 2.0, 3.0, 2.5, 1.5], "z": [None, np.inf, None, -np.inf, None]})
    detector = get(name)
    state = detector.fit(frame, ["x", "z"], seed=0)
    scores = detector.score(frame, ["x", "z"], state).to_list()
    assert scores[1] == np.inf and scores[3] == np.inf
    assert all(np.isfinite(s) for i, s in enumerate(scores) if i not in (1, 3))


def test_contamination_cutoff_is_over_finite_scores():
    from batchnb.detectors import flag_cutoff

    scores = np.array([1.0, 2.0, 3.0, 4.0, np.inf, np.inf, np.nan])
    cutoff = flag_cutoff(scores, threshold=None, contamination=0.25, detector=None)
    assert cutoff == np.quantile([1.0, 2.0, 3.0, 4.0], 0.75)


@pytest.mark.parametrize("name", DETECTORS)
def test_an_inf_in_a_feature_without_spread_scores_inf(name):
    frame = pl.DataFrame({"x": [1.0, 2.0, 3.0, 2.5, 1.5], "flat": [5.0, 5.0, np.inf, 5.0, None]})
    detector = get(name)
    scores = detector.score(frame, ["x", "flat"], detector.fit(frame, ["x", "flat"], seed=0)).to_list()
    assert scores[2] == np.inf
    assert all(np.isfinite(s) for i, s in enumerate(scores) if i != 2)
