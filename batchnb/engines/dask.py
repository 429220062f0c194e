"""Dask: an embedded LocalCluster on 127.0.0.1, an existing scheduler by address, or the user's own Client.

Every chunk is one Dask task that reads its own chunk and writes its own part on the worker; the
driver sends a chunk description and gets back a small `ChunkOutcome`. Retries are batchnb's:
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

from batchnb.engines.base import Engine, settle
from batchnb.errors import ConfigError, EngineError, describe

__all__ = ["DaskEngine"]

log = logging.getLogger("batchnb")

METRICS_EVERY_S = 1.0  # scheduler_info() is one round trip to the scheduler
CONNECT_TIMEOUT_S = 10.0  # joining a scheduler by address: connect, handshake


def _local_pids() -> set[int]:
    import psutil

    try:
        return {p.pid for p in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return set()


def _chunk_key(arg: Any) -> str:
    index = getattr(getattr(arg, "spec", None), "index", None)
    return f"batchnb-chunk-{index if index is not None else 'task'}-{uuid.uuid4().hex[:8]}"


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

    _client: Any = field(default=None, init=False, repr=False, compare=False)
    _cluster: Any = field(default=None, init=False, repr=False, compare=False)
    _executor: Any = field(default=None, init=False, repr=False, compare=False)
    _own_client: bool = field(default=False, init=False, repr=False, compare=False)
    _remote: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _restart: set = field(default_factory=set, init=False, repr=False, compare=False)
    _metrics: tuple = field(default=(0.0, None), init=False, repr=False, compare=False)
    _pids: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _homes: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # affinity -> worker
    _dealt: int = field(default=0, init=False, repr=False, compare=False)  # keys dealt so far

    def __post_init__(self) -> None:
        embedded_only = {
            "n_workers": self.n_workers,
            "threads_per_worker": self.threads_per_worker,
            "adapt": self.adapt,
        }
        given = [k for k, v in embedded_only.items() if v is not None]
        if self.address is not None and given:
            msg = f"DaskEngine: {', '.join(f'`{k}`' for k in given)} only apply to an embedded cluster (no `address`): size your own cluster where you start it"
            raise ConfigError(msg)
        if self.adapt is not None:
            lo, hi = self.adapt
            if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi and hi >= 1):
                raise ConfigError(
                    f"DaskEngine: `adapt` must be (minimum, maximum) workers with 0 <= minimum <= maximum, maximum >= 1, got {self.adapt!r}"
                )
        for key in ("n_workers", "threads_per_worker"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"DaskEngine: `{key}` must be a positive integer, got {value!r}")

    # --- life cycle ----------------------------------------------------------------------------------
    def open(self, workers: int) -> None:
        try:
            import distributed  # noqa: F401
        except ImportError as exc:
            raise EngineError("engine 'dask' needs dask.distributed: pip install 'batchnb[dask]'") from exc
        self._remote.clear()
        self._restart.clear()
        self._metrics = (0.0, None)
        self._pids.clear()
        self._homes.clear()
        self._dealt = 0
        if self.address is not None:
            self._client, self._own_client = _join(self.address), True
        elif (current := _default_client()) is not None:
            log.info("engine 'dask': using this process's default Dask client (%s)", current.scheduler.address)
            self._client, self._own_client = current, False
        else:
            n = self.n_workers or (self.adapt[0] if self.adapt else workers)
            self._cluster = _start_local(n, self.threads_per_worker or 1, self.adapt)
            try:
                self._client, self._own_client = _join(self._cluster), True
            except EngineError:
                self._cluster.close()
                self._cluster = None
                raise
        if self._cluster is None:
            _warn_if_scheduler_retries(self._client)
        self._executor = self._client.get_executor(pure=False, retries=0)

    def close(self) -> None:
        client, cluster = self._client, self._cluster
        self._client = self._cluster = self._executor = None
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

    def _home(self, affinity: Any) -> str | None:
        """The worker for this key: the one it went to before if still there, else the next in turn. The runner
        deals keys to as many lanes as there are workers, so dealing them in turn keeps every worker busy."""
        info = self._scheduler_info()
        workers = sorted(info.get("workers", {})) if info is not None else []
        if affinity is None or not workers:
            return None
        home = self._homes.get(affinity)
        if home not in workers:
            home = workers[self._dealt % len(workers)]
            self._dealt += 1
            if len(self._homes) > 4096:  # keys of finished row groups are never asked for again
                self._homes.clear()
            self._homes[affinity] = home
        return home

    def submit(self, fn: Callable[[Any], Any], arg: Any, *, affinity: Hashable | None = None) -> Future:
        import cloudpickle

        from batchnb.engines.processes import call_pickled

        assert self._executor is not None, "open() first"
        self.check()
        if self._restart:
            stuck, self._restart = self._restart, set()
            _restart_workers(self._client, stuck)
        key = _chunk_key(arg)
        home = self._home(affinity)
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
        """Hand the task's outcome to the runner's Future (runs on the client's event loop: never block)."""
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
        if self._cluster is not None:
            return None  # an embedded cluster's workers are this process's children: psutil counts them
        info = self._scheduler_info()
        if info is None:
            return None
        local = _local_pids()
        cpu, rss = 0.0, 0
        for address, worker in info.get("workers", {}).items():
            if self._pids.get(address) in local:
                continue  # a worker this process started itself: already counted by psutil
            metrics = worker.get("metrics", {})
            cpu += float(metrics.get("cpu", 0.0))
            rss += int(metrics.get("memory", 0))
        return cpu, rss

    def _scheduler_info(self) -> dict | None:
        """The scheduler's view of its workers (nthreads, metrics), at most once a second."""
        at, info = self._metrics
        if info is not None and time.monotonic() - at < METRICS_EVERY_S:
            return info
        client = self._client
        if client is None or client.status != "running":
            return None
        try:
            info = client.scheduler_info(n_workers=-1)
            workers = info.get("workers", {})
            unknown = [a for a, w in workers.items() if a not in self._pids and w.get("host") in _local_hosts()]
            if unknown:  # pids tell this machine's workers apart from the ones psutil already counts
                self._pids.update(client.run(os.getpid, workers=unknown))
        except Exception:  # noqa: BLE001 - metrics are best effort
            return None
        self._metrics = (time.monotonic(), info)
        return info

    def worker_pids(self) -> list[int]:
        """Local worker processes (embedded cluster): what the memory guard adds to the driver's RSS."""
        return sorted(_local_pids()) if self._cluster is not None else []


# --- helpers ------------------------------------------------------------------------------------------
def _join(address: Any) -> Any:
    from distributed import Client

    if isinstance(address, str):
        _probe(address)
    try:
        return Client(address, timeout=f"{CONNECT_TIMEOUT_S}s", set_as_default=False)
    except Exception as exc:  # OSError, TimeoutError, or a protocol error from a stranger
        msg = (
            f"cannot reach the Dask scheduler at {address!r}: {type(exc).__name__}: {exc}; is it running, and "
            "is the address right?"
        )
        raise EngineError(msg) from exc


def _probe(address: str) -> None:
    """Fail fast, with the reason, when `address` is no Dask scheduler.

    distributed's Client waits for the server's handshake without a time limit and reads whatever arrives as
    the length of a message: a server of another kind hangs it or makes it allocate exabytes. A scheduler
    writes its handshake as soon as it accepts: the first 8 bytes are that message's length, a few hundred.
    """
    import socket
    import struct

    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme not in ("tcp", "tls"):
        return  # inproc, ucx, ws: the Client's own checks apply
    host, port = parse_host_port(location)
    hint = "check the address (host and port of the scheduler, default port 8786) and that the scheduler runs"
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    except OSError as exc:
        raise EngineError(f"cannot reach the Dask scheduler at {address!r} ({describe(exc)}): {hint}") from exc
    with sock:
        if scheme == "tls":
            return  # the TLS handshake comes first; the Client checks the rest
        header = b""
        try:
            while len(header) < 8 and (data := sock.recv(8 - len(header))):
                header += data
        except OSError:  # a timeout: the server waits for us to speak first, which a scheduler never does
            pass
    size = struct.unpack("<Q", header)[0] if len(header) == 8 else None
    if size is None or not 0 < size < 2**20:
        got = f"it sent {header[:8]!r}" if header else f"it sent nothing within {CONNECT_TIMEOUT_S:g}s"
        raise EngineError(f"{address!r} is not a Dask scheduler ({got}): {hint}")


def _start_local(n_workers: int, threads_per_worker: int, adapt: tuple[int, int] | None) -> Any:
    """A LocalCluster with everything on loopback, whose scheduler lets batchnb do all the retrying."""
    import dask
    from distributed import LocalCluster

    # A task whose worker died fails at once, so that batchnb's retry policy is the only one.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        try:
            cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=threads_per_worker,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                silence_logs=logging.ERROR,
            )
        except Exception as exc:
            raise EngineError(f"cannot start a local Dask cluster: {type(exc).__name__}: {exc}") from exc
    if adapt is not None:
        cluster.adapt(minimum=adapt[0], maximum=adapt[1])
    return cluster


