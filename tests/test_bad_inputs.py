"""Every bad input a user can make: the exact error class, a message that names the thing and says what to do.

DESIGN.md sections 1 ("Job identity, resume and validation", "Format details") and 5 ("Errors").
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading
from pathlib import Path

import polars as pl
import pytest

import batchnb as bn
from batchnb.record.status import ChunkStatus
from batchnb.record.store import JobState

N_ROWS = 3_000
CHUNK = 1_000


# --- helpers (local to this file) ------------------------------------------------------------------


def frame(n: int = N_ROWS) -> pl.DataFrame:
    """Two numeric features and a string label; row i has a == i so chunks are easy to recognise."""
    return pl.DataFrame(
        {
            "a": [float(i) for i in range(n)],
            "b": [float((i * 7) % 13) for i in range(n)],
            "label": [f"r{i}" for i in range(n)],
        }
    )


def write_parquet(path: Path, n: int = N_ROWS) -> Path:
    frame(n).write_parquet(path)
    return path


def write_csv_lines(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def numeric_csv_rows(n: int = N_ROWS) -> list[str]:
    return [f"{i},{(i * 7) % 13}" for i in range(n)]


def parts(output: Path) -> list[str]:
    return sorted(p.name for p in output.glob("part-*"))


def check_message(
    err: BaseException | str, *, names: tuple[str, ...] = (), hints: tuple[tuple[str, ...], ...] = ()
) -> str:
    """Every string in `names` appears; for each tuple in `hints`, at least one of its strings appears."""
    msg = str(err)
    low = msg.lower()
    for needle in names:
        assert needle.lower() in low, f"{needle!r} is not named in the message: {msg!r}"
    for options in hints:
        assert any(o.lower() in low for o in options), f"none of {options!r} in the message: {msg!r}"
    return msg


def run(job: bn.BatchJob, **kwargs) -> bn.JobResult:
    return job.run(progress=None, **kwargs)


FAST_BACKOFF = bn.Backoff(base=0.0, jitter=False)


# --- construction opens nothing --------------------------------------------------------------------


def test_construction_does_not_open_source(tmp_path):
    src = tmp_path / "later.parquet"
    out = tmp_path / "out"
    job = bn.BatchJob(src, out, engine="sequential", chunk_size=CHUNK)  # the file does not exist yet: fine
    assert job.output == str(out)
    assert not out.exists(), "construction must not create the output directory"
    # a list of not-yet-existing files and a glob are fine too
    bn.BatchJob([tmp_path / "x1.parquet", tmp_path / "x2.parquet"], tmp_path / "o2")
    bn.BatchJob(str(tmp_path / "future-*.parquet"), tmp_path / "o3")

    # plan() and run() do open it, and say which file is missing
    with pytest.raises(bn.SourceError) as plan_err:
        job.plan()
    check_message(plan_err.value, names=("later.parquet",))
    with pytest.raises(bn.SourceError):
        run(job)

    # once the pipeline's previous step has written it, the same job object runs
    write_parquet(src)
    result = run(job)
    assert result.status == "succeeded"
    assert result.rows_out == N_ROWS


def test_missing_file_is_source_error(tmp_path):
    job = bn.BatchJob(tmp_path / "nope.parquet", tmp_path / "out", engine="sequential")
    with pytest.raises(bn.SourceError) as err:
        run(job)
    assert type(err.value) is bn.SourceError
    check_message(
        err.value,
        names=("nope.parquet",),
        hints=(("not exist", "does not exist", "not found", "no such"), ("check", "path")),
    )
    assert parts(tmp_path / "out") == []


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl", ".feather"])
def test_zero_byte_file_is_source_error(tmp_path, suffix):
    src = tmp_path / f"empty{suffix}"
    src.write_bytes(b"")
    with pytest.raises(bn.SourceError) as err:
        run(bn.BatchJob(src, tmp_path / "out", engine="sequential"))
    assert type(err.value) is bn.SourceError
    check_message(err.value, names=(src.name,), hints=(("empty", "0 bytes"),))


# --- header-only CSV: a valid empty dataset --------------------------------------------------------


def _check_empty_result(result: bn.JobResult, expected_columns: list[str]) -> pl.DataFrame:
    assert result.status == "succeeded"
    assert result.chunks_total == 0
    assert result.rows_out == 0
    assert result.rows_in == 0
    out = result.read().collect()
    assert out.height == 0
    assert out.columns == expected_columns
    return out


def test_header_only_csv_is_a_valid_empty_dataset(tmp_path):
    """DESIGN: "a header-only CSV is a valid empty dataset (0 chunks, rows_out == 0, status succeeded)"."""
    src = tmp_path / "header_only.csv"
    src.write_text("a,b\n")
    result = run(bn.BatchJob(src, tmp_path / "out", engine="sequential", chunk_size=CHUNK))
    _check_empty_result(result, ["a", "b", "anomaly_score", "is_anomaly"])


def test_header_only_csv_with_schema_overrides(tmp_path):
    src = tmp_path / "header_only.csv"
    src.write_text("a,b,label\n")
    job = bn.BatchJob(
        src, tmp_path / "out", engine="sequential", chunk_size=CHUNK,
        read_options={"schema_overrides": {"a": pl.Float64, "b": pl.Int64}},
    )  # fmt: skip
    out = _check_empty_result(run(job), ["a", "b", "label", "anomaly_score", "is_anomaly"])
    assert out.schema["a"] == pl.Float64
    assert out.schema["anomaly_score"] == pl.Float64
    assert out.schema["is_anomaly"] == pl.Boolean


def test_header_only_csv_with_callable_detector(tmp_path):
    src = tmp_path / "header_only.csv"
    src.write_text("a,b\n")
    job = bn.BatchJob(
        src, tmp_path / "out", detector=lambda df: df.with_columns(flag=pl.lit(True)), engine="sequential"
    )
    _check_empty_result(run(job), ["a", "b", "flag"])


# --- corrupt and ragged files ----------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_parquet_is_source_error(tmp_path, damage):
    good = write_parquet(tmp_path / "good.parquet")
    src = tmp_path / "broken.parquet"
    data = good.read_bytes()
    src.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"this is not parquet at all\n" * 50)
    with pytest.raises(bn.SourceError) as err:
        run(bn.BatchJob(src, tmp_path / "out", engine="sequential"))
    assert type(err.value) is bn.SourceError
    check_message(err.value, names=("broken.parquet",), hints=(("parquet",), ("corrupt", "complete", "not a parquet")))
    assert parts(tmp_path / "out") == []


def test_ragged_csv_line_fails_its_chunk(tmp_path):
    """A record with more fields than the header fails its chunk (naming file and line); the job goes on."""
    rows = numeric_csv_rows()
    bad_row = 1_500  # in chunk 1
    rows[bad_row] = "1,2,3"
    src = write_csv_lines(tmp_path / "ragged.csv", "a,b", rows)
    result = run(bn.BatchJob(src, tmp_path / "out", engine="sequential", chunk_size=CHUNK, retries=0))
    assert result.status == "failed"
    assert result.chunks_failed == 1
    assert result.chunks_done == 2
    error = result.errors[0]
    assert error.chunk == 1
    check_message(
        error.message,
        names=("ragged.csv", f"line {bad_row + 2}"),  # line 1 is the header
        hints=(("field",), ("fix", "truncate_ragged_lines")),
    )
    assert_only_the_failed_chunk_is_missing(result, len(rows), bad_row)


def assert_only_the_failed_chunk_is_missing(result, n: int, bad_row: int) -> None:
    """Every record of the finished chunks is in the output once: all ids but one run around the bad line."""
    ids = result.read().collect().get_column("a").to_list()
    missing = sorted(set(range(n)) - set(ids))
    assert len(ids) == len(set(ids)) and bad_row in missing and missing == list(range(missing[0], missing[-1] + 1))
    failed = next(e for e in result.errors)
    assert len(missing) < 2 * (failed.rows[1] - failed.rows[0])  # about one chunk (CSV chunk rows are estimates)


def test_ragged_csv_line_in_a_large_file_names_file_and_line(tmp_path):
    """Same contract on a file large enough that the bad line sits outside the type-inference and fit samples."""
    from batchnb.sources.base import sample_starts

    n, fit_sample = 50_000, 1_000
    sampled = set()
    for lo, hi in sample_starts(n, 20_000, 0) + sample_starts(n, fit_sample, 0):
        sampled.update(range(lo, hi))
    bad_row = next(i for i in range(10_000, 20_000) if i not in sampled and i % 10_000 not in (0, 9_999))
    rows = numeric_csv_rows(n)
    rows[bad_row] = "1,2,3"
    src = write_csv_lines(tmp_path / "big_ragged.csv", "a,b", rows)
    job = bn.BatchJob(src, tmp_path / "out", engine="sequential", chunk_size=10_000, retries=0, fit_sample=fit_sample)
    result = run(job)
    assert result.status == "failed"
    assert len(result.errors) == 1 and result.chunks_failed == 1
    check_message(result.errors[0].message, names=("big_ragged.csv", f"line {bad_row + 2}"))
    assert result.chunks_done == result.chunks_total - 1
    assert_only_the_failed_chunk_is_missing(result, n, bad_row)


@pytest.mark.parametrize("short_row", [1_500, 1_000, 0], ids=["mid-chunk", "first-of-chunk", "first-of-file"])
def test_short_csv_line_gets_nulls(tmp_path, short_row):
    """A record with fewer fields than the header gets nulls, wherever it sits."""
    rows = numeric_csv_rows()
    rows[short_row] = f"{short_row}"
    src = write_csv_lines(tmp_path / "short.csv", "a,b", rows)
    result = run(bn.BatchJob(src, tmp_path / "out", engine="sequential", chunk_size=CHUNK, retries=0))
    assert result.status == "succeeded", result.errors
    out = result.read().collect()
    assert out.height == N_ROWS
    nulls = out.filter(pl.col("b").is_null())
    assert nulls["a"].to_list() == [short_row]
    assert out["a"].to_list() == list(range(N_ROWS))  # input order kept


# --- columns -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["columns", "keep"])
def test_unknown_column_names_the_column(tmp_path, option):
    src = write_parquet(tmp_path / "data.parquet")
    job = bn.BatchJob(src, tmp_path / "out", engine="sequential", **{option: ["a", "amount_usd"]})  # opens nothing yet
    with pytest.raises(bn.ConfigError) as err:
        run(job)
    assert type(err.value) is bn.ConfigError
    check_message(err.value, names=("amount_usd", option, "label"))  # the bad name, the option, the real columns
    assert parts(tmp_path / "out") == []


def test_non_numeric_feature_column(tmp_path):
    src = write_parquet(tmp_path / "data.parquet")
    with pytest.raises(bn.ConfigError) as err:
        run(bn.BatchJob(src, tmp_path / "out", columns=["a", "label"], engine="sequential"))
    assert type(err.value) is bn.ConfigError
    check_message(err.value, names=("label", "numeric"), hints=(("columns",),))
    assert parts(tmp_path / "out") == []


def test_no_numeric_column_at_all(tmp_path):
    src = tmp_path / "text.parquet"
    pl.DataFrame({"name": ["x", "y", "z"], "city": ["a", "b", "c"]}).write_parquet(src)
    with pytest.raises(bn.ConfigError) as err:
        run(bn.BatchJob(src, tmp_path / "out", engine="sequential"))
    check_message(err.value, names=("numeric", "columns"))


# --- option values -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [999, 1_000_001, 0, -5])
def test_chunk_size_out_of_range(tmp_path, value):
    with pytest.raises(bn.ConfigError) as err:
        bn.BatchJob(tmp_path / "d.parquet", tmp_path / "out", chunk_size=value)
    assert type(err.value) is bn.ConfigError
    msg = check_message(err.value, names=("chunk_size",))
    assert ("1_000" in msg or "1,000" in msg or "1000" in msg) and (
        "1_000_000" in msg or "1,000,000" in msg or "1000000" in msg
    ), msg


@pytest.mark.parametrize("value", [1000.0, "1000", None, True, 1e4])
def test_chunk_size_not_an_int(tmp_path, value):
    with pytest.raises(bn.ConfigError) as err:
        bn.BatchJob(tmp_path / "d.parquet", tmp_path / "out", chunk_size=value)
    check_message(err.value, names=("chunk_size",), hints=(("integer", "int"),))


@pytest.mark.parametrize("value", [1_000, 1_000_000])
def test_chunk_size_bounds_are_accepted(tmp_path, value):
    assert bn.BatchJob(tmp_path / "d.parquet", tmp_path / "out", chunk_size=value).config.chunk_size == value


@pytest.mark.parametrize(
    ("option", "bad", "valid"),
    [
        ("engine", "spark", ["sequential", "threads", "processes", "dask", "ray"]),
        ("detector", "lof", ["zscore", "mad", "iqr", "isolation_forest"]),
        ("format", "xlsx", ["csv", "parquet", "json", "pickle", "hdf5", "feather"]),
        ("output_format", "xlsx", ["parquet", "csv", "json", "feather", "hdf5", "pickle"]),
    ],
)
def test_unknown_name_lists_valid_names(tmp_path, option, bad, valid):
    with pytest.raises(bn.ConfigError) as err:
        bn.BatchJob(tmp_path / "d.parquet", tmp_path / "out", **{option: bad})
    assert type(err.value) is bn.ConfigError
    assert isinstance(err.value, ValueError)
    check_message(err.value, names=(bad, *valid))
    if option == "detector":
        check_message(err.value, names=tuple(bn.list_detectors()))


def test_unknown_option_keyword(tmp_path):
    with pytest.raises(bn.ConfigError) as err:
        bn.BatchJob(tmp_path / "d.parquet", tmp_path / "out", chunksize=1000)  # typo of chunk_size
    check_message(err.value, names=("chunksize", "chunk_size"))


def test_bad_progress_mode(tmp_path):
    job = bn.BatchJob(write_parquet(tmp_path / "d.parquet"), tmp_path / "out", engine="sequential")
    with pytest.raises(bn.ConfigError) as err:
        job.run(progress="fancy")
    check_message(err.value, names=("progress", "fancy", "auto"))
    assert parts(tmp_path / "out") == []


def test_threshold_and_contamination_together(tmp_path):
    with pytest.raises(bn.ConfigError) as err:
        bn.BatchJob(tmp_path / "d.parquet", tmp_path / "out", threshold=3.0, contamination=0.01)
    assert type(err.value) is bn.ConfigError
    check_message(err.value, names=("threshold", "contamination"), hints=(("at most one", "one of", "only one"),))
    # each alone is fine
    bn.BatchJob(tmp_path / "d.parquet", tmp_path / "out", threshold=3.0)
    bn.BatchJob(tmp_path / "d.parquet", tmp_path / "out", contamination=0.01)


@pytest.mark.parametrize("value", [0.0, 0.5, 0.9, -0.1])
def test_contamination_out_of_range(tmp_path, value):
    with pytest.raises(bn.ConfigError) as err:
        bn.BatchJob(tmp_path / "d.parquet", tmp_path / "out", contamination=value)
    check_message(err.value, names=("contamination",))


# --- formats and files ---------------------------------------------------------------------------------


class _Evil:
    """Unpickling this creates a file: proof that the pickle was (not) loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_needs_allow_pickle(tmp_path):
    marker = tmp_path / "pwned.txt"
    src = tmp_path / "evil.pkl"
    src.write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(bn.SourceError) as err:
        run(bn.BatchJob(src, tmp_path / "out", engine="sequential"))
    assert type(err.value) is bn.SourceError
    check_message(err.value, names=("evil.pkl", "allow_pickle"))
    assert not marker.exists(), "the pickle was loaded before it was refused"

    good = tmp_path / "good.pkl"
    frame().to_pandas().to_pickle(good)
    with pytest.raises(bn.SourceError):
        run(bn.BatchJob(good, tmp_path / "out-good", engine="sequential"))
    result = run(bn.BatchJob(good, tmp_path / "out-good", engine="sequential", chunk_size=CHUNK, allow_pickle=True))
    assert result.status == "succeeded"
    assert result.rows_out == N_ROWS


