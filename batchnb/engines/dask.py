"""Dask: an embedded LocalCluster on 127.0.0.1, an existing scheduler by address, or the user's own Client.

Every chunk, or the run of chunks that share a Parquet row group (`driver.batches`), is one Dask task that
reads its chunks and writes their parts on the worker; the driver sends chunk descriptions and gets back a
small `ChunkOutcome` for each. Retries are batchnb's:
tasks are submitted with `retries=0`, and the embedded scheduler runs with `allowed-failures=0`, so a
task whose worker dies fails at once (`KilledWorker`) and the runner retries it with its own backoff
on the workers that are left. A scheduler that goes away turns every running chunk into an
`EngineError`, which ends the job `failed` with its finished parts kept.

Each worker process keeps its own cache of decoded Parquet row groups, so the chunks of one row
group go to one worker (a loose restriction: the scheduler may still move them, e.g. when that
worker is gone, or to a worker that has run out of work near the end of a job), and the runner
deals row groups to workers in turn so that none waits.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Hashable
from concurrent.futures import CancelledError, Future
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, ClassVar

from batchnb.engines._dask_cluster import connect, restart_workers
from batchnb.engines.base import Engine, settle, task_name
from batchnb.errors import ConfigError, EngineError

__all__ = ["DaskEngine"]

log = logging.getLogger("batchnb")

METRICS_EVERY_S = 1.0  # scheduler_info() is one round trip to the scheduler
CONNECT_TIMEOUT_S = 10.0  # joining a scheduler by address: connect, handshake


@dataclass
class DaskEngine(Engine):
    """Chunks as Dask tasks.

    Parameters
    ----------
    address
        Scheduler address (``"tcp://host:8786"``) of a running cluster: joined, and left running.
        None: use the Client the user already made the default in this process, if any; else start
        a LocalCluster on 127.0.0.1 (scheduler, workers and dashboard on loopback) for the job and
        close it afterwards.
    n_workers, threads_per_worker
        Embedded cluster only. Defaults: one single-threaded worker process per `max_workers`
        (Polars already uses every core of a process; processes keep one chunk's crash to itself).
    adapt
        Embedded cluster only: ``(minimum, maximum)`` workers for Dask's adaptive scaling.
    """

    address: str | None = None
    _: KW_ONLY
    n_workers: int | None = None
    threads_per_worker: int | None = None
    adapt: tuple[int, int] | None = None

    name: ClassVar[str] = "dask"
    needs_pickle: ClassVar[bool] = True
    chunks_per_task: ClassVar[int] = 32

    _client: Any = field(default=None, init=False, repr=False, compare=False)
    _cluster: Any = field(default=None, init=False, repr=False, compare=False)
    _executor: Any = field(default=None, init=False, repr=False, compare=False)
    _own_client: bool = field(default=False, init=False, repr=False, compare=False)
    _remote: dict[Future, tuple[str, Future]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _restart: set[str] = field(default_factory=set, init=False, repr=False, compare=False)
    _workers: _Workers | None = field(default=None, init=False, repr=False, compare=False)
    _dealer: _Dealer = field(default_factory=lambda: _Dealer(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_options(self)

    # --- life cycle ----------------------------------------------------------------------------------
    def open(self, workers: int) -> None:
        try:
            import distributed  # noqa: F401
        except ImportError as exc:
            raise EngineError("engine 'dask' needs dask.distributed: pip install 'batchnb[dask]'") from exc
        self._remote.clear()
        self._restart.clear()
        self._dealer = _Dealer()
        n = self.n_workers or (self.adapt[0] if self.adapt else workers)
        connection = connect(self.address, n_workers=n, threads_per_worker=self.threads_per_worker or 1,
                             adapt=self.adapt, timeout=CONNECT_TIMEOUT_S)  # fmt: skip
        self._client, self._cluster, self._own_client = connection.client, connection.cluster, connection.own_client
        self._workers = _Workers(self._client)
        self._executor = self._client.get_executor(pure=False, retries=0)

    def close(self) -> None:
        client, cluster = self._client, self._cluster
        self._client = self._cluster = self._executor = self._workers = None
        self._remote.clear()
        if client is None:
            return
        if self._restart and cluster is None:
            # A cluster that stays up may be shared: its workers are not restarted when a job ends.
            log.warning("engine 'dask': chunks given up on still run on %s until they return", sorted(self._restart))
            self._restart.clear()
        if self._own_client:
            client.close(timeout=5)
        if cluster is not None:
            cluster.close(timeout=10)

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard of the cluster in use (needs bokeh); None before `open()` or without bokeh."""
        if self._client is None:
            return None
        try:
            return self._client.dashboard_link
        except Exception:  # noqa: BLE001 - no dashboard
            return None

    # --- tasks ---------------------------------------------------------------------------------------
    def affinity_lanes(self) -> int:
        """Worker processes: chunks sharing an affinity key are sent to one of them."""
        info = self._scheduler_info()
        return (len(info.get("workers", {})) or 1) if info is not None else 1

    def submit(self, fn: Callable[[Any], Any], arg: Any, *, affinity: Hashable | None = None) -> Future:
        import cloudpickle

        from batchnb.engines.processes import call_pickled

        assert self._executor is not None, "open() first"
        self.check()
        if self._restart:
            stuck, self._restart = self._restart, set()
            restart_workers(self._client, stuck)
        key = _chunk_key(arg)
        info = self._scheduler_info()
        home = self._dealer.home(affinity, sorted(info.get("workers", {})) if info is not None else [])
        where = {"workers": [home], "allow_other_workers": True} if home is not None else {}
        try:
            inner = self._executor.submit(call_pickled, cloudpickle.dumps((fn, arg)), key=key, **where)
        except Exception as exc:
            raise self._lost(f"submitting a chunk failed ({type(exc).__name__}: {exc})") from exc
        future: Future = Future()
        future.set_running_or_notify_cancel()
        self._remote[future] = (key, inner)
        inner.add_done_callback(lambda f: self._relay(f, future))
        return future

    def _relay(self, inner: Future, future: Future) -> None:
        """Hand the task's outcome to the runner's Future (runs on the client's event loop: never block).

        The client then holds the task no longer: a result the client still wants is computed again by the
        scheduler when the worker holding it dies, which would rewrite the parts of chunks already recorded.
        """
        self._remote.pop(future, None)
        if inner.cancelled():
            # The client cancels every future when it loses the scheduler; after batchnb's own cancel()
            # the runner's Future is already settled and this does nothing.
            settle(future, exception=self._lost("the client lost its connection to the scheduler"))
        elif inner.exception() is not None:
            settle(future, exception=inner.exception())
        else:
            settle(future, result=inner.result())

    def cancel(self, future: Future) -> None:
        """Give up on a chunk; a chunk that already runs is stopped by restarting its worker (needs a nanny)."""
        key, inner = self._remote.pop(future, (None, None))
        if inner is None:
            return
        settle(future, exception=CancelledError(f"chunk task {key} cancelled"))
        if self._client is None or self._client.status != "running":
            return  # a lost scheduler has nothing left to cancel, and asking it would block
        try:
            running_on = [w for w, keys in self._client.processing().items() if key in keys]
            inner.cancel()
        except Exception:  # noqa: BLE001 - a cluster that is gone has nothing left to cancel
            return
        # A Python thread cannot be stopped from outside: if the job goes on, the worker running the
        # chunk is restarted before the next submit (as the processes engine kills its worker).
        self._restart.update(running_on)

    # --- health and resources ----------------------------------------------------------------------------
    def check(self) -> None:
        """Raise EngineError when the scheduler is gone (the runner polls this about once a second)."""
        client = self._client
        if client is not None and client.status not in ("running", "newly-created"):
            raise self._lost(f"the client is {client.status}")

    def _lost(self, why: str) -> EngineError:
        where = self.address or (self._cluster.scheduler_address if self._cluster is not None else "the default client")
        msg = (
            f"lost the Dask scheduler at {where}: {why}. Finished parts are kept; run() again once the "
            "scheduler is back (or with another engine) to resume"
        )
        return EngineError(msg)

    def capacity(self) -> int | None:
        """Task slots the cluster has (the adaptive maximum when scaling), so the runner keeps them busy."""
        if self._client is None:
            return None
        if self.adapt is not None and self._cluster is not None:
            return self.adapt[1] * (self.threads_per_worker or 1)
        info = self._scheduler_info()
        if info is None:
            return None
        return sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()) or None

    def remote_resources(self) -> tuple[float, int] | None:
        """CPU% and RSS of the workers psutil cannot see from here, from the scheduler's worker metrics."""
        if self._cluster is not None or self._workers is None:
            return None  # an embedded cluster's workers are this process's children: psutil counts them
        return self._workers.remote_usage()

    def _scheduler_info(self) -> dict[str, Any] | None:
        return self._workers.info() if self._workers is not None else None

    def worker_pids(self) -> list[int]:
        """Local worker processes (embedded cluster): what the memory guard adds to the driver's RSS."""
        return sorted(_local_pids()) if self._cluster is not None else []


