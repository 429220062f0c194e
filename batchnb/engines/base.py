"""The engine protocol: submit a chunk task, get a concurrent.futures.Future, cancel, close."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any, ClassVar, Protocol, runtime_checkable

__all__ = ["Engine", "completed", "settle"]


@runtime_checkable
class Engine(Protocol):
    """Every engine is a `submit`-shaped seam; the runner never sees engine-specific types.

    `open(workers)` starts pools or joins clusters, `submit(fn, arg)` returns a standard Future,
    `cancel(future)` gives up on one task, `close()` releases what `open` took. `needs_pickle`
    says whether tasks cross a process boundary (so callables must be cloudpickle-able).

    Cluster engines may also define, and the runner calls them when present (about once a second):
    `check()` raises `EngineError` when the cluster is gone (a future may also fail with `EngineError`):
    the job then ends failed, its running chunks go back to pending and no attempt is spent;
    `capacity() -> int | None` is the number of task slots, so the runner keeps that many chunks busy;
    `remote_resources() -> (cpu_percent, rss_bytes) | None` covers workers that psutil cannot see;
    `affinity_lanes() -> int | None` is the number of worker processes: when above one, the runner
    deals chunks to them by locality key (see `Format.locality`) and calls `submit(fn, arg, affinity=key)`,
    and the engine sends chunks with one key to one worker.
    """

    name: ClassVar[str]
    needs_pickle: ClassVar[bool]

    def open(self, workers: int) -> None: ...

    def submit(self, fn: Callable[[Any], Any], arg: Any) -> Future: ...

    def cancel(self, future: Future) -> None: ...

    def close(self) -> None: ...

    def worker_pids(self) -> list[int]: ...


def completed(fn: Callable[[Any], Any], arg: Any) -> Future:
    """A Future already resolved by calling `fn(arg)` here."""
    future: Future = Future()
    try:
        future.set_result(fn(arg))
    except BaseException as exc:  # noqa: BLE001 - delivered to the runner like any engine's failure
        future.set_exception(exc)
    return future


def settle(future: Future, *, result: Any = None, exception: BaseException | None = None) -> None:
    """Settle a Future once: an engine's callback thread and the runner's cancel() may race for it."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass
