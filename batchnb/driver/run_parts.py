"""The parts of a run of chunks written by one query, where the chunks are cut from their units' scores.

A task of the threads, Dask and Ray engines carries the chunks of a row group (`driver.batches`). Each chunk's
output is a slice of the group's scores (`driver.unit_scores`); writing the ten 100k-row parts one by one made
ten Parquet queries, each with its fixed cost. One partitioned sink writes them all (`sinks.write_split_atomic`):
measured on 20M rows on `threads`, four alternating pairs, the chunks took 0.77-0.85 s instead of 0.90-1.11 s
(write per chunk 2.8-3.1 ms instead of 3.7-5.3). Each chunk keeps its own part, checksum and record; a run that
cannot be written this way is written chunk by chunk as before.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from batchnb.driver.task import ChunkOutcome, ChunkTask, chunk_outcome
from batchnb.driver.unit_scores import unit_output

if TYPE_CHECKING:
    import polars as pl

    from batchnb.sinks import Sink

__all__ = ["RUN_BYTES", "write_together"]

RUN_BYTES = 64 * 2**20  # the outputs of one run held at once: a few row groups' scores, however large a task is


def write_together(tasks: list[ChunkTask], stop: threading.Event | None = None) -> dict[int, ChunkOutcome]:
    """Outcomes of the chunks whose parts were written together, by chunk index; the others run alone."""
    from batchnb import sinks, sources

    if len(tasks) < 2 or (stop is not None and stop.is_set()):
        return {}
    first = tasks[0]
    sink = first.sink or sinks.get(first.output_format)
    if sink.write_split is None:
        return {}
    fmt = first.source_format or sources.get(first.dataset.format)
    done: dict[int, ChunkOutcome] = {}
    run: list[_Cut] = []
    held = 0.0  # bytes of the run's outputs
    for task in tasks:
        if stop is not None and stop.is_set():
            break
        t0 = time.perf_counter()
        cut = unit_output(task, fmt)
        if cut is None or (run and cut[0].height > run[0].out.height):  # parts after the first are no taller
            done.update(_written(run, sink))
            run, held = [], 0.0
        if cut is None:
            continue
        run.append(_Cut(task, cut[0], cut[1], time.perf_counter() - t0))
        held += cut[0].estimated_size()
        if held >= RUN_BYTES or cut[0].height < run[0].out.height:
            done.update(_written(run, sink))  # held enough, or a shorter part ends the run
            run, held = [], 0.0
    done.update(_written(run, sink))
    return done


@dataclass(frozen=True)
class _Cut:
    task: ChunkTask
    out: pl.DataFrame
    timings: dict[str, float]
    seconds: float


def _written(run: list[_Cut], sink: Sink) -> dict[int, ChunkOutcome]:
    from batchnb import sinks

    if len(run) < 2:
        return {}
    output, indices = run[0].task.output, [c.task.spec.index for c in run]
    written = sinks.write_split_atomic([c.out for c in run], output, indices, sink)
    if written is None:
        return {}
    return {
        c.task.spec.index: chunk_outcome(
            c.task, c.out, c.out.height, c.timings, part, seconds=c.seconds + sum(part[3].values())
        )
        for c, part in zip(run, written, strict=True)
    }