def test_glob_matching_nothing(tmp_path):
    write_parquet(tmp_path / "data-1.parquet")
    pattern = str(tmp_path / "daat-*.parquet")
    with pytest.raises(bn.SourceError) as err:
        run(bn.BatchJob(pattern, tmp_path / "out", engine="sequential"))
    assert type(err.value) is bn.SourceError
    check_message(err.value, names=("daat-*.parquet",), hints=(("match",),))


def test_unknown_suffix_needs_format(tmp_path):
    src = write_csv_lines(tmp_path / "export.dat", "a,b", numeric_csv_rows())
    with pytest.raises(bn.ConfigError) as err:
        bn.BatchJob(src, tmp_path / "out")
    assert type(err.value) is bn.ConfigError
    check_message(err.value, names=("export.dat", "format=", "csv", "parquet"))
    result = run(bn.BatchJob(src, tmp_path / "out", format="csv", engine="sequential", chunk_size=CHUNK))
    assert result.status == "succeeded"
    assert result.rows_out == N_ROWS


def test_no_suffix_needs_format(tmp_path):
    src = write_csv_lines(tmp_path / "export", "a,b", numeric_csv_rows())
    job = bn.BatchJob(src, tmp_path / "out", engine="sequential")
    with pytest.raises(bn.BatchError) as err:
        run(job)
    assert type(err.value) in (bn.SourceError, bn.ConfigError)
    check_message(err.value, names=("export", "format="))


