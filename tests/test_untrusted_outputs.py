"""An output directory or a source made by someone else runs none of its code.

DESIGN.md section 1 "Untrusted files and outputs": nothing read from an output is unpickled (the fitted
detector is stored as JSON numbers or refitted from the deterministic sample), pickle and HDF5 parts are read
back only when the reader passes `allow_pickle=True`, HDF5 sources need `allow_pickle=True`, and a state
without its identity or fingerprint is another job's. Each payload test checks that the marker directory
the payload would create does not exist and that the user got a clear `BatchError`.
"""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import batchnb as bn
from batchnb import reports
from batchnb.checksum import file_checksum
from batchnb.cli import main
from batchnb.result import JobResult
from batchnb.verify import verify

ROWS = 3_000
CHUNK = 1_000


class Payload:
    """Unpickling this creates the directory `marker`: proof that the bytes were (not) unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def frame(n: int = ROWS) -> pl.DataFrame:
    rng = np.random.default_rng(3)
    return pl.DataFrame({"id": np.arange(n), "a": rng.normal(size=n), "b": rng.normal(size=n)})


def run(source, output, *, restart: bool = False, **options) -> bn.JobResult:
    options.setdefault("engine", "sequential")
    options.setdefault("chunk_size", CHUNK)
    return bn.BatchJob(source, output, **options).run(progress=None, restart=restart)


def sql(output: Path, statement: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(Path(output, "_batchnb", "state.sqlite"))
    try:
        with conn:
            return conn.execute(statement, params).fetchall()
    finally:
        conn.close()


def plant_blob(output: Path, marker: Path) -> None:
    """The scorer blob older versions stored, replaced by a payload."""
    sql(output, "CREATE TABLE IF NOT EXISTS blobs(key TEXT PRIMARY KEY, value BLOB)")
    sql(output, "INSERT OR REPLACE INTO blobs(key, value) VALUES ('scorer', ?)", (pickle.dumps(Payload(marker)),))


def replace_part(output: Path, index: int, write) -> Path:
    """Overwrite part `index` with `write(path)` and record its new checksum, as a forger would."""
    (part,) = sql(output, "SELECT part FROM chunks WHERE idx = ?", (index,))[0]
    path = Path(output, part)
    write(path)
    checksum, size = file_checksum(path)
    sql(output, "UPDATE chunks SET checksum = ?, nbytes = ? WHERE idx = ?", (checksum, size, index))
    return path


def evil_hdf5(path: Path, marker: Path, key: str = "data") -> Path:
    """A valid pandas table whose node carries a pickled attribute (PyTables unpickles it when it is read)."""
    import tables

    frame().to_pandas().to_hdf(path, key=key, format="table", index=False)
    with tables.open_file(path, "a") as f:
        f.get_node(f"/{key}")._v_attrs.evil = Payload(marker)
    return path


@pytest.fixture
def source(tmp_path) -> Path:
    path = tmp_path / "src.parquet"
    frame().write_parquet(path)
    return path


# --- 1. the fitted detector is plain data -----------------------------------------------------------


def test_fitted_detector_is_stored_as_json_numbers_and_no_blob(source, tmp_path):
    out = tmp_path / "out"
    run(source, out, detector="zscore")
    fit = json.loads(sql(out, "SELECT value FROM meta WHERE key = 'detector_fit'")[0][0])
    assert fit["cutoff"] == 3.0
    assert set(fit["state"]) == {"id", "a", "b"}
    assert all(isinstance(v, float) for stats in fit["state"].values() for v in stats)
    assert sql(out, "SELECT COUNT(*) FROM blobs")[0][0] == 0


def test_report_reads_the_cutoff_and_never_unpickles_the_blob(source, tmp_path):
    out, marker = tmp_path / "out", tmp_path / "marker"
    run(source, out, detector="zscore", threshold=2.5)
    plant_blob(out, marker)
    data = reports.load(out)
    assert not marker.exists(), "the report unpickled the scorer blob"
    assert data.cutoff == 2.5


def test_report_of_an_isolation_forest_shows_the_stored_cutoff(source, tmp_path):
    out = tmp_path / "out"
    result = run(source, out, detector="isolation_forest", contamination=0.05)
    cutoff = reports.load(out).cutoff
    assert cutoff is not None and np.isfinite(cutoff)
    flagged = result.read().filter(pl.col("anomaly_score") > cutoff).collect().height
    assert flagged == result.anomalies


def test_report_ignores_a_cutoff_that_is_not_a_number(source, tmp_path):
    out = tmp_path / "out"
    run(source, out, detector="zscore")
    sql(out, "UPDATE meta SET value = ? WHERE key = 'detector_fit'", (json.dumps({"cutoff": "rm -rf /"}),))
    assert reports.load(out).cutoff is None


def test_resume_never_unpickles_the_blob(source, tmp_path):
    out, marker = tmp_path / "out", tmp_path / "marker"
    first = run(source, out, detector="zscore").read().collect()
    plant_blob(out, marker)
    Path(out, "part-000001.parquet").unlink()  # chunk 1 runs again with the stored fit
    again = run(source, out, detector="zscore")
    assert not marker.exists(), "resume unpickled the scorer blob"
    assert again.ok and again.read().collect().equals(first)


def test_old_state_with_only_a_blob_is_refitted_from_the_sample(source, tmp_path):
    out, marker = tmp_path / "out", tmp_path / "marker"
    first = run(source, out, detector="mad").read().collect()
    sql(out, "DELETE FROM meta WHERE key = 'detector_fit'")
    plant_blob(out, marker)
    Path(out, "part-000002.parquet").unlink()
    again = run(source, out, detector="mad")
    assert not marker.exists()
    assert again.ok and again.read().collect().equals(first)


@pytest.mark.parametrize(
    "fit",
    [{"cutoff": 3.0, "state": {"a": "os.system('x')"}}, {"cutoff": 10**400, "state": {}}, "not a dict", None],
)
def test_a_stored_fit_that_is_not_the_detectors_numbers_is_refitted(source, tmp_path, fit):
    out = tmp_path / "out"
    first = run(source, out, detector="zscore").read().collect()
    sql(out, "UPDATE meta SET value = ? WHERE key = 'detector_fit'", (json.dumps(fit),))
    Path(out, "part-000000.parquet").unlink()
    again = run(source, out, detector="zscore")
    assert again.ok and again.read().collect().equals(first)
    assert reports.load(out).cutoff == 3.0  # the refit is stored again


def test_isolation_forest_resume_is_refitted_bit_identical(source, tmp_path):
    whole = run(source, tmp_path / "whole", detector="isolation_forest").read().collect()
    out = tmp_path / "out"
    run(source, out, detector="isolation_forest")
    Path(out, "part-000000.parquet").unlink()
    Path(out, "part-000002.parquet").unlink()
    resumed = run(source, out, detector="isolation_forest")
    assert resumed.chunks_done == 3
    assert resumed.read().collect().equals(whole)


class _Box:
    """Fit state that JSON cannot hold."""

    def __init__(self, mean: float) -> None:
        self.mean = mean


class DistanceFromMean:
    name = "distance_from_mean"
    description = "|a - mean(a)|"
    default_threshold = 1.0
    default_contamination = None

    def fit(self, sample, columns, *, seed):
        return _Box(float(sample["a"].mean()))

    def score(self, frame, columns, state):
        return (frame["a"] - state.mean).abs()


def test_a_detector_whose_fit_state_is_not_json_works_and_is_refitted_on_resume(source, tmp_path):
    out = tmp_path / "out"
    first = run(source, out, detector=DistanceFromMean())
    assert first.ok and first.anomalies > 0
    fit = json.loads(sql(out, "SELECT value FROM meta WHERE key = 'detector_fit'")[0][0])
    assert fit == {"cutoff": 1.0}  # the state itself is not stored
    Path(out, "part-000001.parquet").unlink()
    again = run(source, out, detector=DistanceFromMean())
    assert again.ok and again.read().collect().equals(first.read().collect())


# --- 2. pickle and HDF5 parts need allow_pickle from the reader -----------------------------------------


@pytest.fixture
def pickle_output(source, tmp_path) -> tuple[Path, Path, bn.BatchJob]:
    """A finished job with pickle parts, part 1 replaced by a payload with a matching recorded checksum."""
    out, marker = tmp_path / "pk", tmp_path / "marker"
    job = bn.BatchJob(source, out, output_format="pickle", engine="sequential", chunk_size=CHUNK)
    job.run(progress=None)
    replace_part(out, 1, lambda p: p.write_bytes(pickle.dumps(Payload(marker))))
    return out, marker, job


def test_result_read_of_pickle_parts_needs_allow_pickle(pickle_output):
    out, marker, job = pickle_output
    for result in (job.result(), JobResult.from_state(out)):
        with pytest.raises(bn.ConfigError, match="allow_pickle=True") as err:
            result.read().collect()
        assert "pickle" in str(err.value) and "run code" in str(err.value)
        with pytest.raises(bn.ConfigError, match="allow_pickle"):
            result.to_pandas()
    with pytest.raises(bn.ConfigError, match="allow_pickle"):
        job.read()
    assert not marker.exists()


def test_result_read_of_pickle_parts_works_when_the_reader_allows_it(source, tmp_path):
    job = bn.BatchJob(source, tmp_path / "pk", output_format="pickle", engine="sequential", chunk_size=CHUNK,
                      allow_pickle=True)  # fmt: skip
    result = job.run(progress=None)
    assert result.read().collect().height == ROWS  # the job's own allow_pickle
    assert JobResult.from_state(job.output, allow_pickle=True).to_pandas().shape[0] == ROWS
    assert JobResult.from_state(job.output).read(allow_pickle=True).collect().height == ROWS


def test_verify_checks_checksums_but_not_rows_of_pickle_parts_without_allow_pickle(pickle_output):
    out, marker, job = pickle_output
    report = verify(out)
    assert not marker.exists(), "verify unpickled a part"
    assert report.ok and report.rows_unchecked == 3
    text = str(report)
    assert "row counts of 3" in text and "not checked" in text and "allow_pickle" in text
    assert job.verify().rows_unchecked == 3  # the job's own allow_pickle is False
    assert not marker.exists()
    Path(out, "part-000000.pkl").write_bytes(b"changed")
    bad = verify(out)
    assert not bad.ok and "part-000000.pkl" in str(bad) and "checksum" in str(bad)


def test_verify_with_allow_pickle_counts_rows(source, tmp_path):
    out = tmp_path / "pk"
    run(source, out, output_format="pickle")
    report = verify(out, allow_pickle=True)
    assert report.ok and report.rows_unchecked == 0 and "match their checksums and row counts" in str(report)


def test_verify_never_opens_an_hdf5_part_with_a_pickled_attribute(source, tmp_path):
    out, marker = tmp_path / "h5", tmp_path / "marker"
    run(source, out, output_format="hdf5")
    replace_part(out, 0, lambda p: (p.unlink(), evil_hdf5(p, marker)))
    report = verify(out)
    assert not marker.exists(), "verify opened the HDF5 part with PyTables"
    assert report.rows_unchecked == 3 and "HDF5" in str(report)
    with pytest.raises(bn.ConfigError, match="allow_pickle"):
        JobResult.from_state(out).read().collect()
    assert not marker.exists()


def test_cli_verify_and_report_say_to_pass_allow_pickle(pickle_output, capsys):
    out, marker, _ = pickle_output
    assert main(["verify", str(out)]) == 0
    assert "--allow-pickle" in capsys.readouterr().out
    assert main(["report", str(out), "--no-html"]) == 2
    err = capsys.readouterr().err
    assert "--allow-pickle" in err and "pickle" in err
    assert not marker.exists()
    assert not Path(out, "report.ipynb").exists()


def test_report_refuses_pickle_parts_without_allow_pickle(pickle_output):
    out, marker, _ = pickle_output
    with pytest.raises(bn.ConfigError, match="allow_pickle"):
        reports.make_report(out, html=False)
    for read in (reports.top_anomalies, reports.score_histogram):
        with pytest.raises(bn.ConfigError, match="allow_pickle"):
            read(out)
    assert not marker.exists()


def test_a_job_reading_another_jobs_hdf5_parts_needs_allow_pickle(source, tmp_path):
    first, marker = tmp_path / "h5", tmp_path / "marker"
    run(source, first, output_format="hdf5")
    Path(first, "part-000000.h5").unlink()
    evil_hdf5(Path(first, "part-000000.h5"), marker)
    with pytest.raises(bn.SourceError, match="allow_pickle"):
        run(str(first), tmp_path / "second")
    assert not marker.exists()


# --- 3. HDF5 sources -------------------------------------------------------------------------------------


def test_hdf5_source_needs_allow_pickle_before_it_is_opened(tmp_path):
    src, marker = evil_hdf5(tmp_path / "evil.h5", tmp_path / "marker"), tmp_path / "marker"
    job = bn.BatchJob(src, tmp_path / "out", engine="sequential")
    for call in (lambda: job.run(progress=None), job.plan):
        with pytest.raises(bn.SourceError) as err:
            call()
        msg = str(err.value)
        assert "evil.h5" in msg and "allow_pickle=True" in msg and "Parquet" in msg
    assert not marker.exists(), "the HDF5 file was opened before it was refused"


def test_cli_run_of_an_hdf5_source_without_allow_pickle_exits_2(tmp_path, capsys):
    src, marker = evil_hdf5(tmp_path / "evil.h5", tmp_path / "marker"), tmp_path / "marker"
    assert main(["run", str(src), str(tmp_path / "out"), "--engine", "sequential"]) == 2
    assert "allow" in capsys.readouterr().err.replace("_", "-")
    assert not marker.exists()


def test_hdf5_source_with_allow_pickle_runs(tmp_path):
    src = tmp_path / "good.h5"
    frame().to_pandas().to_hdf(src, key="data", format="table", index=False)
    result = run(src, tmp_path / "out", allow_pickle=True)
    assert result.ok and result.rows_out == ROWS


# --- 4. identity and fingerprint ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["identity", "fingerprint"])
def test_a_state_without_identity_or_fingerprint_is_another_jobs(source, tmp_path, key):
    out, marker = tmp_path / "out", tmp_path / "marker"
    run(source, out)
    sql(out, "DELETE FROM meta WHERE key = ?", (key,))
    plant_blob(out, marker)
    with pytest.raises(bn.JobStateError, match="restart=True") as err:
        run(source, out)
    assert key in str(err.value)
    assert not marker.exists()
    again = run(source, out, restart=True)
    assert again.ok and again.rows_out == ROWS
