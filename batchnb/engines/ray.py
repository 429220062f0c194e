"""Ray: a local Ray on 127.0.0.1 started once per process, or an existing cluster by address."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from batchnb.errors import EngineError

__all__ = ["RayEngine"]


@dataclass(kw_only=True)
class RayEngine:
    address: str | None = None
    num_cpus: int | None = None

    name = "ray"
    needs_pickle = True

    def __post_init__(self) -> None:
        self._remote = None
        self._refs: dict[Future, Any] = {}

    def open(self, workers: int) -> None:
        try:
            import ray
        except ImportError as exc:
            raise EngineError("engine 'ray' needs ray: pip install ray") from exc
        if not ray.is_initialized():
            try:
                if self.address is None:
                    ray.init(
                        num_cpus=self.num_cpus or workers,
                        _node_ip_address="127.0.0.1",
                        include_dashboard=False,
                        log_to_driver=False,
                        configure_logging=False,
                    )
                else:
                    ray.init(address=self.address, log_to_driver=False)
            except Exception as exc:
                raise EngineError(f"cannot start or join Ray (address={self.address!r}): {exc}") from exc
        from batchnb.engines.processes import call_pickled

        self._remote = ray.remote(max_retries=0)(call_pickled)

    def submit(self, fn: Callable[[Any], Any], arg: Any) -> Future:
        import cloudpickle

        ref = self._remote.remote(cloudpickle.dumps((fn, arg)))
        future = ref.future()
        self._refs[future] = ref
        return future

    def cancel(self, future: Future) -> None:
        import ray

        ref = self._refs.pop(future, None)
        if ref is not None:
            ray.cancel(ref, force=True)

    def close(self) -> None:
        # Ray stays up for the kernel: start-up is paid once per process, not per job.
        self._refs.clear()

    def worker_pids(self) -> list[int]:
        return []
