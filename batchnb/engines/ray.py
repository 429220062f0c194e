"""Ray: a local Ray on 127.0.0.1 started once per process, an existing cluster by address, or the user's Ray.

Start-up is paid once per kernel: the local Ray that batchnb starts stays up after the job, is reused
by the next job in the same process, and stops when the interpreter exits (Ray's own atexit hook) or
at `RayEngine.shutdown()`. A Ray the user initialised is used as it is and never shut down by batchnb.

Every chunk, or the run of chunks that share a Parquet row group (`driver.batches`), is one Ray task with
`max_retries=0`: batchnb's runner is the only retry policy (a task
whose worker dies fails with `WorkerCrashedError` and is retried with batchnb's backoff). The task
reads its chunks and writes their parts; the driver ships chunk descriptions and gets back a small
`ChunkOutcome` for each.

A head node that goes away would leave the driver waiting, and after
`gcs_rpc_server_reconnect_timeout_s` (60 s) Ray ends the whole driver process: the engine probes the
GCS port about once a second, and when it is gone the job ends `failed` with an `EngineError` and
batchnb disconnects from Ray so that the kernel survives; `run()` again once a cluster is back.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import CancelledError, Future
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, ClassVar

from batchnb.engines.base import Engine, settle, task_name
from batchnb.errors import ConfigError, EngineError

__all__ = ["RayEngine"]

log = logging.getLogger("batchnb")

PROBE_EVERY_S = 1.0
CAPACITY_EVERY_S = 5.0
SAMPLE_TTL_S = 30.0  # a worker that reported nothing for this long is gone or idle
LOOPBACK = ("127.0.0.1", "::1")

_lock = threading.RLock()
_connected: str | None = None  # what batchnb connected this process to ("local" or an address); None: not batchnb


@dataclass
class RayEngine(Engine):
    """Chunks as Ray tasks.

    Parameters
    ----------
    address
        ``"auto"`` (the cluster started on this machine with `ray start`), ``"host:port"`` of a head
        node, or ``"ray://host:10001"`` (Ray Client). None: the Ray this process is already connected
        to, else the cluster named by ``RAY_ADDRESS`` if set, else a local Ray on 127.0.0.1
        (dashboard off, token authentication on) kept for the whole process.
    num_cpus
        CPUs of the local Ray (default `max_workers`); ignored when Ray is already running.
    """

    address: str | None = None
    _: KW_ONLY
    num_cpus: int | None = None

    name: ClassVar[str] = "ray"
    needs_pickle: ClassVar[bool] = True
    chunks_per_task: ClassVar[int] = 32

    _task: Any = field(default=None, init=False, repr=False, compare=False)
    _refs: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _gcs: tuple[str, int] | None = field(default=None, init=False, repr=False, compare=False)
    _probed: tuple = field(default=(0.0, True), init=False, repr=False, compare=False)
    _capacity: tuple = field(default=(0.0, None), init=False, repr=False, compare=False)
    _lost_error: EngineError | None = field(default=None, init=False, repr=False, compare=False)
    _samples: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.address is not None and self.num_cpus is not None:
            raise ConfigError(
                "RayEngine: `num_cpus` only applies to a local Ray (no `address`): set it where the cluster starts"
            )
        if self.num_cpus is not None and (not isinstance(self.num_cpus, int) or self.num_cpus < 1):
            raise ConfigError(f"RayEngine: `num_cpus` must be a positive integer, got {self.num_cpus!r}")

    # --- life cycle ----------------------------------------------------------------------------------
    def open(self, workers: int) -> None:
        try:
            import ray
        except ImportError as exc:
            raise EngineError("engine 'ray' needs ray: pip install 'batchnb[ray]'") from exc
        self._refs.clear()
        self._samples.clear()
        self._lost_error = None
        _connect(self.address, self.num_cpus or workers)
        self._gcs = _gcs_address()
        self._probed, self._capacity = (0.0, True), (0.0, None)
        self._task = ray.remote(max_retries=0, retry_exceptions=False)(run_and_sample)

    def close(self) -> None:
        """Forget this job's tasks; Ray stays up for the next job unless its cluster is gone."""
        self._refs.clear()
        self._task = None
        if self._lost_error is not None:
            RayEngine.shutdown()

    @staticmethod
    def shutdown() -> None:
        """Disconnect this process from Ray (stopping the local Ray that batchnb started)."""
        global _connected
        import ray

        with _lock:
            if ray.is_initialized():
                ray.shutdown()
            _connected = None

    # --- tasks ---------------------------------------------------------------------------------------
    def submit(self, fn: Callable[[Any], Any], arg: Any, *, affinity: Hashable | None = None) -> Future:
        import cloudpickle

        assert self._task is not None, "open() first"
        self.check()
        ref = self._task.options(name=f"batchnb-{task_name(arg)}").remote(cloudpickle.dumps((fn, arg)))
        future: Future = Future()
        future.set_running_or_notify_cancel()
        self._refs[future] = ref
        ref.future().add_done_callback(lambda inner: self._relay(inner, future))
        return future

    def _relay(self, inner: Future, future: Future) -> None:
        """Hand the task's outcome to the runner's Future, with the chunk's own exception type."""
        self._refs.pop(future, None)
        try:
            result, sample = inner.result()
        except BaseException as exc:  # noqa: BLE001 - every failure goes to the runner
            error = exc
        else:
            key, before = sample[:2], self._samples.get(sample[:2])
            self._samples[key] = (*sample[2:], before[1:3] if before else None)  # (rss, cpu_s, at, (cpu_s, at))
            settle(future, result=result)
            return
        if not self._gcs_alive(force=True):
            error = self._lost(f"a chunk failed with {type(error).__name__} while the head node was unreachable")
        settle(future, exception=_unwrap(error))

    def cancel(self, future: Future) -> None:
        """Give up on a chunk; a running one is stopped by killing its worker process (force=True)."""
        import ray

        ref = self._refs.pop(future, None)
        settle(future, exception=CancelledError("chunk task cancelled"))
        if ref is not None and self._lost_error is None:
            try:
                ray.cancel(ref, force=True)
            except Exception as exc:  # noqa: BLE001 - a task that already ended has nothing to cancel
                log.debug("ray.cancel failed: %s", exc)

    # --- health and resources ----------------------------------------------------------------------------
    def check(self) -> None:
        """Raise EngineError when the head node is gone (the runner polls this about once a second)."""
        if self._lost_error is not None:
            raise self._lost_error
        if not self._gcs_alive():
            raise self._lost("its GCS port refuses connections")

    def _gcs_alive(self, force: bool = False) -> bool:
        if self._gcs is None:
            return True
        at, alive = self._probed
        if not force and time.monotonic() - at < PROBE_EVERY_S:
            return alive
        alive = _port_open(*self._gcs) or _port_open(*self._gcs)  # one refusal may be a hiccup
        self._probed = (time.monotonic(), alive)
        return alive

    def _lost(self, why: str) -> EngineError:
        where = f"{self._gcs[0]}:{self._gcs[1]}" if self._gcs else self.address
        msg = (
            f"lost the Ray head node at {where}: {why}. Finished parts are kept; run() again once a "
            "cluster is back (or with another engine) to resume"
        )
        self._lost_error = EngineError(msg)
        return self._lost_error

    def capacity(self) -> int | None:
        """CPUs of the cluster, so that the runner keeps every one of them busy."""
        import ray

        at, cpus = self._capacity
        if self._lost_error is not None or not self._gcs_alive():
            return cpus  # asking a head that is gone would block until Ray's own timeout
        if cpus is None or time.monotonic() - at > CAPACITY_EVERY_S:
            try:
                cpus = int(ray.cluster_resources().get("CPU", 0)) or None
            except Exception:  # noqa: BLE001 - best effort
                cpus = None
            self._capacity = (time.monotonic(), cpus)
        return cpus

    def remote_resources(self) -> tuple[float, int] | None:
        """CPU% and RSS of the cluster's workers, as each reported them with its last finished chunk.

        Ray's own per-process metrics come from its dashboard agent, which a minimal install (no
        aiohttp) does not run; the workers' self-reports need nothing. A local Ray's workers are this
        process's descendants and psutil counts them instead.
        """
        if _connected == "local" or not self._samples:
            return None
        import psutil

        local = _local_pids()
        here, now = socket.gethostname(), time.time()
        cpu, rss = 0.0, 0
        for (host, pid), (worker_rss, cpu_s, at, previous) in list(self._samples.items()):
            if now - at > SAMPLE_TTL_S or (host == here and (pid in local or not psutil.pid_exists(pid))):
                continue  # stale, counted by psutil already, or a worker of this machine that died
            rss += worker_rss
            if previous is not None and at > previous[1]:
                cpu += 100.0 * (cpu_s - previous[0]) / (at - previous[1])
        return cpu, rss

    def worker_pids(self) -> list[int]:
        """Ray worker processes on this machine that this process started (the local Ray)."""
        if _connected != "local":
            return []
        import psutil

        pids = []
        try:
            for proc in psutil.Process().children(recursive=True):
                try:
                    if proc.name().startswith("ray::"):
                        pids.append(proc.pid)
                except psutil.Error:
                    continue
        except psutil.Error:
            pass
        return pids


