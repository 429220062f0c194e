"""One engine task for the chunks of one storage unit, where a task costs more than a chunk.

On Dask and Ray a task costs the driver 1-2 ms and a round trip through the scheduler, and Ray cannot send the
ten chunks of a Parquet row group to one worker, so two workers decoded and scored each group. Sent as one task,
the chunks of a group run in order on one worker, which scores the group once (`driver.unit_scores`), writes
their parts with one query (`driver.run_parts`) and pays the round trip once. Each chunk keeps its own outcome:
the runner still sees a Future per chunk, a chunk that fails fails alone and is retried alone (as a task of its
own), and the record counts chunks as before.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Hashable, Iterable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from functools import partial

from batchnb.driver.run_parts import write_together
from batchnb.driver.task import ChunkOutcome, ChunkTask, run_chunk
from batchnb.engines.base import Engine, settle
from batchnb.engines.pool import RemoteTraceback
from batchnb.errors import PASS_THROUGH, portable

__all__ = ["Failed", "Tasks", "run_chunks", "run_length"]


@dataclass(frozen=True)
class Failed:
    """A chunk's error inside a batch's result: an exception that pickles, and the worker's traceback as text
    (returned, not raised, so pickle would drop it)."""

    error: BaseException
    traceback: str

    def rebuilt(self) -> BaseException:
        self.error.__cause__ = RemoteTraceback(self.traceback)
        return self.error


def run_chunks(tasks: list[ChunkTask], stop: threading.Event | None = None) -> list[ChunkOutcome | Failed]:
    """The worker side: each chunk in order, each one's outcome or error its own. `stop` (engines that run
    tasks in this process) ends a batch the runner gave up on before its next chunk; without it the outcomes
    are pickled to the driver, so an error that would not pickle travels as its description."""
    out: list[ChunkOutcome | Failed] = []
    together = write_together(tasks, stop)  # the parts cut from units' scores, written by one query
    for task in tasks:
        if together and task.spec.index in together:
            out.append(together[task.spec.index])
            continue
        if stop is not None and stop.is_set():
            out.append(Failed(CancelledError("the run of chunks was given up on"), ""))
            continue
        try:
            out.append(run_chunk(task))
        except PASS_THROUGH:
            raise
        except BaseException as exc:  # noqa: BLE001 - the chunk's failure, delivered as its own
            error = exc if stop is not None else portable(exc)
            out.append(Failed(error, "".join(traceback.format_exception(exc))))
    return out


def run_length(engine: Engine, *, fitted: bool, chunk_timeout: float | None, known_cost: bool = False) -> int:
    """The most chunks of one unit sent as one task: the engine's `chunks_per_task` when a fitted detector
    scores them (short chunks sharing their unit's scores), else 1 (a function may take long per chunk); also
    1 when each chunk has its own deadline, or when the memory guard may have to stop one chunk alone (an engine
    that `can_kill`) because what a chunk needs is not known beforehand (`known_cost`: a detector scoring with one
    Polars expression needs what its chunk's size says)."""
    if not fitted or chunk_timeout is not None or (engine.can_kill and not known_cost):
        return 1
    return max(1, engine.chunks_per_task)


class Tasks:
    """The runner's side of an engine: chunks submitted alone or a run of them as one task, a Future per chunk."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._batch_of: dict[Future, Future] = {}  # a chunk's Future -> its batch's
        self._waiting: dict[Future, set[Future]] = {}  # a batch -> its chunks the runner still waits for
        self._stops: dict[Future, threading.Event] = {}  # a batch running in this process -> what ends it early

    def submit(self, tasks: list[ChunkTask], affinity: Hashable | None = None) -> list[Future]:
        if len(tasks) == 1:
            return [self.engine.submit(run_chunk, tasks[0], affinity=affinity)]
        stop = None if self.engine.needs_pickle else threading.Event()
        batch = self.engine.submit(
            run_chunks if stop is None else partial(run_chunks, stop=stop), tasks, affinity=affinity
        )
        futures: list[Future] = [Future() for _ in tasks]
        for future in futures:
            future.set_running_or_notify_cancel()
        with self._lock:
            self._waiting[batch] = set(futures)
            if stop is not None:
                self._stops[batch] = stop
            self._batch_of.update(dict.fromkeys(futures, batch))
        batch.add_done_callback(lambda done: self._hand_out(done, futures))
        return futures

    def _hand_out(self, batch: Future, futures: list[Future]) -> None:
        """Each chunk's outcome to its Future (runs on the engine's callback thread)."""
        with self._lock:
            self._waiting.pop(batch, None)
            self._stops.pop(batch, None)
            for future in futures:
                self._batch_of.pop(future, None)
        try:
            results = batch.result()
        except BaseException as exc:  # noqa: BLE001 - the whole task failed: so did each of its chunks
            results = [exc] * len(futures)
        if not isinstance(results, list) or len(results) != len(futures):
            results = [RuntimeError(f"the engine returned {type(results).__name__} for {len(futures)} chunks")] * len(
                futures
            )
        for future, result in zip(futures, results, strict=True):
            if isinstance(result, Failed):
                settle(future, exception=result.rebuilt())
            elif isinstance(result, BaseException):
                settle(future, exception=result)
            else:
                settle(future, result=result)

    def cancel(self, future: Future) -> None:
        """Give up on a chunk; its batch's task is cancelled once the runner waits for none of its chunks."""
        with self._lock:
            batch = self._batch_of.pop(future, None)
            waiting = self._waiting.get(batch, set()) if batch is not None else set()
            waiting.discard(future)
            give_up = batch is not None and not waiting
            if batch is not None and give_up:
                self._waiting.pop(batch, None)
                stop = self._stops.pop(batch, None)
                if stop is not None:
                    stop.set()
        if batch is None:
            self.engine.cancel(future)
            return
        settle(future, exception=CancelledError("chunk cancelled"))
        if give_up:
            self.engine.cancel(batch)

    def running(self, futures: Iterable[Future]) -> int:
        """Engine tasks behind these chunks' Futures: a batch is one."""
        with self._lock:
            return len({self._batch_of.get(future, future) for future in futures})
