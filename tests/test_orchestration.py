"""JobQueue (priority, shared budget, cancel), Pipeline (DAG, failure, resume, reuse, cycles) and schedules."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import nbformat
import numpy as np
import polars as pl
import pytest
from jupyter_kernel import venv_kernel

import batchnb as bn
from batchnb.pipeline import Pipeline
from batchnb.queue import JobQueue

sys.path.insert(0, str(Path(__file__).parent))

_running: dict[str, int] = {}
_peak = {"jobs": 0}
_guard = threading.Lock()


def tracked(df: pl.DataFrame) -> pl.DataFrame:
    """Counts how many distinct jobs have a chunk running at once (all jobs run in this process)."""
    name = threading.current_thread().name
    with _guard:
        _running[name] = _running.get(name, 0) + 1
        _peak["jobs"] = max(_peak["jobs"], len({n.split("_")[0] for n, c in _running.items() if c}))
    time.sleep(0.05)
    with _guard:
        _running[name] -= 1
    return df.with_columns(pl.col("x").abs().alias("anomaly_score"))


def slow(df: pl.DataFrame) -> pl.DataFrame:
    time.sleep(0.1)
    return df.with_columns(pl.col("x").abs().alias("anomaly_score"))


@pytest.fixture
def source(tmp_path: Path) -> str:
    path = tmp_path / "in.parquet"
    pl.DataFrame({"id": np.arange(5_000), "x": np.random.default_rng(1).normal(size=5_000)}).write_parquet(path)
    return str(path)


def _job(source, out, detector=slow, workers=1, **kw):
    return bn.BatchJob(source, out, detector=detector, chunk_size=1_000, engine="threads",
                       resources=bn.Resources(max_workers=workers), **kw)  # fmt: skip


def test_queue_starts_higher_priority_first_then_fifo(source, tmp_path):
    queue = JobQueue(max_workers=1)
    first = queue.submit(_job(source, tmp_path / "a", name="a"))  # takes the only worker at once
    handles = [queue.submit(_job(source, tmp_path / n, name=n), priority=p) for n, p in
               [("low", 0), ("high1", 5), ("mid", 1), ("high2", 5)]]  # fmt: skip
    results = queue.wait(timeout=120)
    assert queue.started == ["a", "high1", "high2", "mid", "low"]
    assert all(r.status == "succeeded" for r in results) and len(results) == 5
    assert first.wait().rows_out == 5_000 and handles[0].status().status == "succeeded"
    states = {row["name"]: row["state"] for row in queue.status()}
    assert set(states.values()) == {"finished"}


@pytest.mark.parametrize(("wanted", "expected_peak"), [(2, 1), (1, 2)])
def test_queue_shares_one_worker_budget(source, tmp_path, wanted, expected_peak):
    _peak["jobs"] = 0
    queue = JobQueue(max_workers=2)
    for n in ("j1", "j2", "j3"):
        queue.submit(_job(source, tmp_path / n, detector=tracked, workers=wanted, name=n))
    results = queue.wait(timeout=120)
    assert [r.status for r in results] == ["succeeded"] * 3
    assert _peak["jobs"] == expected_peak  # two-worker jobs run one at a time; one-worker jobs two at a time


def test_queue_cancels_a_job_before_it_starts(source, tmp_path):
    queue = JobQueue(max_workers=1)
    running = queue.submit(_job(source, tmp_path / "a", name="a"))
    waiting = queue.submit(_job(source, tmp_path / "b", name="b"))
    waiting.cancel()
    assert running.wait(timeout=60).status == "succeeded"
    assert waiting.status().status == "cancelled"
    with pytest.raises(bn.JobStateError, match="cancelled before it started"):
        waiting.wait(timeout=5)
    assert not (tmp_path / "b").exists()


class FailsWithoutFlag:
    def __init__(self, flag: Path) -> None:
        self.flag = str(flag)

    def __call__(self, df: pl.DataFrame) -> pl.DataFrame:
        if not Path(self.flag).exists() and int(df["id"][0]) == 2_000:
            raise ValueError("upstream data not ready")
        return df.with_columns((pl.col("anomaly_score") * 2).alias("anomaly_score"))


def _report_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    params = nbformat.v4.new_code_cell("output_dir = ''\nsummary_path = ''")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import batchnb as bn, pathlib\n"
        "p = bn.status(output_dir)\n"
        "assert p.status == 'succeeded', p\n"
        "pathlib.Path(summary_path).write_text(f'{p.rows_done} rows')"
    )]  # fmt: skip
    nbformat.write(nb, path)
    return path


def test_pipeline_failure_in_the_middle_then_fixed_resumes_without_redoing_the_first_job(source, tmp_path):
    flag, summary = tmp_path / "fixed", tmp_path / "summary.txt"
    pipe = Pipeline("nightly", state_dir=tmp_path / "state", max_workers=2)
    a = pipe.add(bn.BatchJob(source, tmp_path / "a", detector="zscore", chunk_size=1_000, name="a"))
    b = pipe.add(bn.BatchJob(tmp_path / "a", tmp_path / "b", detector=FailsWithoutFlag(flag), chunk_size=1_000,
                             name="b", retries=0), after=[a])  # fmt: skip
    pipe.notebook(_report_notebook(tmp_path / "report.ipynb"), {"output_dir": str(tmp_path / "b"),
                  "summary_path": str(summary)}, name="report", after=[b], kernel_name=venv_kernel())  # fmt: skip

    first = pipe.run()
    assert first.status == "failed"
    assert first.steps == {"a": "succeeded", "b": "failed", "report": "skipped"}
    assert "upstream data not ready" in first.errors["b"] and "b did not succeed" in first.errors["report"]
    parts_a = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").glob("part-*")}

    flag.touch()
    second = pipe.run()
    assert second.status == "succeeded", second
    assert second.steps == {"a": "succeeded", "b": "succeeded", "report": "succeeded"}
    assert second.reused == ("a",)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").glob("part-*")} == parts_a
    assert summary.read_text() == "5000 rows"
    out = bn.BatchJob(tmp_path / "a", tmp_path / "b", detector=FailsWithoutFlag(flag), chunk_size=1_000).read()
    assert out.collect()["id"].to_list() == list(range(5_000))  # a job's output is the next job's source

    third = pipe.run()
    assert third.reused == ("a", "b", "report") and third.status == "succeeded"


def test_pipeline_rejects_cycles_unknown_steps_and_duplicate_names(source, tmp_path):
    pipe = Pipeline("p", state_dir=tmp_path)
    pipe.add(_job(source, tmp_path / "a", name="a"), after=["c"])
    pipe.add(_job(source, tmp_path / "b", name="b"), after=["a"])
    with pytest.raises(bn.ConfigError, match=r"cycle: (c -> b -> a -> c|a -> c -> b -> a|b -> a -> c -> b)"):
        pipe.add(_job(source, tmp_path / "c", name="c"), after=["b"])
    with pytest.raises(bn.ConfigError, match="does not have"):
        pipe.run()  # "a" still runs after the missing "c"
    with pytest.raises(bn.ConfigError, match="step names are unique"):
        pipe.add(_job(source, tmp_path / "a2", name="a"))


def test_pipeline_loads_from_toml(source, tmp_path):
    (tmp_path / "pipe.toml").write_text(f"""
