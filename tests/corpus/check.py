"""Run one corpus entry through batchnb and judge it against an independent reader and z-score."""

from __future__ import annotations

import bz2
import glob
import gzip
import io
import lzma
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
from polars.testing import assert_frame_equal

import batchnb as bn
import batchnb.errors
from corpus.spec import Entry, Source

__all__ = ["Outcome", "judge", "reference", "zscore_reference"]

BATCHNB_ONLY = {"exact_rows", "key"}  # read_options that only batchnb reads
PASSED = ("ok", "clear error")


@dataclass(frozen=True)
class Outcome:
    """`verdict`: ok | clear error (pass); WRONG | raw exception | unclear error | unexpected error | no error
    (batchnb is wrong) | reference failed (the corpus entry itself is wrong)."""

    verdict: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.verdict in PASSED


# --------------------------------------------------------------------------------------------------
# Reference readers
# --------------------------------------------------------------------------------------------------
def files_of(source: Source) -> list[str]:
    if isinstance(source, list):
        return list(source)
    return sorted(glob.glob(source)) if any(ch in source for ch in "*?[") else [source]


def plain_bytes(path: str) -> bytes | str:
    """The file's bytes, decompressed with the standard library (or pyarrow for zstd); the path when plain."""
    lower = path.lower()
    if lower.endswith(".gz"):
        return gzip.decompress(Path(path).read_bytes())
    if lower.endswith(".bz2"):
        return bz2.decompress(Path(path).read_bytes())
    if lower.endswith(".xz"):
        return lzma.decompress(Path(path).read_bytes())
    if lower.endswith(".zst"):
        with pa.CompressedInputStream(path, "zstd") as stream:
            return stream.read()
    if lower.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            return archive.read(archive.namelist()[0])
    return path


def read_one(fmt: str, path: str, options: dict[str, Any]) -> pl.DataFrame:
    opts = {k: v for k, v in options.items() if k not in BATCHNB_ONLY}
    if fmt == "csv":
        opts.setdefault("infer_schema_length", None)  # DESIGN: types decided as reading the whole file
        if path.lower().endswith(".tsv"):
            opts.setdefault("separator", "\t")
        return pl.read_csv(plain_bytes(path), **opts)
    if fmt == "json":
        data = plain_bytes(path)
        raw = Path(data).read_bytes() if isinstance(data, str) else data
        if raw.lstrip().startswith(b"["):
            return pl.read_json(io.BytesIO(raw), **opts)
        opts.setdefault("infer_schema_length", None)
        return pl.read_ndjson(io.BytesIO(raw), **opts)
    if fmt == "parquet":
        return pl.read_parquet(path, **opts)
    if fmt == "feather":
        return pl.read_ipc(path, **opts)
    if fmt == "hdf5":
        return pl.from_pandas(pd.read_hdf(path, key=options.get("key")))
    if fmt == "pickle":
        return pl.from_pandas(pd.read_pickle(path))
    raise ValueError(fmt)


def reference(entry: Entry, source: Source) -> pl.DataFrame:
    """What Polars (pandas for HDF5 and pickle) reads with the same options; files of a glob in sorted order."""
    if entry.reference is not None:
        return entry.reference(source)
    frames = [read_one(entry.fmt, p, entry.read_options) for p in files_of(source)]
    if any(f.height for f in frames):  # a header-only file's columns have no type of their own (Null widens)
        frames = [f for f in frames if f.height]
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed")


def zscore_reference(frame: pl.DataFrame) -> np.ndarray:
    """DESIGN section 3 in numpy: per-feature mean/std (ddof=1) over every finite value, NaN = no score."""
    features = [c for c, t in frame.schema.items() if t.is_numeric() and t != pl.Boolean]
    n = frame.height
    best = np.full(n, np.nan)
    infinite = np.zeros(n, dtype=bool)
    for name in features:
        x = frame.get_column(name).cast(pl.Float64).fill_null(float("nan")).to_numpy().astype(np.float64)
        finite = np.isfinite(x)
        infinite |= np.isinf(x)
        fit = x[finite]
        if fit.size == 0:
            continue
        mean = fit.mean()
        std = fit.std(ddof=1) if fit.size > 1 else 0.0
        with np.errstate(invalid="ignore", over="ignore"):
            distance = np.abs(x - mean) / std if std > 0 and np.isfinite(std) else np.zeros(n)
        distance[~finite] = np.nan
        best = np.fmax(best, distance)
    best[infinite] = np.inf
    return best


# --------------------------------------------------------------------------------------------------
# Judging
# --------------------------------------------------------------------------------------------------
def _first_line(text: str, width: int = 160) -> str:
    line = (text.strip().splitlines() or [""])[0]
    return line if len(line) <= width else line[: width - 3] + "..."


