"""The durable job record in output/_batchnb/state.sqlite: the single source of truth.

Only the driver writes (one connection, WAL); any process may read while a job runs.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchnb.errors import ChunkError, JobStateError
from batchnb.record.status import ChunkStatus, JobStatus
from batchnb.sinks import PART_NAME  # the part names batchnb writes: a state naming any other was not written by it
from batchnb.sources.dataset import ChunkSpec

__all__ = ["ChunkRecord", "JobState", "confined_part", "connect", "state_path"]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 5.0  # only the driver writes, under its lock: a write lock held longer is another process's

_DDL = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS blobs(key TEXT PRIMARY KEY, value BLOB); -- written by older versions, never read
CREATE TABLE IF NOT EXISTS chunks(
    idx INTEGER PRIMARY KEY, spec TEXT NOT NULL, row_start INTEGER, row_stop INTEGER,
    status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    rows_in INTEGER, rows_out INTEGER, anomalies INTEGER, part TEXT, nbytes INTEGER, checksum TEXT,
    started REAL, finished REAL, seconds REAL, timings TEXT, worker TEXT, error TEXT);
CREATE TABLE IF NOT EXISTS attempts(
    chunk INTEGER, attempt INTEGER, at REAL, type TEXT, message TEXT, traceback TEXT, delay REAL);
CREATE TABLE IF NOT EXISTS timeline(
    at REAL, rows_done INTEGER, chunks_done INTEGER, rows_per_s REAL, cpu_percent REAL, rss_bytes INTEGER);
"""


_SIDE_FILES = ("-wal", "-shm", "-journal")


def state_path(output: str | Path) -> Path:
    return Path(output, "_batchnb", "state.sqlite")


def _refuse_links(path: Path) -> None:
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


def _open(uri: str, timeout: float) -> sqlite3.Connection:
    return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)


