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


def unnamed_index(p: Path) -> Path:
    """What pandas `to_csv` writes with its index: the header's first name is empty."""
    return write(p, [",half,tag", *rows()])


def trailing_separator(p: Path) -> Path:
    """Every line ends with the separator: an unnamed, empty last column."""
    return write(p, ["id,half,tag,", *(f"{line}," for line in rows())])


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
    (unnamed_index, {}),
    (trailing_separator, {}),
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


# --- unnamed columns, records wider than the header, compressed inputs -----------------------------------


@pytest.mark.parametrize("exact_rows", [False, True], ids=["byte-ranges", "exact-rows"])
@pytest.mark.parametrize("make", [unnamed_index, trailing_separator])
def test_unnamed_columns_score_with_polars_names(tmp_path, make, exact_rows):
    """An empty column name ("" as Polars names it) survives the sample that fits the detector and every chunk."""
    src = make(tmp_path / "data.csv")
    job = bn.BatchJob(src, tmp_path / "out", detector="zscore", engine="sequential", chunk_size=1_000,
                      read_options={"exact_rows": exact_rows})  # fmt: skip
    got = job.run(progress=None).read().collect()
    expected = pl.read_csv(src)
    assert "" in expected.columns
    assert_frame_equal(got.drop("anomaly_score", "is_anomaly"), expected)
    assert got["anomaly_score"].null_count() == 0


def wine_like(p: Path) -> Path:
    """sklearn's wine_data.csv: a first line of metadata (5 fields) above records of 7."""
    return write(p, ["178,13,class_0,class_1,class_2", *(f"{i},{i * 0.5},1,2,3,4,{i % 3}" for i in range(N))])


@pytest.mark.parametrize("exact_rows", [False, True], ids=["byte-ranges", "exact-rows"])
def test_truncate_ragged_lines_cuts_records_wider_than_the_header_in_every_chunk(tmp_path, exact_rows):
    """Each chunk's first record is wider than the header too: it is cut as Polars cuts it, not an error."""
    src = wine_like(tmp_path / "data.csv")
    out = read_back(src, tmp_path / "out", chunk_size=1_000, truncate_ragged_lines=True, exact_rows=exact_rows)
    assert_frame_equal(out, pl.read_csv(src, truncate_ragged_lines=True))


def test_ragged_record_first_in_its_chunk_gets_the_ragged_message(tmp_path):
    lines = ["id,half,tag", *rows()]
    lines[1001] += ",extra"  # the first record of the second chunk (exact rows of 1,000)
    src = write(tmp_path / "data.csv", lines)
    job = bn.BatchJob(src, tmp_path / "out", detector=identity, engine="sequential", chunk_size=1_000, retries=0,
                      read_options={"exact_rows": True})  # fmt: skip
    result = job.run(progress=None)
    assert result.status == "failed"
    message = result.errors[0].message
    assert "line 1002" in message and "4 fields" in message and "truncate_ragged_lines" in message


def comment_then_header(p: Path) -> Path:
    return write(p, ["# Data source: somewhere", "id,half,tag", *rows()])


@pytest.mark.parametrize("exact_rows", [False, True], ids=["byte-ranges", "exact-rows"])
def test_line_before_the_header_is_a_source_error_at_plan_naming_the_remedies(tmp_path, exact_rows):
    """Polars refuses the file ("more fields"): so does plan(), instead of a one-column dataset of cut records."""
    src = comment_then_header(tmp_path / "data.csv")
    job = bn.BatchJob(src, tmp_path / "out", detector="zscore", read_options={"exact_rows": exact_rows})
    with pytest.raises(bn.SourceError) as err:
        job.plan()
    message = str(err.value)
    assert "data.csv, line 1" in message and "header" in message and "3 fields" in message
    assert "'skip_rows': 1" in message and "'comment_prefix': '#'" in message
    for k, option in enumerate(({"skip_rows": 1}, {"comment_prefix": "#"})):
        out = read_back(src, tmp_path / f"out{k}", chunk_size=1_000, exact_rows=exact_rows, **option)
        assert_frame_equal(out, pl.read_csv(src, **option))


def test_sample_leaves_out_a_few_wide_records_instead_of_cutting_them(tmp_path):
    """A few wide records are left out of the sample (their chunks fail with the line), never cut to fit."""
    lines = ["id,half,tag", *rows()]
    lines[3000] += ",extra"
    src = write(tmp_path / "data.csv", lines)
    job = bn.BatchJob(src, tmp_path / "out", detector="zscore", engine="sequential", chunk_size=1_000, retries=0)
    assert job.plan().dataset.schema == {"id": "Int64", "half": "Float64", "tag": "String"}
    result = job.run(progress=None)
    assert result.status == "failed" and "line 3001" in result.errors[0].message