def _judge_error(entry: Entry, error: type, message: str) -> Outcome:
    said = f"{error.__name__}: {_first_line(message)}"
    want = entry.expect
    if want.error is None:
        return Outcome("unexpected error", said)
    lowered = message.lower()
    missing = [w for w in want.words if not any(alt.lower() in lowered for alt in w.split("|"))]
    if not issubclass(error, want.error) or missing:
        return Outcome("unclear error", f"{said} (wanted {want}; missing {missing})")
    return Outcome("clear error", said)


def _compare(expected: pl.DataFrame, result: bn.JobResult) -> list[str]:
    got = result.read().collect()
    problems: list[str] = []
    if got.columns[-2:] != ["anomaly_score", "is_anomaly"]:
        return [f"no score columns at the end: {got.columns[-3:]}"]
    data = got.drop("anomaly_score", "is_anomaly")
    if result.rows_out != expected.height:
        problems.append(f"rows_out {result.rows_out} != {expected.height}")
    if data.schema != expected.schema:
        diff = {c: (str(data.schema.get(c)), str(t)) for c, t in expected.schema.items() if data.schema.get(c) != t}
        extra = [c for c in data.columns if c not in expected.schema]
        problems.append(f"dtypes (got, want) {diff}" + (f" extra {extra}" if extra else ""))
    else:
        try:
            assert_frame_equal(data, expected, check_exact=True)
        except AssertionError as exc:
            problems.append("values: " + " ".join(str(exc).split())[:200])
    if got.height == expected.height:
        problems += _compare_scores(got, expected)
    return problems


def _compare_scores(got: pl.DataFrame, expected: pl.DataFrame) -> list[str]:
    want = zscore_reference(expected)
    have = got.get_column("anomaly_score").cast(pl.Float64).fill_null(float("nan")).to_numpy()
    close = np.isclose(have, want, rtol=1e-9, atol=1e-12, equal_nan=True)
    problems = []
    if not close.all():
        i = int(np.flatnonzero(~close)[0])
        problems.append(f"anomaly_score differs in {int((~close).sum())} rows, first row {i}: {have[i]} != {want[i]}")
    flags = got.get_column("is_anomaly").fill_null(False).to_numpy()
    want_flags = np.nan_to_num(want, nan=-1.0) > 3.0
    borderline = np.abs(np.nan_to_num(want, nan=0.0) - 3.0) < 1e-9
    wrong = (flags != want_flags) & ~borderline
    if wrong.any():
        problems.append(f"is_anomaly differs in {int(wrong.sum())} rows (first {int(np.flatnonzero(wrong)[0])})")
    return problems


def judge(entry: Entry, source: Source, out: Path) -> Outcome:
    """Run the job the way a user would and say how it went."""
    kwargs: dict[str, Any] = {"read_options": entry.read_options} if entry.read_options else {}
    if entry.pass_format:
        kwargs["format"] = entry.fmt
    try:
        job = bn.BatchJob(
            source, out, detector="zscore", engine="sequential", chunk_size=entry.chunk_size, allow_pickle=True,
            **kwargs,
        )  # fmt: skip
        result = job.run(progress=None)
    except bn.BatchError as exc:
        return _judge_error(entry, type(exc), str(exc))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 -- Polars panics are BaseExceptions: any of them is a finding
        return Outcome("raw exception", f"{type(exc).__module__}.{type(exc).__name__}: {_first_line(str(exc))}")
    if result.status != "succeeded":
        first = result.errors[0] if result.errors else None
        if first is None:
            return Outcome("unexpected error", f"job {result.status} with no chunk error")
        error = getattr(batchnb.errors, first.type, None)
        if not (isinstance(error, type) and issubclass(error, bn.BatchError)):
            detail = f"chunk {first.chunk} failed with {first.type}: {_first_line(first.message)}"
            return Outcome("raw exception", detail)
        return _judge_error(entry, error, first.message)
    if not entry.expect.ok:
        return Outcome("no error", f"succeeded with {result.rows_out} rows; wanted {entry.expect}")
    try:
        expected = reference(entry, source)
    except Exception as exc:  # noqa: BLE001 -- reported as the entry's own fault
        return Outcome("reference failed", f"{type(exc).__name__}: {_first_line(str(exc))}")
    try:
        problems = _compare(expected, result)
    except Exception as exc:  # noqa: BLE001 -- batchnb's own output cannot be read back
        return Outcome("WRONG", f"output unreadable: {type(exc).__name__}: {_first_line(str(exc))}")
    return Outcome("WRONG", "; ".join(problems)) if problems else Outcome("ok")
