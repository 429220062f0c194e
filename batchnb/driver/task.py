"""What runs on a worker: read one chunk, score it, write one part, checksum it."""

from __future__ import annotations

import os
import pickle
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

from batchnb.detectors.base import FittedDetector
from batchnb.driver.shared_pickle import pickled, unpickled
from batchnb.driver.unit_scores import unit_output
from batchnb.errors import PASS_THROUGH, DataError, describe, is_panic
from batchnb.sources.dataset import ChunkSpec, DatasetInfo
from batchnb.sources.schema import schema_to_ipc

if TYPE_CHECKING:
    from batchnb.sinks import Sink
    from batchnb.sources.base import Format

__all__ = ["ChunkOutcome", "ChunkTask", "apply_scorer", "chunk_outcome", "run_chunk"]


@dataclass(frozen=True, kw_only=True)
class ChunkTask:
    """Everything a worker on any machine needs: a description of the chunk, never its data."""

    spec: ChunkSpec
    dataset: DatasetInfo
    scorer: FittedDetector | Callable[[pl.DataFrame], Any]
    keep: tuple[str, ...]
    output: str
    output_format: str
    # The format and sink objects themselves: one registered at run time (a plugin defined in a notebook) is
    # unknown to a worker process's registries. None: looked up by name.
    source_format: Format | None = None
    sink: Sink | None = None
    # Names the fitted scorer within a worker process (`driver.unit_scores`); "" scores every chunk alone.
    scorer_key: str = ""

    def __reduce__(self) -> tuple[Any, ...]:
        """The spec (batchnb's own types: the C pickler), and the job's part pickled once for every chunk
        (`shared_pickle`), so cloudpickle meets two strings."""
        shared = (self.dataset, self.scorer, self.keep, self.output, self.output_format, self.source_format,
                  self.sink, self.scorer_key)  # fmt: skip
        return (_rebuilt, (pickle.dumps(self.spec, pickle.HIGHEST_PROTOCOL), pickled(shared)))


def _rebuilt(spec: bytes, shared: bytes) -> ChunkTask:
    dataset, scorer, keep, output, output_format, source_format, sink, scorer_key = unpickled(shared)
    return ChunkTask(
        spec=pickle.loads(spec), dataset=dataset, scorer=scorer, keep=keep, output=output, output_format=output_format,
        source_format=source_format, sink=sink, scorer_key=scorer_key,
    )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class ChunkOutcome:
    index: int
    rows_in: int
    rows_out: int
    anomalies: int
    part: str
    nbytes: int
    checksum: str
    schema: dict[str, str]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    worker: str = ""
    dtypes: str = ""  # `schema` exactly (sources.base.schema_to_ipc)


def apply_scorer(scorer: FittedDetector | Callable, frame: pl.DataFrame, keep: tuple[str, ...]) -> pl.DataFrame:
    if isinstance(scorer, FittedDetector):
        return scorer.apply(frame, keep)
    out = scorer(frame)
    if isinstance(out, pl.DataFrame):
        return out
    if type(out).__name__ == "DataFrame" and type(out).__module__.startswith("pandas"):
        return pl.from_pandas(out)
    name = getattr(scorer, "__qualname__", repr(scorer))
    raise TypeError(f"detector {name} returned {type(out).__name__}; it must return a polars or pandas DataFrame")


def run_chunk(task: ChunkTask) -> ChunkOutcome:
    """The worker-side boundary: a Polars panic (a BaseException) leaves as a DataError that pickles.

    Any `Exception` leaves as it is (the runner records its type and message) unless a panic hangs in its
    chain: Dask and Ray install tblib, which pickles an exception with its `__cause__` and `__context__`,
    and a panic's class (`pyo3_runtime.PanicException`) cannot be pickled, so the error could not travel
    back. The same bytes panic again, so the chunk is not retried.
    """
    try:
        return _run_chunk(task)
    except PASS_THROUGH:
        raise
    except BaseException as exc:  # noqa: BLE001 - the boundary; a panic too, see above
        error = exc
    if not any(is_panic(e) for e in _chain(error)):
        raise error
    if is_panic(error):
        portable: BaseException = DataError(
            f"chunk {task.spec.index} made Polars panic ({describe(error)}): the same bytes panic again; "
            "check that the input is the format and encoding it claims to be"
        )
    else:
        try:
            portable = type(error)(*error.args)
        except Exception:  # noqa: BLE001 - a constructor that does not take its own args back
            portable = DataError(describe(error))
    raise portable.with_traceback(error.__traceback__)  # raised outside `except`: no panic as its context


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and every cause and context behind it (each once)."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        e = todo.pop()
        if any(e is s for s in seen):
            continue
        seen.append(e)
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
    return seen


