"""Library errors reach the user as a BatchError with the cause; the CLI prints one line and exits 2.

DESIGN.md section 5 ("Errors"): Polars panics, pyarrow, sqlite3 and OS errors (a full disk, a locked
state) become ConfigError / SourceError / JobStateError / EngineError; a chunk error that fails the same
way again (DataError, a panic, a TypeError) is recorded after one attempt, while an OSError is retried.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import cloudpickle
import polars as pl
import pyarrow as pa
import pytest
from polars.exceptions import PanicException

import batchnb as bn
from batchnb import sinks, sources
from batchnb.cli import main
from batchnb.record import store

CHUNK = 1_000
N_ROWS = 3 * CHUNK
FAST_BACKOFF = bn.Backoff(base=0.0, jitter=False)


def write_csv(path: Path) -> str:
    pl.DataFrame({"a": [float(i) for i in range(N_ROWS)], "b": [i % 7 for i in range(N_ROWS)]}).write_csv(path)
    return str(path)


@pytest.fixture
def src(tmp_path) -> str:
    return write_csv(tmp_path / "data.csv")


@pytest.fixture
def pq(tmp_path) -> str:
    """Parquet: exact row ranges, so chunk k starts at row k * CHUNK."""
    path = tmp_path / "data.parquet"
    pl.read_csv(write_csv(tmp_path / "rows.csv")).write_parquet(path)
    return str(path)


@pytest.fixture
def pq4(tmp_path) -> str:
    """Four chunks of Parquet."""
    path = tmp_path / "data4.parquet"
    pl.DataFrame({"a": [float(i) for i in range(4 * CHUNK)]}).write_parquet(path)
    return str(path)


def cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str, *words: str) -> None:
    """Exit 2, exactly one line on stderr, no traceback, and the key words of the cause."""
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)


def run(job: bn.BatchJob, **kwargs) -> bn.JobResult:
    return job.run(progress=None, **kwargs)


# --- config files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        ("job.json", "[1, 2]", ("job.json", "list", "table of options")),
        ("job.json", '"data.csv"', ("job.json", "str", "table of options")),
        ("job.toml", "source = = 1", ("job.toml", "not valid TOML")),
        ("job.yaml", "source: [1, 2", ("job.yaml", "not valid YAML")),
        ("job.json", '{"source": "d.csv", "output": "o", "bogus": 1}', ("bogus", "unknown option")),
        ("job.json", "\udcff", ("job.json", "not valid JSON")),
    ],
)
def test_bad_config_file_is_one_line(tmp_path, capsys, name, text, words):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    code, err = cli(capsys, "run", "--config", path, "--no-progress")
    assert_one_line(code, err, *words)


def test_config_file_that_is_a_list_is_a_config_error(tmp_path):
    path = tmp_path / "job.json"
    path.write_text(json.dumps([{"source": "a.csv"}]))
    with pytest.raises(bn.ConfigError, match="holds a list"):
        bn.BatchJob.from_config(path)


# --- a damaged or locked state ------------------------------------------------------------------------------


def damage(out: Path, how: str) -> None:
    path = out / "_batchnb" / "state.sqlite"
    data = path.read_bytes()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(os.urandom(8192) if how == "random" else data[: len(data) // 3])


@pytest.mark.parametrize("how", ["random", "truncated"])
def test_damaged_state_is_a_job_state_error(tmp_path, capsys, src, how):
    out = tmp_path / "out"
    assert run(bn.BatchJob(src, out, engine="sequential", chunk_size=CHUNK)).ok
    damage(out, how)
    for command in (["run", src, out, "--chunk-size", CHUNK, "--engine", "sequential", "--no-progress"],
                    ["status", out], ["verify", out]):  # fmt: skip
        code, err = cli(capsys, *command)
        assert_one_line(code, err, "state.sqlite", "unreadable", "--restart", "another output")
    with pytest.raises(bn.JobStateError, match=r"unreadable.*restart=True"):
        bn.status(out)
    with pytest.raises(bn.JobStateError, match="unreadable"):
        run(bn.BatchJob(src, out, engine="sequential", chunk_size=CHUNK))
    # restart discards the damaged state and starts over
    result = run(bn.BatchJob(src, out, engine="sequential", chunk_size=CHUNK), restart=True)
    assert result.ok and result.rows_out == N_ROWS


@pytest.fixture
def held_write_lock(tmp_path, src, monkeypatch):
    """A finished job whose state another process holds a write transaction on."""
    out = tmp_path / "out"
    assert run(bn.BatchJob(src, out, engine="sequential", chunk_size=CHUNK)).ok
    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.05)
    code = (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "conn.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    path = out / "_batchnb" / "state.sqlite"
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"locked"
    yield out
    holder.stdin.close()
    holder.wait(timeout=30)
    holder.stdout.close()


def test_locked_state_is_a_job_state_error(held_write_lock, src, capsys):
    out = held_write_lock
    with pytest.raises(bn.JobStateError, match=r"locked by another process.*another run may be writing"):
        run(bn.BatchJob(src, out, engine="sequential", chunk_size=CHUNK))
    code, err = cli(capsys, "run", src, out, "--chunk-size", CHUNK, "--engine", "sequential", "--no-progress")
    assert_one_line(code, err, "state.sqlite", "locked", "another run may be writing")
    assert bn.status(out).status == "succeeded"  # a reader is not held up by the writer


# --- a full disk ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["sequential", "threads"])
def test_full_disk_while_writing_parts(tmp_path, src, monkeypatch, engine):
    out = tmp_path / "out"
    write_atomic = sinks.write_atomic

    def full_after_two(frame, output, index, sink):
        if index >= 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(output, "_batchnb", "tmp")))
        return write_atomic(frame, output, index, sink)

    monkeypatch.setattr(sinks, "write_atomic", full_after_two)
    job = bn.BatchJob(src, out, engine=engine, chunk_size=CHUNK, retries=3, backoff=FAST_BACKOFF)
    result = run(job)
    assert result.status == "failed"
    assert "No space left on device" in result.reason and str(out) in result.reason
    assert result.errors == []  # no chunk is to blame: the last one is pending, not failed
    assert sorted(p.name for p in out.glob("part-*")) == ["part-000000.parquet", "part-000001.parquet"]
    assert "No space left on device" in bn.status(out).last_error
    monkeypatch.setattr(sinks, "write_atomic", write_atomic)
    again = run(job)
    assert again.ok and again.rows_out == N_ROWS
    assert again.read().collect()["a"].to_list() == [float(i) for i in range(N_ROWS)]


class _FullDisk:
    """A sqlite connection whose commit of finished chunks fails as on a full disk, after the first."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.commits = 0

    def executemany(self, sql, rows):
        if "SET status = 'done'" in sql:
            self.commits += 1
            if self.commits > 1:
                raise sqlite3.OperationalError("database or disk is full")
        return self._conn.executemany(sql, rows)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def test_full_disk_while_writing_the_state(tmp_path, src, monkeypatch, capsys):
    out = tmp_path / "out"
    connect = sqlite3.connect
    monkeypatch.setattr(store.sqlite3, "connect", lambda *a, **k: _FullDisk(connect(*a, **k)))
    job = bn.BatchJob(src, out, engine="sequential", chunk_size=CHUNK)
    with pytest.raises(bn.JobStateError, match=r"disk is full.*free space") as info:
        run(job)
    assert str(out) in str(info.value)
    code, err = cli(capsys, "run", src, out, "--chunk-size", CHUNK, "--engine", "sequential", "--no-progress")
    assert_one_line(code, err, "disk is full", str(out))
    monkeypatch.setattr(store.sqlite3, "connect", connect)
    assert bn.status(out).status == "failed"
    again = run(job)
    assert again.ok and again.rows_out == N_ROWS and again.chunks_done == 3


