"""One run of a job: check the record is this job's, prepare once, then hand the open chunks to the loop."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from batchnb import engines, sinks, sources
from batchnb.checksum import file_checksum
from batchnb.config import JobConfig
from batchnb.detectors.base import FittedDetector
from batchnb.driver.cancel import CancelWatch
from batchnb.driver.lock import JobLock, check_owned, discard, remove_temp_files
from batchnb.driver.loop import Runner
from batchnb.driver.memory import MemoryGuard
from batchnb.driver.prepare import check_identity, prepare, resumed_scorer, source_paths, stored_dataset, workdir
from batchnb.driver.task import ChunkTask
from batchnb.engines.base import Engine
from batchnb.errors import BatchError, ConfigError, EngineError, JobStateError, converted
from batchnb.frame_cache import forget_all
from batchnb.place import is_remote, part_sizes, write_manifest
from batchnb.plan import decoded_bytes_per_row
from batchnb.record.snapshot import Progress
from batchnb.record.status import ChunkStatus, JobStatus
from batchnb.record.store import JobState, state_path
from batchnb.result import JobResult
from batchnb.scoring import callable_detector, check_picklable
from batchnb.sources.dataset import ChunkSpec, DatasetInfo
from batchnb.sources.staging import Workdir, stage

__all__ = ["execute", "run_job", "skip_chunks"]


def _restage(paths: tuple[str, ...], dataset: DatasetInfo, workdir: Workdir) -> None:
    """Before a resumed run: the stored plan reads the staged copies of compressed inputs, so stage again a
    copy that is missing or was touched. Only the files read through a copy under `workdir` are looked at."""
    copied = [p for p, used in zip(paths, dataset.paths, strict=False) if used != p]
    if len(paths) != len(dataset.paths):  # not one stored file per source file: look at them all
        copied = list(paths)
    if copied:
        stage(tuple(copied), dataset.format, workdir)


def _redo_bad_parts(state: JobState, output: str) -> None:
    """A done chunk whose part is missing or does not match its checksum runs again. On an object store, one
    listing tells which parts are missing or of another size (`verify` downloads and hashes every part)."""
    bad = []
    sizes = part_sizes(output) if is_remote(output) else None
    for chunk in state.chunks():
        if chunk.status != ChunkStatus.DONE:
            continue
        if sizes is not None:
            if sizes.get(chunk.part or "") != chunk.nbytes:
                bad.append(chunk.index)
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


def run_job(
    config: JobConfig,
    *,
    cancel: threading.Event,
    on_progress: Callable[[Progress], None] | None = None,
    restart: bool = False,
    only_failed: bool = False,
) -> JobResult:
    """Run the job of `config` under the driver lock of its output, to a terminal status, and return its result."""
    paths = source_paths(config, resolve=True)  # the source's files, resolved once for this run
    with JobLock(config.output), CancelWatch(config.output, cancel):  # any process may ask it to stop
        try:
            execute(config, paths=paths, cancel=cancel, on_progress=on_progress, restart=restart,
                    only_failed=only_failed)  # fmt: skip
        finally:
            if is_remote(config.output):
                publish_manifest(config.output)
    return JobResult.from_state(config.output, allow_pickle=config.allow_pickle)


def publish_manifest(output: str) -> None:
    """The parts of an object-store output, with rows and checksums, beside them (after every pass): what a
    reader on another machine, without the driver's record, can trust the prefix to hold."""
    from batchnb._version import __version__

    if not state_path(output).exists():
        return
    with JobState.open(output) as state:
        done = [c for c in state.chunks() if c.status == ChunkStatus.DONE and c.part]
        config, schema = state.get("config", {}), state.get("output_schema")
    result = JobResult.from_state(output)
    write_manifest(output, {
        "batchnb": __version__, "output": output, "status": str(result.status), "name": config.get("name"),
        "source": config.get("source"), "rows_in": result.rows_in, "rows_out": result.rows_out,
        "anomalies": result.anomalies, "chunks_total": result.chunks_total, "schema": schema,
        "parts": [{"chunk": c.index, "name": c.part, "rows": c.rows_out, "bytes": c.nbytes, "checksum": c.checksum}
                  for c in done],
    })  # fmt: skip


