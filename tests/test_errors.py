"""Every batchnb error, and bn.ChunkError, survives pickle and cloudpickle (errors cross process boundaries).

DESIGN.md section 5 ("Errors") and section 1 (JobResult.errors).
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import cloudpickle
import polars as pl
import pytest

import batchnb as bn

ERROR_CLASSES = [bn.BatchError, bn.ConfigError, bn.SourceError, bn.JobStateError, bn.EngineError]
PICKLERS = {
    "pickle": (pickle.dumps, pickle.loads),
    "pickle-protocol-2": (lambda obj: pickle.dumps(obj, protocol=2), pickle.loads),
    "cloudpickle": (cloudpickle.dumps, cloudpickle.loads),
    "cloudpickle-then-pickle": (cloudpickle.dumps, pickle.loads),
}


def roundtrip(obj, how: str):
    dumps, loads = PICKLERS[how]
    return loads(dumps(obj))


def sample_chunk_error(**overrides) -> bn.ChunkError:
    fields = dict(
        chunk=4,
        attempts=3,
        type="ZeroDivisionError",
        message="division by zero in column 'amount'",
        traceback='Traceback (most recent call last):\n  File "x.py", line 1, in f\nZeroDivisionError: division by zero\n',
        rows=(400_000, 500_000),
    )
    fields.update(overrides)
    return bn.ChunkError(**fields)


# --- the hierarchy ---------------------------------------------------------------------------------------


def test_hierarchy():
    for cls in ERROR_CLASSES:
        assert issubclass(cls, bn.BatchError)
        assert issubclass(cls, Exception)
    assert issubclass(bn.ConfigError, ValueError)
    for cls in (bn.SourceError, bn.JobStateError, bn.EngineError):
        assert not issubclass(cls, bn.ConfigError)


# --- pickling the errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", PICKLERS)
@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_error_round_trip(cls, how):
    message = f"{cls.__name__}: source file 'data/tx.parquet' does not exist: check the path"
    err = cls(message)
    back = roundtrip(err, how)
    assert type(back) is cls
    assert str(back) == message
    assert back.args == (message,)
    assert isinstance(back, bn.BatchError)
    if cls is bn.ConfigError:
        assert isinstance(back, ValueError)
    with pytest.raises(cls, match="does not exist"):
        raise back


@pytest.mark.parametrize("how", PICKLERS)
@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_error_with_several_or_no_args(cls, how):
    for args in ((), ("first", 2, ("third",)), ("ünïcödé ✓ '\"\n",)):
        back = roundtrip(cls(*args), how)
        assert type(back) is cls
        assert back.args == args
        assert str(back) == str(cls(*args))


@pytest.mark.parametrize("how", PICKLERS)
def test_errors_raised_by_batchnb_round_trip(tmp_path, how):
    """The real errors a user meets, caught and pickled as a worker or a queue would."""
    raised: list[bn.BatchError] = []
    with pytest.raises(bn.ConfigError) as config_err:
        bn.BatchJob(tmp_path / "d.parquet", tmp_path / "out", chunk_size=10)
    raised.append(config_err.value)
    with pytest.raises(bn.SourceError) as source_err:
        bn.BatchJob(tmp_path / "missing.parquet", tmp_path / "out", engine="sequential").run(progress=None)
    raised.append(source_err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(bn.JobStateError) as state_err:
        bn.status(tmp_path / "empty")
    raised.append(state_err.value)
    for err in raised:
        back = roundtrip(err, how)
        assert type(back) is type(err)
        assert str(back) == str(err)
        assert back.args == err.args
    assert "chunk_size" in str(roundtrip(config_err.value, how))
    assert "missing.parquet" in str(roundtrip(source_err.value, how))


def test_errors_cross_a_process_boundary(tmp_path):
    """Pickled here, unpickled in a fresh interpreter, pickled back: type, message and ValueError-ness survive."""
    errors = [cls(f"{cls.__name__} about 'x.parquet'") for cls in ERROR_CLASSES]
    chunk_error = sample_chunk_error()
    payload = tmp_path / "payload.pkl"
    payload.write_bytes(pickle.dumps((errors, chunk_error)))
    script = (
        "import pickle, sys\n"
        "errors, ce = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "import batchnb as bn\n"
        "assert isinstance(errors[1], ValueError) and all(isinstance(e, bn.BatchError) for e in errors)\n"
        "assert isinstance(ce, bn.ChunkError)\n"
        "sys.stdout.buffer.write(pickle.dumps(([(type(e).__name__, str(e)) for e in errors], ce.to_dict(), errors)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(payload)], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    names_messages, chunk_dict, errors_back = pickle.loads(proc.stdout)
    assert names_messages == [(type(e).__name__, str(e)) for e in errors]
    assert bn.ChunkError.from_dict(chunk_dict) == chunk_error
    assert [type(e) for e in errors_back] == ERROR_CLASSES
    assert [str(e) for e in errors_back] == [str(e) for e in errors]


def test_errors_raised_in_a_process_pool_worker(tmp_path):
    """batchnb errors raised inside a spawned worker reach the driver with their class and message."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from batchnb.config import parse_memory
    from batchnb.sources import resolve_paths

    missing = str(tmp_path / "gone.parquet")
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        config_future = pool.submit(parse_memory, "lots")
        source_future = pool.submit(resolve_paths, missing)
        with pytest.raises(bn.ConfigError, match="memory_limit") as config_err:
            config_future.result(timeout=120)
        with pytest.raises(bn.SourceError, match=r"gone\.parquet"):
            source_future.result(timeout=120)
    assert isinstance(config_err.value, ValueError)


