"""The shipped notebooks run top to bottom under papermill, and a scheduled papermill run resumes its job.

Issue 6: every notebook has a `parameters` cell that scales it, runs in under 2 minutes by default, and is
executed here; the README's cron recipe (papermill with a fixed output directory) resumes a job whose previous
run died.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import papermill
import pytest
from jupyter_kernel import venv_kernel

import batchnb as bn

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
NAMES = [nb.name for nb in NOTEBOOKS]


@pytest.fixture(scope="module")
def kernel() -> str:
    return venv_kernel()


def execute(name: str, tmp_path: Path, kernel: str, **parameters) -> nbformat.NotebookNode:
    out = tmp_path / f"executed-{name}"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / name), str(out), parameters=parameters, kernel_name=kernel, cwd=str(tmp_path),
        progress_bar=False, execution_timeout=300,
    )  # fmt: skip
    return nbformat.read(out, as_version=4)


def text_of(nb: nbformat.NotebookNode) -> str:
    """Every text output of the executed notebook, for assertions."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            data = out.get("data", {})
            parts.append(data.get("text/plain", ""))
            parts.append(data.get("text/html", ""))
    return "\n".join(p if isinstance(p, str) else "".join(p) for p in parts)


# --------------------------------------------------------------------------------------------------
# Shape of the shipped notebooks (fast)
# --------------------------------------------------------------------------------------------------
def test_the_three_notebooks_are_shipped() -> None:
    assert NAMES == ["01_quickstart.ipynb", "02_engines.ipynb", "03_fault_tolerance.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_notebook_has_a_parameters_cell_and_no_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    assert re.search(r"^rows = ", tagged[0].source, re.M), "every notebook scales with `rows`"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit notebooks without outputs"
    assert nb.metadata.kernelspec.name == "python3"


def test_report_template_has_a_parameters_cell() -> None:
    nb = nbformat.read(ROOT / "batchnb" / "templates" / "report.ipynb", as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "output_dir = " in tagged[0].source
    assert all(not c.outputs for c in nb.cells if c.cell_type == "code")


# --------------------------------------------------------------------------------------------------
# Each notebook, executed
# --------------------------------------------------------------------------------------------------
def test_quickstart(tmp_path, kernel) -> None:
    out = tmp_path / "out"
    nb = execute("01_quickstart.ipynb", tmp_path, kernel, data_path=str(tmp_path / "tx.parquet"),
                 output_dir=str(out))  # fmt: skip
    text = text_of(nb)
    hits = re.search(r"precision ([\d.]+)%, recall ([\d.]+)%", text)
    assert hits and all(float(g) >= 80 for g in hits.groups()), text  # the quickstart's flags are believable
    assert "verify: ok" in text
    assert (out / "report.html").exists() and f"report: {(out / 'report.html').resolve()}" in text
    assert bn.status(out).status == "succeeded"


def test_engines_on_local_engines(tmp_path, kernel) -> None:
    """The fast variant: the loop, the plot and the identity check on the three local engines."""
    nb = execute("02_engines.ipynb", tmp_path, kernel, rows=40_000, engines=["sequential", "threads", "processes"],
                 workdir=str(tmp_path / "w"))  # fmt: skip
    text = text_of(nb)
    for engine in ("sequential", "threads", "processes"):
        assert re.search(rf"{engine} +output digest 0x[0-9a-f]+, identical to sequential: True", text), engine
    assert any(o.get("data", {}).get("image/png") for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_engines_on_all_five_engines(tmp_path, kernel) -> None:
    """The notebook as shipped: all five engines, Dask and Ray included, in under 2 minutes."""
    nb = execute("02_engines.ipynb", tmp_path, kernel, workdir=str(tmp_path / "w"))
    text = text_of(nb)
    for engine in ("sequential", "threads", "processes", "dask", "ray"):
        assert re.search(rf"{engine} +output digest 0x[0-9a-f]+, identical to sequential: True", text), engine


def test_fault_tolerance(tmp_path, kernel) -> None:
    nb = execute("03_fault_tolerance.ipynb", tmp_path, kernel, workdir=str(tmp_path / "w"))
    text = text_of(nb)
    assert "ValueError: record id=" in text and "unparseable merchant code" in text
    assert "driver exit code -9 (killed)" in text
    assert "interrupted" in text and "run the same job again to resume" in text
    assert "every input row exactly once and in order: True" in text


# --------------------------------------------------------------------------------------------------
# The README's cron recipe: papermill with a fixed output directory resumes a job whose run died
# --------------------------------------------------------------------------------------------------
SLOW_DETECTOR = """
import time

import polars as pl


def score(frame: pl.DataFrame) -> pl.DataFrame:
    time.sleep(0.15)
    z = ((pl.col("amount").log() - 3.5).abs() / 0.8).alias("anomaly_score")
    return frame.with_columns(z).with_columns((pl.col("anomaly_score") > 4.0).alias("is_anomaly"))
"""


def test_scheduled_papermill_run_resumes_after_the_previous_run_died(tmp_path, kernel) -> None:
    (tmp_path / "slowdet.py").write_text(SLOW_DETECTOR)
    out = tmp_path / "out" / "nightly"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    def papermill_command(run: str) -> list[str]:  # what the cron line runs, with a test kernel and detector
        return [
            sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "01_quickstart.ipynb"),
            str(tmp_path / f"{run}.ipynb"), "--cwd", str(tmp_path), "-k", kernel, "--no-progress-bar",
            "-p", "rows", "48000", "-p", "chunk_size", "1000", "-p", "engine", "threads",
            "-p", "detector", "slowdet:score", "-p", "data_path", str(tmp_path / "tx.parquet"),
            "-p", "output_dir", str(out), "-p", "make_report", "False",
        ]  # fmt: skip

    first = subprocess.Popen(papermill_command("first"), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:  # wait until the job in the kernel has done a few chunks
            assert first.poll() is None, first.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the first run made no progress"
            try:
                if bn.status(out).chunks_done >= 6:
                    break
            except bn.JobStateError:
                pass
            time.sleep(0.05)
        driver = int((out / "_batchnb" / "driver.lock").read_text().split()[1])  # the kernel runs the job
        os.kill(driver, signal.SIGKILL)  # the run dies: OOM killer, reboot, ...
        assert first.wait(60) != 0  # papermill reports the dead kernel and fails
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        first.stdout.close()
    assert bn.status(out).status == "interrupted"
    done_before = bn.JobResult.from_state(out).chunks_done
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    assert 6 <= done_before < 48

    second = subprocess.run(papermill_command("second"), env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    text = text_of(nbformat.read(tmp_path / "second.ipynb", as_version=4))
    assert f"resuming: {done_before} of 48 chunks were already done" in text
    assert bn.status(out).status == "succeeded"
    unchanged = [name for name, mtime in kept.items() if (out / name).stat().st_mtime_ns == mtime]
    assert len(unchanged) >= done_before  # finished chunks were not redone
