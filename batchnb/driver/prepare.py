"""Preparing a job: open the source, resolve its columns, sample, fit and plan. The only place a job is planned.

`plan(config)` answers `BatchJob.plan()` and the form without writing a record; `prepare` does the same work
once per job and stores all a resume needs, so a resumed run neither re-plans nor re-fits.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from batchnb import engines, sources
from batchnb.config import JobConfig
from batchnb.driver.lock import check_output
from batchnb.driver.task import apply_scorer
from batchnb.errors import ConfigError, JobStateError, SourceError, converted
from batchnb.place import home
from batchnb.plan import Plan, decoded_bytes_per_row, plan_warnings
from batchnb.record.status import JobStatus
from batchnb.record.store import JobState
from batchnb.scoring import (
    callable_detector,
    check_picklable,
    fit_detector,
    fit_to_json,
    fitted_from_json,
    resolve_columns,
)
from batchnb.sources.dataset import DatasetInfo
from batchnb.sources.schema import schema_to_ipc
from batchnb.sources.staging import Workdir
from batchnb.sources.text import TextFormat

__all__ = ["check_identity", "open_dataset", "plan", "prepare", "resumed_scorer", "source_paths"]


def workdir(config: JobConfig) -> Workdir:
    """Where staged copies of compressed inputs live: inside the output (its home, for an object store)."""
    return Workdir(Path(home(config.output)))


def open_dataset(config: JobConfig) -> DatasetInfo:
    """The source's metadata (or the record index of a text file), as a SourceError when it cannot be read."""
    with converted(SourceError, f"cannot read the source {config.source!r}"):
        return sources.open_dataset(
            config.source,
            config.format,
            dict(config.read_options),
            workdir=workdir(config),
            allow_pickle=config.allow_pickle,
        )


def source_paths(config: JobConfig, *, resolve: bool = False) -> tuple[str, ...]:
    """Check that the output overlaps no source file or directory and is new, empty or a batchnb output.

    Returns the source's files when it resolved them (always with `resolve`, else only for local sources).
    """
    items = (config.source,) if isinstance(config.source, str) else config.source
    local = [i for i in items if "://" not in i]
    paths = sources.resolve_paths(config.source) if local or resolve else ()
    check_output(config.output, (*paths, *(i for i in local if os.path.isdir(i))))
    return paths


def plan(config: JobConfig) -> Plan:
    """The chunk plan, its memory estimates, recommendations and warnings, without running anything."""
    source_paths(config)  # planning may stage copies of compressed inputs in the output
    info = open_dataset(config)
    with converted(SourceError, f"cannot read the source {config.source!r}"):
        resolve_columns(config, info)
        chunks = sources.get(info.format).plan(info, config.chunk_size)
    engine = engines.create(config.engine)
    the_plan = Plan(
        dataset=info.for_workers(),
        chunk_size=config.chunk_size,
        chunks=chunks,
        workers=config.resources.workers(engine),
        cpu_count=os.cpu_count() or 1,
        memory_limit=config.resources.memory_bytes(),
        bytes_per_row=decoded_bytes_per_row(info.schema),
    )
    unpicklable = None
    if callable_detector(config) and engine.needs_pickle:
        try:
            check_picklable(config.detector, config.engine_name)
        except ConfigError as exc:
            unpicklable = str(exc)
    warnings = plan_warnings(the_plan, pickle_input=config.format == "pickle", unpicklable=unpicklable)
    return dataclasses.replace(the_plan, warnings=warnings)


def check_identity(config: JobConfig, state: JobState, fingerprint: list) -> None:
    """The record in `config.output` is this job's, over the same source files, or a new one."""
    stored = state.get("identity")
    if stored is None and state.get("fingerprint") is None and not state.has_plan() and not state.chunks():
        return  # a new state, or planning was interrupted before anything was stored: plan from scratch
    missing = [k for k in ("identity", "fingerprint") if state.get(k) is None]
    if missing:
        msg = (
            f"output {config.output!r} holds a job state without its {' and '.join(missing)}, so it cannot be "
            "this job's: use another output directory, or run(restart=True) to discard it"
        )
        raise JobStateError(msg)
    if stored != config.identity_hash():
        before = state.get("identity_fields", {})
        changed = sorted(k for k, v in _identity_fields(config).items() if before.get(k) != v)
        msg = (
            f"output {config.output!r} holds the state of another job (options that differ: {changed}): "
            "use another output directory, or run(restart=True) to discard it"
        )
        raise JobStateError(msg)
    if state.get("fingerprint") != fingerprint:
        msg = (
            f"the source of {config.output!r} changed since the checkpoint (size or modification time of "
            f"{[f[0] for f in fingerprint]}): run(restart=True) to start over on the new data"
        )
        raise JobStateError(msg)


def _identity_fields(config: JobConfig) -> dict[str, Any]:
    return json.loads(json.dumps(config.identity(), default=str))


