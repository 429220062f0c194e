"""A spawn-based worker pool that knows which process runs which task.

`concurrent.futures.ProcessPoolExecutor` cannot stop one running task, and one dead worker breaks the
whole pool. Here every worker has its own pipe: a chunk over its time limit is killed with its worker,
a worker that dies fails only its own task, and a fresh worker takes its place. Tasks may name an
affinity key (a Parquet row group): an idle worker takes the first queued task whose key it already
holds, else one whose key no worker holds yet, else one of a key whose home has been busy for a while (still
starting, or on a long chunk): helping sooner would decode that row group a second time for less than the
wait, and an idle worker is offered work at least once a second. A key stays with the
worker that took it first: a worker that helps out with another's key holds it too (its cache has the group
now) but does not take it over, so the key's home keeps its chunks.
A worker that dies before it has started (spawn imports the main module again) is the engine's
failure, not the chunk's: its task fails with `EngineError`, which ends the job without spending retries.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Container, Mapping
from concurrent.futures import Future
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnContext
from typing import Any

import cloudpickle

from batchnb.engines.base import spawn_environ, worker_env
from batchnb.errors import EngineError, describe

__all__ = ["RemoteTraceback", "WorkerLostError", "WorkerPool"]


class WorkerLostError(RuntimeError):
    """The worker process running a task died or was killed."""


class RemoteTraceback(Exception):
    """Carries the worker's traceback text as the `__cause__` of the re-raised error."""

    def __str__(self) -> str:
        return self.args[0]


STARTED = b""  # a worker's first message; replies are pickles, never empty
FORGET = b"forget"  # to an idle worker of a pool kept warm: drop the frames of the last job (never a pickle)


def _worker_main(conn: Connection) -> None:
    conn.send_bytes(STARTED)
    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not payload:
            return
        if payload == FORGET:
            from batchnb.frame_cache import forget_all

            forget_all()
            continue
        reply: tuple[Any, ...]
        try:
            fn, arg = cloudpickle.loads(payload)
            reply = ("ok", fn(arg))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the driver
            reply = ("err", exc, "".join(traceback.format_exception(exc)))
        try:
            data = cloudpickle.dumps(reply)
        except Exception:  # noqa: BLE001 - an unpicklable exception still reports its type and message
            data = cloudpickle.dumps(_picklable(reply))
        conn.send_bytes(data)


def _picklable(reply: tuple[Any, ...]) -> tuple[str, BaseException, str]:
    """The reply as plain text when its exception or result cannot be pickled."""
    if reply[0] == "err":  # it did not pickle: its description travels
        return ("err", RuntimeError(describe(reply[1])), reply[2])
    return ("err", RuntimeError(f"the task's result ({type(reply[1]).__name__}) cannot be pickled"), "")


def _start_failure(pid: int | None, code: int) -> str:
    return (
        f"engine 'processes': worker process {pid} exited (exit code {code}) while starting, before it could "
        "run a chunk (its error is on standard error). Workers are spawned and import the main module again: "
        "a script that runs a job on 'processes' needs `if __name__ == \"__main__\":` around it, and must be "
        "a file rather than standard input"
    )


HELP_AFTER_S = 1.0  # an idle worker helps with the keys of a worker busy this long (starting up, a long chunk)


class _Worker:
    def __init__(self, ctx: SpawnContext, env: Mapping[str, str]) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child,), daemon=True, name="batchnb-worker")
        with spawn_environ(env):
            self.process.start()
        child.close()
        self.future: Future | None = None
        self.started = False
        self.held: set[object] = set()  # keys of the tasks it ran: what its cache may hold
        self.since = time.monotonic()  # when it was given its task (or started)


def pick(
    queue: deque[tuple[Future, bytes, object]],
    worker: object,
    homes: Mapping[object, object],
    held: Container[object] = (),
    slow: Container[object] = (),
) -> int | None:
    """Index of the queued task `worker` should run next: one whose key it holds (its home, or one it
    helped with), else one whose key no worker holds (it becomes this worker's), else the first one whose
    key's home is `slow` (busy for longer than `HELP_AFTER_S`); None: stay idle. Helping with a key decodes
    (and scores) its row group a second time, which costs more than waiting a moment for its home."""
    unclaimed = helped = None
    for i, (_, _, key) in enumerate(queue):
        home = homes.get(key) if key is not None else None
        if home is worker or (key is not None and key in held):
            return i
        if unclaimed is None and home is None:
            unclaimed = i
        if helped is None and home in slow:
            helped = i
    return unclaimed if unclaimed is not None else helped


