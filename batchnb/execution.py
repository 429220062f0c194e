"""One run of a job: check identity, plan and fit once (stored), then hand the open chunks to the runner."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchnb import engines, sources
from batchnb.checksum import file_checksum
from batchnb.errors import BatchError, ConfigError, EngineError, JobStateError, SourceError, converted
from batchnb.lock import discard, remove_temp_files
from batchnb.memory import MemoryGuard
from batchnb.plan import DatasetInfo, decoded_bytes_per_row
from batchnb.progress import Progress
from batchnb.runner import Runner
from batchnb.scoring import (
    callable_detector,
    check_picklable,
    fit_detector,
    fit_to_json,
    fitted_from_json,
    resolve_columns,
)
from batchnb.sources.base import schema_to_ipc
from batchnb.sources.staging import stage
from batchnb.sources.text import TextFormat
from batchnb.state import JobState
from batchnb.status import ChunkStatus, JobStatus
from batchnb.task import ChunkTask, apply_scorer

if TYPE_CHECKING:
    from batchnb.config import JobConfig
    from batchnb.job import BatchJob

__all__ = ["execute"]


def _check_identity(job: BatchJob, state: JobState, fingerprint: list) -> None:
    config = job.config
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
        changed = sorted(
            k for k, v in json.loads(json.dumps(config.identity(), default=str)).items() if before.get(k) != v
        )
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


def _prepare(job: BatchJob, state: JobState, fingerprint: list) -> Any:
    """Plan and fit once; everything a resume needs is stored. Returns the fitted scorer for this run."""
    config = job.config
    state.set_status(JobStatus.PLANNING, started_at=time.time())
    t0 = time.perf_counter()
    source = f"cannot read the source {config.source!r}"
    with converted(SourceError, source):
        info = job._open_dataset()  # metadata, or the record index of a text file
    features, keep = resolve_columns(config, info)
    fmt = sources.get(info.format)
    t1 = time.perf_counter()
    scorer, sampled_s = _fit(config, info, features)
    t2, t3 = t1 + sampled_s, time.perf_counter()
    with converted(SourceError, f"{source} (planning chunks)"):
        specs = fmt.plan(info, config.chunk_size)
    prepare_s = {"inspect": t1 - t0, "sample": t2 - t1, "fit": t3 - t2, "plan": time.perf_counter() - t3}
    worker_info = info.for_workers()
    empty_schema = empty_dtypes = None
    try:
        empty = apply_scorer(scorer, worker_info.polars_schema().to_frame(), keep)
        empty_schema, empty_dtypes = {k: str(v) for k, v in empty.schema.items()}, schema_to_ipc(empty.schema)
    except Exception:  # noqa: BLE001 - a callable may reject an empty frame; the first part sets the schema then
        pass
    state.set(
        identity=config.identity_hash(),
        identity_fields=json.loads(json.dumps(config.identity(), default=str)),
        config=config.to_dict() if not callable_detector(config) or _round_trips(config) else _plain(config),
        fingerprint=fingerprint,
        dataset=_dataset_json(worker_info),
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


def _resumed_scorer(job: BatchJob, state: JobState) -> Any:
    """What a resumed run scores with: the callable from the user's code, the fit stored as JSON, or a refit.

    A fit whose state is not plain data (IsolationForest, a third-party detector's objects) is refitted: the
    same source and seed give the same sample, hence the same model. A pickled scorer left by an older
    version is never loaded.
    """
    config = job.config
    if callable_detector(config):
        return config.detector
    features = tuple(state.get("features") or ())
    scorer = fitted_from_json(config, state.get("detector_fit"), features)
    if scorer is not None:
        return scorer
    info = _load_dataset(state)
    fmt = sources.get(info.format)
    if isinstance(fmt, TextFormat) and fmt.exact(info):  # its record index is driver-only, not stored: build it again
        with converted(SourceError, f"cannot read the source {config.source!r}"):
            info = job._open_dataset()
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


def _round_trips(config) -> bool:
    try:
        config.to_dict()
    except ConfigError:
        return False
    return True


def _plain(config) -> dict:
    return {k: v for k, v in config.__dict__.items() if k in ("source", "output", "chunk_size", "output_format")}


def _dataset_json(info: DatasetInfo) -> dict:
    data = dict(info.__dict__)
    data["paths"] = list(info.paths)
    return data


def _load_dataset(state: JobState) -> DatasetInfo:
    data = state.get("dataset")
    data["paths"] = tuple(data["paths"])
    return DatasetInfo(**data)


def _restage(paths: tuple[str, ...], dataset: DatasetInfo, workdir: Path) -> None:
    """Before a resumed run: the stored plan reads the staged copies of compressed inputs, so stage again a
    copy that is missing or was touched. Only the files read through a copy under `workdir` are looked at."""
    copied = [p for p, used in zip(paths, dataset.paths, strict=False) if used != p]
    if len(paths) != len(dataset.paths):  # not one stored file per source file: look at them all
        copied = list(paths)
    if copied:
        stage(tuple(copied), dataset.format, workdir)


def _redo_bad_parts(state: JobState, output: str) -> None:
    """A done chunk whose part is missing or does not match its checksum runs again."""
    bad = []
    for chunk in state.chunks():
        if chunk.status != ChunkStatus.DONE:
            continue
        path = Path(output, chunk.part or "")
        if (
            not chunk.part
            or not path.exists()
            or path.stat().st_size != chunk.nbytes
            or file_checksum(path)[0] != chunk.checksum
        ):
            bad.append(chunk.index)
    if bad:
        state.mark(bad, ChunkStatus.PENDING)


def execute(
    job: BatchJob,
    *,
    paths: tuple[str, ...],
    cancel: threading.Event,
    on_progress: Callable[[Progress], None] | None,
    restart: bool = False,
    only_failed: bool = False,
) -> JobStatus:
    config = job.config
    fingerprint = sources.fingerprint(paths)  # `paths`: the source's files, resolved once by the caller
    if restart:
        discard(config.output)
    remove_temp_files(config.output)  # writes a crash left half done: only the names batchnb gives them
    with JobState.open(config.output, create=True) as state:
        _check_identity(job, state, fingerprint)
        try:
            scorer = None
            if not state.has_plan():
                scorer = _prepare(job, state, fingerprint)
            dataset = _load_dataset(state)
            if scorer is None:
                _restage(paths, dataset, Path(config.output, "_batchnb", "converted"))
            sources.check_trusted(dataset.format, dataset.paths, allow_pickle=config.allow_pickle)  # a stored format
            if scorer is None:
                scorer = _resumed_scorer(job, state)
            engine = engines.create(config.engine)
            if engine.needs_pickle:
                check_picklable(scorer, engine.name)
        except BaseException as exc:
            _record_failure(state, exc)
            raise
        keep = tuple(state.get("keep"))
        if only_failed:
            todo_status = {ChunkStatus.FAILED}
        else:
            state.mark([c.index for c in state.chunks() if c.status == ChunkStatus.RUNNING], ChunkStatus.PENDING)
            _redo_bad_parts(state, config.output)
            todo_status = {ChunkStatus.PENDING, ChunkStatus.FAILED}
        todo = {c.index for c in state.chunks() if c.status in todo_status}
        specs = state.specs(todo)
        state.set_status(JobStatus.RUNNING)
        workers = config.resources.workers(config.engine_name)

        def make_task(spec) -> ChunkTask:
            return ChunkTask(
                spec=spec, dataset=dataset, scorer=scorer, keep=keep,
                output=str(Path(config.output).resolve()), output_format=config.output_format,
            )  # fmt: skip

        estimate = config.chunk_size * decoded_bytes_per_row(dataset.schema) * 3
        runner = Runner(
            config=config, state=state, engine=engine, workers=workers, make_task=make_task,
            one_row_per_row=not callable_detector(config), cancel=cancel, on_progress=on_progress,
            memory=MemoryGuard(limit=config.resources.memory_bytes(), estimate=estimate),
        )  # fmt: skip
        try:
            with converted(EngineError, f"engine {engine.name!r} could not start"):
                engine.open(workers)
        except BaseException as exc:  # no cluster, no pool: nothing ran, the job is resumable as it is
            state.mark([s.index for s in specs], ChunkStatus.PENDING)
            _record_failure(state, exc)
            raise
        try:
            return runner.run(specs)
        except BatchError as exc:  # e.g. the state could not be written: record why, if the state still takes it
            _record_failure(state, exc)
            raise
        finally:
            engine.close()


def _record_failure(state: JobState, exc: BaseException) -> None:
    """Mark the job failed with its reason; a state that cannot be written (a full disk) keeps what it had."""
    try:
        state.set_status(JobStatus.FAILED, reason=f"{type(exc).__name__}: {exc}")
    except JobStateError:
        pass
