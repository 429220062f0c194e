"""Reaching a Dask cluster: start an embedded one on loopback, join a scheduler by address, tend its workers.

Kept apart from the engine: this is what talks to `distributed` to get a Client (and to check, before the
Client tries, that an address really is a Dask scheduler), while `dask.py` only submits chunks through it.
"""

from __future__ import annotations

import logging
import socket
import struct
from dataclasses import dataclass
from typing import Any

from batchnb.errors import EngineError, describe

__all__ = ["Connection", "connect", "restart_workers"]

log = logging.getLogger("batchnb")


@dataclass(frozen=True)
class Connection:
    """A Client, the embedded cluster it runs on (None when joined), and whether closing the Client is ours."""

    client: Any
    cluster: Any = None
    own_client: bool = True


def connect(
    address: str | None, *, n_workers: int, threads_per_worker: int, adapt: tuple[int, int] | None, timeout: float
) -> Connection:
    """Join `address`; else use the process's default Client; else start an embedded cluster and join it.

    `timeout` bounds joining a scheduler by address (connect, handshake). A cluster batchnb did not start
    may rerun a task whose worker died by itself: that gets a warning, since batchnb's retries should be
    the only ones.
    """
    if address is not None:
        connection = Connection(_join(address, timeout))
    elif (current := _default_client()) is not None:
        log.info("engine 'dask': using this process's default Dask client (%s)", current.scheduler.address)
        connection = Connection(current, own_client=False)
    else:
        cluster = _start_local(n_workers, threads_per_worker, adapt)
        try:
            return Connection(_join(cluster, timeout), cluster)
        except EngineError:
            cluster.close()
            raise
    _warn_if_scheduler_retries(connection.client)
    return connection


def _join(address: Any, timeout: float) -> Any:
    """A Client of the scheduler at `address` (a string or a LocalCluster), or EngineError saying why not."""
    from distributed import Client

    if isinstance(address, str):
        _probe(address, timeout)
    try:
        return Client(address, timeout=f"{timeout}s", set_as_default=False)
    except Exception as exc:  # OSError, TimeoutError, or a protocol error from a stranger
        msg = (
            f"cannot reach the Dask scheduler at {address!r}: {type(exc).__name__}: {exc}; is it running, and "
            "is the address right?"
        )
        raise EngineError(msg) from exc


def _probe(address: str, timeout: float) -> None:
    """Fail fast, with the reason, when `address` is no Dask scheduler.

    distributed's Client waits for the server's handshake without a time limit and reads whatever arrives as
    the length of a message: a server of another kind hangs it or makes it allocate exabytes. A scheduler
    writes its handshake as soon as it accepts: the first 8 bytes are that message's length, a few hundred.
    """
    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme not in ("tcp", "tls"):
        return  # inproc, ucx, ws: the Client's own checks apply
    host, port = parse_host_port(location)
    hint = "check the address (host and port of the scheduler, default port 8786) and that the scheduler runs"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
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
        got = f"it sent {header[:8]!r}" if header else f"it sent nothing within {timeout:g}s"
        raise EngineError(f"{address!r} is not a Dask scheduler ({got}): {hint}")


def _start_local(n_workers: int, threads_per_worker: int, adapt: tuple[int, int] | None) -> Any:
    """A LocalCluster with everything on loopback, whose scheduler lets batchnb do all the retrying, and
    whose workers' thread pools share the cores (`worker_env`)."""
    import dask
    from distributed import LocalCluster

    from batchnb.engines.base import spawn_environ, worker_env

    processes = adapt[1] if adapt is not None else n_workers
    env = worker_env(processes * threads_per_worker, processes)
    # A task whose worker died fails at once, so that batchnb's retry policy is the only one. The workers
    # spawned now get `env` before they import anything (a script's main module may import Polars);
    # `env=` gives it to workers a nanny restarts later too.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), spawn_environ(env):
        try:
            cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=threads_per_worker,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                silence_logs=logging.ERROR,
                env=env,
            )
        except Exception as exc:
            raise EngineError(f"cannot start a local Dask cluster: {type(exc).__name__}: {exc}") from exc
    if adapt is not None:
        cluster.adapt(minimum=adapt[0], maximum=adapt[1])
    return cluster


def _default_client() -> Any:
    """The Client the user made this process's default, or None."""
    from distributed import default_client as current

    try:
        return current()
    except ValueError:
        return None


def restart_workers(client: Any, workers: set[str]) -> None:
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
    """A scheduler someone else started may rerun a task whose worker died: say how to leave that to batchnb."""
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


def _allowed_failures(dask_scheduler: Any) -> int:
    return dask_scheduler.allowed_failures