def _restart_workers(client: Any, workers: set[str]) -> None:
    """Restart the workers that run abandoned chunks (through their nannies)."""
    try:
        result = client.restart_workers(sorted(workers), timeout=30, raise_for_error=False)
    except Exception as exc:  # noqa: BLE001 - e.g. workers without a nanny
        result = {w: f"{type(exc).__name__}: {exc}" for w in workers}
    failed = {w: r for w, r in (result or {}).items() if r != "OK"}
    if failed:
        log.warning("engine 'dask': could not restart workers running abandoned chunks (%s); "
                    "they finish those chunks before taking new ones", failed)  # fmt: skip


def _warn_if_scheduler_retries(client: Any) -> None:
    try:
        allowed = client.run_on_scheduler(_allowed_failures)
    except Exception:  # noqa: BLE001 - a scheduler that refuses run_on_scheduler keeps its secrets
        return
    if allowed:
        log.warning(
            "engine 'dask': the scheduler reruns a task whose worker died up to %s times by itself "
            "(distributed.scheduler.allowed-failures); set DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=0 "
            "where it starts so that batchnb's `retries` and `backoff` are the only retry policy",
            allowed,
        )


def _default_client() -> Any:
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


def _local_hosts() -> set[str]:
    import socket

    return {"127.0.0.1", "localhost", socket.gethostname()}


def _allowed_failures(dask_scheduler: Any) -> int:
    return dask_scheduler.allowed_failures
