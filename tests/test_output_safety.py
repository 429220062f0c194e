"""batchnb writes only its own files, deletes only what its state recorded, and opens a state one safe way.

DESIGN.md section 1, "Untrusted files and outputs". Each case keeps a sentinel file outside the output and
checks its bytes and mtime afterwards, and that the user got a BatchError naming the problem.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from pathlib import Path

import polars as pl
import pytest

import batchnb as bn
from batchnb import reports
from batchnb.pipeline import Pipeline
from batchnb.record import store
from batchnb.record.snapshot import ChunkMonitor
from batchnb.record.store import state_path

N_ROWS = 3_000
CHUNK = 1_000


def write_source(path: Path, n: int = N_ROWS) -> Path:
    pl.DataFrame({"a": [float(i) for i in range(n)], "b": [float(i % 7) for i in range(n)]}).write_parquet(path)
    return path


def run(source, output, **options) -> bn.JobResult:
    options = {"detector": "zscore", "chunk_size": CHUNK, "engine": "sequential", **options}
    restart = options.pop("restart", False)
    return bn.BatchJob(source, output, **options).run(progress=None, restart=restart)


class Sentinel:
    """A file outside the output whose bytes and mtime must never change."""

    def __init__(self, path: Path) -> None:
        path.write_bytes(b"the user's own data\n")
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
        self.path = path

    def unchanged(self) -> bool:
        st = self.path.stat()
        return self.path.read_bytes() == b"the user's own data\n" and st.st_mtime_ns == 1_000_000_000


@pytest.fixture
def sentinel(tmp_path) -> Sentinel:
    return Sentinel(tmp_path / "sentinel.txt")


@pytest.fixture
def source(tmp_path) -> Path:
    return write_source(tmp_path / "data.parquet")


@pytest.fixture
def done(tmp_path, source) -> Path:
    """A finished output of 3 chunks."""
    out = tmp_path / "out"
    assert run(source, out).ok
    return out


# --- 1. never write through a planted link ----------------------------------------------------------


def test_a_planted_driver_lock_link_is_refused_not_truncated(tmp_path, source, sentinel):
    out = tmp_path / "out"
    (out / "_batchnb").mkdir(parents=True)
    (out / "_batchnb" / "driver.lock").symlink_to(sentinel.path)
    with pytest.raises(bn.JobStateError, match=r"driver.lock.*symbolic link"):
        run(source, out)
    assert sentinel.unchanged()


@pytest.mark.parametrize("name", ["state.sqlite", "state.sqlite-wal", "state.sqlite-shm"])
def test_a_planted_state_link_is_refused(tmp_path, done, source, sentinel, name):
    link = done / "_batchnb" / name
    link.unlink(missing_ok=True)
    link.symlink_to(sentinel.path)
    with pytest.raises(bn.JobStateError, match=f"{name}.*symbolic link"):
        run(source, done)
    with pytest.raises(bn.JobStateError, match="symbolic link"):
        bn.status(done)
    assert sentinel.unchanged()


@pytest.mark.parametrize("which", ["_batchnb", "_batchnb/tmp"])
def test_a_planted_directory_link_is_refused(tmp_path, done, source, which):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if which == "_batchnb":
        out = tmp_path / "fresh"
        out.mkdir()
    else:
        out = done
        (out / which).rmdir()
    (out / which).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(bn.JobStateError, match=f"{Path(which).name}.*symbolic link"):
        run(source, out, restart=True)
    assert list(elsewhere.iterdir()) == []


def test_report_links_are_replaced_never_written_through(tmp_path, done, monkeypatch):
    import nbformat

    def execute_notebook(template, path, **kwargs):
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("report")]), path)

    monkeypatch.setattr("papermill.execute_notebook", execute_notebook)
    monkeypatch.setattr(reports, "_check_kernel", lambda name: None)
    ipynb, html = Sentinel(tmp_path / "ipynb.txt"), Sentinel(tmp_path / "html.txt")
    (done / "report.ipynb").symlink_to(ipynb.path)
    (done / "report.html").symlink_to(html.path)
    (done / "report.html.tmp").symlink_to(html.path)
    path = bn.BatchJob(done.parent / "data.parquet", done, chunk_size=CHUNK).report()
    assert ipynb.unchanged() and html.unchanged()
    assert not path.is_symlink() and "report" in path.read_text()
    assert not (done / "report.html").is_symlink() and "report" in (done / "report.html").read_text()


@pytest.mark.parametrize(
    "name", ["../sentinel.txt", "/etc/hostname", "part-000000.parquet/../../x", "part-000009.parquet"]
)
def test_part_names_from_a_state_are_confined_to_the_output(tmp_path, done, source, sentinel, name):
    with sqlite3.connect(state_path(done)) as conn:
        conn.execute("UPDATE chunks SET part = ? WHERE idx = 0", (name,))
    for action in (lambda: bn.BatchJob(source, done, chunk_size=CHUNK).read().collect(),
                   lambda: bn.BatchJob(source, done, chunk_size=CHUNK).verify(),
                   lambda: run(source, done, restart=True),
                   lambda: run(source, done)):  # fmt: skip
        with pytest.raises(bn.JobStateError, match=r"names .* as the part of chunk 0"):
            action()
    assert sentinel.unchanged()


# --- 2. delete and overwrite only what batchnb wrote ------------------------------------------------


def test_restart_deletes_only_the_parts_the_state_recorded(done, source):
    spark = done / "part-00000-1b2c.snappy.parquet"
    notes = done / "part-notes.txt"
    spark.write_bytes(b"spark")
    notes.write_text("notes")
    # a crash's temp file is batchnb's; a file of another name in its temp dir is not
    (done / "_batchnb" / "tmp").mkdir(exist_ok=True)
    (done / "_batchnb" / "tmp" / "tmp-000001-0123abcd.parquet").write_bytes(b"half")
    (done / "_batchnb" / "tmp" / "keep.txt").write_text("not ours")
    result = run(source, done, restart=True)
    assert result.ok and result.rows_out == N_ROWS
    assert spark.read_bytes() == b"spark" and notes.read_text() == "notes"
    assert sorted(p.name for p in (done / "_batchnb" / "tmp").iterdir()) == ["keep.txt"]


def test_restart_with_a_stale_state_deletes_its_recorded_parts(tmp_path, done, source):
    other = write_source(tmp_path / "other.parquet", n=1_500)  # another job: 2 chunks
    result = run(other, done, restart=True)
    assert result.ok and result.chunks_total == 2
    assert sorted(p.name for p in done.glob("part-*")) == ["part-000000.parquet", "part-000001.parquet"]


def test_a_non_empty_directory_without_a_job_is_refused(tmp_path, source, sentinel):
    out = tmp_path / "mine"
    out.mkdir()
    own = Sentinel(out / "part-000000.parquet")
    (out / "notes.txt").write_text("x")
    for action in (lambda: run(source, out), lambda: run(source, out, restart=True),
                   lambda: bn.BatchJob(source, out, chunk_size=CHUNK).plan()):  # fmt: skip
        with pytest.raises(bn.JobStateError, match=r"not empty and holds no batchnb job \(notes.txt, part-000000"):
            action()
    assert own.unchanged() and not (out / "_batchnb").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(source, empty).ok and run(source, tmp_path / "missing" / "deep").ok


def test_an_output_that_overlaps_the_source_is_a_config_error(tmp_path, done, source):
    before = {p: p.read_bytes() for p in done.glob("part-*")}
    with pytest.raises(bn.ConfigError, match="overlaps the source"):
        bn.BatchJob(done, done)  # output == source: never deleted with restart, never overwritten
    with pytest.raises(bn.ConfigError, match="overlaps the source"):
        bn.BatchJob(done, done / "inner")
    with pytest.raises(bn.ConfigError, match="overlaps the source"):
        bn.BatchJob(source, tmp_path)  # the output contains the source
    with pytest.raises(bn.ConfigError, match="overlaps the source"):
        bn.BatchJob(str(tmp_path / "runs" / "*" / "part-*"), tmp_path / "runs" / "b")  # would read its own parts
    assert {p: p.read_bytes() for p in done.glob("part-*")} == before
    # known only once the glob is resolved: a file the pattern finds lies inside the output
    (tmp_path / "dd").mkdir()
    write_source(tmp_path / "dd" / "x.parquet")
    job = bn.BatchJob(str(tmp_path / "d*" / "x.parquet"), tmp_path / "dd", chunk_size=CHUNK, engine="sequential")
    with pytest.raises(bn.ConfigError, match="overlaps the source"):
        job.run(progress=None)
    # a job's output is still the source of another job
    second = run(done, tmp_path / "second")
    assert second.ok and second.rows_out == N_ROWS


# --- 3. paths: escaped URIs, read-only storage ------------------------------------------------------


@pytest.mark.parametrize("name", ["out#1", "out?x=1", "out%41", "out with space", "out%2F#?x"])
def test_outputs_with_uri_characters_keep_their_state_inside(tmp_path, source, monkeypatch, name):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    result = run(source, name)
    assert result.ok and result.rows_out == N_ROWS
    assert (work / name / "_batchnb" / "state.sqlite").is_file()
    assert [p.name for p in work.iterdir()] == [name]
    assert bn.status(name).status == "succeeded"
    assert bn.BatchJob(source, name, chunk_size=CHUNK).read().collect().height == N_ROWS


@contextlib.contextmanager
def read_only_mount(path: Path):
    """A tmpfs at `path` that the body may make read-only with remount(): root ignores chmod, not a mount."""
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not permitted here")

    def remount() -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)

    try:
        yield remount
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_finished_output_on_read_only_storage_is_read_verified_and_reported(tmp_path, source, monkeypatch):
    import nbformat

    with read_only_mount(tmp_path / "ro") as remount:
        out = tmp_path / "ro" / "out"
        assert run(source, out).ok
        remount()
        with pytest.raises(OSError):
            (out / "probe").write_text("x")
        progress = bn.status(out)
        assert progress.status == "succeeded" and progress.rows_done == N_ROWS
        job = bn.BatchJob(source, out, chunk_size=CHUNK)
        assert job.read().collect().height == N_ROWS
        assert job.verify().ok
        assert ChunkMonitor(out).board().chunks_total == 3
        data = reports.load(out)
        assert data.status == "succeeded" and data.chunks.height == 3

        def execute_notebook(template, path, parameters, **kwargs):
            loaded = reports.load(parameters["output_dir"])
            cell = nbformat.v4.new_markdown_cell(f"{loaded.status} {loaded.result.rows_out}")
            nbformat.write(nbformat.v4.new_notebook(cells=[cell]), path)

        monkeypatch.setattr("papermill.execute_notebook", execute_notebook)
        monkeypatch.setattr(reports, "_check_kernel", lambda name: None)
        with pytest.raises(bn.ConfigError, match=r"cannot write the report into the output.*pass `path=`"):
            job.report()
        path = job.report(tmp_path / "elsewhere" / "report.ipynb")
        assert f"succeeded {N_ROWS}" in path.read_text() and path.with_suffix(".html").is_file()


def test_a_state_that_cannot_be_opened_read_write_is_opened_immutable(done, monkeypatch):
    """What read-only storage does to a WAL state: mode=ro cannot create -shm; with no -wal, immutable reads."""
    opened = []

    def read_only_storage(uri, timeout):
        opened.append(uri)
        if "immutable=1" not in uri:
            raise sqlite3.OperationalError("unable to open database file")
        return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)

    monkeypatch.setattr(store, "_open", read_only_storage)
    assert bn.status(done).status == "succeeded"
    assert opened[-1].endswith("?mode=ro&immutable=1")
    (done / "_batchnb" / "state.sqlite-wal").write_bytes(b"uncommitted")  # a writer may be active: no shortcut
    with pytest.raises(bn.JobStateError, match=r"cannot open the job state.*unable to open"):
        bn.status(done)


def test_a_damaged_state_is_an_error_not_an_empty_board(done):
    (done / "_batchnb" / "state.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(bn.JobStateError, match=r"state.sqlite"):
        bn.status(done)
    with pytest.raises(bn.JobStateError, match=r"state.sqlite"):
        ChunkMonitor(done).board()


# --- 4. and 5. URLs and pipeline names --------------------------------------------------------------


@pytest.mark.parametrize("url", ["file:///tmp/x", "memory://x"])
def test_an_output_url_that_is_no_object_store_is_refused(tmp_path, source, monkeypatch, url):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(bn.ConfigError, match="give a path"):
        bn.BatchJob(source, url)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.parquet"]


@pytest.mark.parametrize("url", ["s3://bucket/x", "gs://b/out"])
def test_an_object_store_output_is_never_a_local_folder(tmp_path, source, monkeypatch, url):
    """Accepted (tests/test_object_store_output.py runs them); constructing the job touches nothing."""
    monkeypatch.chdir(tmp_path)
    job = bn.BatchJob(source, url)
    assert job.output == url and job.config.name == url.rsplit("/", 1)[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.parquet"]


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "", "x\\y"])
def test_a_pipeline_name_is_one_safe_file_name(tmp_path, name):
    with pytest.raises(bn.ConfigError, match="must be a plain name"):
        Pipeline(name, state_dir=tmp_path / "state")
    pipe = Pipeline("nightly", state_dir=tmp_path / "state")
    with pytest.raises(bn.ConfigError, match="step name"):
        pipe.notebook(tmp_path / "nb.ipynb", name="../../escape")


@pytest.mark.parametrize(("table", "column"), [("meta", "value"), ("chunks", "status"), ("chunks", "timings")])
def test_bytes_where_the_state_holds_text_are_a_job_state_error(done, table, column):
    with sqlite3.connect(state_path(done)) as conn:
        conn.execute(f"UPDATE {table} SET {column} = CAST(? AS TEXT)", (b"\x80\x05payload",))
    actions = [lambda: reports.load(done)]  # reads every table
    actions += [lambda: bn.JobResult.from_state(done)] if column != "timings" else []
    actions += [lambda: bn.status(done)] if table == "meta" else []
    for action in actions:
        with pytest.raises(
            bn.JobStateError, match=r"job state .*(bytes where batchnb writes text|value batchnb|unread)"
        ):
            action()


def test_a_staged_copy_and_its_origin_are_never_written_through_links(tmp_path, sentinel):
    import gzip

    source = tmp_path / "data.csv.gz"
    source.write_bytes(gzip.compress(b"a,b\n" + b"".join(b"%d,%d\n" % (i, i % 7) for i in range(N_ROWS))))
    out = tmp_path / "out"
    assert run(source, out).ok
    staged = [p for p in (out / "_batchnb" / "converted").rglob("*") if p.is_file()]
    assert len(staged) == 1  # the copy (the file it stands for is named in the recorded dataset)
    for path in staged:
        path.unlink()
        path.symlink_to(sentinel.path)
    os.utime(source, ns=(2_000_000_000, 2_000_000_000))  # a new version: staged again
    assert run(source, out, restart=True).ok
    assert sentinel.unchanged() and not any(p.is_symlink() for p in staged)