name = "from-file"
max_workers = 2
[[steps]]
name = "score"
job = {{ source = "{source}", output = "out/score", detector = "mad", chunk_size = 1000 }}
[[steps]]
name = "rescore"
after = ["score"]
job = {{ source = "out/score", output = "out/rescore", detector = "zscore", columns = ["x"], chunk_size = 1000 }}
""")
    pipe = Pipeline.from_file(tmp_path / "pipe.toml")
    result = pipe.run()
    assert result.status == "succeeded" and list(result.steps) == ["score", "rescore"]
    assert (tmp_path / "out" / "rescore" / "part-000004.parquet").exists()


def test_schedule_fires_every_second_and_never_overlaps(source, tmp_path):
    pipe = Pipeline("tick", state_dir=tmp_path / "state")
    pipe.add(bn.BatchJob(source, tmp_path / "tick", detector="zscore", chunk_size=1_000, name="tick"))
    schedule = pipe.schedule(cron="* * * * * *")  # six fields: seconds first
    try:
        results = schedule.wait_for_runs(2, timeout=15)
    finally:
        schedule.stop()
    assert len(results) >= 2 and all(r.status == "succeeded" for r in results)
    assert results[1].reused == ("tick",)  # the second run found the job up to date


def test_a_slow_pipeline_on_a_fast_schedule_skips_overlapping_runs(source, tmp_path):
    pipe = Pipeline("slow", state_dir=tmp_path / "state")
    pipe.add(_job(source, tmp_path / "slow", name="slow", detector=lambda df: (time.sleep(0.5), slow(df))[1]))
    schedule = pipe.schedule(cron="* * * * * *")
    try:
        schedule.wait_for_runs(1, timeout=60)
        deadline = time.monotonic() + 60  # a tick fires every second; the run takes longer than one
        while schedule.skipped_overlaps < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        schedule.stop()
    assert schedule.skipped_overlaps >= 1
    assert len(schedule.results) >= 1


def test_bad_cron_is_a_config_error(tmp_path):
    with pytest.raises(bn.ConfigError, match="5 fields"):
        Pipeline("p", state_dir=tmp_path).schedule(cron="every day")


def test_cli_runs_a_pipeline_file_and_a_schedule_with_a_bad_cron_is_a_usage_error(source, tmp_path):
    import subprocess

    pipe = tmp_path / "pipe.toml"
    pipe.write_text(f"""
name = "cli"
[[steps]]
name = "score"
job = {{ source = "{source}", output = "out/score", detector = "mad", chunk_size = 1000 }}
[schedule]
cron = "not a cron"
""")
    run = subprocess.run([sys.executable, "-m", "batchnb", "run", str(pipe)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "pipeline succeeded" in run.stdout and "score" in run.stdout
    sched = subprocess.run([sys.executable, "-m", "batchnb", "schedule", str(pipe)], capture_output=True, text=True)
    assert sched.returncode == 2 and "cron 'not a cron' needs 5 fields" in sched.stderr
    assert "Traceback" not in sched.stderr
