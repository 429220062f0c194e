"""CSV/NDJSON column types are decided once for the whole dataset, as Polars decides them reading the file.

DESIGN.md section 1, "Format details": a numeric column stays numeric however long its empty stretches are; a
value the sample did not see that breaks a type fails its chunk with a DataError naming file, line, column and
the `schema_overrides` that reads it, and following that advice works.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import batchnb as bn
from batchnb.sources.byte_ranges import sample_blocks
from batchnb.sources.csv import CSV
from batchnb.sources.json import NDJSON
from batchnb.sources.staging import Workdir
from batchnb.sources.text import INFER_BLOCK


def identity(df: pl.DataFrame) -> pl.DataFrame:
    return df


def run(src: Path, out: Path, **options) -> bn.JobResult:
    options = {"engine": "sequential", "retries": 0, "chunk_size": 1_000, **options}
    return bn.BatchJob(src, out, **options).run(progress=None)


def read_back(src: Path, out: Path, **options) -> pl.DataFrame:
    result = run(src, out, detector=identity, **options)
    assert result.status == "succeeded", result.errors
    return result.read().collect()


# --- long empty stretches ----------------------------------------------------------------------------------


def sparse_speed(path: Path, n: int, filled: list[int]) -> Path:
    """`speed` empty in every row but `filled` (a real table had it empty in 3,299 of 3,322 rows)."""
    lines = ["id,temp,speed"] + [f"{i},{20 + i % 7}.5,{f'{i / 10:.1f}' if i in filled else ''}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("n", "filled"),
    [(3_322, list(range(23))), (3_322, list(range(3_299, 3_322))), (64, list(range(62))), (60_000, [17, 31_000])],
    ids=["filled-at-the-start", "filled-at-the-end", "last-2-rows-empty", "two-values-in-a-big-file"],
)
def test_numeric_column_with_long_empty_stretches_stays_numeric(tmp_path, n, filled):
    src = sparse_speed(tmp_path / "trips.csv", n, filled)
    expected = pl.read_csv(src, infer_schema_length=None)
    assert expected.schema["speed"] == pl.Float64
    plan = bn.BatchJob(src, tmp_path / "plan").plan()
    assert plan.dataset.schema["speed"] == "Float64"
    assert_frame_equal(read_back(src, tmp_path / "out"), expected)


def test_sparse_numeric_column_is_scored(tmp_path):
    """The column is a feature: a row whose only oddity is its speed is flagged."""
    n = 3_322
    src = sparse_speed(tmp_path / "trips.csv", n, list(range(23)))
    text = src.read_text().replace("\n10,23.5,1.0\n", "\n10,23.5,99999.0\n")
    src.write_text(text)
    result = run(src, tmp_path / "out", detector="zscore", columns=None)
    assert result.status == "succeeded", result.errors
    out = result.read().collect()
    assert out.sort("anomaly_score", descending=True)["id"][0] == 10


def test_ndjson_long_null_stretch_keeps_its_type(tmp_path):
    src = tmp_path / "trips.jsonl"
    n = 20_000
    speed = [None] * (n - 3) + [1.5, 2.0, 2.5]
    pl.DataFrame({"id": range(n), "speed": speed}).write_ndjson(src)
    assert_frame_equal(read_back(src, tmp_path / "out"), pl.read_ndjson(src, infer_schema_length=None))


# --- a value the sample did not see --------------------------------------------------------------------------


def unsampled_row(fmt: CSV | NDJSON, path: Path, offsets: list[int]) -> int:
    """A row (starting at byte `offsets[row]`) in the second half of `path` that no type-inference block reads.
    Blocks depend only on the file's size: the caller keeps it when it changes the row."""
    info = fmt.inspect((str(path),), {}, workdir=Workdir(path.parent))
    sampled = [(p.start, p.stop) for p in sample_blocks(fmt._files(info), INFER_BLOCK, 0, fmt._placer(info))]
    for row in range(len(offsets) // 2, len(offsets)):
        if not any(a <= offsets[row] < b for a, b in sampled):
            return row
    raise AssertionError("every row is sampled")


@pytest.mark.parametrize(("bad", "fix"), [("abc", "String"), ("2.5", "Float64")])
def test_late_value_breaking_the_type_names_line_column_and_fix(tmp_path, bad, fix):
    n = 400_000
    src = tmp_path / "wide.csv"
    lines = [f"{i:07d},{100 + i % 800}" for i in range(n)]
    src.write_text("id,v\n" + "\n".join(lines) + "\n")
    row = unsampled_row(CSV(), src, [len("id,v\n") + i * len("0000000,123\n") for i in range(n)])
    lines[row] = f"{row:07d},{bad}"
    src.write_text("id,v\n" + "\n".join(lines) + "\n")
    assert bn.BatchJob(src, tmp_path / "plan").plan().dataset.schema["v"] == "Int64"  # the sample missed it

    result = run(src, tmp_path / "out", detector=identity, chunk_size=100_000)
    assert result.status == "failed"
    error = result.errors[0]
    assert error.type == "DataError"
    for needle in ("wide.csv", f"line {row + 2}", "'v'", repr(bad), "schema_overrides", fix):
        assert needle in error.message, (needle, error.message)

    expected = pl.read_csv(src, infer_schema_length=None)
    for dtype in (fix, getattr(pl, fix)):  # the message offers both spellings
        out = read_back(
            src, tmp_path / f"fixed-{dtype}", chunk_size=100_000, read_options={"schema_overrides": {"v": dtype}}
        )
        assert_frame_equal(out, expected.cast({"v": getattr(pl, fix)}))


def test_ndjson_broken_line_fails_its_chunk_naming_the_line(tmp_path):
    n = 3_000
    lines = [f'{{"id": {i}, "v": {i}}}' for i in range(n)]
    src = tmp_path / "events.jsonl"
    lines[2_500] = '{"id": 2500, "v": '
    src.write_text("\n".join(lines) + "\n")
    result = run(src, tmp_path / "out", detector=identity)
    assert result.status == "failed" and result.errors[0].type == "DataError"
    assert "events.jsonl, line 2501" in result.errors[0].message and "JSON" in result.errors[0].message


def test_ndjson_value_of_another_type_in_a_chunk(tmp_path):
    src = tmp_path / "events.jsonl"
    lines = [f'{{"id":{i:06d},"v":{100 + i % 800}}}\n'.replace(f"{i:06d}", f"{i:6d}") for i in range(200_000)]
    src.write_text("".join(lines))
    row = unsampled_row(NDJSON(), src, [i * len(lines[0]) for i in range(len(lines))])
    lines[row] = f'{{"id":{row:6d},"v":"x"}}\n'  # as wide as the number it replaces
    src.write_text("".join(lines))
    assert bn.BatchJob(src, tmp_path / "plan").plan().dataset.schema["v"] == "Int64"
    result = run(src, tmp_path / "out", detector=identity, chunk_size=10_000)
    messages = [e.message for e in result.errors]
    assert len(messages) == 1 and f"line {row + 1}" in messages[0] and "'v'" in messages[0], messages
    out = read_back(src, tmp_path / "fixed", chunk_size=10_000, read_options={"schema_overrides": {"v": "String"}})
    assert_frame_equal(out, pl.read_ndjson(src, schema_overrides={"v": pl.String}))


# --- encodings and bytes that are not text ----------------------------------------------------------------


def test_latin1_header_says_encoding_and_the_advice_works(tmp_path):
    src = tmp_path / "städte.csv"
    src.write_bytes(("städt,einwohner\n" + "".join(f"Zürich {i},{1000 + i}\n" for i in range(3_000))).encode("latin-1"))
    with pytest.raises(bn.SourceError) as err:
        run(src, tmp_path / "out")
    assert "UTF-8" in str(err.value) and "'encoding': 'utf8-lossy'" in str(err.value)
    out = read_back(src, tmp_path / "lossy", read_options={"encoding": "utf8-lossy"})
    assert_frame_equal(out, pl.read_csv(src, encoding="utf8-lossy"))
    result = run(src, tmp_path / "scored", read_options={"encoding": "latin-1"})
    assert result.status == "succeeded" and "einwohner" in result.read().collect().columns


@pytest.mark.parametrize("every", [1, 700], ids=["every-row", "now-and-then"])
def test_latin1_values_say_encoding_and_the_advice_works(tmp_path, every):
    """Every sampled record bad: planning says so; a few: the sample leaves them out and their chunks say so."""
    src = tmp_path / "cities.csv"
    src.write_bytes(
        b"id,city\n"
        + b"".join(f"{i},{'Zürich' if i % every == 0 else 'Bern'}\n".encode("latin-1") for i in range(3_000))
    )
    if every == 1:
        with pytest.raises(bn.SourceError) as err:
            run(src, tmp_path / "out", detector=identity)
        messages = [str(err.value)]
    else:
        result = run(src, tmp_path / "out", detector=identity)
        assert result.status == "failed" and {e.type for e in result.errors} == {"DataError"}
        messages = [e.message for e in result.errors]
        assert any("line 2:" in m for m in messages), messages  # row 0, the first bad one of chunk 0
    assert all("utf8-lossy" in m and "UTF-8" in m for m in messages), messages
    out = read_back(src, tmp_path / "lossy", read_options={"encoding": "utf8-lossy"})
    assert_frame_equal(out, pl.read_csv(src, encoding="utf8-lossy"))


def test_nul_bytes_in_the_header_is_source_error(tmp_path):
    src = tmp_path / "utf16.csv"
    src.write_bytes("a,b\n1,2\n".encode("utf-16-le"))
    with pytest.raises(bn.SourceError, match="NUL"):
        run(src, tmp_path / "out")


# --- several files --------------------------------------------------------------------------------------------


def test_files_widen_int_to_float_and_refuse_int_and_text(tmp_path):
    (tmp_path / "a.csv").write_text("id,v\n" + "".join(f"{i},{i}\n" for i in range(2_000)))
    (tmp_path / "b.csv").write_text("id,v\n" + "".join(f"{i},{i}.5\n" for i in range(2_000)))
    out = read_back(str(tmp_path / "[ab].csv"), tmp_path / "out")
    assert out.schema["v"] == pl.Float64 and out.height == 4_000
    (tmp_path / "c.csv").write_text("id,v\n" + "".join(f"{i},x{i}\n" for i in range(2_000)))
    with pytest.raises(bn.SourceError) as err:
        run(str(tmp_path / "[ac].csv"), tmp_path / "out2")
    assert "'v'" in str(err.value) and "c.csv" in str(err.value)


def test_ndjson_with_no_readable_line_is_source_error(tmp_path):
    src = tmp_path / "broken.jsonl"
    src.write_text('{"a": \n')
    with pytest.raises(bn.SourceError) as err:
        run(src, tmp_path / "out")
    assert "broken.jsonl, line 1" in str(err.value) and "JSON" in str(err.value)