# --- ChunkError -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", PICKLERS)
@pytest.mark.parametrize("rows", [(400_000, 500_000), None])
def test_chunk_error_round_trip(how, rows):
    err = sample_chunk_error(rows=rows)
    back = roundtrip(err, how)
    assert type(back) is bn.ChunkError
    assert back == err
    assert (back.chunk, back.attempts, back.type, back.message, back.traceback, back.rows) == (
        4, 3, "ZeroDivisionError", "division by zero in column 'amount'", err.traceback, rows,
    )  # fmt: skip
    assert str(back) == str(err)
    assert "chunk 4" in str(back) and "3 attempt" in str(back) and "ZeroDivisionError" in str(back)


def test_chunk_error_is_frozen_and_json_round_trips():
    import dataclasses

    err = sample_chunk_error()
    with pytest.raises(dataclasses.FrozenInstanceError):
        err.chunk = 5
    data = json.loads(json.dumps(err.to_dict()))
    back = bn.ChunkError.from_dict(data)
    assert back == err
    assert isinstance(back.rows, tuple)
    assert bn.ChunkError.from_dict(json.loads(json.dumps(sample_chunk_error(rows=None).to_dict()))).rows is None


@pytest.mark.parametrize("how", PICKLERS)
def test_chunk_error_from_a_failed_job_round_trips(tmp_path, how):
    src = tmp_path / "d.parquet"
    pl.DataFrame({"a": [float(i) for i in range(2_000)]}).write_parquet(src)

    def broken(df):
        if df.height and df["a"][0] == 1_000.0:
            return df.with_columns(ratio=pl.col("a") / pl.lit("zero"))  # a polars error, with its own message
        return df.with_columns(ratio=pl.col("a"))

    result = bn.BatchJob(src, tmp_path / "out", detector=broken, chunk_size=1_000, engine="sequential", retries=0).run(
        progress=None
    )
    assert result.status == "failed"
    [err] = result.errors
    back = roundtrip(err, how)
    assert back == err
    assert back.chunk == 1 and back.rows == (1_000, 2_000) and back.attempts == 1
    assert back.type and back.message and "Traceback" in back.traceback
    # the whole result (with its errors) pickles too, e.g. to hand it to another process
    result_back = roundtrip(result, how)
    assert result_back.errors == result.errors
    assert result_back.status == "failed"
    assert Path(result_back.output) == Path(result.output)
