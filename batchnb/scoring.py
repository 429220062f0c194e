"""Driver-side preparation of the detector: choose feature columns, fit on the sample, check pickling."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, TypeGuard

import numpy as np
import polars as pl

from batchnb.config import JobConfig
from batchnb.detectors import IQR, MAD, Detector, FittedDetector, ZScore, flag_cutoff
from batchnb.detectors import get as get_detector
from batchnb.errors import ConfigError
from batchnb.sources.dataset import DatasetInfo

__all__ = ["check_picklable", "fit_detector", "fit_to_json", "fitted_from_json", "resolve_columns", "stored_cutoff"]


def _is_numeric(dtype: pl.DataType) -> bool:
    return dtype.is_numeric() and dtype != pl.Boolean


def resolve_columns(config: JobConfig, info: DatasetInfo) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(feature columns, kept columns), checked against the source's schema."""
    schema = info.polars_schema()
    available = list(schema.names())
    for option in ("columns", "keep"):
        for name in getattr(config, option) or ():
            if name not in schema:
                msg = f"`{option}` names column {name!r}, which the source does not have; its columns are {available}"
                raise ConfigError(msg)
    if config.columns is None:
        features = tuple(n for n, t in schema.items() if _is_numeric(t) and n not in ("anomaly_score", "is_anomaly"))
        if not features and info.total_rows and not callable_detector(config):
            msg = f"the source has no numeric column to score (columns: {dict(schema)}); pass `columns=`"
            raise ConfigError(msg + _separator_hint(info, available))
    else:
        features = config.columns
        bad = {n: str(schema[n]) for n in features if not _is_numeric(schema[n])}
        if bad and not callable_detector(config):
            msg = f"feature column(s) {bad} are not numeric: pick numeric `columns=` or cast them in the source"
            raise ConfigError(msg)
    if config.keep is not None:
        keep = config.keep
    elif callable_detector(config):
        keep = tuple(available)
    else:  # scoring a scored output again (a pipeline step): the new scores replace the old ones
        keep = tuple(c for c in available if c not in ("anomaly_score", "is_anomaly"))
    clash = [c for c in ("anomaly_score", "is_anomaly") if c in keep]
    if clash and not callable_detector(config):
        raise ConfigError(f"kept column(s) {clash} clash with the score columns; leave them out of `keep=`")
    return features, keep


def _separator_hint(info: DatasetInfo, names: list[str]) -> str:
    """A CSV read as one text column whose name holds another separator was most likely split wrongly."""
    if info.format != "csv" or len(names) != 1:
        return ""
    found = [sep for sep in (";", "\t", "|") if sep in names[0]]
    return f", or read_options={{'separator': {found[0]!r}}} if its fields are separated by it" if found else ""


def callable_detector(config: JobConfig) -> bool:
    return not isinstance(config.detector, str | Detector)


def fit_detector(
    config: JobConfig, sample: pl.DataFrame | None, features: tuple[str, ...]
) -> FittedDetector | Callable:
    """The fitted scorer: depends only on the sample (hence only on source and seed)."""
    if callable_detector(config):
        return config.detector
    if sample is None:
        raise ConfigError(f"detector {config.detector!r} needs a sample to fit on, and none was read")
    detector = _detector(config)
    state = detector.fit(sample, features, seed=config.seed)
    needs_scores = config.threshold is None and (config.contamination is not None or detector.default_threshold is None)
    scores = detector.score(sample, features, state).to_numpy() if needs_scores else np.empty(0)
    cutoff = flag_cutoff(
        scores.astype(np.float64), threshold=config.threshold, contamination=config.contamination, detector=detector
    )
    return FittedDetector(detector=detector, columns=features, state=state, cutoff=cutoff)


def _detector(config: JobConfig) -> Detector:
    return get_detector(config.detector) if isinstance(config.detector, str) else config.detector


def fit_to_json(scorer: FittedDetector) -> dict[str, Any]:
    """What the job state keeps of a fit: plain JSON data, never a pickle (a state may come from anyone).

    The cutoff is always kept (reports show it); the detector's state only when JSON gives it back equal,
    as for the statistics of zscore, mad and iqr. Any other state (a fitted IsolationForest, a third-party
    detector's objects) is refitted from the deterministic sample when the job resumes.
    """
    data: dict[str, Any] = {"cutoff": scorer.cutoff}
    try:
        exact = json.loads(json.dumps(scorer.state)) == scorer.state
    except (TypeError, ValueError, RecursionError):
        exact = False
    if exact:
        data["state"] = scorer.state
    return data


def _number(x: Any) -> TypeGuard[float | int]:
    """A JSON number a float holds (not NaN, not bool, not an int too large for a float)."""
    if isinstance(x, float):
        return not math.isnan(x)
    return isinstance(x, int) and not isinstance(x, bool) and abs(x) < 2**63


def stored_cutoff(data: Any) -> float | None:
    """The cutoff of a stored fit when it is a number (a state made elsewhere may hold anything)."""
    cutoff = data.get("cutoff") if isinstance(data, dict) else None
    return float(cutoff) if _number(cutoff) else None


def fitted_from_json(config: JobConfig, data: Any, features: tuple[str, ...]) -> FittedDetector | None:
    """The stored fit of this job's detector, or None when it must be refitted from the sample."""
    cutoff = stored_cutoff(data)
    if cutoff is None or "state" not in data:
        return None
    detector = _detector(config)
    state = data["state"]
    if isinstance(detector, ZScore | MAD | IQR) and not _valid_stats(state, features):
        return None
    return FittedDetector(detector=detector, columns=features, state=state, cutoff=cutoff)


def _valid_stats(state: Any, features: tuple[str, ...]) -> bool:
    """Two numbers (or null) per feature: what the built-in distance detectors fit."""
    if not isinstance(state, dict) or set(state) != set(features):
        return False
    return all(v is None or (isinstance(v, list) and len(v) == 2 and all(map(_number, v))) for v in state.values())


def check_picklable(scorer: Any, engine_name: str) -> None:
    """Fail before any chunk runs when a task cannot cross a process boundary."""
    import cloudpickle

    try:
        cloudpickle.dumps(scorer)
    except Exception as exc:
        name = getattr(scorer, "__qualname__", type(scorer).__name__)
        msg = (
            f"detector {name} cannot be pickled for engine {engine_name!r} ({type(exc).__name__}: {exc}); "
            "it may hold a lock, a file or a connection. Use engine='threads', or build such objects inside the function"
        )
        raise ConfigError(msg) from exc
