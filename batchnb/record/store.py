"""The durable job record in output/_batchnb/state.sqlite: the single source of truth, and every SQL statement
of the package.

Only the driver writes (one connection, WAL); any process may read while a job runs. Readers ask named
questions (`tally`, `board_cells`, `report_chunks`, ...); no other module writes SQL.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from batchnb.errors import ChunkError, JobStateError
from batchnb.record.guard import Connection, Rows, confined_part, decoded, refuse_links, state_error, state_path
from batchnb.record.status import ChunkRecord, ChunkStatus, JobStatus
from batchnb.sources.dataset import ChunkSpec

__all__ = ["ChunkRecord", "JobState", "confined_part", "connect", "state_path"]

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
CREATE INDEX IF NOT EXISTS attempts_retried ON attempts(chunk, at) WHERE delay IS NOT NULL;
CREATE TABLE IF NOT EXISTS timeline(
    at REAL, rows_done INTEGER, chunks_done INTEGER, rows_per_s REAL, cpu_percent REAL, rss_bytes INTEGER);
"""

# Chunks, input rows and planned rows per chunk status, counted when a plan is saved and kept by a trigger in
# the writer's own transactions: progress reads a handful of rows, never 100_000 chunks twice a second.
_TALLY = """
CREATE TABLE IF NOT EXISTS tally(
    status TEXT PRIMARY KEY, chunks INTEGER NOT NULL, rows_in INTEGER NOT NULL, planned INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS tally_update AFTER UPDATE OF status, rows_in, row_start, row_stop ON chunks BEGIN
    UPDATE tally SET chunks = chunks - 1, rows_in = rows_in - COALESCE(OLD.rows_in, 0),
        planned = planned - COALESCE(OLD.row_stop - OLD.row_start, 0) WHERE status = OLD.status;
    INSERT INTO tally VALUES (NEW.status, 1, COALESCE(NEW.rows_in, 0), COALESCE(NEW.row_stop - NEW.row_start, 0))
    ON CONFLICT(status) DO UPDATE SET
        chunks = chunks + 1, rows_in = rows_in + excluded.rows_in, planned = planned + excluded.planned;
END;
"""
_TALLY_OF_CHUNKS = (
    "SELECT status, COUNT(*), COALESCE(SUM(rows_in), 0), COALESCE(SUM(row_stop - row_start), 0)"
    " FROM chunks GROUP BY status"
)
# A running chunk whose latest failed attempt (after it started) waits for its retry.
_WAITING = (
    "EXISTS (SELECT 1 FROM attempts a WHERE a.chunk = chunks.idx AND a.at >= chunks.started AND a.delay IS NOT NULL)"
)
_ATTEMPT_COLUMNS = ("chunk", "attempt", "at", "type", "message", "traceback", "delay")
_REPORT_SQL = {
    "chunks": "SELECT idx, status, attempts, row_start, row_stop, rows_in, rows_out, anomalies, started, finished,"
    " seconds, timings, worker FROM chunks ORDER BY idx",
    "timeline": "SELECT * FROM timeline ORDER BY at",
    "attempts": f"SELECT {', '.join(_ATTEMPT_COLUMNS)} FROM attempts ORDER BY at",
}


def _open(uri: str, timeout: float) -> sqlite3.Connection:
    return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)


