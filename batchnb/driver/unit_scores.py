"""Score a storage unit (a Parquet row group) once per worker process and cut each chunk's output from it.

Ten default chunks share a 1M-row row group. Per chunk, slicing the decoded group, running the scoring query
and collecting it cost about 1.5x what one query over the whole group costs (measured on 20M rows). A fitted
detector scores each row from that row alone (its output is the same whatever the chunk size, DESIGN.md
section 1), so a chunk's output is exactly its rows of its units' outputs, also for a chunk that straddles
two units. Only the scores are kept (the kept columns and two score columns: a quarter of the decoded input
here); the decoded unit is dropped once scored.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import polars as pl

from batchnb.detectors.base import FittedDetector
from batchnb.errors import PASS_THROUGH
from batchnb.frame_cache import FrameCache, host_share

if TYPE_CHECKING:
    from batchnb.driver.task import ChunkTask
    from batchnb.sources.base import Format
    from batchnb.sources.dataset import ChunkSpec

__all__ = ["SCORES_BYTES", "unit_output"]

SCORES_BYTES = 96 * 2**20  # a few units' scores per worker process: 17 MB per 1M rows with one kept id

_SCORES = FrameCache(host_share(SCORES_BYTES))


def unit_output(task: ChunkTask, fmt: Format) -> tuple[pl.DataFrame, dict[str, float]] | None:
    """The chunk's output cut from its units' scores, and where the time went; None: score the chunk alone.

    None when the task names no fitted scorer (`scorer_key`), the format has no units for the chunk, the
    detector does not score with one Polars query, or scoring a unit failed: the chunk then reads and scores its own rows, so an error names its own chunk and
    rows, and never fails the chunks of the unit that are fine.
    """
    units = getattr(fmt, "units", None)
    if not task.scorer_key or units is None or not isinstance(task.scorer, FittedDetector):
        return None
    found = units(task.dataset, task.spec)
    if not found:
        return None
    t, spent = time.perf_counter(), {"read": 0.0, "score": 0.0}
    lo, hi = task.spec.rows
    pieces = []
    for unit_key, span in found:
        key = (unit_key, task.dataset.columns, task.keep, task.scorer_key)
        scores = _SCORES.get(key, _scorer(task, fmt, span, spent))
        if scores is None:
            return None
        start, stop = max(lo, span.rows[0]), min(hi, span.rows[1])
        pieces.append(scores.slice(start - span.rows[0], stop - start))
    out = pieces[0] if len(pieces) == 1 else pl.concat(pieces, rechunk=False)
    if out.height != task.spec.n_rows:  # a unit held fewer rows than its footer said: the chunk's own read tells
        return None
    waited = time.perf_counter() - t - spent["read"] - spent["score"]  # for a unit another thread was scoring
    return out, {"read": spent["read"], "score": spent["score"] + waited}


def _scorer(task: ChunkTask, fmt: Format, span: ChunkSpec, spent: dict[str, float]):
    def load() -> pl.DataFrame | None:
        t0 = time.perf_counter()
        try:
            scan = getattr(fmt, "scan_unit", None)  # decoded and scored by one query, where the format can
            source = scan(task.dataset, span) if scan is not None else None
            frame = source if source is not None else fmt.read(task.dataset, span)
            t1 = time.perf_counter()
            query = task.scorer.apply_lazy(frame, task.keep)  # type: ignore[union-attr]
            out = query.collect() if query is not None else None
        except PASS_THROUGH:
            raise
        except BaseException:  # noqa: BLE001 - a panic too: the chunk's own read and score report it
            return None
        spent["read"] += t1 - t0
        spent["score"] += time.perf_counter() - t1
        return out

    return load
