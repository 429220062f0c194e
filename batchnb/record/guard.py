"""Reading a record that may come from someone else: its path, links, part names and every sqlite error.

Nothing here holds SQL (store.py does); this is what turns a planted link, a foreign part name, a damaged
value or a sqlite failure into a JobStateError that names the file and says what to do.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from batchnb.errors import JobStateError
from batchnb.formats import PART_NAME  # the part names batchnb writes: a state naming any other was not written by it

__all__ = [
    "BAD_VALUE",
    "Connection",
    "Rows",
    "bad_value",
    "confined_part",
    "decoded",
    "refuse_links",
    "state_error",
    "state_path",
]

_SIDE_FILES = ("-wal", "-shm", "-journal")
F = TypeVar("F", bound=Callable[..., Any])


def state_path(output: str | Path) -> Path:
    """The record of the job in `output` (an object-store output's is in its local home, `place.home`)."""
    from batchnb.place import home

    return Path(home(output), "_batchnb", "state.sqlite")


def refuse_links(path: Path) -> None:
    """sqlite follows a symlinked database or side file and writes through it (a reader too: it maps -shm)."""
    from batchnb.files import refuse_non_dir

    refuse_non_dir(path.parent, path.parent.parent)
    for link in (path, *(path.with_name(path.name + s) for s in _SIDE_FILES)):
        if link.is_symlink():
            msg = (
                f"{str(link)!r} is a symbolic link: batchnb never writes through a link it did not create; "
                f"remove it or use another output directory (the output {str(path.parent.parent)!r} was not "
                "written by batchnb alone)"
            )
            raise JobStateError(msg)


def confined_part(path: Path, index: int, name: str | None) -> str | None:
    """A part name from the state at `path`, confined to its output: exactly `part-<index>.<ext>`."""
    match = PART_NAME.fullmatch(name) if isinstance(name, str) else None
    if name is None or (match and int(match.group(1)) == index):
        return name
    msg = (
        f"the job state {str(path)!r} names {name!r} as the part of chunk {index}; batchnb writes "
        f"part-{index:06d}.<ext> inside the output only: this state was not written by batchnb, so nothing "
        "is read or deleted through it; use another output directory"
    )
    raise JobStateError(msg)


def state_error(exc: sqlite3.Error, path: Path) -> JobStateError:
    """What a sqlite error means for the user: a lock someone else holds, a full disk, or a damaged file."""
    text, output = str(exc), str(path.parent.parent)
    if "unable to open" in text or "readonly" in text:
        return JobStateError(
            f"cannot open the job state {str(path)!r} (sqlite: {text}): check that {output!r} and its _batchnb "
            "directory can be read (and written, to run the job); a state on read-only storage that still has a "
            "-wal file beside it must be copied to writable storage first"
        )
    if "locked" in text or "busy" in text:
        return JobStateError(
            f"the job state {str(path)!r} is locked by another process (sqlite: {text}): another run may be "
            f"writing to {output!r}; wait for it to end, or use another output directory"
        )
    if "full" in text:
        return JobStateError(
            f"cannot write the job state {str(path)!r} (sqlite: {text}): free space on the disk of {output!r} "
            "and run again to resume; finished parts are kept"
        )
    return JobStateError(
        f"the job state {str(path)!r} is unreadable (sqlite: {text}): run the job again with run(restart=True) "
        "to discard it and start over, or use another output directory"
    )


def _not_text(exc: UnicodeDecodeError, path: Path) -> JobStateError:
    return JobStateError(
        f"the job state {str(path)!r} holds bytes where batchnb writes text ({exc.reason}): it was damaged or not "
        "written by batchnb; run the job again with run(restart=True) to discard it, or use another output directory"
    )


BAD_VALUE = (ValueError, TypeError, KeyError, AttributeError)  # what a value of the wrong kind raises


def bad_value(path: Path, exc: BaseException) -> JobStateError:
    shown = str(exc)[:120] + ("..." if len(str(exc)) > 120 else "")
    return JobStateError(
        f"the job state {str(path)!r} holds a value batchnb does not write ({type(exc).__name__}: {shown}): it "
        "was damaged or not written by batchnb; run the job again with run(restart=True) to discard it, or use "
        "another output directory"
    )


def decoded(method: F) -> F:
    """A value of the state that batchnb could not have written is a JobStateError, not a TypeError deep inside."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except BAD_VALUE as exc:
            raise bad_value(self.path, exc) from exc

    return wrapper  # type: ignore[return-value]  # same signature: functools.wraps does not tell mypy so


class Rows(list):
    """Rows fetched at once, so a damaged page is met inside the guarded call rather than by a later fetch."""

    def fetchone(self) -> tuple | None:
        return self[0] if self else None

    def fetchall(self) -> list[tuple]:
        return list(self)


class Connection:
    """The sqlite connection, every error of which reaches the caller as a JobStateError."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._path = path

    def _call(self, method: str, *args: Any, missing_ok: bool = False) -> Rows | None:
        try:
            return Rows(getattr(self._conn, method)(*args).fetchall())
        except sqlite3.OperationalError as exc:
            if missing_ok and str(exc).startswith("no such table"):
                return None
            raise state_error(exc, self._path) from exc
        except sqlite3.Error as exc:
            raise state_error(exc, self._path) from exc
        except UnicodeDecodeError as exc:
            raise _not_text(exc, self._path) from exc

    def execute(self, sql: str, params: Sequence = ()) -> Rows:
        return self._call("execute", sql, params) or Rows()

    def executemany(self, sql: str, rows: Iterable[Sequence]) -> Rows:
        return self._call("executemany", sql, rows) or Rows()

    def executescript(self, script: str) -> Rows:
        return self._call("executescript", script) or Rows()

    def lookup(self, sql: str, params: Sequence = ()) -> Rows | None:
        """`execute`, but None while the writer has not created the tables yet (a reader may come first)."""
        return self._call("execute", sql, params, missing_ok=True)

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def close(self) -> None:
        self._conn.close()
