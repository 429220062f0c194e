"""One driver per output directory, and what batchnb may create or delete in it.

A second concurrent run gets a clear error, not a corrupt state. An output may come from someone else:
batchnb writes only below it, never through a link it did not make, and deletes only what its state records.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
from collections.abc import Iterable
from pathlib import Path

from batchnb.errors import ConfigError, JobStateError, describe
from batchnb.files import is_own, private_dir
from batchnb.formats import TEMP_NAME
from batchnb.place import existing_objects, home, is_remote, remove_part

__all__ = [
    "JobLock",
    "check_output",
    "check_overlap",
    "discard",
    "driver_gone",
    "lock_holder",
    "remove_temp_files",
]


def driver_gone(output: str | os.PathLike) -> bool:
    """True when the driver named in the lock file ran on this host and is no longer alive (killed, crashed).

    Takes no lock, so it never gets in a starting driver's way; on another host it cannot tell and says False.
    """
    import psutil

    try:
        fd = os.open(lock_path(output), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        owner = _owner(fd)
    finally:
        os.close(fd)
    return owner is not None and owner[1] == socket.gethostname() and not psutil.pid_exists(owner[0])


def lock_holder(output: str | os.PathLike) -> int | None:
    """The pid of the driver holding the job's lock now (on this machine), or None when nobody holds it."""
    try:
        fd = os.open(lock_path(output), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(fd)
            return owner[0] if owner is not None else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def lock_path(output: str | os.PathLike) -> Path:
    return Path(home(output), "_batchnb", "driver.lock")


def _owner(fd: int) -> tuple[int, str] | None:
    """(pid, host) the lock file names, as `JobLock` writes it ("pid N on HOST"); None for anything else."""
    parts = os.pread(fd, 256, 0).decode(errors="replace").split()
    if len(parts) != 4 or parts[0] != "pid" or not parts[1].isdigit() or parts[2] != "on":
        return None
    return int(parts[1]), parts[3]


class JobLock:
    def __init__(self, output: str | os.PathLike) -> None:
        self.path = lock_path(output)
        self.output = os.fspath(output)
        self._fd: int | None = None

    def __enter__(self) -> JobLock:
        output = self.output
        # checked once here, before any chunk writes its temporary part there
        private_dir(output, "tmp", purpose="the driver lock")
        try:  # O_NOFOLLOW: a planted link is refused, never truncated through
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            hint = (  # O_NOFOLLOW fails with ELOOP on a link
                "it is a symbolic link batchnb did not create: remove it or use another output directory"
                if exc.errno == errno.ELOOP
                else f"check that the output {output!r} is a directory you can write to"
            )
            msg = f"cannot create the driver lock {str(self.path)!r} ({describe(exc)}): {hint}"
            raise JobStateError(msg) from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise JobStateError(f"the driver lock {str(self.path)!r} is not a regular file: remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            msg = f"a job is already running in {output!r} (driver {holder}): wait for it or cancel it"
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


def check_output(output: str, paths: tuple[str, ...] = ()) -> None:
    """Refuse an output batchnb must not write into: one that overlaps the source's files or directories
    (ConfigError), or a non-empty directory that holds no batchnb job (JobStateError)."""
    check_overlap(output, paths)
    check_owned(output)


def check_overlap(output: str, paths: Iterable[str], part: str | None = None) -> None:
    """A ConfigError when the output holds a source file or directory, is one, or lies inside one; or, given
    the name of its first `part`, when a glob among `paths` would match the output's own parts. Local paths
    only (URLs are skipped); nothing is created or listed."""
    out = os.path.realpath(output)
    for path in paths:
        if "://" in path:
            continue
        real = os.path.realpath(path)
        if real == out:
            where = "is it"
        elif real.startswith(out + os.sep):
            where = "is inside it"
        elif out.startswith(real + os.sep):
            where = "holds it"
        elif part is not None and set("*?[") & set(path) and Path(out, part).match(real):
            where = "matches its parts"
        else:
            continue
        msg = (
            f"the output {output!r} overlaps the source ({path!r} {where}): a job would overwrite or delete what "
            "it reads, or read its own parts on the next run; write the output to a directory outside the source"
        )
        raise ConfigError(msg)


def check_owned(output: str) -> None:
    """An existing directory is an output when it is empty or holds a batchnb job; never someone's files."""
    from batchnb.record.store import state_path

    if os.path.lexists(state_path(output)):
        return
    if is_remote(output):
        foreign = existing_objects(output)
    elif os.path.isdir(output):
        foreign = sorted(name for name in os.listdir(output) if name != "_batchnb")
    else:
        return
    if foreign:
        shown = ", ".join(foreign[:5]) + (f", ... ({len(foreign)} entries)" if len(foreign) > 5 else "")
        where = (
            f" whose record is on this machine (records of object-store outputs are kept under {home(output)!r})"
            if is_remote(output)
            else ""
        )
        msg = (
            f"the output {output!r} is not empty and holds no batchnb job{where} ({shown}): batchnb writes only "
            "into a new or empty directory or its own output, so it never overwrites files it did not write; "
            "use another output directory"
        )
        raise JobStateError(msg)


def discard(output: str) -> None:
    """Remove exactly the parts the old state recorded and the state itself, keeping the driver lock that the
    caller holds. A file the state does not name is never deleted, whoever wrote it; a damaged state names
    nothing, so its parts stay until the new run writes its own over them."""
    from batchnb.record.store import JobState, confined_part, state_path

    recorded: list[tuple[int, str]] = []
    if state_path(output).exists():
        try:
            with JobState.open(output) as old:
                recorded = old.recorded_parts()
        except JobStateError:  # damaged: it names nothing that can be trusted
            recorded = []
    for idx, name in recorded:
        part = confined_part(state_path(output), idx, name)  # a name outside the output is refused
        if part is not None:
            remove_part(output, part)
    for suffix in ("", "-wal", "-shm", "-journal"):
        state_path(output).with_name("state.sqlite" + suffix).unlink(missing_ok=True)
    remove_temp_files(output)


def remove_temp_files(output: str) -> None:
    """Temporary parts a crash left half written: only names batchnb gives them, in its own directory."""
    tmp = Path(home(output), "_batchnb", "tmp")
    if not is_own(tmp, directory=True):
        return
    for entry in os.scandir(tmp):
        if TEMP_NAME.fullmatch(entry.name) and not entry.is_dir(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)