def _check_options(engine: DaskEngine) -> None:
    """Options that size an embedded cluster are refused with an address, and must be sizes."""
    embedded_only = {
        "n_workers": engine.n_workers,
        "threads_per_worker": engine.threads_per_worker,
        "adapt": engine.adapt,
    }
    given = [k for k, v in embedded_only.items() if v is not None]
    if engine.address is not None and given:
        msg = f"DaskEngine: {', '.join(f'`{k}`' for k in given)} only apply to an embedded cluster (no `address`): size your own cluster where you start it"
        raise ConfigError(msg)
    if engine.adapt is not None:
        lo, hi = engine.adapt
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi and hi >= 1):
            raise ConfigError(
                f"DaskEngine: `adapt` must be (minimum, maximum) workers with 0 <= minimum <= maximum, maximum >= 1, got {engine.adapt!r}"
            )
    for key in ("n_workers", "threads_per_worker"):
        value = getattr(engine, key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"DaskEngine: `{key}` must be a positive integer, got {value!r}")


@dataclass
class _Dealer:
    """Affinity keys (row groups) to workers: a key stays with the worker it went to while that worker is
    there, a new key goes to the next worker in turn. The runner deals keys to as many lanes as there are
    workers, so dealing them in turn keeps every worker busy."""

    homes: dict[Hashable, str] = field(default_factory=dict)
    dealt: int = 0  # keys dealt so far

    def home(self, affinity: Hashable | None, workers: list[str]) -> str | None:
        if affinity is None or not workers:
            return None
        home = self.homes.get(affinity)
        if home not in workers:
            home = workers[self.dealt % len(workers)]
            self.dealt += 1
            if len(self.homes) > 4096:  # keys of finished row groups are never asked for again
                self.homes.clear()
            self.homes[affinity] = home
        return home