def test_hdf5_with_two_tables_needs_key(tmp_path):
    src = tmp_path / "store.h5"
    pdf = frame().to_pandas()
    pdf.to_hdf(src, key="train", format="table")
    pdf.iloc[:100].to_hdf(src, key="holdout", format="table")
    with pytest.raises(bn.SourceError) as err:
        run(bn.BatchJob(src, tmp_path / "out", engine="sequential", allow_pickle=True))
    assert type(err.value) is bn.SourceError
    check_message(err.value, names=("store.h5", "train", "holdout", "key"))
    result = run(
        bn.BatchJob(
            src,
            tmp_path / "out2",
            engine="sequential",
            chunk_size=CHUNK,
            read_options={"key": "holdout"},
            allow_pickle=True,
        )
    )
    assert result.status == "succeeded"
    assert result.rows_out == 100


def test_hdf5_unknown_key(tmp_path):
    src = tmp_path / "store.h5"
    frame().to_pandas().to_hdf(src, key="train", format="table")
    with pytest.raises(bn.SourceError) as err:
        run(bn.BatchJob(src, tmp_path / "out", engine="sequential", read_options={"key": "test"}, allow_pickle=True))
    check_message(err.value, names=("store.h5", "test", "train"))


# --- callables -----------------------------------------------------------------------------------------


