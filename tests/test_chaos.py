"""Chaos test: SIGKILL the driver at random moments, resume, and get the uninterrupted output row for row.

Each trial starts tests/chaos_driver.py (a whole job in a subprocess that leads its own process group) and
kills the group with SIGKILL: at a random time between its start and its expected end (very early ones
land in interpreter start-up and planning), just after its state file appears (planning), or at a named
point of the commit protocol that a random time almost never hits (see chaos_driver.py: after the identity
commit, inside the plan transaction, part written but not renamed, renamed but not recorded, inside the
commit transaction, just after it). Some trials kill the resumed run a second time. Then the driver runs
again to completion, and the trial completes when:

- the final run exits 0 and the job is `succeeded` with every chunk done and every input row out;
- `result().read()` equals the uninterrupted reference output row by row (ids and values), and so do the
  part files found in the directory (no stray or duplicated part);
- `verify()` is ok, the output dir holds only `part-NNNNNN.parquet` files and `_batchnb/`;
- every chunk that the state recorded done at a kill had its part in place (checksum and size), and that
  part was not rewritten by the resume (same inode, mtime and size): finished chunks are not redone.

The goal, and the assertion, is a 100 % completion rate.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import batchnb as bn
from batchnb.checksum import file_checksum
from batchnb.errors import JobStateError
from batchnb.record.status import ChunkStatus
from batchnb.record.store import JobState, state_path

pytestmark = pytest.mark.slow

ROWS = 60_000
CHUNK = 1_000
SEED = 20_251_128
DRIVER = Path(__file__).with_name("chaos_driver.py")
REPO = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 120.0
PART = re.compile(r"part-\d{6}\.parquet")

# Named kill points (chaos_driver.py); the planning ones only fire in a run that plans.
PLANNING_TRAPS = ("identity", "plan")
CHUNK_TRAPS = ("running", "rename-before", "rename-after", "commit", "committed")


# --------------------------------------------------------------------------------------------------
# Data and reference
# --------------------------------------------------------------------------------------------------
def _make_sources(folder: Path) -> dict[str, str]:
    rng = np.random.default_rng(SEED)
    f1 = rng.normal(50.0, 10.0, ROWS)
    f1[rng.choice(ROWS, 60, replace=False)] += 120.0  # a few real anomalies
    frame = pl.DataFrame(
        {
            "id": np.arange(ROWS, dtype=np.int64),
            "f1": f1,
            "f2": rng.lognormal(0.0, 0.7, ROWS),
            "f3": rng.standard_t(3, ROWS),
            "f4": rng.uniform(-1.0, 1.0, ROWS),
        }
    )
    parquet, csv = folder / "input.parquet", folder / "input.csv"
    frame.write_parquet(parquet, row_group_size=7_000)  # row groups that straddle chunks
    frame.write_csv(csv)
    return {"parquet": str(parquet), "csv": str(csv)}


def _reference(source: str, output: Path) -> tuple[pl.DataFrame, int]:
    result = bn.BatchJob(source, output, detector="zscore", chunk_size=CHUNK, engine="sequential").run(progress=None)
    assert result.status == "succeeded" and result.rows_out == ROWS
    frame = result.read().collect()
    assert frame["id"].to_list() == list(range(ROWS))
    return frame, result.chunks_total


# --------------------------------------------------------------------------------------------------
# Driving and killing the driver
# --------------------------------------------------------------------------------------------------
@dataclass
class Kill:
    """How to kill one driver run: after `seconds`, once the state file exists (+ `seconds`), or at a trap."""

    mode: str  # "time" | "planning" | "trap"
    seconds: float = 0.0
    trap: str = ""

    def __str__(self) -> str:
        if self.mode == "trap":
            return f"trap {self.trap}"
        return f"{self.mode} +{self.seconds:.3f}s"


@dataclass
class Run:
    rc: int | None
    killed: bool
    seconds: float
    log: str


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: the group id is the driver's pid
    except ProcessLookupError:
        pass


def _run_driver(source: str, output: Path, engine: str, log: Path, kill: Kill | None = None) -> Run:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("CHAOS_TRAP", None)
    if kill is not None and kill.mode == "trap":
        env["CHAOS_TRAP"] = kill.trap
    start = time.monotonic()
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, str(DRIVER), source, str(output), engine],
            stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        if kill is not None and kill.mode in ("time", "planning"):
            if kill.mode == "planning":
                state = state_path(output)
                while proc.poll() is None and not state.exists() and time.monotonic() - start < RUN_TIMEOUT_S:
                    time.sleep(0.001)
            deadline = time.monotonic() + kill.seconds
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(min(0.002, max(0.0, deadline - time.monotonic())))
            if proc.poll() is None:
                _kill_group(proc)
        try:
            proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()
            return Run(None, False, time.monotonic() - start, f"driver hung > {RUN_TIMEOUT_S}s\n{log.read_text()}")
    finally:
        if proc.poll() is None:  # an exception in this process: leave nothing running
            _kill_group(proc)
            proc.wait()
    return Run(proc.returncode, proc.returncode == -signal.SIGKILL, time.monotonic() - start, log.read_text())


# --------------------------------------------------------------------------------------------------
# What a killed run left, and what the resume must keep
# --------------------------------------------------------------------------------------------------
def _done_parts(output: Path) -> tuple[dict[str, tuple[int, int, int]], set[int], list[str]]:
    """Parts of the chunks the state records done: {name: (inode, mtime_ns, size)}, undone chunk ids, problems."""
    if not state_path(output).exists():
        return {}, set(), []
    try:
        with JobState.open(output) as state:
            chunks = state.chunks()
    except JobStateError as exc:  # killed before the tables were created
        if "no such table" not in str(exc):
            raise
        return {}, set(), []
    parts, undone, problems = {}, set(), []
    for chunk in chunks:
        if chunk.status != ChunkStatus.DONE:
            undone.add(chunk.index)
            continue
        path = output / (chunk.part or "")
        if not chunk.part or not path.is_file():
            problems.append(f"chunk {chunk.index} is recorded done but its part {chunk.part!r} is missing")
            continue
        st = path.stat()
        if st.st_size != chunk.nbytes or file_checksum(path)[0] != chunk.checksum:
            problems.append(f"chunk {chunk.index} is recorded done but {chunk.part} does not match its checksum")
            continue
        parts[chunk.part] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return parts, undone, problems


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _describe_difference(got: pl.DataFrame, expected: pl.DataFrame) -> str:
    if got.columns != expected.columns or got.dtypes != expected.dtypes:
        return f"schema {got.schema} != {expected.schema}"
    ids = got["id"]
    lost = sorted(set(range(ROWS)) - set(ids.to_list()))
    duplicated = ids.filter(ids.is_duplicated()).unique().sort().to_list()
    text = f"{got.height} rows (expected {expected.height}); lost ids {lost[:10]}{'...' if len(lost) > 10 else ''}"
    text += f" ({len(lost)}); duplicated ids {duplicated[:10]} ({len(duplicated)})"
    if not lost and not duplicated and got.height == expected.height:
        if ids.to_list() != list(range(ROWS)):
            text += "; rows out of input order"
        else:
            bad = [c for c in got.columns if not got[c].equals(expected[c])]
            text += f"; values differ in columns {bad}"
    return text


def _check_final(
    source: str, output: Path, reference: pl.DataFrame, n_chunks: int, kept: dict[str, tuple[int, int, int]]
) -> list[str]:
    problems: list[str] = []
    job = bn.BatchJob(source, output, detector="zscore", chunk_size=CHUNK, engine="sequential")
    result = job.result()
    if result.status != "succeeded" or result.chunks_done != n_chunks or result.rows_out != ROWS:
        problems.append(
            f"result {result.status}: {result.chunks_done}/{n_chunks} chunks done, {result.rows_out} rows out"
        )
    got = result.read().collect()
    if not got.equals(reference):
        problems.append(f"result().read() differs from the reference: {_describe_difference(got, reference)}")
    on_disk = sorted(p for p in output.glob("part-*") if PART.fullmatch(p.name))
    try:
        from_files = pl.scan_parquet([str(p) for p in on_disk]).collect() if on_disk else pl.DataFrame()
    except Exception as exc:  # noqa: BLE001 - a torn part is a finding, not a crash of the checker
        problems.append(f"the part files in the directory cannot be read: {type(exc).__name__}: {exc}")
    else:
        if not from_files.equals(reference):
            diff = _describe_difference(from_files, reference)
            problems.append(f"the part files in the directory differ from the reference: {diff}")
    report = job.verify()
    if not report.ok:
        problems.append(f"verify: {report}")
    stray = sorted(e.name for e in output.iterdir() if not (e.name == "_batchnb" and e.is_dir()) and not (
        PART.fullmatch(e.name) and e.is_file()))  # fmt: skip
    if stray:
        problems.append(f"unexpected entries in the output dir: {stray}")
    redone = sorted(name for name, before in kept.items() if _stat(output / name) != before)
    if redone:
        problems.append(f"finished chunks redone by the resume (part rewritten or gone): {redone}")
    return problems


# --------------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------------
@dataclass
class Trial:
    number: int
    fmt: str
    engine: str
    first: Kill
    second: Kill | None
    kills: int = 0
    aimed: int = 0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _plan_trials(rng: random.Random, durations: dict[tuple[str, str], float], n_chunks: dict[str, int]) -> list[Trial]:
    combos = [("parquet", "threads")] * 12 + [("parquet", "processes")] * 12
    combos += [("csv", "threads")] * 3 + [("csv", "processes")] * 3
    rng.shuffle(combos)
    modes = ["time"] * 10 + ["planning"] * 4 + [f"trap:{t}" for t in (*PLANNING_TRAPS, *CHUNK_TRAPS)]
    modes += [f"trap:{t}" for t in ("rename-before", "rename-after", "commit", "committed")] * 2
    modes += ["trap:commit"]
    rng.shuffle(modes)
    assert len(modes) == len(combos)
    trials = []
    for number, ((fmt, engine), mode) in enumerate(zip(combos, modes, strict=True)):
        duration = durations[fmt, engine]
        if mode == "time":
            first = Kill("time", seconds=rng.uniform(0.0, duration))  # across start-up, planning and chunks
        elif mode == "planning":
            first = Kill("planning", seconds=rng.uniform(0.0, 0.05))
        else:
            point = mode.removeprefix("trap:")
            first = Kill("trap", trap=point if point in PLANNING_TRAPS else f"{point}:{rng.randrange(n_chunks[fmt])}")
        second = None
        if number % 3 == 1:  # a third of the trials kill the resumed run too
            second = Kill("time", seconds=rng.uniform(0.2, duration)) if rng.random() < 0.5 else Kill("trap")
        trials.append(Trial(number, fmt, engine, first, second))
    return trials


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_output(tmp_path, capsys):
    t0 = time.monotonic()
    sources = _make_sources(tmp_path)
    references = {fmt: _reference(src, tmp_path / f"reference-{fmt}") for fmt, src in sources.items()}
    n_chunks = {fmt: n for fmt, (_, n) in references.items()}
    assert n_chunks["parquet"] == ROWS // CHUNK

    # Uninterrupted driver runs: how long a run takes (kill times are drawn across it), and the same output.
    durations: dict[tuple[str, str], float] = {}
    for fmt, engine in [("parquet", "threads"), ("parquet", "processes"), ("csv", "threads"), ("csv", "processes")]:
        output = tmp_path / f"calibrate-{fmt}-{engine}"
        run = _run_driver(sources[fmt], output, engine, tmp_path / f"calibrate-{fmt}-{engine}.log")
        assert run.rc == 0, run.log
        assert _check_final(sources[fmt], output, references[fmt][0], n_chunks[fmt], {}) == []
        durations[fmt, engine] = run.seconds

    rng = random.Random(SEED)
    trials = _plan_trials(rng, durations, n_chunks)
    for trial in trials:
        source, (reference, chunks_total) = sources[trial.fmt], references[trial.fmt]
        output = tmp_path / f"trial-{trial.number:02d}"
        kept: dict[str, tuple[int, int, int]] = {}
        undone: set[int] = set()
        kills = [trial.first, trial.second] if trial.second is not None else [trial.first]
        for attempt, kill in enumerate(kills):
            if kill.mode == "trap" and not kill.trap:  # a second kill at a named point of a chunk still to do
                pending = sorted(undone) or list(range(chunks_total))
                kill.trap = f"{rng.choice(CHUNK_TRAPS)}:{rng.choice(pending)}"
            run = _run_driver(source, output, trial.engine, tmp_path / f"trial-{trial.number:02d}-{attempt}.log", kill)
            parts, undone, problems = _done_parts(output)
            if run.killed:
                trial.kills += 1
                trial.aimed += kill.mode == "trap"
                done = f"{len(parts)}/{chunks_total} chunks done" if state_path(output).exists() else "no state yet"
                trial.notes.append(f"killed ({kill}) after {run.seconds:.2f}s, {done}")
            elif run.rc == 0:
                trial.notes.append(f"ran to the end, the kill ({kill}) did not land")
            else:
                trial.problems.append(f"run {attempt} ({kill}) exited {run.rc}:\n{run.log[-3000:]}")
            trial.problems.extend(problems)
            for name, stat in parts.items():  # a part kept by an earlier resume must still be the same file
                if kept.setdefault(name, stat) != stat:
                    trial.problems.append(f"{name} of a finished chunk was rewritten by resume {attempt}")
        final = _run_driver(source, output, trial.engine, tmp_path / f"trial-{trial.number:02d}-final.log")
        if final.rc != 0:
            trial.problems.append(f"the resume exited {final.rc}:\n{final.log[-3000:]}")
        else:
            trial.problems.extend(_check_final(source, output, reference, chunks_total, kept))

    elapsed = time.monotonic() - t0
    completed = [t for t in trials if not t.problems]
    kills = sum(t.kills for t in trials)
    aimed = sum(t.aimed for t in trials)
    stale_tmp = sum(1 for t in trials for _ in (tmp_path / f"trial-{t.number:02d}" / "_batchnb" / "tmp").glob("*"))
    summary = (
        f"chaos: {len(trials)} trials, {kills} SIGKILLs ({aimed} aimed at commit-protocol points), "
        f"completion {len(completed)}/{len(trials)} = {100.0 * len(completed) / len(trials):.0f} %, "
        f"{elapsed:.1f} s; stale temp files left in _batchnb/tmp: {stale_tmp}"
    )
    with capsys.disabled():
        print(f"\n{summary}")
        for trial in trials:
            status = "ok" if not trial.problems else "FAILED"
            print(f"  trial {trial.number:2d} {trial.fmt:7s} {trial.engine:9s} {status:6s} {'; '.join(trial.notes)}")
    failures = [
        f"trial {t.number} ({t.fmt}, {t.engine}, {'; '.join(t.notes)}):\n  " + "\n  ".join(t.problems)
        for t in trials
        if t.problems
    ]
    assert not failures, summary + "\n" + "\n".join(failures)
    assert kills >= 20, f"only {kills} of the runs were actually killed: {summary}"
    assert stale_tmp == 0, f"a resumed run left half-written temp files behind: {summary}"