@pytest.mark.parametrize("exact_rows", [False, True], ids=["byte-ranges", "exact-rows"])
def test_bad_line_in_a_compressed_file_names_the_users_file(tmp_path, exact_rows):
    import gzip

    lines = ["id,half,tag", *rows()]
    lines[4000] = "4000,not a number,a"
    src = tmp_path / "data.csv.gz"
    src.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    options = {"exact_rows": exact_rows, "schema_overrides": {"half": pl.Float64}}
    job = bn.BatchJob(src, tmp_path / "out", detector="zscore", engine="sequential", chunk_size=1_000, retries=0,
                      read_options=options)  # fmt: skip
    result = job.run(progress=None)
    assert result.status == "failed"
    message = result.errors[0].message
    assert f"{src}, line 4001" in message and "not a number" in message and "converted" not in message


def test_one_text_column_named_with_semicolons_suggests_the_separator(tmp_path):
    src = tmp_path / "semi.csv"
    src.write_text("id;v;w\n" + "".join(f"{i};{i * 0.5};{i % 7}\n" for i in range(3_000)))
    with pytest.raises(bn.ConfigError, match=r"read_options=\{'separator': ';'\}"):
        bn.BatchJob(str(src), tmp_path / "out", chunk_size=1_000).run(progress=None)
    result = bn.BatchJob(str(src), tmp_path / "out2", chunk_size=1_000, read_options={"separator": ";"}).run(
        progress=None
    )
    assert result.status == "succeeded" and result.rows_out == 3_000


# --- a fitted detector's chunks are parsed and scored in one query (`CSV.scan_chunk`) --------------------


def scored(src: Path, out: Path, **read_options) -> bn.JobResult:
    job = bn.BatchJob(src, out, detector="zscore", engine="sequential", chunk_size=1_000, retries=0,
                      read_options=read_options)  # fmt: skip
    return job.run(progress=None)


@pytest.mark.parametrize(("make", "options"), OPTIONS, ids=[f"{m.__name__}-{sorted(o)}" for m, o in OPTIONS])
def test_one_query_per_chunk_scores_as_reading_then_scoring_does(tmp_path, monkeypatch, make, options):
    src = make(tmp_path / "data.csv")
    one_pass = scored(src, tmp_path / "one-pass", **options)
    monkeypatch.setattr(type(bn.sources.get("csv")), "scan_chunk", lambda self, info, spec: None)
    two_steps = scored(src, tmp_path / "two-steps", **options)
    assert (one_pass.status, two_steps.status) == ("succeeded", "succeeded"), (one_pass.errors, two_steps.errors)
    assert_frame_equal(one_pass.read().collect(), two_steps.read().collect())


BAD_RECORDS = {
    "ragged": ("7,3.5,x,extra", {}, ["line 10", "4 fields", "truncate_ragged_lines"]),
    "not-a-number": ("7,3.5.1,x", {"schema_overrides": {"half": pl.Float64}}, ["line 10", "'half'", "3.5.1"]),
}


@pytest.mark.parametrize(("line", "options", "expected"), BAD_RECORDS.values(), ids=BAD_RECORDS)
def test_a_record_that_fails_the_one_query_is_named_as_before(tmp_path, monkeypatch, line, options, expected):
    lines = ["id,half,tag", *rows()]
    lines[9] = line  # chunk 0, line 10 of the file
    src = write(tmp_path / "data.csv", lines)
    one_pass = scored(src, tmp_path / "one-pass", **options)
    monkeypatch.setattr(type(bn.sources.get("csv")), "scan_chunk", lambda self, info, spec: None)
    two_steps = scored(src, tmp_path / "two-steps", **options)
    for result in (one_pass, two_steps):
        assert (result.status, result.chunks_done, result.chunks_failed) == ("failed", 4, 1)
    (error,) = one_pass.errors
    assert error.type == "DataError" and all(text in error.message for text in expected), error.message
    assert error.message == two_steps.errors[0].message


def test_a_detector_that_scores_outside_a_query_reads_each_chunk_once(tmp_path, monkeypatch):
    """The isolation forest scores with scikit-learn, not a Polars expression: its chunks are read eagerly,
    without first reading their bytes for a query that could not be used."""
    csv, reads = type(bn.sources.get("csv")), []
    read_bytes = csv.read_bytes
    monkeypatch.setattr(csv, "read_bytes", staticmethod(lambda piece: reads.append(piece) or read_bytes(piece)))
    monkeypatch.setattr(csv, "scan_chunk", lambda self, info, spec: pytest.fail("scan_chunk was asked"))
    src = plain(tmp_path / "data.csv")
    job = bn.BatchJob(src, tmp_path / "out", detector="isolation_forest", engine="sequential", chunk_size=1_000)
    result = job.run(progress=None)
    assert result.status == "succeeded" and result.rows_out == N
    read = list(reads)
    planned = {(c.pieces[0].start, c.pieces[0].stop) for c in job.plan().chunks}
    chunk_reads = [(p.start, p.stop) for p in read if (p.start, p.stop) in planned]
    assert sorted(chunk_reads) == sorted(planned)  # each chunk's bytes read once