def execute(
    config: JobConfig,
    *,
    paths: tuple[str, ...],
    cancel: threading.Event,
    on_progress: Callable[[Progress], None] | None,
    restart: bool = False,
    only_failed: bool = False,
) -> JobStatus:
    """One pass over the open chunks of the job in `config.output`, under the caller's driver lock.

    `paths` are the source's files, resolved once by the caller (which checked them against the output).
    """
    fingerprint = sources.fingerprint(paths)
    if restart:
        discard(config.output)
    remove_temp_files(config.output)  # writes a crash left half done: only the names batchnb gives them
    with JobState.open(config.output, create=True) as state:
        check_identity(config, state, fingerprint)
        engine = engines.create(config.engine)
        workers = config.resources.workers(engine)
        # Worker processes start (spawn, imports) and a cluster is reached while the job is planned and fitted.
        _open_engine(engine, workers, state)
        try:
            try:
                dataset, scorer = _ready(config, state, fingerprint, paths, engine)
            except BaseException as exc:
                _record_failure(state, exc)
                raise
            specs = state.specs(_todo(state, config.output, only_failed=only_failed))
            state.set_status(JobStatus.RUNNING)
            keep = tuple(state.get("keep"))
            # A detector that scores with one Polars expression needs what a chunk's size says: no slow start.
            known = isinstance(scorer, FittedDetector) and scorer.scores_in_query(keep)
            runner = Runner(
                config=config, state=state, engine=engine, workers=workers,
                make_task=_task_maker(config, dataset, scorer, keep=keep),
                one_row_per_row=not callable_detector(config), cancel=cancel, on_progress=on_progress,
                memory=MemoryGuard(limit=config.resources.memory_bytes(), estimate=_chunk_estimate(config, dataset),
                                   known=known),
            )  # fmt: skip
            return runner.run(specs)
        except BatchError as exc:  # e.g. the state could not be written: record why, if the state still takes it
            _record_failure(state, exc)
            raise
        finally:
            engine.close()
            forget_all()  # the frames this process decoded for the job (threads): the kernel keeps none


def _ready(
    config: JobConfig, state: JobState, fingerprint: list, paths: tuple[str, ...], engine: Engine
) -> tuple[DatasetInfo, Any]:
    """The planned dataset and the fitted scorer: prepared now, or as the record left them."""
    scorer = prepare(config, state, fingerprint) if not state.has_plan() else None
    dataset = stored_dataset(state)
    if scorer is None:
        _restage(paths, dataset, workdir(config))
    sources.check_trusted(dataset.format, dataset.paths, allow_pickle=config.allow_pickle)  # a stored format
    if scorer is None:
        scorer = resumed_scorer(config, state)
    if engine.needs_pickle:
        check_picklable(scorer, engine.name)
    return dataset, scorer


def _todo(state: JobState, output: str, *, only_failed: bool) -> set[int]:
    """The chunks this pass runs: the failed ones, or every one not done (a done chunk whose part is bad too)."""
    if only_failed:
        wanted = {ChunkStatus.FAILED}
    else:
        state.mark([c.index for c in state.chunks() if c.status == ChunkStatus.RUNNING], ChunkStatus.PENDING)
        _redo_bad_parts(state, output)
        wanted = {ChunkStatus.PENDING, ChunkStatus.FAILED}
    return {c.index for c in state.chunks() if c.status in wanted}


def _task_maker(
    config: JobConfig, dataset: DatasetInfo, scorer: Any, *, keep: tuple[str, ...]
) -> Callable[[ChunkSpec], ChunkTask]:
    output = config.output if is_remote(config.output) else str(Path(config.output).resolve())
    source_format, sink = sources.get(dataset.format), sinks.get(config.output_format)
    scorer_key = _scorer_key(scorer)

    def make_task(spec: ChunkSpec) -> ChunkTask:
        return ChunkTask(
            spec=spec, dataset=dataset, scorer=scorer, keep=keep, output=output, output_format=config.output_format,
            source_format=source_format, sink=sink, scorer_key=scorer_key,
        )  # fmt: skip

    return make_task


def _scorer_key(scorer: Any) -> str:
    """A fitted detector's name for the workers' shared unit scores: the digest of its pickle, so a refit (a
    restart on a warm cluster) never meets the scores of the old fit. "" for a callable: scored chunk by chunk."""
    if not isinstance(scorer, FittedDetector):
        return ""
    import hashlib

    import cloudpickle

    return hashlib.sha256(cloudpickle.dumps(scorer)).hexdigest()


def _chunk_estimate(config: JobConfig, dataset: DatasetInfo) -> float:
    """Bytes one chunk is expected to need before one is measured: its decoded input, scores and output."""
    return config.chunk_size * decoded_bytes_per_row(dataset.schema) * 3


def _open_engine(engine: Engine, workers: int, state: JobState) -> None:
    try:
        with converted(EngineError, f"engine {engine.name!r} could not start"):
            engine.open(workers)
    except BaseException as exc:  # no cluster, no pool: nothing ran, the job is resumable as it is
        _record_failure(state, exc)
        raise


def _record_failure(state: JobState, exc: BaseException) -> None:
    """Mark the job failed with its reason; a state that cannot be written (a full disk) keeps what it had."""
    try:
        state.set_status(JobStatus.FAILED, reason=f"{type(exc).__name__}: {exc}")
    except JobStateError:
        pass


def skip_chunks(output: str, chunk_ids: Iterable[int]) -> None:
    """Mark chunks skipped so the job can succeed without them: under the driver lock, like a run."""
    ids = sorted({int(i) for i in chunk_ids})
    check_owned(output)
    with JobLock(output), JobState.open(output, create=True) as state:
        known = {c.index for c in state.chunks()}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise ConfigError(f"chunk(s) {unknown} are not in the plan of {output!r} (0..{len(known) - 1})")
        state.mark(ids, ChunkStatus.SKIPPED)
        state.set(skipped=sorted(set(state.get("skipped", [])) | set(ids)))