# --- chunk errors that fail again are not retried ------------------------------------------------------------


def test_data_error_is_not_retried_but_os_error_is(tmp_path, pq4, engine):
    def bad_second_chunk(df: pl.DataFrame) -> pl.DataFrame:
        first = df["a"][0]
        if first == float(CHUNK):
            raise bn.DataError(f"row {int(first)}: 'x' is not a float")
        if first == float(2 * CHUNK):
            raise OSError(errno.EIO, "input/output error on the network share")
        if first == float(3 * CHUNK):
            raise bn.SourceError("cannot read file 'data.parquet': stale file handle")  # may pass: retried
        return df.with_columns(score=pl.col("a") + 1)

    retries = 2
    job = bn.BatchJob(
        pq4, tmp_path / "out", detector=bad_second_chunk, engine=engine, chunk_size=CHUNK, retries=retries,
        backoff=FAST_BACKOFF,
    )  # fmt: skip
    result = run(job)
    assert result.status == "failed" and result.chunks_done == 1
    errors = {e.chunk: e for e in result.errors}
    assert (errors[1].type, errors[1].attempts) == ("DataError", 1)
    assert "'x' is not a float" in errors[1].message
    assert (errors[2].type, errors[2].attempts) == ("OSError", 1 + retries)
    assert (errors[3].type, errors[3].attempts) == ("SourceError", 1 + retries)
    assert result.retries == 2 * retries


