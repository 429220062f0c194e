"""The Engine base: submit a chunk task, get a concurrent.futures.Future; every capability the loop uses.

Built-in engines subclass `Engine`. A third-party engine may instead be any object with the core of
`EngineLike` (name, needs_pickle, open, submit, cancel, close): `as_engine` wraps it once, in `Adapter`,
which supplies the defaults for what it does not define, so the runner never probes an engine.
"""

from __future__ import annotations

import contextlib
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator, Mapping
from concurrent.futures import Future, InvalidStateError
from typing import Any, ClassVar, Protocol, runtime_checkable

from batchnb.frame_cache import WORKER_PROCESSES

__all__ = [
    "Adapter",
    "Engine",
    "EngineLike",
    "as_engine",
    "completed",
    "settle",
    "spawn_environ",
    "task_name",
    "worker_env",
]

# Thread pools every worker process would size to all the machine's cores: Polars', and Arrow's CPU pool
# (which reads OMP_NUM_THREADS), which decodes Parquet row groups.
THREAD_VARIABLES = ("POLARS_MAX_THREADS", "OMP_NUM_THREADS")


@runtime_checkable
class EngineLike(Protocol):
    """What every engine object has, subclass of `Engine` or not."""

    name: str
    needs_pickle: bool

    def open(self, workers: int) -> None: ...

    def submit(self, fn: Callable[[Any], Any], arg: Any) -> Future: ...

    def cancel(self, future: Future) -> None: ...

    def close(self) -> None: ...


class Engine(ABC):
    """Every engine is a `submit`-shaped seam; the runner never sees engine-specific types.

    `open(workers)` starts pools or joins clusters, `submit(fn, arg)` returns a standard Future,
    `cancel(future)` gives up on one task, `close()` releases what `open` took. The rest has defaults
    that suit an engine running chunks in this process; cluster engines override them (the runner calls
    `check`, `capacity` and `remote_resources` about once a second).
    """

    name: ClassVar[str]
    needs_pickle: ClassVar[bool] = False  # tasks cross a process boundary: callables must be cloudpickle-able
    max_workers: ClassVar[int | None] = None  # at most this many workers, whatever `max_workers` asks for
    in_flight_per_worker: ClassVar[int] = 2  # chunks submitted per worker: one runs while the next waits
    can_kill: ClassVar[bool] = False  # cancel() stops a running chunk, so the memory guard may give one back
    runs_in_submit: ClassVar[bool] = False  # submit() runs the chunk: the loop records what finished at once
    # The most chunks of one storage unit (a Parquet row group) sent as one task (`driver.batches`): above one
    # where a task costs more than a chunk's own overhead.
    chunks_per_task: ClassVar[int] = 1

    @abstractmethod
    def open(self, workers: int) -> None: ...

    @abstractmethod
    def submit(self, fn: Callable[[Any], Any], arg: Any, *, affinity: Hashable | None = None) -> Future:
        """Run `fn(arg)`; with `affinity_lanes() > 1`, chunks with one `affinity` key go to one worker."""

    @abstractmethod
    def close(self) -> None: ...

    def cancel(self, future: Future) -> None:
        future.cancel()

    def affinity_lanes(self) -> int:
        """Worker processes that cache what they decode: above one, the runner deals chunks to them by key."""
        return 1

    def capacity(self) -> int | None:
        """Task slots of a cluster, so the runner keeps that many chunks busy; None: `in_flight_per_worker`."""
        return None

    def check(self) -> None:
        """Raise EngineError when the cluster is gone: the job ends failed, running chunks go back to pending."""
        return None

    def remote_resources(self) -> tuple[float, int] | None:
        """(cpu_percent, rss_bytes) of workers that psutil cannot see from here."""
        return None

    def worker_pids(self) -> list[int]:
        """Local worker processes, whose memory the guard adds to the driver's."""
        return []


