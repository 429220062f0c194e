"""Detector semantics (DESIGN.md section 3) against an independent numpy / scikit-learn computation.

Every dataset here has fewer rows than `fit_sample`, so the fit uses all rows and the reference can
be computed from the whole frame.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from conftest import FEATURES, as_read, make_frame, run_job

import batchnb as bn

RTOL = 1e-12

DEFAULT_THRESHOLDS = {"zscore": 3.0, "mad": 3.5, "iqr": 1.5}
NUMERIC = ("id", *FEATURES)  # every numeric column of make_frame, in schema order


# --------------------------------------------------------------------------------------------------
# Reference implementation, straight from the table in DESIGN.md section 3
# --------------------------------------------------------------------------------------------------
def matrix(frame: pl.DataFrame, columns) -> np.ndarray:
    """Features as float64, null and NaN both as NaN."""
    return np.column_stack([frame.get_column(c).cast(pl.Float64).fill_null(np.nan).to_numpy() for c in columns])


def reference_scores(frame: pl.DataFrame, columns, kind: str) -> np.ndarray:
    """Per-row score (NaN when the row has no usable feature) for zscore, mad or iqr."""
    x = matrix(frame, columns)
    per_feature = np.full(x.shape, np.nan)
    for j in range(x.shape[1]):
        col = x[:, j]
        usable = ~np.isnan(col)
        v = col[usable]
        if v.size == 0:
            continue
        if kind == "zscore":
            center = np.mean(v)
            spread = np.std(v, ddof=1) if v.size > 1 else 0.0
            distance = np.abs(col - center) / spread if spread > 0 else np.zeros_like(col)
        elif kind == "mad":
            center = np.median(v)
            spread = 1.4826 * np.median(np.abs(v - center))
            distance = np.abs(col - center) / spread if spread > 0 else np.zeros_like(col)
        elif kind == "iqr":
            q1, q3 = np.quantile(v, 0.25), np.quantile(v, 0.75)
            outside = np.maximum(np.maximum(q1 - col, col - q3), 0.0)
            distance = outside / (q3 - q1) if q3 > q1 else np.zeros_like(col)
        else:
            raise ValueError(kind)
        per_feature[usable, j] = distance[usable]
    with np.errstate(invalid="ignore"):
        return np.fmax.reduce(per_feature, axis=1)  # NaN only when every feature is NaN


def reference_forest(frame: pl.DataFrame, columns, seed: int) -> np.ndarray:
    from sklearn.ensemble import IsolationForest  # here, so process-engine workers importing this module stay fast

    x = matrix(frame, columns)
    medians = np.array([np.median(c[~np.isnan(c)]) for c in x.T])
    filled = np.where(np.isnan(x), medians, x)
    model = IsolationForest(n_estimators=100, random_state=seed).fit(filled)
    return -model.score_samples(filled)


def contamination_cutoff(scores: np.ndarray, contamination: float) -> float:
    return float(np.quantile(scores[~np.isnan(scores)], 1.0 - contamination))


def flags(scores: np.ndarray, cutoff: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(scores), False, scores > cutoff)


def check_output(out: pl.DataFrame, n: int, expected: np.ndarray, expected_flags: np.ndarray, rtol: float = RTOL):
    assert out.height == n
    assert out.get_column("id").to_list() == list(range(n))
    assert out.schema["anomaly_score"] == pl.Float64
    assert out.schema["is_anomaly"] == pl.Boolean
    score = out.get_column("anomaly_score")
    # A row with no usable feature has a *null* score (not NaN), and every other row a number.
    assert score.is_nan().sum() == 0
    np.testing.assert_array_equal(score.is_null().to_numpy(), np.isnan(expected))
    np.testing.assert_allclose(score.fill_null(np.nan).to_numpy(), expected, rtol=rtol, atol=0, equal_nan=True)
    assert out.get_column("is_anomaly").null_count() == 0
    np.testing.assert_array_equal(out.get_column("is_anomaly").to_numpy(), expected_flags)


@pytest.fixture(scope="module")
def forest_frame() -> pl.DataFrame:
    """No row without a usable feature, so the forest's fit set is unambiguous."""
    return make_frame(4_000, seed=11, all_missing=False)