def test_unpicklable_callable_on_processes_fails_before_any_chunk(tmp_path):
    src = write_parquet(tmp_path / "data.parquet")
    out = tmp_path / "out"
    lock = threading.Lock()

    def guarded(df: pl.DataFrame) -> pl.DataFrame:
        with lock:
            return df.with_columns(doubled=pl.col("a") * 2)

    job = bn.BatchJob(src, out, detector=guarded, engine="processes", chunk_size=CHUNK)
    with pytest.raises(bn.ConfigError) as err:
        run(job)
    assert type(err.value) is bn.ConfigError
    check_message(err.value, names=("guarded", "processes"), hints=(("pickle",), ("threads",)))
    assert parts(out) == [], "a chunk ran before the pickling check"
    assert not list(out.glob("_batchnb/tmp/*")), "a chunk started writing before the pickling check"

    # the engine may change between runs: the same job then runs on threads
    result = run(bn.BatchJob(src, out, detector=guarded, engine="threads", chunk_size=CHUNK))
    assert result.status == "succeeded"
    assert result.read().collect()["doubled"].to_list() == [2.0 * i for i in range(N_ROWS)]


def test_script_without_main_guard_on_processes_is_an_engine_error_saying_so(tmp_path):
    """Spawned workers import the main script again; without the guard they die as they start. That is
    said once, as an EngineError, with no retry spent and the job resumable once the script is fixed."""
    src = write_parquet(tmp_path / "data.parquet")
    script = tmp_path / "job.py"
    script.write_text(
        "import batchnb as bn\n"
        f"job = bn.BatchJob({str(src)!r}, 'out', detector='zscore', engine='processes', chunk_size={CHUNK})\n"
        "job.run(progress=None)\n"
    )
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("batchnb.errors.EngineError: engine 'processes'"), done.stderr[-2000:]
    assert 'if __name__ == "__main__":' in last and "while starting" in last
    with JobState.open(tmp_path / "out") as state:
        assert {c.status for c in state.chunks()} == {ChunkStatus.PENDING}  # no chunk failed: none is to blame
    assert bn.status(tmp_path / "out").status == "failed"
    guarded = script.read_text().replace("job.run(", "if __name__ == '__main__':\n    job.run(")
    script.write_text(guarded)
    subprocess.run([sys.executable, str(script)], cwd=tmp_path, check=True, capture_output=True, timeout=120)
    assert bn.status(tmp_path / "out").status == "succeeded"


