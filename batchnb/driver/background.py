"""A job's passes on a daemon thread, so a notebook stays usable while the job runs.

A pass is one `run_job` under the output's lock. Its result or error is kept for `wait()`; the view it was given
is closed and shown the outcome whatever happens. A "Retry failed" click during a pass queues the next pass on a
new thread, and `wait()` follows it to the end.
"""

from __future__ import annotations

import threading
from typing import Any

from batchnb.config import JobConfig
from batchnb.driver.run import run_job
from batchnb.errors import JobStateError
from batchnb.result import JobResult

__all__ = ["Passes"]


class Passes:
    """The passes of one job: at most one runs at a time; `cancel` stops the current one between chunks."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._result: JobResult | None = None
        self._error: BaseException | None = None

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self, config: JobConfig, view: Any, *, restart: bool = False, only_failed: bool = False) -> JobResult:
        """One pass in the caller's thread."""
        result, error = None, None
        try:
            on_progress = view.update if view else None
            result = self._result = run_job(config, cancel=self.cancel, on_progress=on_progress,
                                            restart=restart, only_failed=only_failed)  # fmt: skip
            return result
        except BaseException as exc:
            error = exc
            raise
        finally:
            if view is not None:
                view.close()
                view.finish(result, error=error)

    def launch(self, config: JobConfig, view: Any, *, restart: bool = False, only_failed: bool = False) -> None:
        """One pass on a daemon thread; its result or error is kept for `wait()`."""
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            raise JobStateError(f"job {config.name!r} is already running: wait() for it or cancel() it")
        if only_failed:
            self.cancel.clear()
        self._error = None
        done = self._done = threading.Event()

        def target() -> None:
            try:
                self.run(config, view, restart=restart, only_failed=only_failed)
            except BaseException as exc:  # noqa: BLE001 - re-raised by wait()
                self._error = exc
            finally:
                done.set()

        self._thread = threading.Thread(target=target, name=f"batchnb-{config.name}", daemon=True)
        self._thread.start()

    def wait_interruptibly(self, name: str | None) -> JobResult:
        """Wait in the kernel's thread: an interrupt (the stop button) cancels the pass cleanly, then propagates."""
        done = self._done  # an Event, not Thread.join: an interrupted join can leave the thread marked stopped
        try:
            while not done.wait(0.2):
                pass
        except KeyboardInterrupt:
            self.cancel.set()
            done.wait()
            raise
        return self.wait(name)

    def wait(self, name: str | None, timeout: float | None = None) -> JobResult:
        if self._thread is not None:
            while True:
                done, thread = self._done, self._thread
                if not done.wait(timeout):
                    raise TimeoutError(f"job {name!r} still running after {timeout}s")
                thread.join()
                if self._thread is thread:  # no retry was queued meanwhile
                    break
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise JobStateError(f"job {name!r} was not started: call start() or run()")
        return self._result
