"""Outputs on an object store: workers put their parts into a bucket, the driver keeps the record on its disk.

Against a local S3 server (moto on 127.0.0.1). What a user relies on: the parts in the bucket equal a local run's
output, nothing is written to a local folder named `s3:`, a rerun redoes nothing (and exactly a lost part),
verify hashes the objects, status works from another process, a report can be made, the manifest beside the
parts lists them with rows and checksums, and a killed worker or driver loses nothing and duplicates nothing.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from conftest import run_job

import batchnb as bn
from batchnb import place
from batchnb.record.store import JobState, state_path

BUCKET = "batchnb-out"
CHUNK = 1_000


@pytest.fixture(scope="module")
def s3(s3_server):
    s3_server.mkdir(BUCKET)
    return s3_server


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch) -> Path:
    """Records of object-store outputs go to a directory of the test, and the working directory is empty."""
    monkeypatch.setenv(place.STATE_DIR_ENV, str(tmp_path / "state"))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path / "state"


@pytest.fixture(scope="module")
def local_run(sources, tmp_path_factory) -> pl.DataFrame:
    out = tmp_path_factory.mktemp("local") / "out"
    result = run_job(sources["parquet"], out, chunk_size=CHUNK, engine="sequential")
    assert result.status == "succeeded"
    return result.read().collect()


def objects(s3, prefix: str) -> dict[str, dict]:
    """The objects under the prefix by name (none yet: empty)."""
    try:
        return {Path(e["name"]).name: e for e in s3.ls(f"{BUCKET}/{prefix}", detail=True, refresh=True)}
    except FileNotFoundError:
        return {}


@pytest.mark.parametrize("engine", ["threads", "processes"])
def test_parts_go_to_the_bucket_and_equal_a_local_run(s3, sources, local_run, state_dir, engine) -> None:
    url = f"s3://{BUCKET}/{engine}"
    result = run_job(sources["parquet"], url, chunk_size=CHUNK, engine=engine)
    assert result.status == "succeeded", result.errors
    assert result.read().collect().equals(local_run)
    parts = sorted(n for n in objects(s3, engine) if n.startswith("part-"))
    assert parts == [f"part-{i:06d}.parquet" for i in range(6)]
    assert os.listdir(".") == []  # nothing local but the record, under the state directory
    assert Path(place.home(url)).parent == state_dir and Path(place.home(url), "_batchnb", "state.sqlite").is_file()
    manifest = json.loads(s3.cat_file(f"{BUCKET}/{engine}/_batchnb/manifest.json"))
    with JobState.open(url) as state:
        recorded = {c.part: (c.rows_out, c.checksum) for c in state.chunks()}
    assert manifest["status"] == "succeeded" and manifest["rows_out"] == local_run.height
    assert {p["name"]: (p["rows"], p["checksum"]) for p in manifest["parts"]} == recorded
    assert bn.BatchJob(sources["parquet"], url, chunk_size=CHUNK).verify().ok


def test_a_rerun_redoes_nothing_and_exactly_a_lost_part(s3, sources, local_run) -> None:
    url = f"s3://{BUCKET}/resume"
    assert run_job(sources["parquet"], url, chunk_size=CHUNK).status == "succeeded"
    before = {n: e["LastModified"] for n, e in objects(s3, "resume").items() if n.startswith("part-")}
    time.sleep(1.1)  # S3 times have a resolution of a second
    again = run_job(sources["parquet"], url, chunk_size=CHUNK)
    assert again.status == "succeeded" and again.read().collect().equals(local_run)
    assert {n: e["LastModified"] for n, e in objects(s3, "resume").items() if n.startswith("part-")} == before

    s3.rm_file(f"{BUCKET}/resume/part-000003.parquet")
    problems = bn.BatchJob(sources["parquet"], url, chunk_size=CHUNK).verify().problems
    assert len(problems) == 1 and "part-000003" in problems[0] and "missing" in problems[0]
    third = run_job(sources["parquet"], url, chunk_size=CHUNK)
    assert third.status == "succeeded" and third.read().collect().equals(local_run)
    after = {n: e["LastModified"] for n, e in objects(s3, "resume").items() if n.startswith("part-")}
    assert [n for n in after if after[n] != before.get(n)] == ["part-000003.parquet"]


def test_verify_hashes_the_objects(s3, sources) -> None:
    url = f"s3://{BUCKET}/verify"
    assert run_job(sources["parquet"], url, chunk_size=CHUNK).status == "succeeded"
    s3.pipe_file(f"{BUCKET}/verify/part-000001.parquet", b"not the part it was")
    problems = bn.BatchJob(sources["parquet"], url, chunk_size=CHUNK).verify().problems
    assert len(problems) == 1 and "part-000001" in problems[0] and "checksum" in problems[0]


def test_status_from_another_process_and_a_report(s3, sources, state_dir) -> None:
    from jupyter_kernel import venv_kernel

    url = f"s3://{BUCKET}/status"
    job = bn.BatchJob(sources["parquet"], url, chunk_size=CHUNK, engine="threads")
    assert job.run(progress=None).status == "succeeded"
    code = f"import batchnb as bn; p = bn.status({url!r}); print(p.status, p.chunks_done)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["succeeded", "6"]
    report = job.report(kernel_name=venv_kernel())
    assert report.parent == Path(place.home(url)) and report.with_suffix(".html").stat().st_size > 10_000


def test_an_output_url_that_holds_someone_elses_objects_is_refused(s3, sources) -> None:
    s3.pipe_file(f"{BUCKET}/theirs/data.csv", b"a,b\n1,2\n")
    with pytest.raises(bn.JobStateError, match=r"not empty and holds no batchnb job.*data\.csv"):
        run_job(sources["parquet"], f"s3://{BUCKET}/theirs", chunk_size=CHUNK)
    assert objects(s3, "theirs").keys() == {"data.csv"}


def test_an_output_in_a_missing_bucket_is_a_clear_error(s3, sources) -> None:
    with pytest.raises(bn.JobStateError, match=r"bucket 'no-such-bucket' of the output .* does not exist"):
        run_job(sources["parquet"], "s3://no-such-bucket/out", chunk_size=CHUNK)


def test_object_store_outputs_are_parquet(sources) -> None:
    with pytest.raises(bn.ConfigError, match="Parquet only"):
        bn.BatchJob(sources["parquet"], f"s3://{BUCKET}/csv", output_format="csv")
    for url in ("file:///tmp/x", "memory://x"):
        with pytest.raises(bn.ConfigError, match="give a path"):
            bn.BatchJob(sources["parquet"], url)


KILLED_WORKER = """
import os, signal
from pathlib import Path