def test_status_after_a_refused_start_is_not_left_planning(tmp_path):
    """A run() that raised must not leave the job looking alive to `bn.status` / `batchnb status --watch`."""
    src = write_parquet(tmp_path / "data.parquet")
    lock = threading.Lock()

    def guarded(df):
        with lock:
            return df

    with pytest.raises(bn.ConfigError):
        run(bn.BatchJob(src, tmp_path / "out", detector=guarded, engine="processes", chunk_size=CHUNK))
    assert bn.status(tmp_path / "out").status not in ("planning", "running")


def test_callable_raising_on_one_chunk(tmp_path):
    src = write_parquet(tmp_path / "data.parquet")
    out = tmp_path / "out"

    def fragile(df: pl.DataFrame) -> pl.DataFrame:
        if df.height and df["a"][0] == float(CHUNK):
            raise ArithmeticError(f"cannot score a block starting at {df['a'][0]}")
        return df.with_columns(score=pl.col("a") + 1)

    retries = 2
    job = bn.BatchJob(
        src, out, detector=fragile, engine="threads", chunk_size=CHUNK, retries=retries, backoff=FAST_BACKOFF
    )
    result = run(job)
    assert result.status == "failed"
    assert (result.chunks_total, result.chunks_done, result.chunks_failed) == (3, 2, 1)
    assert result.rows_out == 2 * CHUNK
    # the other parts are kept and readable, in input order
    assert parts(out) == ["part-000000.parquet", "part-000002.parquet"]
    back = result.read().collect()
    assert back["a"].to_list() == [float(i) for i in [*range(0, CHUNK), *range(2 * CHUNK, 3 * CHUNK)]]
    assert back["score"].to_list() == [a + 1 for a in back["a"].to_list()]
    # the error says what, where and why
    assert len(result.errors) == 1
    error = result.errors[0]
    assert isinstance(error, bn.ChunkError)
    assert error.chunk == 1
    assert error.attempts == 1 + retries
    assert error.type == "ArithmeticError"
    assert error.message == "cannot score a block starting at 1000.0"
    assert error.rows == (CHUNK, 2 * CHUNK)
    assert "Traceback" in error.traceback
    assert "fragile" in error.traceback and "ArithmeticError: cannot score a block" in error.traceback
    assert "chunk 1" in str(error) and "ArithmeticError" in str(error)
    # the same error is readable later from the state, from any process
    assert bn.BatchJob(src, out, detector=fragile, engine="threads", chunk_size=CHUNK).result().errors == [error]


