"""What the embedded clusters listen on: loopback only, so that nobody on the network reaches them.

Each test lists the listening TCP sockets of this process and its descendants (every process of an
embedded cluster is one) while the cluster is up.

Ray (2.60 on Linux) leaves nothing outside loopback once its node IP really is 127.0.0.1, so there is
no allow-list: a socket that Ray cannot move would be listed here with the reason, and in the README
section "Running on a cluster".
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import time

import psutil
import pytest
from clusters import Gate, listening_sockets
from conftest import make_frame, write_source

import batchnb as bn

pytestmark = pytest.mark.timeout(300)


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4 loopback address on an IPv6 socket (``::ffff:127.0.0.1``)."""
    address = ipaddress.ip_address(ip.split("%")[0])
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def describe(sockets: list[tuple[int, str, str, int]]) -> list[str]:
    return sorted(f"{addr}:{port} {name} (pid {pid})" for pid, name, addr, port in sockets)


def arguments(pid: int) -> list[str]:
    """A process's command line; empty for one that has gone (an earlier test's Ray may be on its way out)."""
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def cmdline(pid: int) -> str:
    return " ".join(arguments(pid))


def session_processes(session: str) -> set[int]:
    """The processes a Ray session started and names on their command line (its GCS and raylet), alive now."""
    found = set()
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and any(session in arg for arg in proc.cmdline()):
                found.add(proc.pid)
        except psutil.Error:
            continue
    return found


def ray_sockets(session: str) -> list[tuple[int, str, str, int]]:
    """Listening sockets of this process, its descendants, and the session's processes with theirs (a Ray
    process whose parent exited is no longer this process's descendant, but it is still this Ray's)."""
    found = {}
    for root in {os.getpid(), *session_processes(session)}:
        for pid, name, addr, port in listening_sockets(root):
            found[pid, addr, port] = (pid, name, addr, port)
    return list(found.values())


def test_is_loopback() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "::1", "::ffff:127.0.0.1"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.0.2.2", "::ffff:192.0.2.2"]))


@pytest.mark.slow
def test_embedded_ray_listens_on_loopback_only_without_dashboard_or_metrics(tmp_path) -> None:
    import ray
    from ray._private import ray_constants

    from batchnb.engines.ray import RayEngine

    RayEngine.shutdown()  # a Ray left connected by an earlier test would be reused as it is
    source = write_source(make_frame(8_000, seed=3), "parquet", tmp_path / "tiny.parquet")
    gate = Gate(tmp_path / "release", 1_000, held=1)  # the rest wait while the sockets are listed
    job = bn.BatchJob(source, str(tmp_path / "out"), detector=gate, chunk_size=1_000, engine=RayEngine(num_cpus=2))
    try:
        job.start(progress=None)
        deadline = time.monotonic() + 120
        while job.status().chunks_done < 1:  # Ray up, its workers holding chunks
            assert time.monotonic() < deadline, job.status()
            time.sleep(0.05)
        session = ray._private.worker._global_node.session_name  # this Ray's, not one an earlier test left
        sockets = ray_sockets(session)
        gcs_config = [
            arg.split("=", 1)[1]
            for pid in session_processes(session)
            if psutil.Process(pid).name() == "gcs_server"
            for arg in arguments(pid)
            if arg.startswith("--config_list=")
        ]
        gate.open()
        result = job.wait(timeout=120)
        node_ip = ray.util.get_node_ip_address()
        assert gcs_config, (
            session,
            [(p, psutil.Process(p).name()) for p in session_processes(session)],
            describe(sockets),
        )
    finally:
        gate.open()
        RayEngine.shutdown()

    assert result.status == "succeeded", result.errors
    names = {name for _, name, *_ in sockets}
    assert {"gcs_server", "raylet"} <= names, describe(sockets)  # the listing saw Ray's own processes
    assert any(name.startswith("ray::") for name in names), describe(sockets)  # and its workers
    outside = [s for s in sockets if not is_loopback(s[2])]
    assert not outside, describe(outside)
    assert node_ip == "127.0.0.1"
    # No dashboard head listens at all, and the metrics exporter is off for every Ray process.
    assert not [s for s in sockets if "dashboard/dashboard.py" in cmdline(s[0])], describe(sockets)
    assert json.loads(base64.b64decode(gcs_config[0]))["enable_metrics_collection"] is False
    # The switch that keeps the node on loopback is Ray's process-wide setting: restored after the start.
    assert ray_constants.ENABLE_RAY_CLUSTER is True


@pytest.mark.slow
def test_embedded_dask_listens_on_loopback_only() -> None:
    from batchnb.engines.dask import DaskEngine

    engine = DaskEngine(n_workers=2)
    engine.open(2)
    try:
        assert engine.submit(abs, -3).result(timeout=60) == 3
        sockets = listening_sockets(os.getpid())
        dashboard = engine.dashboard_link
    finally:
        engine.close()

    assert len({pid for pid, *_ in sockets}) >= 3, describe(sockets)  # scheduler here, two workers
    outside = [s for s in sockets if not is_loopback(s[2])]
    assert not outside, describe(outside)
    assert dashboard is None or "127.0.0.1" in dashboard  # the dashboard (with bokeh) is on loopback too