# --- helpers ------------------------------------------------------------------------------------------
def run_and_sample(payload: bytes) -> tuple[Any, tuple[str, int, int, float, float]]:
    """The Ray task: run the chunk, then report this worker's (host, pid, RSS, CPU seconds, time)."""
    import psutil

    from batchnb.engines.processes import call_pickled

    result = call_pickled(payload)
    me = psutil.Process()
    times = me.cpu_times()
    return result, (socket.gethostname(), os.getpid(), me.memory_info().rss, times.user + times.system, time.time())


def _local_pids() -> set[int]:
    import psutil

    try:
        return {p.pid for p in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return set()


def _connect(address: str | None, num_cpus: int) -> None:
    """Connect this process to the Ray that `address` names, reusing a connection that already fits."""
    global _connected
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None  # ray.init() itself would join RAY_ADDRESS
    want = address or "local"
    with _lock:
        if ray.is_initialized():
            if _connected is None:  # the user's own ray.init(): use it as it is, never shut it down
                if address not in (None, "auto") and not _same_gcs(address):
                    msg = (
                        f"Ray is already connected to {_gcs_address()} in this process, not {address!r}: "
                        "call ray.shutdown() first, or use RayEngine() to run on the connected cluster"
                    )
                    raise EngineError(msg)
                return
            if _connected == want:
                return
            ray.shutdown()
            _connected = None
        t0 = time.monotonic()
        try:
            if address is None:
                _start_local(num_cpus)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as exc:
            where = "a local Ray" if address is None else f"the Ray cluster at {address!r}"
            raise EngineError(f"cannot start or join {where}: {type(exc).__name__}: {exc}") from exc
        _connected = want
        log.info("engine 'ray': connected to %s in %.1fs (kept for this process)", want, time.monotonic() - t0)


def _start_local(num_cpus: int) -> None:
    """A new Ray for this process whose sockets listen on 127.0.0.1 wherever Ray lets them.

    Ray's servers listen on the node IP when it is loopback and on every interface otherwise, but on
    Linux `ray.init` turns a `_node_ip_address` of 127.0.0.1 into the machine's external address; it
    keeps loopback only where Ray clusters are off, its default on macOS and Windows. Turning that
    switch off while Ray starts puts GCS, raylet, workers, driver, runtime-env agent and the autoscaler
    monitor on 127.0.0.1. Metrics collection off: no Prometheus exporter in the dashboard agent. Its
    workers' thread pools share the cores (`worker_env`: one task per CPU runs at once).
    """
    import ray
    from ray._private import ray_constants

    from batchnb.engines.base import spawn_environ, worker_env

    clusters = getattr(ray_constants, "ENABLE_RAY_CLUSTER", True)  # a Ray without the switch: the warning below
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        # In the raylet's environment, which its workers inherit: a `runtime_env` would make Ray start a
        # separate worker per task environment instead of its pre-started ones (seconds per chunk after a kill).
        with spawn_environ(worker_env(num_cpus)):
            ray.init(
                address="local",  # a new Ray for this process, even when `ray start` runs on this machine
                num_cpus=num_cpus,
                _node_ip_address="127.0.0.1",
                include_dashboard=False,
                _system_config={"enable_metrics_collection": False},
                log_to_driver=False,
                configure_logging=False,
            )
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = clusters
    node_ip = ray.util.get_node_ip_address()
    if node_ip not in LOOPBACK:
        log.warning("engine 'ray': this Ray version placed the local node on %s, not 127.0.0.1", node_ip)


def _gcs_address() -> tuple[str, int] | None:
    import ray

    try:
        host, _, port = ray.get_runtime_context().gcs_address.rpartition(":")
        return host, int(port)
    except Exception:  # noqa: BLE001 - Ray Client mode has no GCS address here; it reports loss itself
        return None


def _same_gcs(address: str) -> bool:
    gcs = _gcs_address()
    if gcs is None or address.startswith("ray://"):
        return False
    host, _, port = address.rpartition(":")
    try:
        return int(port) == gcs[1] and socket.gethostbyname(host) == socket.gethostbyname(gcs[0])
    except (OSError, ValueError):
        return False


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _unwrap(error: BaseException) -> BaseException:
    """The chunk's own exception (type and message) with the worker's traceback as its cause."""
    from ray.exceptions import RayTaskError

    from batchnb.engines.pool import RemoteTraceback

    if isinstance(error, RayTaskError) and isinstance(error.cause, BaseException):
        cause = error.cause
        # Ray's RayTaskError(<cause's class>) instances keep no traceback_str; their message holds the trace.
        cause.__cause__ = RemoteTraceback(vars(error).get("traceback_str") or str(error))
        return cause
    return error