@dataclass
class _Workers:
    """The scheduler's view of its workers (threads, metrics), asked at most once a second, and the pids of
    the workers on this machine, which psutil counts already."""

    client: Any
    fetched: tuple[float, dict[str, Any] | None] = (0.0, None)
    pids: dict[str, int] = field(default_factory=dict)  # worker address -> pid, for this machine's workers

    def info(self) -> dict[str, Any] | None:
        at, info = self.fetched
        if info is not None and time.monotonic() - at < METRICS_EVERY_S:
            return info
        if self.client.status != "running":
            return None
        try:
            info = self.client.scheduler_info(n_workers=-1)
            workers = info.get("workers", {})
            unknown = [a for a, w in workers.items() if a not in self.pids and w.get("host") in _local_hosts()]
            if unknown:  # pids tell this machine's workers apart from the ones psutil already counts
                self.pids.update(self.client.run(os.getpid, workers=unknown))
        except Exception:  # noqa: BLE001 - metrics are best effort
            return None
        self.fetched = (time.monotonic(), info)
        return info

    def remote_usage(self) -> tuple[float, int] | None:
        """CPU% and RSS summed over the workers that are not this process's children."""
        info = self.info()
        if info is None:
            return None
        local = _local_pids()
        cpu, rss = 0.0, 0
        for address, worker in info.get("workers", {}).items():
            if self.pids.get(address) in local:
                continue  # a worker this process started itself: already counted by psutil
            metrics = worker.get("metrics", {})
            cpu += float(metrics.get("cpu", 0.0))
            rss += int(metrics.get("memory", 0))
        return cpu, rss


def _chunk_key(arg: Any) -> str:
    return f"batchnb-{task_name(arg)}-{uuid.uuid4().hex[:8]}"


def _local_pids() -> set[int]:
    import psutil

    try:
        return {p.pid for p in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return set()


def _local_hosts() -> set[str]:
    import socket

    return {"127.0.0.1", "localhost", socket.gethostname()}
