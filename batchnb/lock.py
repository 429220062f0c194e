"""One driver per output directory: a second concurrent run gets a clear error, not a corrupt state."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from batchnb.errors import JobStateError, describe

__all__ = ["JobLock", "driver_gone"]


def driver_gone(output: str | os.PathLike) -> bool:
    """True when the driver named in the lock file ran on this host and is no longer alive (killed, crashed).

    Takes no lock, so it never gets in a starting driver's way; on another host it cannot tell and says False.
    """
    import psutil

    try:
        text = Path(output, "_batchnb", "driver.lock").read_text()
    except OSError:
        return False
    parts = text.split()
    if len(parts) != 4 or parts[0] != "pid" or parts[2] != "on" or parts[3] != socket.gethostname():
        return False
    return not psutil.pid_exists(int(parts[1]))


class JobLock:
    def __init__(self, output: str | os.PathLike) -> None:
        self.path = Path(output, "_batchnb", "driver.lock")
        self._fd: int | None = None

    def __enter__(self) -> JobLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            output = str(self.path.parent.parent)
            msg = f"cannot create the driver lock {str(self.path)!r} ({describe(exc)}): check that the output {output!r} is a directory you can write to"
            raise JobStateError(msg) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            msg = f"a job is already running in {str(self.path.parent.parent)!r} (driver {holder}): wait for it or cancel it"
            raise JobStateError(msg) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
