"""Builders of crafted outputs and files for tests/test_hostile.py, and the checks every hostile case shares.

A payload is a pickle whose loading creates a marker file: a reader that unpickles it leaves the marker behind,
in whatever process it ran (driver, worker, report kernel, CLI subprocess).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

import batchnb as bn
from batchnb.checksum import file_checksum

__all__ = [
    "SUFFIX",
    "CliResult",
    "Outcome",
    "Payload",
    "cli",
    "fix_part_checksum",
    "hdf5_with_pickled_attribute",
    "make_output",
    "outcome",
    "payload_bytes",
    "snapshot",
    "source_frame",
    "state_db",
]

N_ROWS = 3_000
CHUNK = 1_000
SUFFIX = {
    "parquet": ".parquet",
    "csv": ".csv",
    "json": ".jsonl",
    "feather": ".feather",
    "hdf5": ".h5",
    "pickle": ".pkl",
}


class Payload:
    """Unpickling this touches `marker`: the evidence that a reader ran code it was handed."""

    def __init__(self, marker: Path) -> None:
        self.marker = Path(marker)

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def payload_bytes(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker), protocol=pickle.HIGHEST_PROTOCOL)


def source_frame(n: int = N_ROWS) -> pl.DataFrame:
    """Row i has id == i and a == i; b repeats, so every detector has a spread to fit."""
    return pl.DataFrame(
        {"id": list(range(n)), "a": [float(i) for i in range(n)], "b": [float(i % 13) for i in range(n)]}
    )


def make_output(source: str | Path, output: str | Path, **options) -> bn.BatchJob:
    """A real, finished output of a small job; returns the job so a test can run it again (resume)."""
    options.setdefault("detector", "zscore")
    options.setdefault("chunk_size", CHUNK)
    options.setdefault("engine", "sequential")
    job = bn.BatchJob(str(source), str(output), **options)
    result = job.run(progress=None)
    assert result.status == "succeeded", result.summary()
    return job


@contextlib.contextmanager
def state_db(output: str | Path) -> Iterator[sqlite3.Connection]:
    """The raw state of `output`, for tampering; committed and checkpointed on exit (no WAL left beside it)."""
    conn = sqlite3.connect(Path(output, "_batchnb", "state.sqlite"), isolation_level=None)
    try:
        yield conn
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def fix_part_checksum(output: str | Path, index: int) -> Path:
    """Record the current bytes of chunk `index`'s part as its checksum and size: only the payload is left."""
    with state_db(output) as conn:
        (part,) = conn.execute("SELECT part FROM chunks WHERE idx = ?", (index,)).fetchone()
        path = Path(output, part)
        checksum, size = file_checksum(path)
        conn.execute("UPDATE chunks SET checksum = ?, nbytes = ? WHERE idx = ?", (checksum, size, index))
    return path


def hdf5_with_pickled_attribute(path: str | Path, marker: Path, frame: pl.DataFrame | None = None) -> Path:
    """A pandas table-format HDF5 file (key "data") whose table node carries a pickled attribute."""
    import tables

    frame = source_frame() if frame is None else frame
    frame.to_pandas().to_hdf(path, key="data", format="table", index=False)
    with tables.open_file(str(path), "a") as h5:
        h5.get_node("/data")._v_attrs.note = Payload(marker)  # PyTables stores a non-array value pickled
        h5.get_node("/data/table")._v_attrs.note = Payload(marker)
    return Path(path)


def snapshot(root: Path, *, exclude: tuple[Path, ...] = ()) -> dict[str, tuple]:
    """Every entry under `root` but `exclude`: kind, bytes hash and mtime (directories: mtime, so adds show)."""
    excluded = {os.path.abspath(p) for p in exclude}
    seen: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if os.path.abspath(os.path.join(dirpath, d)) not in excluded]
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            if os.path.abspath(full) in excluded:
                continue
            st = os.lstat(full)
            rel = os.path.relpath(full, root)
            if os.path.islink(full):
                seen[rel] = ("link", os.readlink(full))
            elif os.path.isdir(full):
                seen[rel] = ("dir", st.st_mtime_ns)
            else:
                seen[rel] = ("file", hashlib.sha256(Path(full).read_bytes()).hexdigest(), st.st_mtime_ns, st.st_mode)
    return seen


@dataclass(frozen=True)
class Outcome:
    """What a reader did: returned `value`, or raised `error` (a BatchError; anything else fails the test)."""

    value: object = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def outcome(call: Callable[[], object]) -> Outcome:
    """Run a reader; a BatchError is a clear answer, any other exception is not (the test fails on it)."""
    try:
        return Outcome(value=call())
    except bn.BatchError as exc:
        return Outcome(error=exc)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise AssertionError(f"not a clear error: {type(exc).__module__}.{type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class CliResult:
    rc: int
    out: str
    err: str


def cli(*argv: str, subprocess_run: bool = False, cwd: Path | None = None) -> CliResult:
    """`batchnb ARGV` in this process (fast) or in a fresh interpreter (what a user runs)."""
    if subprocess_run:
        proc = subprocess.run(
            [sys.executable, "-m", "batchnb", *argv], capture_output=True, text=True, cwd=cwd, timeout=120
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)
    from batchnb.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return CliResult(rc, out.getvalue(), err.getvalue())
