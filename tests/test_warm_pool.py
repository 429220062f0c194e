"""The processes engine keeps its worker pool warm between the jobs of one process.

What a user relies on: a second job in a kernel starts on the workers the first one left (no spawn, no
imports), and gets the output of its own input, also when the file was rewritten in between; a pool that
no job takes is closed after `KEEP_WARM_S`, at `ProcessesEngine.shutdown()`, and when the interpreter exits.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import psutil
import pyarrow.parquet as pq
import pytest
from conftest import make_frame, run_job

import batchnb as bn
import batchnb.engines.processes as processes
from batchnb.engines.processes import ProcessesEngine

OPTS = {"detector": "mad", "keep": ["id"], "chunk_size": 1_000, "engine": "processes"}


def _workers(output: Path) -> set[int]:
    with sqlite3.connect(output / "_batchnb" / "state.sqlite") as conn:
        return {int(row[0].rsplit(":", 1)[1]) for row in conn.execute("SELECT worker FROM chunks")}


def _write(frame: pl.DataFrame, path: Path) -> str:
    pq.write_table(frame.to_arrow(), path, row_group_size=3_000)
    return str(path)


def _gone(pids: set[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_second_job_runs_on_the_first_jobs_workers_and_reads_its_own_input(tmp_path) -> None:
    source = tmp_path / "in.parquet"
    first_frame, second_frame = make_frame(6_000, seed=1), make_frame(6_000, seed=2)
    first = run_job(_write(first_frame, source), tmp_path / "a", **OPTS)
    pids = _workers(tmp_path / "a")
    assert first.status == "succeeded" and len(pids) == 2
    assert all(psutil.pid_exists(p) for p in pids)  # kept for the next job

    second = run_job(_write(second_frame, source), tmp_path / "b", **OPTS)  # the same path, rewritten
    assert second.status == "succeeded", second.errors
    assert _workers(tmp_path / "b") == pids
    expected = run_job(str(source), tmp_path / "c", **{**OPTS, "engine": "sequential"})
    assert second.read().collect().equals(expected.read().collect())
    assert not second.read().collect().equals(first.read().collect())


def test_a_job_with_another_worker_count_gets_a_new_pool(tmp_path, frame) -> None:
    source = _write(frame, tmp_path / "in.parquet")
    run_job(source, tmp_path / "a", **OPTS)
    pids = _workers(tmp_path / "a")
    one = run_job(source, tmp_path / "b", resources=bn.Resources(max_workers=1), **OPTS)
    assert one.status == "succeeded" and len(_workers(tmp_path / "b")) == 1
    assert not _workers(tmp_path / "b") & pids and _gone(pids)


def test_an_idle_pool_is_closed_after_keep_warm_s(tmp_path, frame, monkeypatch) -> None:
    monkeypatch.setattr(processes, "KEEP_WARM_S", 0.5)
    run_job(_write(frame, tmp_path / "in.parquet"), tmp_path / "a", **OPTS)
    pids = _workers(tmp_path / "a")
    assert _gone(pids)


def test_shutdown_stops_the_warm_workers(tmp_path, frame) -> None:
    run_job(_write(frame, tmp_path / "in.parquet"), tmp_path / "a", **OPTS)
    pids = _workers(tmp_path / "a")
    assert all(psutil.pid_exists(p) for p in pids)
    ProcessesEngine.shutdown()
    assert _gone(pids)


@pytest.mark.slow
def test_a_script_that_ends_leaves_no_worker_behind(tmp_path, frame) -> None:
    source = _write(frame, tmp_path / "in.parquet")
    script = tmp_path / "job.py"
    script.write_text(
        "import batchnb as bn, os\n"
        "if __name__ == '__main__':\n"
        f"    r = bn.BatchJob({source!r}, {str(tmp_path / 'out')!r}, detector='mad', chunk_size=1_000,\n"
        "                    engine='processes').run(progress=None)\n"
        "    print(r.status)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "succeeded", done.stderr[-2000:]
    assert _gone(_workers(tmp_path / "out"), timeout=5.0)