class WorkerPool:
    def __init__(self, workers: int) -> None:
        self._ctx = multiprocessing.get_context("spawn")  # never fork: Polars' thread pools do not survive it
        self._lock = threading.Lock()
        self._queue: deque[tuple[Future, bytes, object]] = deque()
        self._homes: dict[object, _Worker] = {}  # affinity key -> the worker that ran it first
        self.env = worker_env(workers)  # thread pools sized so that the workers share the cores
        self._workers = [_Worker(self._ctx, self.env) for _ in range(workers)]
        self._next = 0  # the worker offered work first at the next dispatch
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
        self._closed = False
        self._collector = threading.Thread(target=self._collect, name="batchnb-pool-collector", daemon=True)
        self._collector.start()

    def submit(self, fn: Callable[[Any], Any], arg: Any, affinity: object = None) -> Future:
        future: Future = Future()
        payload = cloudpickle.dumps((fn, arg))
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            self._queue.append((future, payload, affinity))
            self._dispatch()
        return future

    def _dispatch(self) -> None:
        # Idle workers are offered work in turn, starting after the last one served: with every worker idle
        # (the first chunks, the memory guard admitting one at a time), a new key goes to a worker that has
        # none yet, instead of the first worker collecting every key and the others then helping with them.
        n, now = len(self._workers), time.monotonic()
        slow = {w for w in self._workers if w.future is not None and now - w.since > HELP_AFTER_S}
        for worker in [self._workers[(self._next + k) % n] for k in range(n)]:
            while self._queue and worker.future is None:
                i = pick(self._queue, worker, self._homes, worker.held, slow)
                if i is None:
                    break
                future, payload, key = self._queue[i]
                del self._queue[i]
                if not future.set_running_or_notify_cancel():
                    continue  # cancelled while queued
                if key is not None:
                    if len(self._homes) > 4096:  # keys of finished row groups are never asked for again
                        self._homes.clear()
                    if len(worker.held) > 64:
                        worker.held.clear()
                    self._homes.setdefault(key, worker)  # a helper holds the key too, but its home stays
                    worker.held.add(key)
                worker.future, worker.since = future, now
                worker.conn.send_bytes(payload)
                self._next = (self._workers.index(worker) + 1) % n

    def kill(self, future: Future) -> None:
        """Cancel a queued task, or kill the worker running it (the task fails with WorkerLostError)."""
        with self._lock:
            if future.cancel():
                return
            for worker in self._workers:
                if worker.future is future:
                    worker.process.kill()

    def idle(self, workers: int, env: Mapping[str, str]) -> bool:
        """Whether a new job may take this pool as it is: open, `workers` live workers started with `env` that
        have said they are ready, no task queued or running."""
        with self._lock:
            return (
                not self._closed and not self._queue and len(self._workers) == workers and self.env == dict(env)
                and all(w.started and w.future is None and w.process.is_alive() for w in self._workers)
            )  # fmt: skip

    def forget(self) -> None:
        """Between jobs: the workers drop their cached frames, and no key has a home any more."""
        with self._lock:
            self._homes.clear()
            for worker in self._workers:
                worker.held.clear()
                try:
                    worker.conn.send_bytes(FORGET)
                except OSError:
                    pass  # a dead worker: its sentinel replaces it

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def _collect(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                busy = {w.conn: w for w in self._workers}  # idle workers send nothing, so waiting on all is free
                sentinels = {w.process.sentinel: w for w in self._workers}
            ready = wait([*busy, *sentinels, self._wake_r], timeout=1.0)
            with self._lock:
                for obj in ready:
                    if obj in busy:
                        self._receive(busy[obj])
                for obj in ready:
                    if obj in sentinels:
                        self._replace(sentinels[obj])
                self._dispatch()

    def _receive(self, worker: _Worker) -> None:
        try:
            data = worker.conn.recv_bytes()
        except (EOFError, OSError):
            return  # the worker died; its sentinel reports it
        if data == STARTED:
            worker.started = True
            return
        reply = cloudpickle.loads(data)
        future, worker.future = worker.future, None
        if future is None:
            return
        if reply[0] == "ok":
            future.set_result(reply[1])
        else:
            exc = reply[1]
            exc.__cause__ = RemoteTraceback(reply[2])
            future.set_exception(exc)

    def _replace(self, worker: _Worker) -> None:
        if worker.process.is_alive():
            return
        code = worker.process.exitcode
        if worker.future is not None and not worker.future.done():
            if not worker.started and code is not None and code >= 0:  # not killed: it could not start
                worker.future.set_exception(EngineError(_start_failure(worker.process.pid, code)))
            else:
                msg = f"worker process {worker.process.pid} died (exit code {code}) while running the chunk"
                worker.future.set_exception(WorkerLostError(msg))
        worker.conn.close()
        self._homes = {key: home for key, home in self._homes.items() if home is not worker}
        index = self._workers.index(worker)
        if not self._closed:
            self._workers[index] = _Worker(self._ctx, self.env)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for future, _, _ in self._queue:
                future.cancel()
            self._queue.clear()
            workers = list(self._workers)
        self._wake_w.send_bytes(b"x")
        for worker in workers:
            try:
                if worker.future is None:
                    worker.conn.send_bytes(b"")
                else:
                    worker.process.kill()
            except OSError:
                pass
        for worker in workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._collector.join(timeout=5)
        self._wake_r.close()
        self._wake_w.close()