def prepare(config: JobConfig, state: JobState, fingerprint: list) -> Any:
    """Plan and fit once; everything a resume needs is stored. Returns the fitted scorer for this run."""
    state.set_status(JobStatus.PLANNING, started_at=time.time())
    t0 = time.perf_counter()
    info = open_dataset(config)
    features, keep = resolve_columns(config, info)
    t1 = time.perf_counter()
    scorer, sampled_s = _fit(config, info, features)
    t2, t3 = t1 + sampled_s, time.perf_counter()
    with converted(SourceError, f"cannot read the source {config.source!r} (planning chunks)"):
        specs = sources.get(info.format).plan(info, config.chunk_size)
    prepare_s = {"inspect": t1 - t0, "sample": t2 - t1, "fit": t3 - t2, "plan": time.perf_counter() - t3}
    worker_info = projection(info.for_workers(), features, keep)
    empty_schema, empty_dtypes = _empty_output(scorer, worker_info, keep)
    state.set(
        identity=config.identity_hash(),
        identity_fields=_identity_fields(config),
        config=_stored_config(config),
        fingerprint=fingerprint,
        dataset=worker_info.to_json(),
        features=list(features),
        keep=list(keep),
        chunk_size=config.chunk_size,
        output_schema=empty_schema,
        output_dtypes=empty_dtypes,
        prepare_s=prepare_s,
    )
    if not callable_detector(config):
        state.set(detector_fit=fit_to_json(scorer))  # JSON data: a state never holds a pickle
    state.save_plan(specs)
    return scorer


def projection(info: DatasetInfo, features: Sequence[str], keep: Sequence[str]) -> DatasetInfo:
    """The dataset as chunks read it: only the features and the kept columns, decided once here and stored with
    the dataset, so every chunk of every run reads the same columns.

    A callable detector receives the same columns: `columns` (default: every numeric column) and `keep`
    (default: every column), so with `keep=None` it sees the whole table, and with both given only those.
    """
    return info.projected((*features, *keep))


def _empty_output(scorer: Any, info: DatasetInfo, keep: tuple[str, ...]) -> tuple[dict | None, str | None]:
    """The output schema, from scoring an empty frame; a callable may reject one: the first part sets it then."""
    try:
        empty = apply_scorer(scorer, info.read_schema().to_frame(), keep)
    except Exception:  # noqa: BLE001 - any error of the user's function here only defers the schema
        return None, None
    return {k: str(v) for k, v in empty.schema.items()}, schema_to_ipc(empty.schema)


def _stored_config(config: JobConfig) -> dict[str, Any]:
    """The config as stored in the record; a notebook function has no importable name, so only the basics."""
    try:
        return config.to_dict()
    except ConfigError:
        keys = ("source", "output", "chunk_size", "output_format")
        return {k: v for k, v in config.__dict__.items() if k in keys}


def stored_dataset(state: JobState) -> DatasetInfo:
    """The dataset the job was planned with, read with the projection it was planned with; a record of a
    version that read every column gets it from the stored features and kept columns."""
    data = state.get("dataset")
    info = DatasetInfo.from_json(data)
    if isinstance(data, dict) and "columns" not in data:
        info = projection(info, state.get("features") or (), state.get("keep") or ())
    return info


def resumed_scorer(config: JobConfig, state: JobState) -> Any:
    """What a resumed run scores with: the callable from the user's code, the fit stored as JSON, or a refit.

    A fit whose state is not plain data (IsolationForest, a third-party detector's objects) is refitted: the
    same source and seed give the same sample, hence the same model. A pickled scorer left by an older
    version is never loaded.
    """
    if callable_detector(config):
        return config.detector
    features = tuple(state.get("features") or ())
    scorer = fitted_from_json(config, state.get("detector_fit"), features)
    if scorer is not None:
        return scorer
    info = stored_dataset(state)
    fmt = sources.get(info.format)
    if isinstance(fmt, TextFormat) and fmt.exact(info):  # its record index is driver-only, not stored: build it again
        info = open_dataset(config)
    scorer, _ = _fit(config, info, features)
    state.set(detector_fit=fit_to_json(scorer))
    return scorer


def _fit(config: JobConfig, info: DatasetInfo, features: tuple[str, ...]) -> tuple[Any, float]:
    """The fitted scorer from the seeded sample (so a refit on resume is the same model), and the seconds
    spent sampling. A callable needs no fit: reading a sample for it would be a wasted pass over the source."""
    t0 = time.perf_counter()
    source = f"cannot read the source {config.source!r} (sampling {config.fit_sample:_} rows to fit the detector)"
    fmt = sources.get(info.format)
    with converted(SourceError, source):
        sample = None if callable_detector(config) else fmt.sample(info, config.fit_sample, config.seed, features)
    sampled_s = time.perf_counter() - t0
    what = f"the detector could not be fitted on the sample of columns {list(features)}; check `detector` and `columns`"
    with converted(ConfigError, what):
        return fit_detector(config, sample, features), sampled_s