def _probe(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()  # random bytes or no access fail here


def connect(output: str | Path, *, create: bool = False, timeout: float | None = None) -> sqlite3.Connection:
    """The one way every reader and writer opens a job's state.

    The path goes into a file: URI escaped (`#`, `?`, `%` and spaces are parts of the name, not URI syntax).
    Readers open it read-only; on read-only storage, where sqlite cannot create the -shm file that a WAL
    database needs, a state with no -wal beside it (no writer, nothing uncommitted) is opened immutable.
    Every failure is a JobStateError naming the file, with the sqlite error as its cause.
    """
    timeout = BUSY_TIMEOUT_S if timeout is None else timeout
    path = state_path(output)
    refuse_links(path)
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
            raise state_error(exc, path) from exc
        first = exc
    try:  # read-only storage: nothing can be writing this state
        conn = _open(uri + "?mode=ro&immutable=1", timeout)
        _probe(conn)
        return conn
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise state_error(first, path) from exc


class _Questions:
    """What views, reports and `bn.status` ask the record: answered by SQLite, never by a scan in Python."""

    _conn: Connection
    path: Path

    @decoded
    def meta(self, *keys: str) -> dict[str, Any]:
        """Several meta values in one read; a key not written yet is left out."""
        marks = ", ".join("?" * len(keys))
        rows = self._conn.lookup(f"SELECT key, value FROM meta WHERE key IN ({marks})", keys) or Rows()
        return {key: json.loads(value) for key, value in rows}

    @contextmanager
    def reading(self) -> Iterator[None]:
        """One consistent view of the record for several reads, while the driver goes on writing."""
        self._conn.execute("BEGIN")
        try:
            yield
        finally:
            if self._conn.in_transaction:  # an error may have ended it already
                self._conn.execute("COMMIT")

    def tally(self) -> dict[str, tuple[int, int, int]]:
        """(chunks, input rows, planned rows) per chunk status, aggregated by the record itself."""
        rows = self._conn.lookup("SELECT status, chunks, rows_in, planned FROM tally WHERE chunks > 0")
        if rows is None:  # a record no writer of this version has opened yet
            rows = self._conn.lookup(_TALLY_OF_CHUNKS) or Rows()
        return {status: (n, rows_in, planned) for status, n, rows_in, planned in rows}

    @decoded
    def latest_attempt(self) -> tuple[float, ChunkError] | None:
        """When the newest failed attempt happened, and its error (without traceback)."""
        rows = self._conn.lookup(
            "SELECT at, chunk, attempt, type, message FROM attempts WHERE rowid = (SELECT MAX(rowid) FROM attempts)"
        )
        if not rows:
            return None
        at, chunk, attempt, kind, message = rows[0]
        return float(at), ChunkError(chunk=int(chunk), attempts=int(attempt), type=str(kind), message=str(message),
                                     traceback="")  # fmt: skip

    def retries(self) -> int:
        """Attempts after the first: every failed attempt that was given another try."""
        rows = self._conn.lookup("SELECT COUNT(*) FROM attempts WHERE delay IS NOT NULL")
        return rows[0][0] if rows else 0

    def waiting_for_retry(self) -> int:
        """Running chunks that are not running now: they failed and wait for their retry."""
        rows = self._conn.lookup(
            "SELECT COUNT(DISTINCT a.chunk) FROM attempts a JOIN chunks c ON c.idx = a.chunk"
            " WHERE a.delay IS NOT NULL AND c.status = 'running' AND a.at >= c.started"
        )
        return rows[0][0] if rows else 0

    def latest_sample(self) -> tuple[float, float, float, int] | None:
        """(at, rows/s, CPU %, RSS bytes) of the driver's newest timeline sample."""
        rows = self._conn.lookup(
            "SELECT at, rows_per_s, cpu_percent, rss_bytes FROM timeline WHERE rowid = (SELECT MAX(rowid) FROM timeline)"
        )
        return rows[0] if rows else None

    def chunk_count(self) -> int:
        return sum(n for n, _, _ in self.tally().values())

    def board_cells(self, group: int) -> list[tuple[int, str, int]]:
        """(cell, state, chunks) for cells of `group` chunks; a running chunk waiting to retry is 'retrying'."""
        return self._conn.execute(
            f"SELECT idx / ? AS cell, CASE WHEN status = 'running' AND {_WAITING} THEN 'retrying' ELSE status END"
            " AS state, COUNT(*) FROM chunks GROUP BY cell, state",
            (group,),
        )

    def oldest_running(self, limit: int) -> list[tuple[int, float]]:
        """(chunk, start time) of the running chunks that started first."""
        return self._conn.execute(
            f"SELECT idx, started FROM chunks WHERE status = 'running' AND started IS NOT NULL AND NOT {_WAITING}"
            " ORDER BY started LIMIT ?",
            (limit,),
        )

    def typical_seconds(self) -> float | None:
        """Mean seconds of a done chunk."""
        return self._conn.execute("SELECT AVG(seconds) FROM chunks WHERE status = 'done'")[0][0]

    def newest_attempts(self, limit: int) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            f"SELECT {', '.join(_ATTEMPT_COLUMNS)} FROM attempts ORDER BY rowid DESC LIMIT ?", (limit,)
        )
        return [dict(zip(_ATTEMPT_COLUMNS, row, strict=True)) for row in rows]

    def report_table(self, table: str) -> list[tuple]:
        """Every row of `table` (chunks, timeline, attempts) as reports show it; none while it does not exist."""
        return list(self._conn.lookup(_REPORT_SQL[table]) or [])


