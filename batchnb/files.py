"""Files batchnb writes beside its parts: always below the output, never through a link it did not make."""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

from batchnb.errors import JobStateError, describe

__all__ = ["atomic_file", "is_own", "private_dir", "refuse_non_dir"]


def private_dir(output: str | os.PathLike, *names: str, purpose: str = "batchnb's directory") -> Path:
    """`output/_batchnb[/names...]` as real directories, made here if missing: never a symlink someone planted.

    Everything batchnb writes besides the parts lives below it, so a link to elsewhere would send the lock,
    the state or temporary files out of the output.
    """
    from batchnb.place import home

    path = Path(home(output))  # an object-store output keeps its _batchnb/ on the driver's disk
    try:
        path.mkdir(parents=True, exist_ok=True)  # the output itself may be the user's link to a bigger disk
        for name in ("_batchnb", *names):
            path = path / name
            try:
                os.mkdir(path, 0o755)  # does not follow a link at `path`: it fails with EEXIST
            except FileExistsError:
                pass
            refuse_non_dir(path, output)
    except OSError as exc:
        msg = f"cannot create {purpose} in {str(path)!r} ({describe(exc)}): check that the output {os.fspath(output)!r} is a directory you can write to"
        raise JobStateError(msg) from exc
    return path


def refuse_non_dir(path: Path, output: str | os.PathLike) -> None:
    """A directory batchnb writes in is a real directory or missing: never a link someone planted, nor a file."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        what = (
            "a symbolic link"
            if stat.S_ISLNK(mode)
            else f"not a directory ({os.fspath(output)!r} is not a batchnb output)"
        )
        msg = (
            f"{str(path)!r} is {what}: batchnb writes only inside the output and never through a link it "
            f"did not create; remove it or use another output directory than {os.fspath(output)!r}"
        )
        raise JobStateError(msg)


def is_own(path: Path, *, directory: bool = False) -> bool:
    """`path` is a regular file (or directory) itself, not a link to one; False when missing."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode)


def fresh_file(directory: Path, prefix: str, suffix: str, mode: int = 0o600) -> Path:
    """A new empty file with a name no one could foresee, made with O_EXCL|O_NOFOLLOW: never a planted link."""
    path = directory / f"{prefix}{uuid.uuid4().hex[:8]}{suffix}"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode))
    return path


@contextlib.contextmanager
def atomic_file(
    target: Path, *, directory: Path | None = None, prefix: str | None = None, suffix: str = ".tmp", mode: int = 0o600
) -> Iterator[Path]:
    """A new empty file to fill, renamed onto `target` once the block ends without error, removed otherwise:
    a reader never sees a partial file.

    The temp is made with O_EXCL|O_NOFOLLOW in `directory` (default: beside `target`), so it is never a link
    someone planted; the rename replaces a link at `target` itself, never the file the link points to.
    """
    tmp = fresh_file(
        directory if directory is not None else target.parent,
        prefix if prefix is not None else target.name + ".", suffix, mode,
    )  # fmt: skip
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
