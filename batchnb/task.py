"""What runs on a worker: read one chunk, score it, write one part, checksum it."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from batchnb.detectors.base import FittedDetector
from batchnb.errors import PASS_THROUGH, DataError, describe
from batchnb.plan import ChunkSpec, DatasetInfo
from batchnb.sources.base import schema_to_ipc

__all__ = ["ChunkOutcome", "ChunkTask", "apply_scorer", "run_chunk"]


@dataclass(frozen=True, kw_only=True)
class ChunkTask:
    """Everything a worker on any machine needs: a description of the chunk, never its data."""

    spec: ChunkSpec
    dataset: DatasetInfo
    scorer: FittedDetector | Callable[[pl.DataFrame], Any]
    keep: tuple[str, ...]
    output: str
    output_format: str


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

    Any `Exception` leaves as it is (the runner records its type and message); only a panic is converted,
    because `except Exception` in the engines and the runner would let it through, and its class
    (`pyo3_runtime.PanicException`) cannot be unpickled in another process. The same bytes panic again,
    so the chunk is not retried.
    """
    try:
        return _run_chunk(task)
    except (Exception, *PASS_THROUGH):
        raise
    except BaseException as exc:  # a panic; see above
        msg = (
            f"chunk {task.spec.index} made Polars panic ({describe(exc)}): the same bytes panic again; "
            "check that the input is the format and encoding it claims to be"
        )
        raise DataError(msg) from exc


def _run_chunk(task: ChunkTask) -> ChunkOutcome:
    from batchnb import sinks
    from batchnb.sources import read_chunk

    t0 = time.perf_counter()
    frame = read_chunk(task.dataset, task.spec)
    t1 = time.perf_counter()
    sink = sinks.get(task.output_format)
    query = None
    if isinstance(task.scorer, FittedDetector) and sink.write_lazy is not None:
        query = task.scorer.apply_lazy(frame, task.keep)
    if query is not None:  # score and write as one streaming query; the counts come from the part
        part, nbytes, checksum, write_timings = sinks.write_atomic(query, task.output, task.spec.index, sink)
        rows_out, anomalies = (
            pl.scan_parquet(os.path.join(task.output, part))
            .select(pl.len(), pl.col("is_anomaly").sum())
            .collect()
            .row(0)
        )
        schema = query.collect_schema()
        t2 = t1  # scoring ran inside the write: its time is part of "write"
    else:
        out = apply_scorer(task.scorer, frame, task.keep)
        t2 = time.perf_counter()
        part, nbytes, checksum, write_timings = sinks.write_atomic(out, task.output, task.spec.index, sink)
        rows_out, schema = out.height, out.schema
        anomalies = int(out.get_column("is_anomaly").sum()) if "is_anomaly" in out.columns else 0
    return ChunkOutcome(
        index=task.spec.index,
        rows_in=frame.height,
        rows_out=rows_out,
        anomalies=int(anomalies or 0),
        part=part,
        nbytes=nbytes,
        checksum=checksum,
        schema={k: str(v) for k, v in schema.items()},
        seconds=time.perf_counter() - t0,
        timings={"read": t1 - t0, "score": t2 - t1, **write_timings},
        worker=f"{socket.gethostname()}:{os.getpid()}",
        dtypes=schema_to_ipc(schema),
    )