@pytest.fixture(scope="module")
def forest_source(forest_frame, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("forest") / "forest.parquet"
    forest_frame.write_parquet(path)
    return str(path)


# --------------------------------------------------------------------------------------------------
# Built-in detectors with their default flag rules, on every local engine
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["zscore", "mad", "iqr"])
def test_robust_detectors_match_reference(kind, engine, frame, sources, tmp_path):
    result = run_job(sources["parquet"], tmp_path / "out", detector=kind, chunk_size=1_000, engine=engine)
    assert result.status == "succeeded"
    out = result.read().collect()

    expected = reference_scores(frame, NUMERIC, kind)
    expected_flags = flags(expected, DEFAULT_THRESHOLDS[kind])
    check_output(out, frame.height, expected, expected_flags)
    assert 0 < expected_flags.sum() < frame.height // 10  # the data really has anomalies, and few
    assert result.anomalies == int(expected_flags.sum())
    # The output is the kept input columns (all of them by default), then the two score columns.
    assert out.columns == [*frame.columns, "anomaly_score", "is_anomaly"]
    assert out.select(frame.columns).equals(frame)


def test_isolation_forest_matches_sklearn(engine, forest_frame, forest_source, tmp_path):
    result = run_job(forest_source, tmp_path / "out", detector="isolation_forest", chunk_size=1_000, engine=engine)
    assert result.status == "succeeded"
    out = result.read().collect()

    expected = reference_forest(forest_frame, NUMERIC, seed=0)
    expected_flags = flags(expected, contamination_cutoff(expected, 0.01))  # default contamination 0.01
    check_output(out, forest_frame.height, expected, expected_flags)
    assert expected_flags.sum() == pytest.approx(0.01 * forest_frame.height, abs=2)


def test_isolation_forest_uses_seed_and_threshold(forest_frame, forest_source, tmp_path):
    result = run_job(
        forest_source, tmp_path / "out", detector="isolation_forest", columns=["x1", "x2", "x3"], seed=5,
        threshold=0.55, engine="sequential",
    )  # fmt: skip
    out = result.read().collect()
    expected = reference_forest(forest_frame, ["x1", "x2", "x3"], seed=5)
    check_output(out, forest_frame.height, expected, flags(expected, 0.55))
    # A different seed gives a different forest: the seed really reaches scikit-learn.
    assert not np.allclose(expected, reference_forest(forest_frame, ["x1", "x2", "x3"], seed=0))


@pytest.mark.parametrize("engine_name", ["sequential", "threads"])
def test_isolation_forest_single_feature_matches_sklearn(engine_name, forest_frame, forest_source, tmp_path):
    """One feature sidesteps the naming bug above, so the forest's semantics are still checked."""
    assert forest_frame.get_column("flat").null_count() == 0
    result = run_job(forest_source, tmp_path / "out", detector="isolation_forest", columns=["flat"], seed=3,
                     contamination=0.03, chunk_size=1_000, engine=engine_name)  # fmt: skip
    assert result.status == "succeeded"
    out = result.read().collect()
    expected = reference_forest(forest_frame, ["flat"], seed=3)
    check_output(out, forest_frame.height, expected, flags(expected, contamination_cutoff(expected, 0.03)))
    assert result.anomalies > 0


def test_isolation_forest_row_without_features_is_null(frame, sources, tmp_path):
    columns = ["x1", "x2", "x3", "flat", "const"]
    result = run_job(sources["parquet"], tmp_path / "out", detector="isolation_forest", columns=columns,
                     engine="sequential")  # fmt: skip
    out = result.read().collect()
    missing = np.isnan(matrix(frame, columns)).all(axis=1)
    assert missing.sum() == 2
    score = out.get_column("anomaly_score")
    np.testing.assert_array_equal(score.is_null().to_numpy(), missing)
    assert not out.filter(pl.Series(missing)).get_column("is_anomaly").any()
    assert score.is_nan().sum() == 0