def test_type_error_and_panic_are_not_retried(tmp_path, pq, engine):
    def fragile(df: pl.DataFrame):
        first = df["a"][0]
        if first == float(CHUNK):
            return df.height  # not a DataFrame: a TypeError, every time
        if first == float(2 * CHUNK):
            raise PanicException("called `Option::unwrap()` on a `None` value")
        return df.with_columns(score=pl.col("a") + 1)

    job = bn.BatchJob(pq, tmp_path / "out", detector=fragile, engine=engine, chunk_size=CHUNK, retries=3,
                      backoff=FAST_BACKOFF)  # fmt: skip
    result = run(job)
    assert result.status == "failed" and result.chunks_done == 1  # the worker (pool) survived the panic
    errors = {e.chunk: e for e in result.errors}
    assert (errors[1].type, errors[1].attempts) == ("TypeError", 1)
    assert (errors[2].type, errors[2].attempts) == ("DataError", 1)
    assert "panic" in errors[2].message and "Option::unwrap()" in errors[2].message
    assert result.retries == 0
    assert [p.name for p in (tmp_path / "out").glob("part-*")] == ["part-000000.parquet"]


def test_panic_reading_a_chunk_fails_that_chunk_only(tmp_path, src, monkeypatch):
    csv = type(sources.get("csv"))  # a chunk task carries its format: the worker calls its read()
    read, scan_chunk = csv.read, csv.scan_chunk

    def panics_on_second(self, info, spec):
        if spec.index == 1:
            raise PanicException("invalid utf-8 sequence")
        return read(self, info, spec)

    def query_fails_on_second(self, info, spec):
        # The one-pass query fails too (as it would on these bytes): the chunk is then read on its own.
        query = scan_chunk(self, info, spec)
        return query.select(pl.col("id").str.to_integer()) if spec.index == 1 else query

    monkeypatch.setattr(csv, "read", panics_on_second)
    monkeypatch.setattr(csv, "scan_chunk", query_fails_on_second)
    result = run(bn.BatchJob(src, tmp_path / "out", engine="sequential", chunk_size=CHUNK, retries=3))
    assert (result.status, result.chunks_done, result.chunks_failed) == ("failed", 2, 1)
    (error,) = result.errors
    assert (error.type, error.attempts) == ("DataError", 1)
    assert "invalid utf-8 sequence" in error.message and "PanicException" in error.traceback


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps])
def test_data_error_and_converted_panic_pickle(tmp_path, src, monkeypatch, dumps):
    back = pickle.loads(dumps(bn.DataError("row 7: 'x' is not a float")))
    assert type(back) is bn.DataError and isinstance(back, ValueError | bn.SourceError)
    assert str(back) == "row 7: 'x' is not a float"

    from batchnb.driver.task import run_chunk

    job = bn.BatchJob(src, tmp_path / "out", engine="sequential", chunk_size=CHUNK)
    spec = job.plan().chunks[0]
    monkeypatch.setattr(
        sources, "read_chunk", lambda info, spec, fmt=None: (_ for _ in ()).throw(PanicException("boom"))
    )
    task = _task(job, spec)
    with pytest.raises(bn.DataError) as info:
        run_chunk(task)
    back = pickle.loads(dumps(info.value))
    assert type(back) is bn.DataError and "PanicException: boom" in str(back)


@pytest.mark.parametrize("where", ["raised", "cause"])
def test_chunk_error_after_a_panic_pickles_where_tblib_keeps_causes(tmp_path, src, monkeypatch, where):
    """Dask and Ray install tblib, which pickles an exception's cause and context: a panic among them (its class
    cannot be pickled) would stop the chunk's error from reaching the driver."""
    from tblib import pickling_support

    from batchnb.driver.task import run_chunk

    pickling_support.install()

    def read(info, spec, fmt=None):
        if where == "raised":
            raise PanicException("boom")
        try:
            raise PanicException("boom")
        except BaseException as exc:
            raise bn.DataError("cannot read csv file: boom") from exc

    job = bn.BatchJob(src, tmp_path / "out", engine="sequential", chunk_size=CHUNK)
    monkeypatch.setattr(sources, "read_chunk", read)
    with pytest.raises(bn.DataError) as info:
        run_chunk(_task(job, job.plan().chunks[0]))
    back = pickle.loads(pickle.dumps(info.value))
    assert type(back) is bn.DataError and "boom" in str(back)


def _task(job: bn.BatchJob, spec):
    from batchnb.driver.task import ChunkTask

    plan = job.plan()
    return ChunkTask(spec=spec, dataset=plan.dataset, scorer=lambda df: df, keep=(), output=job.output,
                     output_format="parquet")  # fmt: skip


# --- the driver side: opening, sampling, planning ------------------------------------------------------------


def _raise(exc: BaseException):
    def fail(*args, **kwargs):
        raise exc

    return fail


