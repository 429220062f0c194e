"""Every CSV/NDJSON `read_options` key is honoured on every path that reads the source, or refused by name.

DESIGN.md section 1, "Format details": each accepted key gives what `pl.read_csv` (or `pl.read_ndjson`) gives
reading the same file with the same option, on chunk sizes that cut the file in many places and with
`exact_rows`; a key that is not honoured, or a value of the wrong type, is a ConfigError naming it.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import batchnb as bn

N = 5_000


def identity(df: pl.DataFrame) -> pl.DataFrame:
    return df


def read_back(src: Path, out: Path, *, chunk_size: int, **read_options) -> pl.DataFrame:
    job = bn.BatchJob(
        src, out, detector=identity, engine="sequential", chunk_size=chunk_size, retries=0, read_options=read_options
    )
    result = job.run(progress=None)
    assert result.status == "succeeded", result.errors
    return result.read().collect()


# --- one small file per option, where the option changes what is read -------------------------------


def rows(n: int = N) -> list[str]:
    return [f"{i},{i * 0.5},{'abcde'[i % 5]}" for i in range(n)]


def write(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def no_header(p: Path) -> Path:
    return write(p, rows())


def junk_then_header(p: Path) -> Path:
    return write(p, ["exported by tool v1", "more junk, with a comma", "x", "id,half,tag", *rows()])


def commented(p: Path) -> Path:
    body = [line if i % 700 else f"# note {i}, with a comma\n{line}" for i, line in enumerate(rows())]
    return write(p, ["# exported", "id,half,tag", *body])


def semicolons(p: Path) -> Path:
    return write(p, ["id;half;tag", *(f"{i};{i * 0.5};'x;{i % 7}'" for i in range(N))])


def single_quotes(p: Path) -> Path:
    return write(p, ["id,half,tag", *(f"{i},{i * 0.5},'a,{i % 7}'" for i in range(N))])


def literal_quotes(p: Path) -> Path:
    return write(p, ["id,half,tag", *(f'{i},{i * 0.5},say "{i % 7}' for i in range(N))])


def latin1(p: Path) -> Path:
    return write(p, ["id,half,städt", *(f"{i},{i * 0.5},Zürich {i % 3}" for i in range(N))], "latin-1")


def not_applicable(p: Path) -> Path:
    return write(p, ["id,half,tag", *(f"{i},{'NA' if i % 9 == 0 else i * 0.5},t" for i in range(N))])


def integer_half(p: Path) -> Path:
    return write(p, ["id,half,tag", *(f"{i},{i},t" for i in range(N))])


def ragged(p: Path) -> Path:
    return write(p, ["id,half,tag", *(f"{line},extra" if i % 900 == 5 else line for i, line in enumerate(rows()))])


def dates(p: Path) -> Path:
    return write(p, ["id,half,day", *(f"{i},{i * 0.5},2024-{1 + i % 12:02d}-{1 + i % 28:02d}" for i in range(N))])


def plain(p: Path) -> Path:
    return write(p, ["id,half,tag", *rows()])


OPTIONS = [
    (no_header, {"has_header": False}),
    (junk_then_header, {"skip_rows": 3}),
    (no_header, {"has_header": False, "skip_rows": 2}),
    (commented, {"comment_prefix": "#"}),
    (semicolons, {"separator": ";", "quote_char": "'"}),
    (single_quotes, {"quote_char": "'"}),
    (literal_quotes, {"quote_char": None}),
    (latin1, {"encoding": "utf8-lossy"}),
    (latin1, {"encoding": "latin-1"}),
    (not_applicable, {"null_values": "NA"}),
    (not_applicable, {"null_values": ["NA", "t"]}),
    (integer_half, {"schema_overrides": {"half": pl.Float64}}),
    (integer_half, {"schema": {"id": pl.Int32, "half": pl.Float64, "tag": pl.String}}),
    (ragged, {"truncate_ragged_lines": True}),
    (dates, {"try_parse_dates": True}),
    (plain, {}),
]


@pytest.mark.parametrize("exact_rows", [False, True], ids=["byte-ranges", "exact-rows"])
@pytest.mark.parametrize("chunk_size", [1_000, 100_000])
@pytest.mark.parametrize(("make", "options"), OPTIONS, ids=[f"{m.__name__}-{sorted(o)}" for m, o in OPTIONS])
def test_csv_option_reads_as_polars_does(tmp_path, make, options, chunk_size, exact_rows):
    src = make(tmp_path / "data.csv")
    expected = pl.read_csv(src, infer_schema_length=None, **options)
    extra = {"exact_rows": True} if exact_rows else {}
    out = read_back(src, tmp_path / "out", chunk_size=chunk_size, **options, **extra)
    assert_frame_equal(out, expected)


def test_schema_overrides_by_dtype_name(tmp_path):
    src = integer_half(tmp_path / "data.csv")
    out = read_back(src, tmp_path / "out", chunk_size=1_000, schema_overrides={"half": "Float64"})
    assert_frame_equal(out, pl.read_csv(src, schema_overrides={"half": pl.Float64}))


def test_headerless_file_keeps_every_record(tmp_path):
    """A 5,000-row headerless file read with has_header=False: 5,000 rows, not 4,999 named after the first."""
    src = no_header(tmp_path / "data.csv")
    out = read_back(src, tmp_path / "out", chunk_size=1_000, has_header=False)
    assert out.height == N
    assert out.columns == pl.read_csv(src, has_header=False, n_rows=1).columns
    assert out[0].row(0) == (0, 0.0, "a")


def test_schema_with_header_order_differing(tmp_path):
    """`schema` names the header's columns in another order: matched by name, output in the schema's order."""
    src = plain(tmp_path / "data.csv")
    schema = {"tag": pl.String, "id": pl.Int64, "half": pl.Float64}
    out = read_back(src, tmp_path / "out", chunk_size=1_000, schema=schema)
    assert_frame_equal(out, pl.read_csv(src, schema=schema))


@pytest.mark.parametrize("chunk_size", [1_000, 100_000])
def test_ndjson_schema_options_read_as_polars_does(tmp_path, chunk_size):
    src = tmp_path / "data.jsonl"
    pl.DataFrame({"id": range(N), "half": [float(i) for i in range(N)], "tag": ["t"] * N}).with_columns(
        pl.col("half").cast(pl.Int64)
    ).write_ndjson(src)
    for options in ({"schema_overrides": {"half": pl.Float64}}, {"schema": {"id": pl.Int64, "half": pl.Float64}}):
        out = read_back(src, tmp_path / f"out{len(options['schema_overrides' if 'schema_overrides' in options else 'schema'])}",
                        chunk_size=chunk_size, **options)  # fmt: skip
        assert_frame_equal(out, pl.read_ndjson(src, **options))


# --- refused by name -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"separator": 5}, "separator"),
        ({"separator": ";;"}, "separator"),
        ({"has_header": "yes"}, "has_header"),
        ({"schema_overrides": [1]}, "schema_overrides"),
        ({"schema_overrides": {"a": "NoSuchType"}}, "schema_overrides"),
        ({"schema": {"a": 5}}, "schema"),
        ({"skip_rows": -1}, "skip_rows"),
        ({"skip_rows": True}, "skip_rows"),
        ({"encoding": "utf-16"}, "encoding"),
        ({"quote_char": 34}, "quote_char"),
        ({"comment_prefix": ""}, "comment_prefix"),
        ({"null_values": 0}, "null_values"),
        ({"truncate_ragged_lines": 1}, "truncate_ragged_lines"),
        ({"exact_rows": "yes"}, "exact_rows"),
    ],
)
def test_bad_option_value_is_config_error_at_construction(tmp_path, options, key):
    with pytest.raises(bn.ConfigError, match=key):
        bn.BatchJob(tmp_path / "data.csv", tmp_path / "out", read_options=options)


@pytest.mark.parametrize(
    ("source", "fmt", "key", "accepted"),
    [
        ("data.csv", None, "n_rows", "skip_rows"),
        ("data.csv", None, "eol_char", "comment_prefix"),
        ("data.txt", "csv", "low_memory", "has_header"),
        ("data.jsonl", None, "separator", "schema_overrides"),
        ("data.jsonl", None, "infer_schema_length", "schema"),
    ],
)
def test_unknown_option_lists_accepted_ones(tmp_path, source, fmt, key, accepted):
    with pytest.raises(bn.ConfigError) as err:
        bn.BatchJob(tmp_path / source, tmp_path / "out", format=fmt, read_options={key: 1})
    assert key in str(err.value) and accepted in str(err.value)


def test_schema_overrides_for_a_missing_column_is_named_at_plan(tmp_path):
    src = plain(tmp_path / "data.csv")
    job = bn.BatchJob(src, tmp_path / "out", read_options={"schema_overrides": {"speeed": pl.Float64}})
    with pytest.raises(bn.ConfigError, match="speeed"):
        job.plan()


def test_schema_naming_other_columns_than_the_header(tmp_path):
    src = plain(tmp_path / "data.csv")
    job = bn.BatchJob(src, tmp_path / "out", read_options={"schema": {"id": pl.Int64, "other": pl.Float64}})
    with pytest.raises(bn.ConfigError, match="other"):
        job.plan()


# --- the remedies our messages suggest work ----------------------------------------------------------------


def test_ragged_record_fails_its_chunk_and_the_suggested_option_works(tmp_path):
    src = ragged(tmp_path / "data.csv")
    job = bn.BatchJob(src, tmp_path / "out", detector=identity, engine="sequential", chunk_size=1_000, retries=0)
    result = job.run(progress=None)
    assert result.status == "failed"
    message = result.errors[0].message
    assert "line 7" in message and "data.csv" in message and "truncate_ragged_lines" in message
    assert result.errors[0].type == "DataError"
    out = read_back(src, tmp_path / "out2", chunk_size=1_000, truncate_ragged_lines=True)
    assert_frame_equal(out, pl.read_csv(src, truncate_ragged_lines=True))


def test_unknown_option_of_a_format_known_only_from_the_files_is_refused_at_plan(tmp_path):
    plain(tmp_path / "data.csv")
    job = bn.BatchJob(str(tmp_path / "data*"), tmp_path / "out", read_options={"n_rows": 10})  # no suffix to go by
    assert job.config.format is None
    with pytest.raises(bn.ConfigError) as err:
        job.plan()
    assert "n_rows" in str(err.value) and "has_header" in str(err.value)


def test_ndjson_options_for_a_json_array_are_refused(tmp_path):
    src = tmp_path / "data.json"
    pl.DataFrame({"a": [1, 2]}).write_json(src)
    job = bn.BatchJob(src, tmp_path / "out", read_options={"schema_overrides": {"a": pl.Float64}})
    with pytest.raises(bn.ConfigError, match="JSON array"):
        job.plan()
