"""Follow a job from its record, in any process: the live view of a job that another process drives.

A job run by `run()`, `start()`, `start(detach=True)`, the CLI, a papermill run or a pipeline writes the same
record; `attach(output)` reads it twice a second and feeds a view (the widget in a notebook, tqdm in a terminal)
until no driver works on the job any more. Cancel asks the driver, wherever it runs, to stop between chunks
(`driver.detached.request_cancel`); Retry failed starts a detached rerun of the failed chunks.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

from batchnb.config import JobConfig
from batchnb.driver.cancel import request_cancel
from batchnb.driver.detached import launch
from batchnb.driver.lock import lock_holder
from batchnb.record.snapshot import Progress, status
from batchnb.record.status import JobStatus
from batchnb.record.store import JobState
from batchnb.result import JobResult

__all__ = ["Attached", "attach", "start_detached"]

FOLLOW_EVERY_S = 0.5


@dataclass(eq=False)
class Attached:
    """A view following the job in `output`; `wait()` returns its result once no driver works on it."""

    output: str
    view: Any
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def follow(self) -> None:
        """Feed the view on a daemon thread (again after a retry, in the same view)."""
        self._done.clear()
        threading.Thread(target=self._follow, name="batchnb-attach", daemon=True).start()

    def wait(self, timeout: float | None = None) -> JobResult:
        if not self._done.wait(timeout):
            raise TimeoutError(f"the job in {self.output!r} still runs after {timeout} s")
        return JobResult.from_state(self.output)

    def cancel(self) -> None:
        """Ask the job's driver to stop between chunks; finished parts stay and a later run resumes."""
        request_cancel(self.output)

    def detach(self) -> None:
        """Stop following; the job goes on."""
        self._stop.set()

    def status(self) -> Progress:
        return status(self.output)

    def _ipython_display_(self) -> None:
        """Nothing more: the view shows in the cell that attached."""

    def _follow(self) -> None:
        result, error = None, None
        try:
            while True:
                progress = status(self.output)
                if self.view is not None:
                    self.view.update(progress)
                if _ended(self.output, progress) or self._stop.wait(FOLLOW_EVERY_S):
                    break
            result = JobResult.from_state(self.output)
        except Exception as exc:  # noqa: BLE001 - shown in the view, never raised on a daemon thread
            error = exc
        finally:
            if self.view is not None:
                self.view.close()
                self.view.finish(result, error=error)
            self._done.set()


def _ended(output: str, progress: Progress) -> bool:
    """No driver works on the job: nobody holds its lock (a new driver holds it a moment before it writes
    `running`), and the record does not say it runs (a driver on another machine holds no lock here)."""
    return progress.status not in (JobStatus.PLANNING, JobStatus.RUNNING) and lock_holder(output) is None


def attach(output: str | os.PathLike, progress: Any = "auto", *, follow: bool = True) -> Attached:
    """The live view of the job in `output`, bound to its record, from any kernel or process on this machine.

    A job that has ended shows its summary. Raises JobStateError when `output` holds no job.
    """
    from batchnb.views import make_view

    output = os.fspath(output)
    name = status(output).name
    attached = Attached(output, None)
    attached.view = make_view(progress, name=name, output=output, on_cancel=attached.cancel,
                              on_retry=_retry(output, attached))  # fmt: skip
    if follow:
        attached.follow()
    return attached


def _retry(output: str, attached: Attached):
    """Retry failed as a detached rerun of the failed chunks; None (no button) when the stored configuration
    cannot be rebuilt here (a notebook function the record only names)."""
    try:
        with JobState.open(output) as state:
            config = JobConfig.from_dict(state.get("config") or {})
    except Exception:  # noqa: BLE001 - a config this process cannot rebuild: no retry from here
        return None

    def retry(view: Any) -> None:
        launch(config, only_failed=True)
        attached.follow()

    return retry


def start_detached(config: JobConfig, progress: Any = "auto", *, restart: bool = False) -> Attached:
    """Start the job's driver as its own process (it outlives this kernel) and attach a view to it."""
    launch(config, restart=restart)
    return attach(config.output, progress)