class Adapter(Engine):
    """A duck-typed engine behind the base: its own optional methods when it defines them, else the defaults."""

    def __init__(self, inner: EngineLike) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.needs_pickle = inner.needs_pickle  # type: ignore[misc]
        self.can_kill = bool(getattr(inner, "can_kill", False))  # type: ignore[misc]
        self.runs_in_submit = bool(getattr(inner, "runs_in_submit", True))  # type: ignore[misc]  # unknown: it may
        # Looked up once, here: the runner calls the base's methods and never probes an engine.
        self._lanes = getattr(inner, "affinity_lanes", None)
        self._capacity = getattr(inner, "capacity", None)
        self._check = getattr(inner, "check", None)
        self._remote = getattr(inner, "remote_resources", None)
        self._pids = getattr(inner, "worker_pids", None)

    def open(self, workers: int) -> None:
        self.inner.open(workers)

    def submit(self, fn: Callable[[Any], Any], arg: Any, *, affinity: Hashable | None = None) -> Future:
        if self._lanes is not None and affinity is not None:
            return self.inner.submit(fn, arg, affinity=affinity)  # type: ignore[call-arg]
        return self.inner.submit(fn, arg)

    def cancel(self, future: Future) -> None:
        self.inner.cancel(future)

    def close(self) -> None:
        self.inner.close()

    def affinity_lanes(self) -> int:
        return (self._lanes() or 1) if self._lanes is not None else 1

    def capacity(self) -> int | None:
        return self._capacity() if self._capacity is not None else None

    def check(self) -> None:
        if self._check is not None:
            self._check()

    def remote_resources(self) -> tuple[float, int] | None:
        return self._remote() if self._remote is not None else None

    def worker_pids(self) -> list[int]:
        return self._pids() if self._pids is not None else []

    def __repr__(self) -> str:
        return f"Adapter({self.inner!r})"


def as_engine(engine: Engine | EngineLike) -> Engine:
    """`engine` itself when it subclasses Engine, else wrapped with the defaults."""
    return engine if isinstance(engine, Engine) else Adapter(engine)


def completed(fn: Callable[[Any], Any], arg: Any) -> Future:
    """A Future already resolved by calling `fn(arg)` here."""
    future: Future = Future()
    try:
        future.set_result(fn(arg))
    except BaseException as exc:  # noqa: BLE001 - delivered to the runner like any engine's failure
        future.set_exception(exc)
    return future


def task_name(arg: Any) -> str:
    """`chunk-7` for a chunk task, `chunks-10-19` for a run of them: what a cluster's dashboard shows."""
    indexes = [getattr(getattr(a, "spec", None), "index", None) for a in (arg if isinstance(arg, list) else [arg])]
    if len(indexes) == 1:
        return f"chunk-{indexes[0] if indexes[0] is not None else 'task'}"
    return f"chunks-{indexes[0]}-{indexes[-1]}"


def settle(future: Future, *, result: Any = None, exception: BaseException | None = None) -> None:
    """Settle a Future once: an engine's callback thread and the runner's cancel() may race for it."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


def worker_env(concurrent: int, processes: int | None = None) -> dict[str, str]:
    """Environment for worker processes started on this machine, `concurrent` chunks running at once in
    `processes` processes (default: one chunk each): each process's thread pools get an equal share of the
    cores, so workers x threads never exceed them (two workers each running Polars on every core spend their
    time taking turns), and its frame caches an equal share of their bytes (`frame_cache.host_share`). A
    variable the user set is left as it is."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = str(max(1, cores // max(1, concurrent)))
    env = {name: os.environ.get(name, threads) for name in THREAD_VARIABLES}
    env[WORKER_PROCESSES] = os.environ.get(WORKER_PROCESSES, str(max(1, processes or concurrent)))
    return env


_environ_lock = threading.Lock()


@contextlib.contextmanager
def spawn_environ(env: Mapping[str, str]) -> Iterator[None]:
    """`env` in os.environ while worker processes are spawned (a child copies its parent's environment
    when it starts, before it imports anything), and as it was afterwards."""
    with _environ_lock:
        before = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            yield
        finally:
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