# --------------------------------------------------------------------------------------------------
# Missing values and zero spread
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["zscore", "mad", "iqr"])
def test_missing_values_skipped_per_feature(kind, frame, sources, tmp_path):
    """NaN and null are skipped feature by feature; a row with none left gets a null, unflagged score."""
    columns = ["x1", "x2", "x3"]
    result = run_job(sources["parquet"], tmp_path / "out", detector=kind, columns=columns, engine="sequential")
    out = result.read().collect()
    expected = reference_scores(frame, columns, kind)
    check_output(out, frame.height, expected, flags(expected, DEFAULT_THRESHOLDS[kind]))

    x = matrix(frame, columns)
    partly = np.isnan(x).any(axis=1) & ~np.isnan(x).all(axis=1)
    assert partly.sum() >= 5 and np.isnan(x).all(axis=1).sum() == 2  # the data covers both cases
    # Rows with some missing features are scored from the rest, not nulled.
    assert out.filter(pl.Series(partly)).get_column("anomaly_score").null_count() == 0
    null_rows = out.filter(pl.col("anomaly_score").is_null())
    assert null_rows.get_column("id").to_list() == [13, frame.height // 2 + 1]
    assert not null_rows.get_column("is_anomaly").any()


@pytest.mark.parametrize("kind", ["zscore", "mad", "iqr"])
def test_zero_spread_feature_contributes_zero(kind, frame, sources, tmp_path):
    """`const` has spread 0 for every detector: a row whose only usable feature is `const` scores exactly 0."""
    result = run_job(sources["parquet"], tmp_path / "out", detector=kind, columns=["x1", "const"], engine="sequential")
    out = result.read().collect()
    x1_missing = frame.get_column("x1").cast(pl.Float64).fill_nan(None).is_null()
    const_present = frame.get_column("const").is_not_null()
    only_const = out.filter(x1_missing & const_present)
    assert only_const.height >= 3
    assert only_const.get_column("anomaly_score").to_list() == [0.0] * only_const.height
    assert not only_const.get_column("is_anomaly").any()
    expected = reference_scores(frame, ["x1", "const"], kind)
    check_output(out, frame.height, expected, flags(expected, DEFAULT_THRESHOLDS[kind]))


@pytest.mark.parametrize("kind", ["mad", "iqr"])
def test_mostly_constant_feature_has_zero_spread(kind, frame, sources, tmp_path):
    """`flat` is 7.0 in ~95% of rows: MAD and IQR are 0, so even its far-off values contribute 0."""
    values = frame.get_column("flat").drop_nulls()
    assert (values != 7.0).sum() > 100 and (values - 7.0).abs().max() > 50
    result = run_job(sources["parquet"], tmp_path / "out", detector=kind, columns=["flat"], engine="sequential")
    out = result.read().collect()
    scores = out.get_column("anomaly_score")
    assert scores.drop_nulls().unique().to_list() == [0.0]
    assert scores.null_count() == frame.get_column("flat").null_count()
    assert result.anomalies == 0


def test_zscore_flags_mostly_constant_feature(frame, sources, tmp_path):
    """The same feature has std > 0, so zscore does score its outliers (the contrast to the test above)."""
    result = run_job(sources["parquet"], tmp_path / "out", detector="zscore", columns=["flat"], engine="sequential")
    out = result.read().collect()
    expected = reference_scores(frame, ["flat"], "zscore")
    check_output(out, frame.height, expected, flags(expected, 3.0))
    assert result.anomalies > 0


# --------------------------------------------------------------------------------------------------
# Flag rules: threshold= and contamination=
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "threshold"), [("zscore", 2.0), ("mad", 5.0), ("iqr", 0.25)])
def test_threshold_flags_scores_above_it(kind, threshold, frame, sources, tmp_path):
    result = run_job(sources["parquet"], tmp_path / "out", detector=kind, threshold=threshold, engine="threads")
    out = result.read().collect()
    expected = reference_scores(frame, NUMERIC, kind)
    expected_flags = flags(expected, threshold)
    check_output(out, frame.height, expected, expected_flags)
    assert expected_flags.sum() != flags(expected, DEFAULT_THRESHOLDS[kind]).sum()  # threshold= changed something