def _run_chunk(task: ChunkTask) -> ChunkOutcome:
    from batchnb import sinks, sources

    t0 = time.perf_counter()
    fmt = task.source_format or sources.get(task.dataset.format)
    cut = unit_output(task, fmt)
    if cut is not None:
        out, timings = cut
        rows_in = out.height  # a fitted detector gives one row per row
    else:
        out, rows_in, timings = _read_and_score(task, fmt)
    sink = task.sink or sinks.get(task.output_format)
    written = sinks.write_atomic(out, task.output, task.spec.index, sink)
    return chunk_outcome(task, out, rows_in, timings, written, seconds=time.perf_counter() - t0)


def chunk_outcome(
    task: ChunkTask,
    out: pl.DataFrame,
    rows_in: int,
    timings: dict[str, float],
    written: tuple[str, int, str, dict[str, float]],
    *,
    seconds: float,
) -> ChunkOutcome:
    """What the driver records of a chunk whose part `written` (name, size, checksum, timings) holds `out`."""
    part, nbytes, checksum, write_timings = written
    schema = out.schema
    anomalies = int(out.get_column("is_anomaly").sum() or 0) if "is_anomaly" in out.columns else 0
    return ChunkOutcome(
        index=task.spec.index,
        rows_in=rows_in,
        rows_out=out.height,
        anomalies=anomalies,
        part=part,
        nbytes=nbytes,
        checksum=checksum,
        schema={k: str(v) for k, v in schema.items()},
        seconds=seconds,
        timings={**timings, **write_timings},
        worker=f"{socket.gethostname()}:{os.getpid()}",
        dtypes=schema_to_ipc(schema),
    )


def _read_and_score(task: ChunkTask, fmt: Format) -> tuple[pl.DataFrame, int, dict[str, float]]:
    """The chunk's own rows, read and scored: (output, rows read, timings)."""
    from batchnb import sources

    t0 = time.perf_counter()
    fused = _parse_and_score(task, fmt)
    if fused is not None:
        return fused
    frame = sources.read_chunk(task.dataset, task.spec, fmt)  # only the projection's columns
    t1 = time.perf_counter()
    # A detector that scores with a Polars expression runs as one optimized query over the chunk; its output
    # (the kept columns and two score columns) is small, so collecting it and counting from the frame costs
    # less than streaming it into the part and reading the part back to count.
    query = task.scorer.apply_lazy(frame, task.keep) if isinstance(task.scorer, FittedDetector) else None
    out = query.collect() if query is not None else apply_scorer(task.scorer, frame, task.keep)
    return out, frame.height, {"read": t1 - t0, "score": time.perf_counter() - t1}


def _parse_and_score(task: ChunkTask, fmt: Format) -> tuple[pl.DataFrame, int, dict[str, float]] | None:
    """A text chunk parsed and scored by one query (`scan_chunk`), or None where that does not apply.

    A query that fails gives None too: the eager path then reads the chunk again and fails with the
    record at fault named, or, if the records parse, with the scoring error as it always has.
    """
    scan = getattr(fmt, "scan_chunk", None)
    scorer = task.scorer
    if scan is None or not isinstance(scorer, FittedDetector) or not scorer.scores_in_query(task.keep):
        return None  # asked before the bytes are read, so that `read` does not read them again
    t0 = time.perf_counter()
    source = scan(task.dataset, task.spec)
    query = None if source is None else scorer.apply_lazy(source, task.keep)
    if query is None:
        return None
    t1 = time.perf_counter()
    try:
        out = query.collect()
    except BaseException as exc:  # a panic too; anything else goes on as it is
        if isinstance(exc, pl.exceptions.PolarsError) or is_panic(exc):
            return None
        raise
    # Parsing and scoring are one pass here: their time is counted as scoring, the bytes' read as reading.
    return out, out.height, {"read": t1 - t0, "score": time.perf_counter() - t1}