def test_callable_returning_non_dataframe(tmp_path):
    src = write_parquet(tmp_path / "data.parquet")

    def count_rows(df: pl.DataFrame) -> int:
        return df.height

    result = run(
        bn.BatchJob(src, tmp_path / "out", detector=count_rows, engine="sequential", chunk_size=CHUNK, retries=0)
    )
    assert result.status == "failed"
    assert result.chunks_failed == 3
    assert parts(tmp_path / "out") == []
    error = result.errors[0]
    assert error.type == "TypeError"
    check_message(error.message, names=("count_rows", "int", "DataFrame"))


def test_callable_returning_pandas_is_accepted(tmp_path):
    src = write_parquet(tmp_path / "data.parquet")
    result = run(
        bn.BatchJob(src, tmp_path / "out", detector=lambda df: df.to_pandas(), engine="sequential", chunk_size=CHUNK)
    )
    assert result.status == "succeeded"
    assert result.rows_out == N_ROWS


# --- concurrency ---------------------------------------------------------------------------------------


def test_second_concurrent_run_is_job_state_error(tmp_path):
    src = write_parquet(tmp_path / "data.parquet")
    out = tmp_path / "out"
    entered, release = threading.Event(), threading.Event()

    def gated(df: pl.DataFrame) -> pl.DataFrame:
        if df.height:
            entered.set()
            release.wait(20)
        return df

    first = bn.BatchJob(src, out, detector=gated, engine="sequential", chunk_size=CHUNK)
    first.start(progress=None)
    try:
        assert entered.wait(20), "the first job never started a chunk"
        for second in (
            bn.BatchJob(src, out, detector=gated, engine="sequential", chunk_size=CHUNK),  # the same job
            bn.BatchJob(src, out, engine="threads", chunk_size=CHUNK),  # another job
        ):
            for restart in (False, True):
                with pytest.raises(bn.JobStateError) as err:
                    run(second, restart=restart)
                assert type(err.value) is bn.JobStateError
                check_message(err.value, names=(str(out),), hints=(("already running", "running"), ("wait", "cancel")))
    finally:
        release.set()
    result = first.wait(30)
    assert result.status == "succeeded"
    assert result.rows_out == N_ROWS
    assert parts(out) == [f"part-{i:06d}.parquet" for i in range(3)]
    assert first.verify().ok


def test_job_state_error_for_a_dir_without_a_job(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(bn.JobStateError) as err:
        bn.status(tmp_path / "empty")
    check_message(err.value, names=("empty",), hints=(("no batchnb job", "holds no"),))