@pytest.mark.parametrize(("kind", "contamination"), [("zscore", 0.02), ("mad", 0.05), ("iqr", 0.1)])
def test_contamination_flags_above_sample_quantile(kind, contamination, frame, sources, tmp_path):
    columns = ["x1", "x2", "x3"]
    result = run_job(sources["parquet"], tmp_path / "out", detector=kind, columns=columns,
                     contamination=contamination, engine="threads")  # fmt: skip
    out = result.read().collect()
    expected = reference_scores(frame, columns, kind)  # rows without features (null score) are not in the quantile
    expected_flags = flags(expected, contamination_cutoff(expected, contamination))
    check_output(out, frame.height, expected, expected_flags)
    usable = (~np.isnan(expected)).sum()
    assert expected_flags.sum() == pytest.approx(contamination * usable, abs=2)


def test_contamination_is_strictly_above_the_quantile(frame, sources, tmp_path):
    """With tied scores at the quantile, the tied rows are *not* flagged (strictly above)."""
    result = run_job(sources["parquet"], tmp_path / "out", detector="zscore", columns=["count"],
                     contamination=0.1, engine="sequential")  # fmt: skip
    out = result.read().collect()
    expected = reference_scores(frame, ["count"], "zscore")
    cutoff = contamination_cutoff(expected, 0.1)
    assert (expected == cutoff).sum() > 0.05 * frame.height  # many rows sit exactly on the cutoff
    check_output(out, frame.height, expected, flags(expected, cutoff))
    assert not out.filter(pl.col("anomaly_score") == cutoff).get_column("is_anomaly").any()


def test_isolation_forest_contamination(forest_frame, forest_source, tmp_path):
    result = run_job(forest_source, tmp_path / "out", detector="isolation_forest", contamination=0.05,
                     engine="threads")  # fmt: skip
    out = result.read().collect()
    expected = reference_forest(forest_frame, NUMERIC, seed=0)
    expected_flags = flags(expected, contamination_cutoff(expected, 0.05))
    check_output(out, forest_frame.height, expected, expected_flags)
    assert expected_flags.sum() == pytest.approx(0.05 * forest_frame.height, abs=2)


def test_threshold_and_contamination_together_is_a_config_error(sources, tmp_path):
    with pytest.raises(bn.ConfigError):
        bn.BatchJob(sources["parquet"], tmp_path / "out", threshold=2.0, contamination=0.1)


# --------------------------------------------------------------------------------------------------
# columns= and keep=
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["zscore", "iqr"])
def test_columns_subset(kind, frame, sources, tmp_path):
    columns = ["x2", "count"]  # one float and the integer feature
    result = run_job(sources["parquet"], tmp_path / "out", detector=kind, columns=columns, engine="sequential")
    out = result.read().collect()
    expected = reference_scores(frame, columns, kind)
    check_output(out, frame.height, expected, flags(expected, DEFAULT_THRESHOLDS[kind]))
    # Not the all-numeric-columns default: the subset changes the scores.
    assert not np.allclose(expected, reference_scores(frame, NUMERIC, kind), equal_nan=True)


def test_non_numeric_feature_is_a_config_error(sources, tmp_path):
    job = bn.BatchJob(sources["parquet"], tmp_path / "out", columns=["x1", "label"], engine="sequential")
    with pytest.raises(bn.ConfigError, match="label"):
        job.run(progress=None)


def test_keep_selects_output_columns(frame, sources, tmp_path):
    result = run_job(sources["parquet"], tmp_path / "out", detector="mad", columns=["x1", "x3"],
                     keep=["label", "id"], engine="threads")  # fmt: skip
    out = result.read().collect()
    assert out.columns == ["label", "id", "anomaly_score", "is_anomaly"]
    assert out.get_column("label").equals(frame.get_column("label"))
    expected = reference_scores(frame, ["x1", "x3"], "mad")  # features need not be kept to be scored
    check_output(out, frame.height, expected, flags(expected, 3.5))


def test_default_columns_are_every_numeric_column(frame, sources, tmp_path):
    """columns=None scores every numeric column (here including `id` and the integer `count`), never strings."""
    default = run_job(sources["parquet"], tmp_path / "a", detector="iqr", engine="sequential").read().collect()
    explicit = run_job(sources["parquet"], tmp_path / "b", detector="iqr", columns=list(NUMERIC),
                       engine="sequential").read().collect()  # fmt: skip
    assert default.equals(explicit)