class JobState(_Questions):
    """Typed access to the sqlite record. Writers call `open(..., create=True)` from one thread."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = Connection(conn, path)
        self.path = path

    @classmethod
    def open(cls, output: str | Path, *, create: bool = False) -> JobState:
        path = state_path(output)
        if not path.exists() and not create:
            refuse_links(path)  # a dangling link says more than "no job"
            raise JobStateError(f"{str(output)!r} holds no batchnb job (no {path}): check the output directory")
        if create:
            from batchnb.files import private_dir

            private_dir(output)
        state = cls(connect(output, create=create), path)
        try:
            if create:
                state._conn.execute("PRAGMA journal_mode=WAL")
                state._conn.execute("PRAGMA synchronous=NORMAL")
                state._drop_triggers()
                state._conn.executescript(_DDL + _TALLY)
                with state._tx():  # a record from an older version has no tally yet
                    state._count_tally()
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

    @decoded
    def get(self, key: str, default: Any = None) -> Any:
        rows = self._conn.lookup("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    def set(self, **values: Any) -> None:
        with self._tx():
            self._conn.executemany(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                [(k, json.dumps(v, default=str)) for k, v in values.items()],
            )

    @contextmanager
    def _tx(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

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
            self._count_tally()

    def _drop_triggers(self) -> None:
        """Triggers a record from someone else holds would rewrite what the driver writes: only batchnb's run."""
        for (name,) in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
            self._conn.execute('DROP TRIGGER "{}"'.format(str(name).replace('"', '""')))

    def _count_tally(self) -> None:
        self._conn.execute("DELETE FROM tally")
        self._conn.execute(f"INSERT INTO tally {_TALLY_OF_CHUNKS}")

    @decoded
    def specs(self, indexes: Iterable[int] | None = None) -> list[ChunkSpec]:
        rows = self._conn.execute("SELECT spec FROM chunks ORDER BY idx").fetchall()
        specs = [ChunkSpec.from_json(r[0]) for r in rows]
        if indexes is None:
            return specs
        wanted = set(indexes)
        return [s for s in specs if s.index in wanted]

    @decoded
    def chunks(self) -> list[ChunkRecord]:
        rows = self._conn.execute(
            "SELECT idx, status, attempts, row_start, row_stop, rows_in, rows_out, anomalies, part, nbytes,"
            " checksum, seconds, error FROM chunks ORDER BY idx"
        ).fetchall()
        return [
            ChunkRecord(
                index=r[0], status=ChunkStatus(r[1]), attempts=r[2], rows=(r[3], r[4]), rows_in=r[5],
                rows_out=r[6], anomalies=r[7], part=confined_part(self.path, r[0], r[8]), nbytes=r[9], checksum=r[10],
                seconds=r[11],
                error=ChunkError.from_dict(json.loads(r[12])) if r[12] else None,
            )
            for r in rows
        ]  # fmt: skip

    def recorded_parts(self) -> list[tuple[int, str]]:
        """(chunk, part name) of every part this record names, unchecked: the caller confines them."""
        return list(self._conn.lookup("SELECT idx, part FROM chunks WHERE part IS NOT NULL") or [])

    @decoded
    def timings(self) -> list[dict[str, float]]:
        """Per-chunk seconds spent reading, scoring and writing, for reports and the overhead breakdown."""
        rows = self._conn.execute("SELECT timings FROM chunks WHERE timings IS NOT NULL ORDER BY idx").fetchall()
        return [json.loads(r[0]) for r in rows]

    def counts(self) -> dict[str, int]:
        return {status: n for status, (n, _, _) in self.tally().items()}

    def totals(self) -> dict[str, int]:
        """Rows and anomalies of done chunks."""
        rows_in, rows_out, anomalies = self._conn.execute(
            "SELECT COALESCE(SUM(rows_in),0), COALESCE(SUM(rows_out),0), COALESCE(SUM(anomalies),0)"
            " FROM chunks WHERE status = 'done'"
        )[0]
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

    @decoded
    def attempts(self) -> list[dict[str, Any]]:
        """Every failed attempt: when, why (type, message, traceback), the retry delay and the input rows."""
        cols = (*_ATTEMPT_COLUMNS, "row_start", "row_stop")
        rows = self._conn.execute(
            "SELECT a.chunk, a.attempt, a.at, a.type, a.message, a.traceback, a.delay, c.row_start, c.row_stop"
            " FROM attempts a JOIN chunks c ON c.idx = a.chunk ORDER BY a.at"
        ).fetchall()
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def append_timeline(self, *, rows_done: int, chunks_done: int, rows_per_s: float, cpu: float, rss: int) -> None:
        self._conn.execute(
            "INSERT INTO timeline VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), rows_done, chunks_done, rows_per_s, cpu, rss),
        )

    @decoded
    def status(self) -> JobStatus:
        return JobStatus(self.get("status", JobStatus.PENDING.value))

    def set_status(self, status: JobStatus, **extra: Any) -> None:
        self.set(status=status.value, **extra)
