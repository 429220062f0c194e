"""Ask a job's driver to stop, from any process: the request is a file the driver looks for twice a second.

The file `_batchnb/cancel` carries no data, so a planted one can do no more than stop a run between chunks
(finished parts stay, and the next run resumes); each run removes a request left from before it started.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from batchnb.errors import JobStateError, describe

__all__ = ["CancelWatch", "cancel_requested_path", "request_cancel"]

CANCEL_POLL_S = 0.25


def cancel_requested_path(output: str) -> Path:
    from batchnb.place import home

    return Path(home(output), "_batchnb", "cancel")


def request_cancel(output: str) -> None:
    """Ask the job's driver, in whatever process it runs, to stop between chunks (finished parts stay)."""
    from batchnb.files import private_dir

    private_dir(output)  # made here if missing, and never a planted link
    path = cancel_requested_path(output)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise _not_ours(path, exc) from exc
    os.close(fd)


def _not_ours(path: Path, exc: OSError) -> JobStateError:
    return JobStateError(
        f"cannot use the cancel request {str(path)!r} ({describe(exc)}): something batchnb did not write is there "
        "(a directory or a link); remove it"
    )


def _clear(path: Path) -> None:
    """Remove a request (a link is removed itself); anything else there is refused, never followed."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise _not_ours(path, exc) from exc


class CancelWatch:
    """Sets the driver's cancel event when `_batchnb/cancel` appears; a request left from before is dropped."""

    def __init__(self, output: str, cancel: threading.Event) -> None:
        self.path, self.cancel = cancel_requested_path(output), cancel
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="batchnb-cancel-watch", daemon=True)

    def __enter__(self) -> CancelWatch:
        _clear(self.path)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        _clear(self.path)

    def _watch(self) -> None:
        while not self._stop.wait(CANCEL_POLL_S):
            if os.path.lexists(self.path):
                self.cancel.set()
