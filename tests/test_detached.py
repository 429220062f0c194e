"""A job that outlives its kernel: `start(detach=True)`, `bn.attach`, `bn.jobs`, cancel from any process.

The driver of a detached job is its own process in its own session; these tests start it from a short-lived
Python process (as a kernel that is then restarted) and follow it from the test process, as another kernel would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from conftest import write_source

import batchnb as bn
from batchnb.driver.lock import lock_holder
from batchnb.views.live import LiveView

CHUNK = 1_000

SLOW_MODULE = """
import time
from pathlib import Path

def slow(df):
    time.sleep(0.25)
    return df.select("id", "x1")

def slower(df):
    time.sleep(0.5)
    return df.select("id", "x1")

def fails_once(df):
    flag = Path(__file__).with_name("second-time")
    if df["id"][0] == 3_000 and not flag.exists():
        raise ValueError("chunk 3 fails until the flag is there")
    return df.select("id", "x1")
"""

# A kernel that starts the job detached and exits at once; its detector lives in __main__ (travels by value).
STARTER = """
import sys, time
import batchnb as bn

def slow(df):
    time.sleep(0.5)
    return df.select("id", "x1")

job = bn.BatchJob(sys.argv[1], sys.argv[2], detector=slow, chunk_size=1_000, engine="sequential")
job.start(progress=None, detach=True)
print("started", flush=True)
"""


@pytest.fixture
def source(frame, tmp_path) -> str:
    return write_source(frame, "parquet", tmp_path / "data.parquet")


@pytest.fixture
def slowmod(tmp_path, monkeypatch):
    (tmp_path / "slowmod.py").write_text(SLOW_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    import importlib

    import slowmod as module

    return importlib.reload(module)


def expected(source: str, tmp_path: Path, detector) -> pl.DataFrame:
    return (
        bn.BatchJob(source, tmp_path / "reference", detector=detector, chunk_size=CHUNK)
        .run(progress=None)
        .read()
        .collect()
    )


def start_in_another_process(tmp_path: Path, source: str, out: Path) -> None:
    script = tmp_path / "kernel.py"
    script.write_text(STARTER)
    done = subprocess.run([sys.executable, str(script), source, str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "started" in done.stdout, done.stderr[-3000:]


def test_a_detached_job_outlives_the_process_that_started_it(source, tmp_path, slowmod) -> None:
    out = tmp_path / "out"
    start_in_another_process(tmp_path, source, out)  # that process has exited: its "kernel" is gone
    holder = lock_holder(out)
    assert holder is not None and holder != os.getpid()
    attached = bn.attach(out, progress=None)
    seen = attached.status().chunks_done
    result = attached.wait(timeout=120)
    assert result.status == "succeeded" and seen < 6
    assert result.read().collect().equals(expected(source, tmp_path, slowmod.slow))
    log = (out / "_batchnb" / "driver.log").read_text()
    assert f"driver {holder} starts" in log and "status     succeeded" in log


def test_cancel_from_an_attached_view_then_resume_detached(source, tmp_path, slowmod) -> None:
    out = tmp_path / "out"
    job = bn.BatchJob(source, out, detector=slowmod.slower, chunk_size=CHUNK, engine="sequential")
    job.start(progress=None, detach=True)
    view = LiveView(name="attached", output=str(out), display=False)
    attached = bn.attach(out, progress=view)
    while attached.status().chunks_done < 1:
        time.sleep(0.05)
    asked = time.monotonic()
    view.cancel()  # the view's Cancel button
    result = attached.wait(timeout=30)
    assert time.monotonic() - asked < 3.0  # honoured within a second, plus the running chunks and one view poll
    assert result.status == "cancelled" and 1 <= result.chunks_done < 6
    assert "cancelled" in view.header.value
    job.start(progress=None, detach=True)  # resume, detached again
    assert job.wait(timeout=120).status == "succeeded"
    assert job.read().collect().equals(expected(source, tmp_path, slowmod.slow))


def test_retry_failed_from_an_attached_view_runs_a_detached_rerun(source, tmp_path, slowmod) -> None:
    out = tmp_path / "out"
    job = bn.BatchJob(source, out, detector="slowmod:fails_once", chunk_size=CHUNK, retries=0)
    first = job.run(progress=None)
    assert first.status == "failed" and [e.chunk for e in first.errors] == [3]
    (tmp_path / "second-time").write_text("")
    view = LiveView(name="attached", output=str(out), display=False)
    attached = bn.attach(out, progress=view)
    assert attached.wait(timeout=10).status == "failed"  # an ended job: its summary at once
    assert not view.retry_button.disabled
    view.retry()  # the view's Retry failed button: a detached driver reruns chunk 3
    deadline = time.monotonic() + 60
    while bn.status(out).status != "succeeded" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert attached.wait(timeout=60).status == "succeeded"
    assert job.read().collect().get_column("id").to_list() == list(range(6_000))


def test_a_detector_that_cannot_be_pickled_fails_before_anything_starts(source, tmp_path) -> None:
    lock = threading.Lock()
    job = bn.BatchJob(source, tmp_path / "out", detector=lambda df: (lock, df)[1], chunk_size=CHUNK)
    with pytest.raises(bn.ConfigError, match=r"cannot be sent to a detached driver.*pickle"):
        job.start(progress=None, detach=True)
    assert not (tmp_path / "out").exists()


def test_two_drivers_on_one_output_stay_impossible(source, tmp_path, slowmod) -> None:
    out = tmp_path / "out"
    job = bn.BatchJob(source, out, detector=slowmod.slower, chunk_size=CHUNK, engine="sequential")
    job.start(progress=None, detach=True)
    try:
        with pytest.raises(bn.JobStateError, match="already running"):
            bn.BatchJob(source, out, detector=slowmod.slower, chunk_size=CHUNK).start(progress=None, detach=True)
        with pytest.raises(bn.JobStateError, match="already running"):
            bn.BatchJob(source, out, detector=slowmod.slower, chunk_size=CHUNK).run(progress=None)
    finally:
        job.cancel()
    assert job.wait(timeout=30).status == "cancelled"


def test_a_killed_detached_driver_shows_interrupted_and_resumes(source, tmp_path, slowmod) -> None:
    out = tmp_path / "out"
    job = bn.BatchJob(source, out, detector=slowmod.slower, chunk_size=CHUNK, engine="sequential")
    job.start(progress=None, detach=True)
    while bn.status(out).chunks_done < 2:
        time.sleep(0.05)
    os.kill(lock_holder(out), signal.SIGKILL)  # the machine reboots, the OOM killer, ...
    deadline = time.monotonic() + 10
    while lock_holder(out) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    snapshot = bn.status(out)
    assert snapshot.status == "interrupted" and "run the same job again to resume" in snapshot.last_error
    listed = bn.jobs(tmp_path)
    assert listed.filter(pl.col("output") == str(out)).get_column("status").to_list() == ["interrupted"]
    job.start(progress=None, detach=True)
    assert job.wait(timeout=120).status == "succeeded"
    assert job.read().collect().equals(expected(source, tmp_path, slowmod.slow))


def test_jobs_lists_the_jobs_under_a_folder_with_their_status(source, tmp_path, slowmod, capsys) -> None:
    from batchnb.cli import main

    root = tmp_path / "work"
    bn.BatchJob(source, root / "a" / "done", chunk_size=CHUNK).run(progress=None)
    bn.BatchJob(source, root / "b" / "broken", detector="slowmod:fails_once", chunk_size=CHUNK, retries=0).run(
        progress=None
    )
    running = bn.BatchJob(source, root / "c" / "d" / "running", detector=slowmod.slower, chunk_size=CHUNK,
                          engine="sequential")  # fmt: skip
    running.start(progress=None, detach=True)
    while bn.status(running.output).status != "running":
        time.sleep(0.05)
    (root / ".hidden" / "x").mkdir(parents=True)
    try:
        listed = bn.jobs(root)
        assert dict(zip(listed["output"], listed["status"], strict=True)) == {
            str(root / "a" / "done"): "succeeded",
            str(root / "b" / "broken"): "failed",
            str(root / "c" / "d" / "running"): "running",
        }
        assert main(["jobs", str(root)]) == 0
        printed = capsys.readouterr().out.splitlines()
        assert any(line.startswith("failed") and line.endswith(str(root / "b" / "broken")) for line in printed)
    finally:
        running.cancel()
        running.wait(timeout=30)


def test_attach_in_a_terminal_follows_to_the_end(source, tmp_path, slowmod) -> None:
    out = tmp_path / "out"
    bn.BatchJob(source, out, detector=slowmod.slower, chunk_size=CHUNK, engine="sequential").start(
        progress=None, detach=True
    )
    done = subprocess.run([sys.executable, "-m", "batchnb", "attach", str(out)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "succeeded" in done.stderr + done.stdout and "6.00k/6.00k" in done.stderr


def test_attach_to_a_folder_without_a_job_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(bn.JobStateError, match="holds no batchnb job"):
        bn.attach(tmp_path / "nothing", progress=None)


KERNEL_STEPS = {
    "start": "import batchnb as bn\nfrom slowmod import slower\n"
    "job = bn.BatchJob({source!r}, {out!r}, detector=slower, chunk_size=1_000, engine='sequential')\n"
    "job.start(detach=True)",
    "attach": "import time\nimport batchnb as bn\na = bn.attach({out!r}, progress='widget')\n"
    "r0 = a.status().rows_done\ntime.sleep(1.5)\nprint('ADVANCED', r0, a.status().rows_done)",
    "cancel": "a.view.cancel()\nprint('ENDED', a.wait(30).status)",
    "resume": "from slowmod import slower\n"
    "job = bn.BatchJob({source!r}, {out!r}, detector=slower, chunk_size=1_000, engine='sequential')\n"
    "job.start(detach=True)\na = bn.attach({out!r}, progress='widget')\nprint('ENDED', a.wait(120).status)",
}


@pytest.mark.slow
def test_in_a_real_kernel_start_detached_restart_attach_cancel_resume(big_frame, tmp_path, slowmod) -> None:
    """The workflow of the README, in a real Jupyter kernel that is restarted while the job runs."""
    from jupyter_client.manager import start_new_kernel
    from jupyter_kernel import venv_kernel

    source = write_source(big_frame, "parquet", tmp_path / "big.parquet")  # 20 chunks of 0.5 s
    out = str(tmp_path / "out")
    km, kc = start_new_kernel(kernel_name=venv_kernel(), cwd=str(tmp_path))

    def run(step: str, timeout: float = 150) -> str:
        printed: list[str] = []

        def hook(msg) -> None:
            if msg["msg_type"] == "stream":
                printed.append(msg["content"]["text"])

        reply = kc.execute_interactive(KERNEL_STEPS[step].format(source=source, out=out), timeout=timeout,
                                       output_hook=hook)  # fmt: skip
        assert reply["content"]["status"] == "ok", reply["content"]
        ours = [line for line in "".join(printed).splitlines() if line.startswith(("ADVANCED", "ENDED"))]
        return ours[-1] if ours else ""  # the views' own lines are not ours

    try:
        run("start")
        km.restart_kernel(now=True)  # the kernel dies: a job on one of its threads would die with it
        kc.wait_for_ready(timeout=60)
        advanced = run("attach").split()
        assert advanced[0] == "ADVANCED" and int(advanced[2]) > int(advanced[1])  # rows advance, seen after restart
        assert run("cancel").split() == ["ENDED", "cancelled"]
        assert 0 < bn.status(out).chunks_done < 20
        assert run("resume").split() == ["ENDED", "succeeded"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert bn.BatchJob(source, out).read().collect().equals(expected(source, tmp_path, slowmod.slow))


def test_attach_follows_and_cancels_a_job_that_the_cli_runs(source, tmp_path, slowmod) -> None:
    """Not only detached jobs: any driver (here `batchnb run` in a terminal) honours a cancel from an attached view."""
    out = tmp_path / "out"
    cli = subprocess.Popen(
        [sys.executable, "-m", "batchnb", "run", source, str(out), "--detector", "slowmod:slower", "--chunk-size", "1000",
         "--engine", "sequential", "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while lock_holder(out) != cli.pid or bn.status(out).chunks_done < 1:
            assert time.monotonic() < deadline and cli.poll() is None, "the CLI run did not start"
            time.sleep(0.05)
        attached = bn.attach(out, progress=None)
        attached.cancel()
        assert attached.wait(timeout=30).status == "cancelled"
        assert cli.wait(timeout=30) != 0  # the CLI says the job did not succeed
    finally:
        if cli.poll() is None:
            cli.kill()
        cli.wait()
        cli.stderr.close()
    assert (
        bn.BatchJob(source, out, detector="slowmod:slower", chunk_size=CHUNK).run(progress=None).status == "succeeded"
    )


@pytest.mark.parametrize("text", ["pid abc on {host}", "pid 12 at {host}", "", "pid -1 on {host} and more"])
def test_a_crafted_lock_file_names_no_driver(source, tmp_path, text) -> None:
    """A lock file someone else wrote: status, attach and the detached start read it without a raw error."""
    import socket

    from batchnb.driver.lock import driver_gone, lock_path

    out = tmp_path / "out"
    assert bn.BatchJob(source, out, chunk_size=CHUNK).run(progress=None).status == "succeeded"
    lock_path(out).write_text(text.format(host=socket.gethostname()))
    assert lock_holder(out) is None and driver_gone(out) is False
    assert bn.status(out).status == "succeeded"
    assert bn.attach(out, progress=None).wait(timeout=10).status == "succeeded"


def test_planted_cancel_and_log_files_are_refused_or_removed_never_followed(source, tmp_path) -> None:
    """An output from someone else may hold a link or a directory where batchnb keeps its cancel request and its
    driver log: batchnb removes a link itself (never what it points to) or refuses with a clear error."""
    out = tmp_path / "out"
    assert bn.BatchJob(source, out, chunk_size=CHUNK).run(progress=None).status == "succeeded"
    precious = tmp_path / "precious.txt"
    precious.write_text("someone's file")

    (out / "_batchnb" / "cancel").symlink_to(precious)  # a planted request: dropped, as any left from before
    assert bn.BatchJob(source, out, chunk_size=CHUNK).run(progress=None, restart=True).status == "succeeded"
    assert precious.read_text() == "someone's file" and not (out / "_batchnb" / "cancel").exists()

    (out / "_batchnb" / "cancel").mkdir()
    with pytest.raises(bn.JobStateError, match=r"cancel request .* remove it"):
        bn.BatchJob(source, out, chunk_size=CHUNK).run(progress=None)
    with pytest.raises(bn.JobStateError, match=r"cancel request .* remove it"):
        bn.attach(out, progress=None).cancel()
    (out / "_batchnb" / "cancel").rmdir()

    (out / "_batchnb" / "driver.log").unlink(missing_ok=True)
    (out / "_batchnb" / "driver.log").symlink_to(precious)
    with pytest.raises(bn.JobStateError, match=r"driver log .* remove it"):
        bn.BatchJob(source, out, chunk_size=CHUNK).start(progress=None, detach=True)
    assert precious.read_text() == "someone's file"
