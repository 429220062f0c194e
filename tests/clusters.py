"""Real Dask and Ray clusters on 127.0.0.1 for the distributed tests, and what their chunks run.

Every cluster process is a child of the test process (so the leak check sees it) and is stopped by
the context manager that started it: SIGTERM to the whole process tree, SIGKILL for what lingers.
Nothing is stopped by name (`ray stop` would also stop other people's Ray on a shared machine).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import psutil

from batchnb.detectors.robust import MAD

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 60.0


# --------------------------------------------------------------------------------------------------
# What the chunks run: shipped by value, since cluster workers cannot import the tests package
# --------------------------------------------------------------------------------------------------
GATE_DEADLINE_S = 120.0  # a held chunk gives up after this long, should a test fail before it opens the gate


def scores(frame: pl.DataFrame) -> pl.DataFrame:
    """A deterministic callable detector."""
    return frame.select("id", (pl.col("x2").fill_null(0.0) * 2.0 + pl.col("count")).alias("score"))


def slow_scores(frame: pl.DataFrame) -> pl.DataFrame:
    """`scores` that takes ~0.3 s a chunk: work that lasts, so that where chunks run is decided by placement,
    not by which worker happens to be free first."""
    time.sleep(0.3)
    return scores(frame)


@dataclass(frozen=True)
class SlowMAD(MAD):
    """The fitted `mad` detector whose scoring query takes `seconds` longer per call: a row group's task (scored
    once) lasts, so that a test can act while one runs."""

    name: str = "slow-mad"
    seconds: float = 1.0

    def score_expr(self, columns, state):
        def pause(values: pl.Series) -> pl.Series:
            time.sleep(self.seconds)
            return pl.Series(values.name, [0.0] * len(values))

        return super().score_expr(columns, state) + pl.col(columns[0]).map_batches(pause, return_dtype=pl.Float64)


class Gate:
    """A detector whose first `held` whole chunks run, while the chunks after them wait until `open()`: a test
    acts while those certainly run (kills a worker, stops the scheduler, lists sockets), then lets them go.

    The first to arrive pass, whichever they are: a cluster queues chunks on its workers ahead of time, and a
    worker held at the gate would never reach a chunk queued behind it. Passes and the release are files, so
    that worker processes on this machine share them; frames that are not a whole chunk (what a job probes
    its detector with) pass at once.
    """

    def __init__(self, release: Path, chunk_size: int, *, held: int = 2, detector: Callable = scores) -> None:
        self.release, self.chunk_size, self.held, self.detector = str(release), chunk_size, held, detector

    def open(self) -> None:
        Path(self.release).touch()

    def __call__(self, frame: pl.DataFrame) -> pl.DataFrame:
        ids = frame["id"] if frame.height == self.chunk_size else None
        if ids is not None and ids[0] % self.chunk_size == 0 and ids[-1] - ids[0] == self.chunk_size - 1:
            self._wait(int(ids[0]) // self.chunk_size)
        return self.detector(frame)

    def _wait(self, chunk: int) -> None:
        if os.path.exists(self.release) or self._take_a_pass():
            return
        deadline = time.monotonic() + GATE_DEADLINE_S
        while not os.path.exists(self.release):
            if time.monotonic() > deadline:
                raise TimeoutError(f"chunk {chunk}: {self.release} never appeared")
            time.sleep(0.02)

    def _take_a_pass(self) -> bool:
        """One of the `held` passes, taken with O_EXCL so that two processes never take the same one."""
        for i in range(self.held):
            try:
                os.close(os.open(f"{self.release}.pass-{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            return True
        return False


def _register_by_value() -> None:
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


_register_by_value()


# --------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, *, proc: subprocess.Popen | None = None, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def stop_tree(proc: subprocess.Popen | psutil.Process, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
    """Signal a process and all its descendants; SIGKILL whatever is still there after `grace` seconds."""
    try:
        root = psutil.Process(proc.pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        procs = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(sig)
    if sig != signal.SIGKILL:
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
    if isinstance(proc, subprocess.Popen):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    out = open(log, "ab")
    try:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent)
    finally:
        out.close()


def listening_sockets(root_pid: int) -> list[tuple[int, str, str, int]]:
    """(pid, process name, address, port) of every listening TCP socket of a process and its descendants."""
    root = psutil.Process(root_pid)
    found = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="tcp")
            name = proc.name()
        except psutil.Error:
            continue
        for conn in conns:
            if conn.status == psutil.CONN_LISTEN:
                found.append((proc.pid, name, conn.laddr.ip, conn.laddr.port))
    return found


# --------------------------------------------------------------------------------------------------
# Dask: `dask scheduler` + `dask worker` processes
# --------------------------------------------------------------------------------------------------
@dataclass
class DaskCluster:
    address: str
    port: int
    logs: Path
    scheduler: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)

    def start_scheduler(self) -> None:
        env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
        self.scheduler = _spawn(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
             "--dashboard-address", "127.0.0.1:0", "--no-show"],
            self.logs / "scheduler.log", env,
        )  # fmt: skip
        wait_for_port(self.port, proc=self.scheduler)

    def add_workers(self, n: int) -> None:
        """Workers without a nanny: a killed worker stays dead and its chunks go to the others."""
        for _ in range(n):
            i = len(self.workers)
            args = [str(BIN / "dask"), "worker", self.address, "--host", "127.0.0.1", "--nthreads", "1",
                    "--no-nanny", "--no-dashboard", "--name", f"w{i}", "--memory-limit", "2GiB"]  # fmt: skip
            self.workers.append(_spawn(args, self.logs / f"worker-{i}.log"))
        self.wait_for_workers(len([w for w in self.workers if w.poll() is None]))

    def wait_for_workers(self, n: int) -> None:
        from distributed import Client

        with Client(self.address, timeout="20s", set_as_default=False) as client:
            client.wait_for_workers(n, timeout=START_TIMEOUT_S)

    def busy_worker(self, timeout: float = START_TIMEOUT_S) -> subprocess.Popen:
        """A worker process that runs a batchnb chunk right now, as the scheduler sees it."""
        from distributed import Client

        deadline = time.monotonic() + timeout
        with Client(self.address, timeout="20s", set_as_default=False) as client:
            while time.monotonic() < deadline:
                names = {a: w["name"] for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}
                for address, keys in client.processing().items():
                    if any(str(k).startswith("batchnb-chunk") for k in keys):
                        return self.workers[int(str(names[address])[1:])]
                time.sleep(0.02)
        raise TimeoutError("no worker runs a batchnb chunk")

    def kill_scheduler(self) -> None:
        assert self.scheduler is not None
        self.scheduler.send_signal(signal.SIGKILL)
        self.scheduler.wait(timeout=10)

    def stop(self) -> None:
        for proc in [*self.workers, *([self.scheduler] if self.scheduler else [])]:
            stop_tree(proc)
        self.workers.clear()
        self.scheduler = None


@contextlib.contextmanager
def dask_cluster(tmp_path: Path, n_workers: int = 3) -> Iterator[DaskCluster]:
    port = free_port()
    logs = tmp_path / "dask-logs"
    logs.mkdir(exist_ok=True)
    cluster = DaskCluster(address=f"tcp://127.0.0.1:{port}", port=port, logs=logs)
    try:
        cluster.start_scheduler()
        cluster.add_workers(n_workers)
        yield cluster
    finally:
        cluster.stop()


# --------------------------------------------------------------------------------------------------
# Ray: `ray start --head` + `ray start --address` nodes, each in the foreground (--block)
# --------------------------------------------------------------------------------------------------
@dataclass
class RayCluster:
    address: str
    port: int
    logs: Path
    head: subprocess.Popen | None = None
    nodes: list[subprocess.Popen] = field(default_factory=list)

    def _start(self, args: list[str], log: Path) -> subprocess.Popen:
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
        common = ["--block", "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
                  "--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port()),
                  "--runtime-env-agent-port", str(free_port())]  # fmt: skip
        return _spawn([str(BIN / "ray"), "start", *args, *common], log, env)

    def start_head(self, num_cpus: int = 1) -> None:
        _ensure_ray_token()
        args = ["--head", "--port", str(self.port), "--num-cpus", str(num_cpus), "--include-dashboard", "false"]
        self.head = self._start(args, self.logs / f"head-{time.time_ns()}.log")
        wait_for_port(self.port, proc=self.head)

    def add_node(self, num_cpus: int = 1) -> subprocess.Popen:
        node = self._start(
            ["--address", f"127.0.0.1:{self.port}", "--num-cpus", str(num_cpus)],
            self.logs / f"node-{len(self.nodes)}.log",
        )
        self.nodes.append(node)
        return node

    def wait_for_cpus(self, cpus: int, timeout: float = START_TIMEOUT_S) -> None:
        """Until the cluster reports `cpus` CPUs, asked from a separate process (this one may join later)."""
        code = (
            "import ray, sys, time\n"
            f"ray.init(address='127.0.0.1:{self.port}', log_to_driver=False, configure_logging=False)\n"
            f"deadline = time.monotonic() + {timeout}\n"
            f"while ray.cluster_resources().get('CPU', 0) < {cpus} and time.monotonic() < deadline:\n"
            "    time.sleep(0.2)\n"
            f"sys.exit(0 if ray.cluster_resources().get('CPU', 0) >= {cpus} else 1)\n"
        )
        env = {**os.environ, "RAY_AUTH_MODE": "token"}
        run = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout + 30, env=env
        )
        assert run.returncode == 0, f"Ray cluster did not reach {cpus} CPUs: {run.stderr[-2000:]}"

    def worker_processes(self, node: subprocess.Popen) -> list[psutil.Process]:
        """Ray worker processes of one node that are running a batchnb chunk right now."""
        found = []
        for proc in psutil.Process(node.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "batchnb-chunk" in " ".join(proc.cmdline()) or "run_and_sample" in proc.name():
                    found.append(proc)
        return found

    def kill_head(self) -> None:
        assert self.head is not None
        stop_tree(self.head, signal.SIGKILL)
        self.head = None

    def stop(self) -> None:
        # SIGKILL: on SIGTERM a node drains for up to 30 s, and these clusters hold nothing worth keeping.
        for proc in [*self.nodes, *([self.head] if self.head else [])]:
            stop_tree(proc, signal.SIGKILL)
        self.nodes.clear()
        self.head = None
        # `ray start` records its address for later bare ray.init() calls; `ray stop` would remove it.
        current = Path(tempfile.gettempdir(), "ray", "ray_current_cluster")
        with contextlib.suppress(OSError):
            if current.read_text().strip().endswith(f":{self.port}"):
                current.unlink()


def _ensure_ray_token() -> None:
    """Token authentication on: the nodes and every driver read the token from ~/.ray/auth_token."""
    from ray._private.authentication.authentication_token_setup import _get_default_token_path, generate_and_save_token

    if not _get_default_token_path().exists():
        generate_and_save_token()


@contextlib.contextmanager
def ray_cluster(tmp_path: Path, *, head_cpus: int = 1, nodes: int = 1, node_cpus: int = 1) -> Iterator[RayCluster]:
    port = free_port()
    logs = tmp_path / "ray-logs"
    logs.mkdir(exist_ok=True)
    cluster = RayCluster(address=f"127.0.0.1:{port}", port=port, logs=logs)
    try:
        cluster.start_head(head_cpus)
        for _ in range(nodes):
            cluster.add_node(node_cpus)
        cluster.wait_for_cpus(head_cpus + nodes * node_cpus)
        yield cluster
    finally:
        cluster.stop()