import batchnb.sinks
from batchnb import storage


def die_uploading(local, output, name):
    # the upload of the part starts (an open object, the first bytes written), then the worker dies
    fs, path = storage.filesystem(f"{{output}}/{{name}}")
    f = fs.open(path, "wb")
    f.write(Path(local).read_bytes()[:1000])
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def score_or_die(frame):
    marker = Path({marker!r})
    if frame["id"][0] == 2_000 and not marker.exists():
        marker.write_text("killed")
        if {while_uploading!r}:
            batchnb.sinks.publish_part = die_uploading  # in this worker process only
        else:
            os.kill(os.getpid(), signal.SIGKILL)
    return frame.select("id", "x1")
"""


@pytest.mark.parametrize("while_uploading", [False, True], ids=["mid-chunk", "mid-upload"])
def test_a_killed_worker_loses_and_duplicates_nothing(s3, sources, tmp_path, while_uploading) -> None:
    module = tmp_path / f"killer_{while_uploading}.py"
    module.write_text(KILLED_WORKER.format(marker=str(tmp_path / "killed"), while_uploading=while_uploading))
    sys.path.insert(0, str(tmp_path))
    try:
        killer = __import__(module.stem)
        url = f"s3://{BUCKET}/killed-worker-{while_uploading}"
        result = run_job(sources["parquet"], url, detector=killer.score_or_die, chunk_size=CHUNK,
                         engine="processes", retries=2)  # fmt: skip
    finally:
        sys.path.remove(str(tmp_path))
    assert (tmp_path / "killed").exists() and result.status == "succeeded", result.errors
    assert result.retries == 1
    out = result.read().collect()
    assert out.get_column("id").to_list() == list(range(6_000))  # every row once, in order
    assert sorted(n for n in objects(s3, f"killed-worker-{while_uploading}") if n.startswith("part-")) == [
        f"part-{i:06d}.parquet" for i in range(6)
    ]


DRIVER = """
import sys, time
import batchnb as bn

def slow(frame):
    time.sleep(1.0)
    return frame.select("id", "x1")

if __name__ == "__main__":
    job = bn.BatchJob(sys.argv[1], sys.argv[2], detector=slow, chunk_size=1_000, engine="processes",
                      resources=bn.Resources(max_workers=2))
    print(job.run(progress=None).status, flush=True)
"""


def _recorded(url: str) -> int:
    """Chunks the job's record counts done (0 before the record exists)."""
    try:
        return bn.status(url).chunks_done
    except bn.BatchError:
        return 0


@pytest.mark.slow
def test_a_killed_driver_resumes_with_nothing_redone(s3, sources, tmp_path, state_dir) -> None:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    url = f"s3://{BUCKET}/killed-driver"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    first = subprocess.Popen([sys.executable, str(script), sources["parquet"], url], env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _recorded(url) < 2:  # parts in the bucket are recorded within 50 ms
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the driver and its workers, some of them in the middle of a chunk
    first.wait(timeout=30)
    with JobState.open(url) as state:
        done_before = {c.index: c.checksum for c in state.chunks() if c.status == "done"}
    assert 2 <= len(done_before) < 6
    assert bn.status(url).status == "interrupted"  # its driver is gone

    second = subprocess.run([sys.executable, str(script), sources["parquet"], url], env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert second.stdout.strip() == "succeeded", second.stderr[-3000:]
    with JobState.open(url) as state:
        chunks = state.chunks()
    assert all(c.status == "done" and c.attempts == 1 for c in chunks)
    assert {c.index: c.checksum for c in chunks if c.index in done_before} == done_before  # nothing redone
    out = bn.BatchJob(sources["parquet"], url, chunk_size=1_000).read().collect()
    assert out.get_column("id").to_list() == list(range(6_000))


@pytest.mark.slow
def test_a_dask_cluster_writes_the_same_parts(s3, sources, local_run, tmp_path) -> None:
    from clusters import dask_cluster

    from batchnb.engines import DaskEngine

    url = f"s3://{BUCKET}/dask"
    with dask_cluster(tmp_path, n_workers=2) as cluster:
        result = run_job(sources["parquet"], url, chunk_size=CHUNK, engine=DaskEngine(cluster.address))
        worker_pids = {w.pid for w in cluster.workers}
    assert result.status == "succeeded", result.errors
    assert result.read().collect().equals(local_run)
    with sqlite3.connect(state_path(url)) as conn:
        writers = {w for (w,) in conn.execute("SELECT worker FROM chunks")}
    assert writers and {int(w.rsplit(":", 1)[1]) for w in writers} <= worker_pids  # put by the workers
    assert bn.BatchJob(sources["parquet"], url, chunk_size=CHUNK).verify().ok