def _probe(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()  # random bytes or no access fail here


def connect(output: str | Path, *, create: bool = False, timeout: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """The one way every reader and writer opens a job's state.

    The path goes into a file: URI escaped (`#`, `?`, `%` and spaces are parts of the name, not URI syntax).
    Readers open it read-only; on read-only storage, where sqlite cannot create the -shm file that a WAL
    database needs, a state with no -wal beside it (no writer, nothing uncommitted) is opened immutable.
    Every failure is a JobStateError naming the file, with the sqlite error as its cause.
    """
    path = state_path(output)
    _refuse_links(path)
    uri = Path(os.path.abspath(path)).as_uri()
    conn = None
    try:
        conn = _open(uri + ("?mode=rwc" if create else "?mode=ro"), timeout)
        _probe(conn)
        return conn
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        wal = path.with_name(path.name + "-wal")
        if create or not isinstance(exc, sqlite3.OperationalError) or (wal.exists() and wal.stat().st_size):
            raise _state_error(exc, path) from exc
        first = exc
    try:  # read-only storage: nothing can be writing this state
        conn = _open(uri + "?mode=ro&immutable=1", timeout)
        _probe(conn)
        return conn
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise _state_error(first, path) from exc


def _state_error(exc: sqlite3.Error, path: Path) -> JobStateError:
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


def _decoded(method: Callable) -> Callable:
    """A value of the state that batchnb could not have written is a JobStateError, not a TypeError deep inside."""

    @functools.wraps(method)
    def wrapper(self: JobState, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            shown = str(exc)[:120] + ("..." if len(str(exc)) > 120 else "")
            msg = (
                f"the job state {str(self.path)!r} holds a value batchnb does not write ({type(exc).__name__}: "
                f"{shown}): it was damaged or not written by batchnb; run the job again with run(restart=True) "
                "to discard it, or use another output directory"
            )
            raise JobStateError(msg) from exc

    return wrapper


class _Rows(list):
    """Rows fetched at once, so a damaged page is met inside the guarded call rather than by a later fetch."""

    def fetchone(self) -> tuple | None:
        return self[0] if self else None

    def fetchall(self) -> list[tuple]:
        return list(self)


class _Connection:
    """The sqlite connection, every error of which reaches the caller as a JobStateError."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._path = path

    def _call(self, method: str, *args: Any, missing_ok: bool = False) -> _Rows | None:
        try:
            return _Rows(getattr(self._conn, method)(*args).fetchall())
        except sqlite3.OperationalError as exc:
            if missing_ok and str(exc).startswith("no such table"):
                return None
            raise _state_error(exc, self._path) from exc
        except sqlite3.Error as exc:
            raise _state_error(exc, self._path) from exc
        except UnicodeDecodeError as exc:
            raise _not_text(exc, self._path) from exc

    def execute(self, sql: str, params: Sequence = ()) -> _Rows:
        return self._call("execute", sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence]) -> _Rows:
        return self._call("executemany", sql, rows)

    def executescript(self, script: str) -> _Rows:
        return self._call("executescript", script)

    def lookup(self, sql: str, params: Sequence = ()) -> _Rows | None:
        """`execute`, but None while the writer has not created the tables yet (a reader may come first)."""
        return self._call("execute", sql, params, missing_ok=True)

    def close(self) -> None:
        self._conn.close()


@dataclass(frozen=True, kw_only=True)
class ChunkRecord:
    index: int
    status: ChunkStatus
    attempts: int
    rows: tuple[int, int]
    rows_in: int | None
    rows_out: int | None
    anomalies: int | None
    part: str | None
    nbytes: int | None
    checksum: str | None
    seconds: float | None
    error: ChunkError | None


class JobState:
    """Typed access to the sqlite record. Writers call `open(..., create=True)` from one thread."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = _Connection(conn, path)
        self.path = path

    @classmethod
    def open(cls, output: str | Path, *, create: bool = False) -> JobState:
        path = state_path(output)
        if not path.exists() and not create:
            _refuse_links(path)  # a dangling link says more than "no job"
            raise JobStateError(f"{str(output)!r} holds no batchnb job (no {path}): check the output directory")
        if create:
            from batchnb.files import private_dir

            private_dir(output)
        state = cls(connect(output, create=create), path)
        try:
            if create:
                state._conn.execute("PRAGMA journal_mode=WAL")
                state._conn.execute("PRAGMA synchronous=NORMAL")
                state._conn.executescript(_DDL)
        except JobStateError:
            state.close()
            raise
        return state

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> JobState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- meta -----------------------------------------------------------------------------------
    @_decoded
    def get(self, key: str, default: Any = None) -> Any:
        rows = self._conn.lookup("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    def set(self, **values: Any) -> None:
        with self._tx():
            self._conn.executemany(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                [(k, json.dumps(v, default=str)) for k, v in values.items()],
            )

    def _tx(self):
        conn = self._conn

        class _Tx:
            def __enter__(self_inner):
                conn.execute("BEGIN IMMEDIATE")

            def __exit__(self_inner, exc_type, *rest):
                conn.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()

    # --- plan and chunks ---------------------------------------------------------------------------
    def has_plan(self) -> bool:
        return self.get("plan_saved", False)

    def save_plan(self, chunks: Sequence[ChunkSpec]) -> None:
        with self._tx():
            self._conn.execute("DELETE FROM chunks")
            self._conn.executemany(
                "INSERT INTO chunks(idx, spec, row_start, row_stop) VALUES (?, ?, ?, ?)",
                [(c.index, c.to_json(), c.rows[0], c.rows[1]) for c in chunks],
            )
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('plan_saved', 'true')")

    @_decoded
    def specs(self, indexes: Iterable[int] | None = None) -> list[ChunkSpec]:
        rows = self._conn.execute("SELECT spec FROM chunks ORDER BY idx").fetchall()
        specs = [ChunkSpec.from_json(r[0]) for r in rows]
        if indexes is None:
            return specs
        wanted = set(indexes)
        return [s for s in specs if s.index in wanted]

    @_decoded
    def chunks(self) -> list[ChunkRecord]:
        rows = self._conn.execute(
            "SELECT idx, status, attempts, row_start, row_stop, rows_in, rows_out, anomalies, part, nbytes,"
            " checksum, seconds, error FROM chunks ORDER BY idx"
        ).fetchall()
        return [
            ChunkRecord(
                index=r[0], status=ChunkStatus(r[1]), attempts=r[2], rows=(r[3], r[4]), rows_in=r[5],
                rows_out=r[6], anomalies=r[7], part=self.confined_part(r[0], r[8]), nbytes=r[9], checksum=r[10],
                seconds=r[11],
                error=ChunkError.from_dict(json.loads(r[12])) if r[12] else None,
            )
            for r in rows
        ]  # fmt: skip

    def confined_part(self, index: int, name: str | None) -> str | None:
        return confined_part(self.path, index, name)

    def rows(self, sql: str) -> list[tuple]:
        """Rows of a read-only query; none while the writer has not created the tables yet."""
        return list(self._conn.lookup(sql) or [])

    @_decoded
    def timings(self) -> list[dict[str, float]]:
        """Per-chunk seconds spent reading, scoring and writing, for reports and the overhead breakdown."""
        rows = self._conn.execute("SELECT timings FROM chunks WHERE timings IS NOT NULL ORDER BY idx").fetchall()
        return [json.loads(r[0]) for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self._conn.execute("SELECT status, COUNT(*) FROM chunks GROUP BY status").fetchall()
        return {status: n for status, n in rows}

    def totals(self) -> dict[str, int]:
        """Rows and anomalies of done chunks, and retries over all attempts."""
        rows_in, rows_out, anomalies = self._conn.execute(
            "SELECT COALESCE(SUM(rows_in),0), COALESCE(SUM(rows_out),0), COALESCE(SUM(anomalies),0)"
            " FROM chunks WHERE status = 'done'"
        ).fetchone()
        return {"rows_in": rows_in, "rows_out": rows_out, "anomalies": anomalies}

    def mark(self, indexes: Iterable[int], status: ChunkStatus) -> None:
        with self._tx():
            self._conn.executemany("UPDATE chunks SET status = ? WHERE idx = ?", [(status.value, i) for i in indexes])

    def mark_running(self, index: int, attempts: int) -> None:
        self._conn.execute(
            "UPDATE chunks SET status = 'running', attempts = ?, started = ? WHERE idx = ?",
            (attempts, time.time(), index),
        )

    def record_done(self, outcomes: Sequence[Any], attempts: dict[int, int]) -> None:
        """Commit finished chunks together: one transaction for all that arrived at once."""
        with self._tx():
            self._conn.executemany(
                "UPDATE chunks SET status = 'done', attempts = ?, rows_in = ?, rows_out = ?, anomalies = ?,"
                " part = ?, nbytes = ?, checksum = ?, finished = ?, seconds = ?, timings = ?, worker = ?, error = NULL"
                " WHERE idx = ?",
                [
                    (attempts.get(o.index, 1), o.rows_in, o.rows_out, o.anomalies, o.part, o.nbytes, o.checksum,
                     time.time(), o.seconds, json.dumps(o.timings), o.worker, o.index)
                    for o in outcomes
                ],
            )  # fmt: skip

    def record_attempt(self, error: ChunkError, *, delay: float | None) -> None:
        self._conn.execute(
            "INSERT INTO attempts(chunk, attempt, at, type, message, traceback, delay) VALUES (?,?,?,?,?,?,?)",
            (error.chunk, error.attempts, time.time(), error.type, error.message, error.traceback, delay),
        )

    def record_failed(self, error: ChunkError) -> None:
        self._conn.execute(
            "UPDATE chunks SET status = 'failed', attempts = ?, error = ? WHERE idx = ?",
            (error.attempts, json.dumps(error.to_dict()), error.chunk),
        )

    @_decoded
    def attempts(self) -> list[dict[str, Any]]:
        """Every failed attempt: when, why (type, message, traceback), the retry delay and the input rows."""
        cols = ("chunk", "attempt", "at", "type", "message", "traceback", "delay", "row_start", "row_stop")
        rows = self._conn.execute(
            "SELECT a.chunk, a.attempt, a.at, a.type, a.message, a.traceback, a.delay, c.row_start, c.row_stop"
            " FROM attempts a JOIN chunks c ON c.idx = a.chunk ORDER BY a.at"
        ).fetchall()
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def retries(self) -> int:
        """Attempts after the first: every failed attempt that was given another try."""
        (n,) = self._conn.execute("SELECT COUNT(*) FROM attempts WHERE delay IS NOT NULL").fetchone()
        return n

    def errors(self) -> list[ChunkError]:
        return [c.error for c in self.chunks() if c.status == ChunkStatus.FAILED and c.error is not None]

    # --- progress -----------------------------------------------------------------------------------
    def append_timeline(self, *, rows_done: int, chunks_done: int, rows_per_s: float, cpu: float, rss: int) -> None:
        self._conn.execute(
            "INSERT INTO timeline VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), rows_done, chunks_done, rows_per_s, cpu, rss),
        )

    def timeline(self) -> list[tuple]:
        return self._conn.execute("SELECT * FROM timeline ORDER BY at").fetchall()

    @_decoded
    def status(self) -> JobStatus:
        return JobStatus(self.get("status", JobStatus.PENDING.value))

    def set_status(self, status: JobStatus, **extra: Any) -> None:
        self.set(status=status.value, **extra)