@pytest.mark.parametrize(
    "exc",
    [PanicException("called `Result::unwrap()` on an `Err` value"), pa.lib.ArrowInvalid("Parquet magic bytes")],
    ids=["panic", "pyarrow"],
)
def test_library_error_opening_the_source(tmp_path, src, monkeypatch, capsys, exc):
    monkeypatch.setattr(sources, "open_dataset", _raise(exc))
    job = bn.BatchJob(src, tmp_path / "out", engine="sequential", chunk_size=CHUNK)
    for call in (job.plan, lambda: run(job)):
        with pytest.raises(bn.SourceError, match=rf"cannot read the source.*{type(exc).__name__}"):
            call()
    with pytest.raises(bn.SourceError, match=type(exc).__name__):
        job.start(progress=None).wait()
    code, err = cli(capsys, "run", src, tmp_path / "out2", "--chunk-size", CHUNK, "--no-progress")
    assert_one_line(code, err, "data.csv", type(exc).__name__)


def test_library_error_sampling_and_fitting(tmp_path, src, monkeypatch):
    fmt = type(sources.get("csv"))
    monkeypatch.setattr(fmt, "sample", _raise(pa.lib.ArrowInvalid("CSV parse error: expected 2 columns")))
    with pytest.raises(bn.SourceError, match=r"sampling.*ArrowInvalid: CSV parse error"):
        run(bn.BatchJob(src, tmp_path / "out", engine="sequential", chunk_size=CHUNK))
    monkeypatch.undo()
    from batchnb.driver import prepare

    monkeypatch.setattr(prepare, "fit_detector", _raise(PanicException("index out of bounds")))
    with pytest.raises(bn.ConfigError, match=r"could not be fitted.*PanicException: index out of bounds"):
        run(bn.BatchJob(src, tmp_path / "out2", engine="sequential", chunk_size=CHUNK))
    assert bn.status(tmp_path / "out2").status == "failed"


def test_cli_turns_any_error_into_one_line(tmp_path, src, monkeypatch, capsys):
    monkeypatch.setattr(bn.BatchJob, "run", _raise(PanicException("assertion failed: len > 0\nsecond line")))
    code, err = cli(capsys, "run", src, tmp_path / "out", "--no-progress")
    assert_one_line(code, err, "PanicException", "assertion failed: len > 0 second line")
    monkeypatch.setattr(bn.BatchJob, "run", _raise(KeyboardInterrupt()))
    code, err = cli(capsys, "run", src, tmp_path / "out", "--no-progress")
    assert code == 1 and "interrupted" in err


# --- Dask: an address that is no scheduler ---------------------------------------------------------------------


class _Server:
    """A TCP server on 127.0.0.1 that is not Dask: it says `greeting` to whoever connects, or nothing."""

    def __init__(self, greeting: bytes) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.greeting = greeting
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.greeting:
                conn.sendall(self.greeting)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        self.sock.close()
        for conn in self.conns:
            conn.close()
        self.thread.join(timeout=10)


@pytest.mark.parametrize(
    "greeting", [b"", b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"], ids=["silent", "http"]
)
def test_dask_address_that_is_no_scheduler(tmp_path, src, monkeypatch, capsys, greeting):
    pytest.importorskip("distributed")
    from batchnb.engines import dask as dask_engine

    monkeypatch.setattr(dask_engine, "CONNECT_TIMEOUT_S", 0.2)
    server = _Server(greeting)
    try:
        address = f"tcp://127.0.0.1:{server.port}"
        job = bn.BatchJob(src, tmp_path / "out", engine=bn.engines.DaskEngine(address=address), chunk_size=CHUNK)
        with pytest.raises(bn.EngineError, match=r"is not a Dask scheduler.*check the address"):
            run(job)
    finally:
        server.close()
    assert bn.status(tmp_path / "out").status == "failed"


def test_dask_address_nobody_listens_on(tmp_path, src):
    pytest.importorskip("distributed")
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    engine = bn.engines.DaskEngine(address=f"tcp://127.0.0.1:{port}")
    with pytest.raises(bn.EngineError, match=r"cannot reach the Dask scheduler.*refused.*check the address"):
        run(bn.BatchJob(src, tmp_path / "out", engine=engine, chunk_size=CHUNK))


def test_output_that_cannot_hold_a_job(tmp_path, src, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(bn.JobStateError, match=r"driver lock.*NotADirectoryError.*a directory you can write to"):
        run(bn.BatchJob(src, blocker / "out", engine="sequential", chunk_size=CHUNK))
    code, err = cli(capsys, "run", src, blocker / "out", "--chunk-size", CHUNK, "--no-progress")
    assert_one_line(code, err, "driver lock", "a-file")