# --------------------------------------------------------------------------------------------------
# Callable detectors
# --------------------------------------------------------------------------------------------------
def ratio_of_large_x1(chunk: pl.DataFrame) -> pl.DataFrame:
    """A module-level callable: filters rows and returns different columns."""
    return chunk.filter(pl.col("x1") > 110).select("id", (pl.col("x1") / pl.col("x2")).alias("ratio"), "label")


def test_callable_detector_output_as_is(engine, frame, sources, tmp_path):
    result = run_job(sources["parquet"], tmp_path / "out", detector=ratio_of_large_x1, chunk_size=1_000, engine=engine)
    assert result.status == "succeeded", result.errors
    out = result.read().collect()
    expected = ratio_of_large_x1(frame)
    assert 0 < expected.height < frame.height
    assert out.columns == ["id", "ratio", "label"]  # no score columns are added
    assert out.equals(expected)
    assert result.rows_in == frame.height
    assert result.rows_out == expected.height
    assert result.anomalies == 0


@pytest.mark.parametrize("engine_name", ["threads", "processes"])
def test_callable_closure_receives_polars_chunks(engine_name, frame, sources, tmp_path):
    """A closure (pickled by value for processes) gets each chunk as a polars DataFrame."""
    factor = 2.5

    def scale(chunk):
        assert isinstance(chunk, pl.DataFrame)
        return chunk.select("id", (pl.col("count") * factor).alias("scaled"),
                            pl.lit(chunk.height).alias("chunk_rows"))  # fmt: skip

    result = run_job(sources["parquet"], tmp_path / "out", detector=scale, chunk_size=1_000, engine=engine_name)
    assert result.status == "succeeded", result.errors
    out = result.read().collect()
    assert out.get_column("id").to_list() == list(range(frame.height))
    assert out.get_column("scaled").to_list() == (frame.get_column("count") * factor).to_list()
    assert set(out.get_column("chunk_rows").to_list()) == {1_000}


# --------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------
def test_list_detectors():
    listed = bn.list_detectors()
    assert {"zscore", "mad", "iqr", "isolation_forest"} <= set(listed)
    for name, description in listed.items():
        assert isinstance(description, str) and description.strip(), name


def test_unknown_detector_names_the_choices(sources, tmp_path):
    with pytest.raises(bn.ConfigError, match="zscore"):
        bn.BatchJob(sources["parquet"], tmp_path / "out", detector="no_such_detector")


@pytest.mark.parametrize("kind", ["zscore", "mad", "iqr", "isolation_forest"])
def test_detector_scores_do_not_depend_on_input_format(kind, frame, sources, tmp_path):
    """The same data as CSV (exact float text) scores exactly like the Parquet copy."""
    parquet = run_job(sources["parquet"], tmp_path / "p", detector=kind, engine="sequential").read().collect()
    csv = run_job(sources["csv"], tmp_path / "c", detector=kind, engine="sequential").read().collect()
    assert as_read(csv).equals(as_read(parquet))


@pytest.mark.parametrize("kind", ["zscore", "mad", "iqr"])
def test_scores_from_one_lazy_query_equal_the_eager_path(kind, frame, sources, tmp_path, monkeypatch):
    """A detector with a Polars expression scores each chunk as one lazy query; `apply` builds the frame
    step by step. Both must give the same values, nulls and flags (NaN, null and zero-spread features)."""
    import polars.testing

    from batchnb.detectors.base import FittedDetector

    lazy = run_job(sources["parquet"], tmp_path / "lazy", detector=kind, engine="threads")
    monkeypatch.setattr(FittedDetector, "apply_lazy", lambda self, frame, keep: None)
    eager = run_job(sources["parquet"], tmp_path / "eager", detector=kind, engine="threads")
    assert lazy.anomalies == eager.anomalies and lazy.rows_out == eager.rows_out == frame.height
    polars.testing.assert_frame_equal(lazy.read().collect(), eager.read().collect())
