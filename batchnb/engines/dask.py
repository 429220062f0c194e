"""Dask: an embedded LocalCluster on 127.0.0.1, or an existing scheduler by address."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from batchnb.errors import EngineError

__all__ = ["DaskEngine"]


@dataclass(kw_only=True)
class DaskEngine:
    address: str | None = None
    n_workers: int | None = None
    threads_per_worker: int | None = None
    adapt: tuple[int, int] | None = None

    name = "dask"
    needs_pickle = True

    def __post_init__(self) -> None:
        self._client = None
        self._cluster = None
        self._futures: dict[Future, Any] = {}

    def open(self, workers: int) -> None:
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError as exc:
            raise EngineError("engine 'dask' needs dask[distributed]: pip install 'dask[distributed]'") from exc
        try:
            if self.address is None:
                self._cluster = LocalCluster(
                    n_workers=self.n_workers or workers,
                    threads_per_worker=self.threads_per_worker or 1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",
                )
                if self.adapt is not None:
                    self._cluster.adapt(minimum=self.adapt[0], maximum=self.adapt[1])
                self._client = Client(self._cluster)
            else:
                self._client = Client(self.address, timeout="10s")
        except OSError as exc:
            raise EngineError(f"cannot reach the Dask scheduler at {self.address!r}: {exc}") from exc

    def submit(self, fn: Callable[[Any], Any], arg: Any) -> Future:
        import cloudpickle

        from batchnb.engines.processes import call_pickled

        remote = self._client.submit(call_pickled, cloudpickle.dumps((fn, arg)), pure=False, retries=0)
        future: Future = Future()
        future.set_running_or_notify_cancel()

        def done(f) -> None:
            try:
                future.set_result(f.result())
            except BaseException as exc:  # noqa: BLE001
                if not future.done():
                    future.set_exception(exc)

        remote.add_done_callback(done)
        self._futures[future] = remote
        return future

    def cancel(self, future: Future) -> None:
        remote = self._futures.pop(future, None)
        if remote is not None:
            remote.cancel()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def worker_pids(self) -> list[int]:
        return []
