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

import re
import shutil
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
    named = "allow_pickle" in text or "allow-pickle" in text
    # verify may check checksums alone (no part is read) when it says which row counts it left unchecked
    assert refused or (reader in ("verify", "CLI verify") and named), f"{reader} read a {fmt} part: {text[:300]}"
    assert named, text


@pytest.mark.parametrize("where", ["relative", "absolute"])
@pytest.mark.parametrize("reader", ["read", "verify", "restart"])
def test_part_path_outside_output(base, case, tmp_path, where, reader):
    guard = case()
    victim = tmp_path / "outside" / "victim.parquet"
    with state_db(guard.out) as conn:
        conn.execute(
            "UPDATE chunks SET part = ? WHERE idx = 0",
            ("../outside/victim.parquet" if where == "relative" else str(victim),),
        )
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


# --------------------------------------------------------------------------------------------------
# Symlinks planted where batchnb writes
# --------------------------------------------------------------------------------------------------
def _link(path: Path, target: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    path.symlink_to(target)


def _link_converted_files(out: Path, outside: Path) -> None:
    for i, staged in enumerate(p for p in sorted((out / "_batchnb" / "converted").rglob("*")) if p.is_file()):
        (outside / f"staged-{i}.txt").write_text("not batchnb's\n")
        _link(staged, outside / f"staged-{i}.txt")


def _link_converted_dir(out: Path, outside: Path) -> None:
    (outside / "convdir").mkdir()
    (outside / "convdir" / "keep.txt").write_text("not batchnb's\n")
    _link(out / "_batchnb" / "converted", outside / "convdir")


def _link_state_dir(out: Path, outside: Path) -> None:
    shutil.move(out / "_batchnb", outside / "statedir")
    (out / "_batchnb").symlink_to(outside / "statedir")


def _link_tmp(out: Path, outside: Path) -> None:
    (outside / "tmpdir").mkdir()
    _link(out / "_batchnb" / "tmp", outside / "tmpdir")
    (out / "part-000001.parquet").unlink()  # the resume rewrites it through tmp/


def _link_state_copy(out: Path, outside: Path) -> None:
    shutil.copy(out / "_batchnb" / "state.sqlite", outside / "state-copy.sqlite")
    _link(out / "_batchnb" / "state.sqlite", outside / "state-copy.sqlite")


SYMLINKS = {
    "driver.lock": (lambda out, outside: _link(out / "_batchnb" / "driver.lock", outside / "victim.txt"), "resume"),
    "state.sqlite": (_link_state_copy, "resume"),
    "state.sqlite-wal": (lambda out, outside: _link(out / "_batchnb" / "state.sqlite-wal", outside / "victim.txt"),
                         "resume"),
    "_batchnb": (_link_state_dir, "resume"),
    "_batchnb/tmp": (_link_tmp, "resume"),
    "part resume": (lambda out, outside: _link(out / "part-000001.parquet", outside / "victim.parquet"), "resume"),
    "part restart": (lambda out, outside: _link(out / "part-000001.parquet", outside / "victim.parquet"), "restart"),
    "converted file": (_link_converted_files, "resume"),
    "converted dir": (_link_converted_dir, "resume"),
}  # fmt: skip


@pytest.mark.parametrize("where", SYMLINKS)
def test_symlink_planted_in_output(case, tmp_path, where):
    plant, action = SYMLINKS[where]
    guard = case(copy=False)
    source = tmp_path / "data.csv.gz"
    source.write_bytes(__import__("gzip").compress(source_frame().write_csv().encode()))
    job = make_output(source, guard.out)
    plant(guard.out, tmp_path / "outside")
    guard.before = guard._take()
    got, problems = clear(lambda: job.run(progress=None, restart=action == "restart"), action)
    problems += guard.problems(f"{action} with {where} a symlink")
    assert not problems, "\n".join(problems)
    if got.error is None:  # a chunk refused to write through the link is a failed job that says why
        assert got.value.status == "succeeded" or (got.value.status == "failed" and got.value.errors), got


def test_report_through_planted_symlinks(base, case, tmp_path):
    guard = case()
    outside = tmp_path / "outside"
    for name in ("report.ipynb", "report.html", "report.html.tmp"):
        (outside / name).write_text("not batchnb's\n")
        _link(guard.out / name, outside / name)
    guard.before = guard._take()
    _, problems = clear(lambda: job_for(base, guard.out).report(), "report")
    problems += guard.problems("report")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------------------
# Directories batchnb did not write
# --------------------------------------------------------------------------------------------------
FOREIGN = {
    "user part": {"part-000000.parquet": None},
    "spark": {"part-00000-1b6c0e2e-5b3a-4c36-9a7e-3f1d2c0b9a11-c000.snappy.parquet": None, "_SUCCESS": b""},
    "part-notes.txt": {"part-notes.txt": b"my notes\n"},
}


def _fill_foreign(out: Path, base, files: dict) -> list[str]:
    out.mkdir(exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(base["source"].read_bytes() if data is None else data)
    return list(files)


@pytest.mark.parametrize("restart", [False, True], ids=["run", "restart"])
@pytest.mark.parametrize("kind", FOREIGN)
def test_foreign_directory_is_refused(base, case, kind, restart):
    guard = case(copy=False, allowed=())
    names = _fill_foreign(guard.out, base, FOREIGN[kind])
    guard.out = guard.out.parent / "-"  # the whole folder is watched: the foreign files are the user's
    guard.before = guard._take()
    got = outcome(lambda: job_for(base, guard.out.parent / "out").run(progress=None, restart=restart))
    guard.check("run")
    assert isinstance(got.error, bn.JobStateError), f"a foreign directory was used as an output: {got}"
    assert any(n in str(got.error) for n in names), got.error


def test_restart_deletes_only_recorded_parts(base, case):
    guard = case()
    foreign = _fill_foreign(guard.out, base, {**FOREIGN["spark"], **FOREIGN["part-notes.txt"]})
    before = {n: (guard.out / n).read_bytes() for n in foreign}
    got, problems = clear(lambda: job_for(base, guard.out).run(progress=None, restart=True), "restart")
    problems += guard.problems("restart")
    assert not problems, "\n".join(problems)
    assert got.value.status == "succeeded", got
    assert {n: (guard.out / n).read_bytes() for n in foreign if (guard.out / n).exists()} == before, "foreign gone"
    assert sorted(p.name for p in guard.out.glob("part-0000??.parquet")) == [f"part-00000{i}.parquet" for i in range(3)]


def test_cli_run_restart_into_foreign_directory(base, case):
    guard = case(copy=False)
    _fill_foreign(guard.out, base, FOREIGN["spark"])
    guard.out = guard.out.parent / "-"
    guard.before = guard._take()
    result = cli("run", str(base["source"]), str(guard.out.parent / "out"), "--engine", "sequential", "--restart")
    guard.check("batchnb run --restart")
    assert result.rc == 2 and not check_cli(result, "run"), result


# --------------------------------------------------------------------------------------------------
# Source and output overlapping
# --------------------------------------------------------------------------------------------------
def _overlap(tmp_path: Path, kind: str) -> tuple[str, Path]:
    data = tmp_path / "data"
    data.mkdir()
    source_frame().write_parquet(data / "a.parquet")
    if kind == "output is the source file":
        return str(data / "a.parquet"), data / "a.parquet"
    if kind == "output is the source dir":
        return str(data / "*.parquet"), data
    if kind == "output inside a recursive glob":
        return str(data / "**" / "*.parquet"), data / "out"
    out = tmp_path / "out"  # source inside the output
    out.mkdir()
    shutil.move(data / "a.parquet", out / "a.parquet")
    return str(out / "a.parquet"), out


OVERLAPS = ["output is the source file", "output is the source dir", "output inside a recursive glob",
            "source inside the output"]  # fmt: skip


@pytest.mark.parametrize("restart", [False, True], ids=["run", "restart"])
@pytest.mark.parametrize("kind", OVERLAPS)
def test_source_and_output_overlap(case, tmp_path, kind, restart):
    source, out = _overlap(tmp_path, kind)
    guard = case(copy=False)
    guard.out = tmp_path / "-"  # everything is watched: the output overlaps the user's data
    guard.before = guard._take()
    got = outcome(
        lambda: bn.BatchJob(source, str(out), chunk_size=1_000, engine="sequential").run(progress=None, restart=restart)
    )
    guard.check("run")
    assert isinstance(got.error, bn.ConfigError), f"{kind}: not refused: {got}"


# --------------------------------------------------------------------------------------------------
# Paths: odd characters, URLs, pipeline names, links in HTML
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["out#1", "out?x=1", "out%41", "out with space", "sortie-été-✓"])
def test_odd_characters_in_output(base, case, tmp_path, name):
    guard = case(copy=False)
    guard.out = tmp_path / name
    guard.before = guard._take()
    job = job_for(base, name)  # relative: the cwd is where a mangled path would land
    got, problems = clear(lambda: job.run(progress=None), "run")
    problems += guard.problems("run")
    assert not problems, "\n".join(problems)
    assert got.value.status == "succeeded", got
    assert (tmp_path / name / "_batchnb" / "state.sqlite").is_file()
    assert bn.status(name).chunks_done == 3 and job.verify().ok
    assert job.read().collect().height == 3_000
    guard.check("status, verify, read")


@pytest.mark.parametrize("url", ["s3://bucket/x", "nosuch://bucket/x"])
def test_output_url_is_not_a_local_folder(base, case, tmp_path, monkeypatch, url):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no wait for a metadata service
    guard = case(copy=False)
    got = outcome(lambda: job_for(base, url).run(progress=None))
    guard.check("run")
    assert got.error is not None, f"{url} was written somewhere: {got}"
    assert not any(p.name.endswith(":") for p in tmp_path.iterdir()), list(tmp_path.iterdir())


def test_pipeline_name_stays_in_its_state_dir(base, case, tmp_path):
    state_dir = tmp_path / "a" / "b" / "state"
    guard = case(copy=False, allowed=(state_dir,))

    def run_pipeline():
        pipeline = bn.Pipeline("../../x", state_dir=state_dir)
        pipeline.add(job_for(base, guard.out), name="score")
        return pipeline.run()

    got = outcome(run_pipeline)
    guard.check("pipeline run")
    assert got.error is not None or (state_dir.exists() and any(state_dir.rglob("*"))), got


def test_no_javascript_link_in_result_html(base, case, tmp_path):
    guard = case(copy=False)
    guard.out = tmp_path / "javascript:alert(1)"
    guard.before = guard._take()
    got = outcome(lambda: job_for(base, "javascript:alert(1)").run(progress=None)._repr_html_())
    guard.check("run")
    if got.error is None:
        assert not re.search(r"href\s*=\s*['\"]?\s*javascript:", got.value, re.I), got.value


# --------------------------------------------------------------------------------------------------
# Read-only and full disks
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def tmpfs(tmp_path):
    """mount(path, size, ...) a tmpfs; every mount is undone after the test. Skips where mounting is denied."""
    mounted = []

    def mount(path: Path, size: str = "8m") -> Path:
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


RO_READERS = {
    "bn.status": lambda job, out: bn.status(out).status == "succeeded" and bn.status(out).chunks_done == 3,
    "verify": lambda job, out: job.verify().ok,
    "read": lambda job, out: job.read().collect().height == 3_000,
    "CLI status": lambda job, out: (r := cli("status", str(out))).rc == 0 and "succeeded" in r.out,
    "CLI verify": lambda job, out: cli("verify", str(out)).rc == 0,
    "report data": lambda job, out: reports.load(out).status == "succeeded",
    "resume": lambda job, out: job.run(progress=None).status == "succeeded",
}


@pytest.mark.parametrize("reader", RO_READERS)
def test_read_only_output(base, case, tmpfs, tmp_path, reader):
    guard = case(copy=False)
    guard.out = tmpfs(tmp_path / "ro") / "out"
    shutil.copytree(base["outputs"]["parquet"], guard.out)
    subprocess.run(["mount", "-o", "remount,ro", str(guard.out.parent)], check=True)
    guard.before = guard._take()
    got = outcome(lambda: RO_READERS[reader](job_for(base, guard.out), guard.out))
    guard.check(reader)
    if reader == "resume" and got.error is not None:  # nothing to run; refusing to write is clear too
        return
    assert got.error is None and got.value is True, f"{reader} on a read-only output: {got}"


def test_full_disk(base, case, tmpfs, tmp_path):
    guard = case(copy=False)
    guard.out = tmpfs(tmp_path / "tiny", "160k")  # the whole small disk is the output's
    out = guard.out / "out"
    big = tmp_path / "outside" / "big.parquet"
    source_frame(60_000).write_parquet(big)
    guard.before = guard._take()
    job = bn.BatchJob(str(big), str(out), chunk_size=10_000, engine="sequential", retries=0)
    got = outcome(lambda: job.run(progress=None))
    guard.check("run")
    text = str(got.error) if got.error else f"{got.value.reason} {[e.message for e in got.value.errors]}"
    assert got.error is not None or got.value.status == "failed", got
    assert "space" in text.lower(), text
    batch_errors = {"BatchError", "ConfigError", "SourceError", "DataError", "JobStateError", "EngineError"}
    assert got.error is not None or {e.type for e in got.value.errors} <= batch_errors, got.value.errors
    assert outcome(lambda: bn.status(out)).error is None
