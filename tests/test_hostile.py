"""Hostile inputs: outputs, states and files made by someone else (DESIGN.md section 1, "Untrusted files and outputs").

Every case starts from a real output (or a crafted file), tampers with it, then calls the readers a user would.
Each checks that the payload's marker file does not exist, that no file outside the output changed (bytes, mode
and mtime of every entry under the test's folder and the source folder), and that the user got a clear answer:
a success that ran nothing it was handed, or a `bn.BatchError` (the CLI: exit 0/1/2, one line, no traceback).

| group | case (parametrized) | readers | expected |
|---|---|---|---|
| state cells | payload pickle in every meta value (16 keys) | status, result, read, verify, CLI status/verify, report data, resume, restart | success or BatchError |
| state cells | blobs.scorer (BLOB) | same | success or BatchError |
| state cells | chunks: spec, status, part, checksum, timings, worker, error | same | success or BatchError |
| state cells | attempts: type, message, traceback; a timeline row of payloads | same | success or BatchError |
| state | scorer payload, `batchnb report OUT` in a subprocess (kernel) | report | marker absent |
| state | identity removed / fingerprint removed, scorer payload | resume | JobStateError |
| parts | pickle and HDF5 (pickled attribute) part, checksum fixed x verify, read, CLI verify, report, as a source | each | refused, names allow_pickle |
| parts | a recorded part path outside the output (relative, absolute) x read, verify, restart | each | victim untouched, not read |
| sources | HDF5 source with pickled attributes: run, plan, CLI run | each | refused, names allow_pickle |
| symlinks | driver.lock, state.sqlite, state.sqlite-wal, _batchnb, _batchnb/tmp, part file (resume, restart), converted/ file and dir | run | target untouched |
| symlinks | report.ipynb, report.html, report.html.tmp | report | targets untouched |
| foreign | user's part-000000.parquet, Spark output, part-notes.txt, each with and without restart | run | JobStateError, untouched |
| foreign | restart=True on a real output with foreign part-* files; CLI run --restart into a foreign dir | run | only recorded parts deleted |
| overlap | output == source file, output == source dir, output inside a recursive glob, source inside output, restart | run | ConfigError, source untouched |
| paths | output `out#1`, `out?x=1`, `out%41`, `out with space`, unicode | run, status, verify, read | state inside, cwd clean |
| paths | `s3://bucket/x`, `nosuch://bucket/x` outputs; pipeline named `../../x`; output `javascript:alert(1)` | run, HTML | refused / confined / no link |
| disks | finished output on a read-only mount x status, verify, read, CLI status, CLI verify, report data, resume | each | real status, works |
| disks | a full disk (tiny tmpfs) | run | clear error naming space |
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from hostile import (
    cli,
    fix_part_checksum,
    hdf5_with_pickled_attribute,
    make_output,
    outcome,
    payload_bytes,
    source_frame,
    state_db,
)
from hostile.guard import Guard, check_cli, clear

import batchnb as bn
from batchnb import reports


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    """A source and finished outputs (parquet, pickle, hdf5) that each case copies before tampering."""
    root = tmp_path_factory.mktemp("hostile_base")
    src = root / "src"
    src.mkdir()
    source = src / "data.parquet"
    source_frame().write_parquet(source)
    outputs = {}
    for fmt in ("parquet", "pickle", "hdf5"):
        out = root / f"out-{fmt}"
        make_output(source, out, output_format=fmt, allow_pickle=True)
        outputs[fmt] = out
    return {"source": source, "src_dir": src, "outputs": outputs}


@pytest.fixture
def case(base, tmp_path, monkeypatch):
    """A copy of a finished output in `tmp_path/out`, a folder of sentinels outside it, and a guard over both."""
    monkeypatch.chdir(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("not batchnb's\n")
    (outside / "victim.parquet").write_bytes(base["source"].read_bytes())

    def make(fmt: str = "parquet", *, copy: bool = True, allowed: tuple[Path, ...] = ()) -> Guard:
        out = tmp_path / "out"
        if copy:
            shutil.copytree(base["outputs"][fmt], out, symlinks=True)
        return Guard(roots=(tmp_path, base["src_dir"]), out=out, marker=tmp_path / "marker", allowed=allowed)

    return make


def job_for(base, out, **options) -> bn.BatchJob:
    options.setdefault("detector", "zscore")
    return bn.BatchJob(str(base["source"]), str(out), chunk_size=1_000, engine="sequential", **options)


# --------------------------------------------------------------------------------------------------
# Payloads in every cell of the state
# --------------------------------------------------------------------------------------------------
META_KEYS = ("identity", "identity_fields", "config", "fingerprint", "dataset", "features", "keep", "chunk_size",
             "output_schema", "output_dtypes", "prepare_s", "plan_saved", "status", "progress", "reason", "elapsed_s")  # fmt: skip
CHUNK_COLUMNS = ("spec", "status", "part", "checksum", "timings", "worker", "error")
ATTEMPT_COLUMNS = ("type", "message", "traceback")
CELLS = (
    [("meta", k) for k in META_KEYS]
    + [("blobs", "scorer")]
    + [("chunks", c) for c in CHUNK_COLUMNS]
    + [("attempts", c) for c in ATTEMPT_COLUMNS]
    + [("timeline", "*")]
)


def plant_payload(out: Path, table: str, column: str, payload: bytes) -> None:
    with state_db(out) as conn:
        if table == "meta":
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (column, payload))
        elif table == "blobs":
            conn.execute("INSERT OR REPLACE INTO blobs(key, value) VALUES (?, ?)", (column, payload))
        elif table == "chunks":
            conn.execute(f"UPDATE chunks SET {column} = ?", (payload,))
        elif table == "attempts":
            row = {"chunk": 1, "attempt": 1, "at": 1.0, "type": "ValueError", "message": "m", "traceback": "t"}
            row[column] = payload
            conn.execute("INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?)", (*row.values(), 0.0))
        else:
            conn.execute("INSERT INTO timeline VALUES (?, ?, ?, ?, ?, ?)", (payload,) * 6)


def state_readers(base, out: Path):
    """Every reader a user has of an output, read-only ones first; resume and restart last (they write)."""
    job = job_for(base, out)
    return [
        ("bn.status", lambda: bn.status(out)),
        ("job.status", job.status),
        ("job.result", job.result),
        ("read", lambda: job.read().collect()),
        ("verify", job.verify),
        ("CLI status", lambda: cli("status", str(out))),
        ("CLI verify", lambda: cli("verify", str(out))),
        ("report data", lambda: reports.load(out)),
        ("resume", lambda: job.run(progress=None)),
        ("restart", lambda: job.run(progress=None, restart=True)),
    ]


def run_readers(readers, guard: Guard) -> list[str]:
    problems = []
    for name, call in readers:
        result, unclear = clear(call, name)
        problems += unclear
        if result is not None and result.ok and hasattr(result.value, "rc"):
            problems += check_cli(result.value, name)
        problems += guard.problems(name)
    return problems


@pytest.mark.parametrize(("table", "column"), CELLS, ids=[f"{t}.{c}" for t, c in CELLS])
def test_payload_in_state_cell(base, case, table, column):
    guard = case()
    plant_payload(guard.out, table, column, payload_bytes(guard.marker))
    problems = run_readers(state_readers(base, guard.out), guard)
    assert not problems, "\n".join(problems)


def test_report_cli_does_not_unpickle_scorer(base, case):
    guard = case()
    plant_payload(guard.out, "blobs", "scorer", payload_bytes(guard.marker))
    result = cli("report", str(guard.out), subprocess_run=True)
    problems = check_cli(result, "batchnb report") + guard.problems("batchnb report")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("key", ["identity", "fingerprint"])
def test_state_without_identity_is_another_jobs(base, case, key):
    guard = case()
    plant_payload(guard.out, "blobs", "scorer", payload_bytes(guard.marker))
    with state_db(guard.out) as conn:
        conn.execute("DELETE FROM meta WHERE key = ?", (key,))
    got = outcome(lambda: job_for(base, guard.out).run(progress=None))
    guard.check("resume")
    assert isinstance(got.error, bn.JobStateError), f"a state without {key} counted as this job: {got}"
    assert "restart" in str(got.error), got.error


# --------------------------------------------------------------------------------------------------
# Parts carrying payloads, parts outside the output
# --------------------------------------------------------------------------------------------------
def plant_part_payload(out: Path, fmt: str, marker: Path) -> None:
    part = next(out.glob(f"part-000000{'.pkl' if fmt == 'pickle' else '.h5'}"))
    if fmt == "pickle":
        part.write_bytes(payload_bytes(marker))
    else:
        hdf5_with_pickled_attribute(part.with_suffix(".tmp"), marker, source_frame(1_000)).replace(part)
    fix_part_checksum(out, 0)


PART_READERS = {
    "verify": lambda job, out: job.verify(),
    "read": lambda job, out: job.read().collect(),
    "CLI verify": lambda job, out: cli("verify", str(out)),
    "report": lambda job, out: reports.top_anomalies(out),
    "as source": lambda job, out: bn.BatchJob(str(out / "part-*"), str(out.parent / "out2"), chunk_size=1_000,
                                              engine="sequential", format=job.config.output_format).run(progress=None),
}  # fmt: skip


@pytest.mark.parametrize("reader", PART_READERS)
@pytest.mark.parametrize("fmt", ["pickle", "hdf5"])
def test_part_payload_needs_allow_pickle(base, case, tmp_path, fmt, reader):
    guard = case(fmt, allowed=(tmp_path / "out2",))
    plant_part_payload(guard.out, fmt, guard.marker)
    job = job_for(base, guard.out, output_format=fmt)
    got = outcome(lambda: PART_READERS[reader](job, guard.out))
    guard.check(reader)
    value = got.value
    if isinstance(value, bn.VerifyReport):
        text, refused = str(value), not value.ok
    elif hasattr(value, "rc"):
        text, refused = value.out + value.err, value.rc != 0
    else:
        text, refused = str(got.error), got.error is not None
    assert refused, f"{reader} read a {fmt} part without allow_pickle: {str(value)[:200]}"
    assert "allow_pickle" in text or "allow-pickle" in text, text


@pytest.mark.parametrize("where", ["relative", "absolute"])
@pytest.mark.parametrize("reader", ["read", "verify", "restart"])
def test_part_path_outside_output(base, case, tmp_path, where, reader):
    guard = case()
    victim = tmp_path / "outside" / "victim.parquet"
    with state_db(guard.out) as conn:
        conn.execute("UPDATE chunks SET part = ? WHERE idx = 0", ("../outside/victim.parquet" if where == "relative" else str(victim),))
    fix_part_checksum(guard.out, 0)
    job = job_for(base, guard.out)
    call = {"read": lambda: job.read().collect(), "verify": job.verify,
            "restart": lambda: job.run(progress=None, restart=True)}[reader]  # fmt: skip
    got = outcome(call)
    guard.check(reader)
    if reader == "read":
        assert got.error is not None, "read() returned rows of a file outside the output"
    if reader == "verify":
        assert got.error is not None or not got.value.ok, "verify() accepted a part outside the output"


# --------------------------------------------------------------------------------------------------
# HDF5 sources that unpickle
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call", ["run", "plan", "CLI run"])
def test_hdf5_source_with_pickled_attribute(case, tmp_path, call):
    evil = hdf5_with_pickled_attribute(tmp_path / "outside" / "evil.h5", tmp_path / "marker")
    guard = case(copy=False)
    job = bn.BatchJob(str(evil), str(guard.out), chunk_size=1_000, engine="sequential")
    if call == "CLI run":
        result = cli("run", str(evil), str(guard.out), "--engine", "sequential")
        guard.check(call)
        assert not check_cli(result, call) and result.rc == 2, result
        assert "allow-pickle" in result.err or "allow_pickle" in result.err, result.err
        return
    got = outcome(lambda: job.run(progress=None) if call == "run" else job.plan())
    guard.check(call)
    assert got.error is not None and "allow_pickle" in str(got.error), got
