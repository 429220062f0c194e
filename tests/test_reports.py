"""Reports: the packaged report template (batchnb/templates/report.ipynb) executed by papermill for a succeeded, a failed and a running job.

DESIGN.md section 1 (`job.report`) and issue 6: the summary's numbers and embedded images are in the HTML,
errors are shown with their tracebacks, and a running job's report shows its state so far.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import nbformat
import polars as pl
import pytest
from jupyter_kernel import venv_kernel

import batchnb as bn
from batchnb import reports
from batchnb.demo import make_transactions

ROWS = 30_000
CHUNK = 5_000
FEATURES = ["amount", "latency_ms", "items", "distance_km"]
FAILING_ROWS = (10_000, 15_000)  # chunk 2


@pytest.fixture(scope="module")
def kernel() -> str:
    return venv_kernel()


@pytest.fixture(scope="module")
def transactions(tmp_path_factory) -> Path:
    return make_transactions(tmp_path_factory.mktemp("reports") / "tx.parquet", rows=ROWS)


def scored(frame: pl.DataFrame) -> pl.DataFrame:
    z = ((pl.col("amount").log() - 3.5).abs() / 0.8).alias("anomaly_score")
    return frame.with_columns(z).with_columns((pl.col("anomaly_score") > 4.0).alias("is_anomaly"))


def fails_on_chunk_2(frame: pl.DataFrame) -> pl.DataFrame:
    if frame["id"][0] == FAILING_ROWS[0]:
        raise ValueError("sentinel-7f3a: merchant code cannot be parsed")
    return scored(frame)


def outputs_of(notebook: Path) -> list[dict]:
    nb = nbformat.read(notebook, as_version=4)
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


def assert_clean(notebook: Path) -> None:
    """Every cell ran and none raised."""
    errors = [o for o in outputs_of(notebook) if o.get("output_type") == "error"]
    assert not errors, errors
    nb = nbformat.read(notebook, as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)


def images(html: str) -> int:
    return len(re.findall(r"<img[^>]+src=\"data:image/png;base64,", html))


# --------------------------------------------------------------------------------------------------
def test_report_of_a_succeeded_job(transactions, tmp_path, kernel) -> None:
    job = bn.BatchJob(transactions, tmp_path / "ok", detector="mad", columns=FEATURES, chunk_size=CHUNK,
                      resources=bn.Resources(max_workers=2))  # fmt: skip
    result = job.run(progress=None)
    assert result.ok and result.anomalies > 0

    notebook = job.report(kernel_name=kernel)
    assert notebook == Path(job.output, "report.ipynb")
    assert_clean(notebook)
    html = notebook.with_suffix(".html").read_text()
    for number in (f"{result.rows_in:,}", f"{result.rows_out:,}", f"{result.anomalies:,}", f"{result.chunks_total:,}"):
        assert number in html
    assert "succeeded" in html and "mad" in html and "threads" in html
    assert "verify: ok, 6 parts match" in html
    assert images(html) >= 4  # throughput, CPU and memory, chunk durations, score distribution
    assert "flags score &gt; 3.5" in html  # MAD's default cutoff, also marked on the histogram
    assert "print(" not in html  # code is hidden in the HTML: a report shows results

    top = reports.top_anomalies(job.output, 10, reports.load(job.output).chunks)
    assert top["input_row"].to_list() == top["id"].to_list()  # rows are named by their input row number
    assert str(top["id"][0]) in html


def test_report_of_a_failed_job_shows_errors(transactions, tmp_path, kernel) -> None:
    job = bn.BatchJob(transactions, tmp_path / "failed", detector=fails_on_chunk_2, chunk_size=CHUNK, retries=1,
                      backoff=bn.Backoff(base=0.0, max=0.0, jitter=False))  # fmt: skip
    result = job.run(progress=None)
    assert result.status == "failed" and result.chunks_failed == 1 and result.retries == 1

    notebook = reports.make_report(job.output, tmp_path / "reports" / "failed.ipynb", kernel_name=kernel)
    assert_clean(notebook)
    html = (tmp_path / "reports" / "failed.html").read_text()
    assert "failed" in html
    assert "sentinel-7f3a: merchant code cannot be parsed" in html
    assert "ValueError" in html and "Traceback (most recent call last)" in html
    assert "fails_on_chunk_2" in html  # the frame that raised, from the traceback
    assert f"{FAILING_ROWS[0]:,} to {FAILING_ROWS[1]:,}" in html
    assert "2 failed attempt(s), 1 retried" in html
    assert f"{result.rows_in:,}" in html and f"{ROWS - CHUNK:,}" in html
    assert "verify: ok, 5 parts match" in html

    top = reports.top_anomalies(job.output, 50, reports.load(job.output).chunks)
    assert top["input_row"].to_list() == top["id"].to_list()  # right even with chunk 2 missing


def test_report_of_a_running_job_shows_its_state_so_far(transactions, tmp_path, kernel) -> None:
    release = threading.Event()

    def blocks_after_chunk_1(frame: pl.DataFrame) -> pl.DataFrame:
        if frame["id"][0] >= 2 * CHUNK:
            release.wait(120)
        return scored(frame)

    job = bn.BatchJob(transactions, tmp_path / "running", detector=blocks_after_chunk_1, chunk_size=CHUNK,
                      resources=bn.Resources(max_workers=2))  # fmt: skip
    job.start(progress=None)
    try:
        deadline = time.monotonic() + 60
        while job.status().chunks_done < 2:
            assert time.monotonic() < deadline, job.status()
            time.sleep(0.05)
        notebook = job.report(tmp_path / "running.ipynb", kernel_name=kernel)
    finally:
        release.set()
        final = job.wait(120)
    assert final.ok
    assert_clean(notebook)
    html = notebook.with_suffix(".html").read_text()
    assert "The job is running" in html and "report made while the job runs" in html
    assert f"{2 * CHUNK:,} of {ROWS:,}" in html  # rows in so far, of the planned total
    assert "2 done, 0 failed, 0 skipped of 6" in html
    assert "only the parts finished so far were checked" in html


def test_report_without_html(transactions, tmp_path, kernel) -> None:
    job = bn.BatchJob(transactions, tmp_path / "plain", detector="zscore", chunk_size=10_000)
    job.run(progress=None)
    notebook = job.report(tmp_path / "x" / "plain.ipynb", html=False, kernel_name=kernel)
    assert notebook.exists() and not notebook.with_suffix(".html").exists()


# --------------------------------------------------------------------------------------------------
# The loaders the template uses (fast: no kernel)
# --------------------------------------------------------------------------------------------------
def test_load_and_histogram(transactions, tmp_path) -> None:
    job = bn.BatchJob(transactions, tmp_path / "data", detector="zscore", columns=FEATURES, chunk_size=CHUNK,
                      threshold=2.5)  # fmt: skip
    result = job.run(progress=None)
    data = reports.load(job.output)
    assert data.status == "succeeded" and data.finished
    assert data.cutoff == 2.5
    assert data.chunks.height == 6 and {"read", "score", "write"} <= set(data.chunks.columns)
    assert data.chunks["seconds"].min() > 0
    assert data.timeline.height >= 2 and data.timeline["rows_done"].max() == ROWS
    labels = dict(data.summary())
    assert labels["rows in"] == f"{ROWS:,} of {ROWS:,}" and labels["anomalies"].startswith(f"{result.anomalies:,}")
    assert labels["engine"] == "threads"
    assert json.dumps(data.config)  # plain data

    edges, counts, overflow = reports.score_histogram(job.output, bins=40, cutoff=data.cutoff)
    assert len(edges) == 41 and len(counts) == 40
    assert sum(counts) + overflow == ROWS  # every row with a score lands somewhere
    assert edges[-1] >= data.cutoff  # the cutoff is inside the drawn range


def test_make_report_errors(tmp_path) -> None:
    with pytest.raises(bn.JobStateError, match="holds no batchnb job"):
        reports.make_report(tmp_path / "nothing")
    job = bn.BatchJob(tmp_path / "missing.parquet", tmp_path / "out")
    with pytest.raises(bn.JobStateError, match="holds no batchnb job"):
        job.report()
    (tmp_path / "out" / "_batchnb").mkdir(parents=True)
    reports.state_path(tmp_path / "out").touch()
    with pytest.raises(bn.ConfigError, match=r"must end in \.ipynb"):
        reports.make_report(tmp_path / "out", tmp_path / "report.html")
