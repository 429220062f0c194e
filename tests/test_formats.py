"""Input and output formats, chunk plans, engine/chunk-size independence and resume (DESIGN.md section 1)."""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from conftest import (
    BASE_ROWS,
    INPUT_FORMATS,
    OUTPUT_FORMATS,
    as_read,
    make_frame,
    run_job,
    write_source,
)

import batchnb as bn

PART_EXTENSIONS = {"parquet": ".parquet", "csv": ".csv", "json": ".jsonl", "feather": ".feather", "hdf5": ".h5",
                   "pickle": ".pkl"}  # fmt: skip
ROW_FORMATS = ("parquet", "feather", "hdf5", "pickle")


@pytest.fixture(scope="module")
def reference(sources, tmp_path_factory) -> pl.DataFrame:
    """The sequential engine's output for the Parquet copy of the base frame: what every other run must equal."""
    out = tmp_path_factory.mktemp("reference") / "out"
    result = run_job(sources["parquet"], out, chunk_size=1_000, engine="sequential")
    assert result.status == "succeeded"
    return result.read().collect()


def part_files(output: Path) -> list[Path]:
    return sorted(Path(output).glob("part-*"))


def part_stamps(output: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) per part: a rewritten part (temp file + rename) changes both."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in part_files(output)}


# --------------------------------------------------------------------------------------------------
# Input formats x engines
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", [*INPUT_FORMATS, "json_array"])
def test_input_format_rows_order_and_scores(fmt, engine, frame, sources, reference, tmp_path):
    result = run_job(sources[fmt], tmp_path / "out", chunk_size=1_000, engine=engine, allow_pickle=True)
    assert result.status == "succeeded", result.errors
    assert result.rows_in == result.rows_out == BASE_ROWS
    assert result.chunks_done == result.chunks_total
    out = result.read().collect()
    assert out.get_column("id").to_list() == list(range(BASE_ROWS))  # every row once, in input order
    assert out.schema == reference.schema
    # Same input values (NaN may come back as null from JSON and pandas-based formats) and the
    # same scores, bit for bit, as the sequential engine on the Parquet copy.
    assert as_read(out).equals(as_read(reference))
    assert out.select(frame.columns).pipe(as_read).equals(as_read(frame))
    if fmt in ROW_FORMATS:
        assert result.chunks_total == 6


def test_pickle_needs_allow_pickle(sources, tmp_path):
    job = bn.BatchJob(sources["pickle"], tmp_path / "out", engine="sequential")  # constructing is fine
    with pytest.raises(bn.SourceError, match="allow_pickle"):
        job.run(progress=None)
    assert not part_files(tmp_path / "out")


def test_format_option_overrides_suffix(frame, sources, tmp_path, reference):
    """`format=` reads a file whose suffix says nothing."""
    path = tmp_path / "data.bin"
    path.write_bytes(Path(sources["parquet"]).read_bytes())
    result = run_job(str(path), tmp_path / "out", format="parquet", chunk_size=1_000, engine="sequential")
    assert result.read().collect().equals(reference)


def test_hdf5_key_picks_one_of_several_tables(frame, tmp_path, reference):
    path = tmp_path / "two.h5"
    frame.to_pandas().to_hdf(path, key="scores", format="table", index=False)
    frame.head(10).to_pandas().to_hdf(path, key="other", format="table", index=False)
    with pytest.raises(bn.SourceError, match="key"):
        run_job(str(path), tmp_path / "bad", engine="sequential", allow_pickle=True)
    result = run_job(str(path), tmp_path / "out", read_options={"key": "scores"}, chunk_size=1_000,
                     engine="sequential", allow_pickle=True)  # fmt: skip
    assert as_read(result.read().collect()).equals(as_read(reference))


# --------------------------------------------------------------------------------------------------
# Output formats
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("output_format", OUTPUT_FORMATS)
def test_output_format_read_and_to_pandas(output_format, sources, reference, tmp_path):
    outputs = {}
    for engine in ("sequential", "threads", "processes"):
        output = tmp_path / engine
        result = run_job(sources["parquet"], output, chunk_size=1_000, engine=engine, output_format=output_format,
                         allow_pickle=True)  # fmt: skip
        assert result.status == "succeeded", result.errors
        # Six parts with the format's extension, and nothing else matching part-*.
        assert [p.name for p in part_files(output)] == [
            f"part-{i:06d}{PART_EXTENSIONS[output_format]}" for i in range(6)
        ]

        lazy = result.read()
        assert isinstance(lazy, pl.LazyFrame)
        out = lazy.collect()
        assert out.get_column("id").to_list() == list(range(BASE_ROWS))
        assert out.schema == reference.schema
        # The same data as the Parquet output (a format without NaN may give null instead).
        assert as_read(out).equals(as_read(reference))

        frame_pd = result.to_pandas()
        assert isinstance(frame_pd, pd.DataFrame)
        assert list(frame_pd.columns) == out.columns
        assert len(frame_pd) == BASE_ROWS
        assert frame_pd["id"].tolist() == list(range(BASE_ROWS))
        assert frame_pd["is_anomaly"].dtype == bool
        assert int(frame_pd["is_anomaly"].sum()) == result.anomalies
        assert pl.from_pandas(frame_pd).pipe(as_read).equals(as_read(out))

        # A LazyFrame a user can query: projection, filter and head work on the output.
        few = lazy.filter(pl.col("is_anomaly")).select("id", "anomaly_score").collect()
        assert few.equals(out.filter(pl.col("is_anomaly")).select("id", "anomaly_score"))
        assert lazy.head(5).collect().get_column("id").to_list() == [0, 1, 2, 3, 4]
        outputs[engine] = out
    assert as_read(outputs["threads"]).equals(as_read(outputs["sequential"]))
    assert as_read(outputs["processes"]).equals(as_read(outputs["sequential"]))


def _tricky_column(kind: str, n: int) -> pl.Series:
    if kind == "nullable_int":  # a null in the second part only
        return pl.Series(kind, [None if i == 1_500 else i % 7 for i in range(n)], dtype=pl.Int64)
    if kind == "nullable_bool":
        return pl.Series(kind, [None if i % 13 == 0 else i % 2 == 0 for i in range(n)], dtype=pl.Boolean)
    if kind == "nullable_string":
        return pl.Series(kind, [None if i % 11 == 0 else f"s{i}" for i in range(n)], dtype=pl.String)
    if kind == "digit_string":  # zip codes: text that looks like numbers, with leading zeros
        return pl.Series(kind, [f"{i % 1000:05d}" for i in range(n)], dtype=pl.String)
    if kind == "float_null_in_first_part":  # a sensor that starts recording later
        return pl.Series(kind, [None if i < 1_200 else i / 3 for i in range(n)], dtype=pl.Float64)
    raise ValueError(kind)


@pytest.mark.parametrize("output_format", OUTPUT_FORMATS)
@pytest.mark.parametrize(
    "kind", ["nullable_int", "nullable_bool", "nullable_string", "digit_string", "float_null_in_first_part"]
)
def test_output_format_keeps_column_types_and_values(kind, output_format, request, tmp_path):
    """A column comes back from read() and to_pandas() with its type and values, whatever the output format."""
    n = 2_000
    frame = pl.DataFrame({"id": np.arange(n, dtype=np.int64), "x": np.linspace(0.0, 1.0, n)}).with_columns(
        _tricky_column(kind, n)
    )
    source = write_source(frame, "parquet", tmp_path / "src.parquet")
    result = run_job(source, tmp_path / "out", columns=["x"], chunk_size=1_000, engine="sequential",
                     output_format=output_format, retries=0, allow_pickle=True)  # fmt: skip
    assert result.status == "succeeded", result.errors
    out = result.read().collect()
    assert out.schema[kind] == frame.schema[kind]
    assert out.get_column(kind).equals(frame.get_column(kind))
    assert pl.from_pandas(result.to_pandas()).get_column(kind).equals(out.get_column(kind))


# --------------------------------------------------------------------------------------------------
# Same values whatever the engine and chunk size, with a sampled fit
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("detector", "columns"),
    [("zscore", None), ("mad", None), ("iqr", ["x1", "x3"]), ("isolation_forest", ["x1"])],
)
def test_sampled_fit_identical_across_engines_and_chunk_sizes(detector, columns, big_frame, big_sources, tmp_path):
    runs = {}
    configs = [("sequential", 1_000), ("threads", 1_000), ("threads", 100_000), ("processes", 1_000)]
    if detector == "isolation_forest":
        configs.remove(("processes", 1_000))  # scikit-learn makes spawned workers slow to start
    for engine, chunk_size in configs:
        result = run_job(big_sources["parquet"], tmp_path / f"{engine}-{chunk_size}", detector=detector,
                         columns=columns, chunk_size=chunk_size, fit_sample=2_000, engine=engine)  # fmt: skip
        assert result.status == "succeeded", result.errors
        assert result.chunks_total == math.ceil(big_frame.height / chunk_size)
        runs[engine, chunk_size] = result.read().collect()
    first = runs[configs[0]]
    assert first.get_column("id").to_list() == list(range(big_frame.height))
    for key, out in runs.items():
        assert out.equals(first), key

    # CSV samples whole records at seeded byte offsets: its values, too, do not depend on chunk size or engine.
    csv = {
        (engine, size): run_job(big_sources["csv"], tmp_path / f"csv-{engine}-{size}", detector=detector,
                                columns=columns, chunk_size=size, fit_sample=2_000, engine=engine).read().collect()
        for engine, size in (("threads", 3_000), ("sequential", 1_000))
    }  # fmt: skip
    assert csv["threads", 3_000].equals(csv["sequential", 1_000])
    assert csv["threads", 3_000].get_column("id").to_list() == list(range(big_frame.height))
    # With exact row ranges (one pass over the file), CSV takes the very rows of the Parquet sample.
    exact = run_job(big_sources["csv"], tmp_path / "csv-exact", detector=detector, columns=columns, chunk_size=3_000,
                    fit_sample=2_000, engine="threads", read_options={"exact_rows": True}).read().collect()  # fmt: skip
    assert as_read(exact).equals(as_read(first))

    # ... and the fit really used a sample: fitting on every row gives other scores.
    full = run_job(big_sources["parquet"], tmp_path / "full", detector=detector, columns=columns,
                   engine="sequential").read().collect()  # fmt: skip
    assert not full.get_column("anomaly_score").equals(first.get_column("anomaly_score"))


def test_seed_changes_the_sample(big_sources, tmp_path):
    a = run_job(big_sources["parquet"], tmp_path / "a", fit_sample=2_000, seed=0, engine="threads").read().collect()
    b = run_job(big_sources["parquet"], tmp_path / "b", fit_sample=2_000, seed=1, engine="threads").read().collect()
    assert not a.get_column("anomaly_score").equals(b.get_column("anomaly_score"))


# --------------------------------------------------------------------------------------------------
# Several files are one dataset
# --------------------------------------------------------------------------------------------------
def test_glob_is_one_dataset_in_sorted_order(multi_parquet, tmp_path):
    pattern, frame = multi_parquet
    job = bn.BatchJob(pattern, tmp_path / "out", chunk_size=1_000, engine="threads",
                      resources=bn.Resources(max_workers=2))  # fmt: skip
    plan = job.plan()
    assert plan.rows_total == frame.height == 6_000
    assert [c.rows for c in plan.chunks] == [(i * 1_000, (i + 1) * 1_000) for i in range(6)]
    assert len(plan.chunks[2].pieces) == 2  # rows 2000..3000 straddle the first two files
    result = job.run(progress=None)
    out = result.read().collect()
    assert out.get_column("id").to_list() == list(range(frame.height))
    assert as_read(out.select(frame.columns)).equals(as_read(frame))
    # One fit over the whole dataset: the same scores as the same rows in one file.
    single = tmp_path / "single.parquet"
    frame.write_parquet(single)
    assert out.equals(run_job(str(single), tmp_path / "single", chunk_size=1_000, engine="threads").read().collect())


def test_list_of_csv_files_is_one_dataset(multi_csv, tmp_path):
    paths, frame = multi_csv
    result = run_job(paths, tmp_path / "out", chunk_size=1_000, engine="processes")
    assert result.status == "succeeded", result.errors
    out = result.read().collect()
    assert out.get_column("id").to_list() == list(range(frame.height))
    assert as_read(out.select(frame.columns)).equals(as_read(frame))
    single = tmp_path / "single.csv"
    frame.write_csv(single)
    assert out.equals(run_job(str(single), tmp_path / "single", chunk_size=1_000, engine="threads").read().collect())


def test_list_of_files_is_read_in_sorted_order(multi_csv, tmp_path):
    """DESIGN.md: "a glob or list of files is one dataset, files in sorted order"."""
    paths, frame = multi_csv
    result = run_job(list(reversed(paths)), tmp_path / "out", chunk_size=1_000, engine="sequential")
    assert result.read().collect().get_column("id").to_list() == list(range(frame.height))


# --------------------------------------------------------------------------------------------------
# CSV with quoted newlines
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("exact_rows", [False, True], ids=["byte-ranges", "exact-rows"])
def test_csv_quoted_newlines_and_commas(quoted_csv, engine, tmp_path, exact_rows):
    path, frame = quoted_csv
    options = {"read_options": {"exact_rows": True}} if exact_rows else {}
    result = run_job(path, tmp_path / "out", chunk_size=1_000, engine=engine, **options)
    assert result.status == "succeeded", result.errors
    assert result.rows_in == result.rows_out == frame.height
    out = result.read().collect()
    assert out.get_column("id").to_list() == list(range(frame.height))
    assert out.get_column("note").to_list() == frame.get_column("note").to_list()
    assert out.get_column("value").to_list() == frame.get_column("value").to_list()
    # Every byte in exactly one chunk, and (exact rows) every record in exactly one row range.
    plan = bn.BatchJob(path, tmp_path / "plan", chunk_size=1_000, **options).plan()
    spans = [(p.start, p.stop) for c in plan.chunks for p in c.pieces]
    assert len(plan.chunks) > 2 and spans[-1][1] == os.path.getsize(path)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    rows = [c.rows for c in plan.chunks]
    assert rows[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(rows))
    if exact_rows:
        assert rows[-1][1] == frame.height


@pytest.mark.parametrize(("block", "per_window"), [(4096, 1), (1000, 3), (256 * 1024, 64)])
def test_csv_record_index_is_exact_for_any_block_and_window(quoted_csv, monkeypatch, tmp_path, block, per_window):
    """exact_rows: the index is counted window by window in parallel; windows that start mid-record,
    mid-quote, or off a page boundary must still give every record once."""
    from batchnb.sources import record_index

    monkeypatch.setattr(record_index, "BLOCK", block)
    monkeypatch.setattr(record_index, "BLOCKS_PER_WINDOW", per_window)
    path, frame = quoted_csv
    result = run_job(path, tmp_path / "out", chunk_size=1_000, engine="threads", read_options={"exact_rows": True})
    assert result.status == "succeeded", result.errors
    out = result.read().collect()
    assert out.get_column("id").to_list() == list(range(frame.height))
    assert out.get_column("note").to_list() == frame.get_column("note").to_list()


@pytest.mark.parametrize("look", [48, 256, 64 * 1024])
def test_csv_byte_range_cuts_land_on_records_near_quoted_newlines(tmp_path, monkeypatch, look):
    """Every cut is placed from the quotes near it alone: with a window of a few dozen bytes most cuts
    see only the middle of a multi-line quoted field, and must still find the next real record."""
    from batchnb.sources import byte_ranges

    monkeypatch.setattr(byte_ranges, "LOOK", look)
    n = 40_000
    notes = [
        (f'"a ""quoted"" note,\nover two lines {i}"' if i % 3 == 0 else f"plain {i}") if i % 7 else '""'
        for i in range(n)
    ]
    path = tmp_path / "notes.csv"
    path.write_text("id,note,value\n" + "".join(f"{i},{note},{i % 13}\n" for i, note in enumerate(notes)))
    result = run_job(str(path), tmp_path / "out", columns=["value"], chunk_size=1_000, engine="threads")
    assert result.status == "succeeded", result.errors
    assert result.chunks_total >= 30
    out = result.read().collect()
    assert out.get_column("id").to_list() == list(range(n))
    assert out.get_column("note").to_list() == pl.read_csv(path).get_column("note").to_list()


def test_csv_cut_inside_a_long_quoted_field_fails_clearly_and_exact_rows_reads_it(tmp_path, monkeypatch):
    """A quoted field far longer than the window around a cut can fool the placement: the chunks where
    the field starts and ends then hold an odd number of quotes and fail with a message, so such a job
    never succeeds with split records (a job succeeds only if every chunk is balanced, which proves
    every cut, chained from the first chunk's known start)."""
    from batchnb.sources import byte_ranges

    monkeypatch.setattr(byte_ranges, "LOOK", 64)
    rows = [f"{i},short {i},{i % 5}" for i in range(3_000)]
    rows[1_500] = '1500,"' + "\n".join(f"line {k} of a long note, with commas" for k in range(4_000)) + '",0'
    path = tmp_path / "long_note.csv"
    path.write_text("id,note,value\n" + "\n".join(rows) + "\n")
    # Types are given: sample blocks that fall wholly inside the note could not tell them.
    types = {"read_options": {"schema_overrides": {"id": pl.Int64, "value": pl.Int64}}}
    result = run_job(str(path), tmp_path / "out", columns=["value"], chunk_size=1_000, engine="sequential", retries=0,
                     **types)  # fmt: skip
    assert result.status == "failed"
    unbalanced = [e for e in result.errors if "exact_rows" in e.message and "quoted field" in e.message]
    assert len(unbalanced) >= 2  # where the field starts, and where it ends
    assert 1_500 not in result.read().collect().get_column("id").to_list()

    exact = run_job(str(path), tmp_path / "exact", columns=["value"], chunk_size=1_000, engine="sequential",
                    read_options={"exact_rows": True, **types["read_options"]})  # fmt: skip
    assert exact.status == "succeeded", exact.errors
    out = exact.read().collect()
    assert out.get_column("id").to_list() == list(range(3_000))
    assert out.get_column("note")[1_500].count("\n") == 3_999


def _csv_lines(n: int) -> list[str]:
    return ["id,x,label", *(f"{i},{i / 7:.6f},l{i}" for i in range(n))]


def test_csv_record_with_fewer_fields_gets_nulls(tmp_path):
    lines = _csv_lines(3_000)
    lines[1 + 1_234] = "1234"
    path = tmp_path / "short.csv"
    path.write_text("\n".join(lines) + "\n")
    result = run_job(str(path), tmp_path / "out", columns=["x"], chunk_size=1_000, engine="threads")
    assert result.status == "succeeded", result.errors
    out = result.read().collect()
    assert out.get_column("id").to_list() == list(range(3_000))
    assert out.row(1_234, named=True) | {"anomaly_score": None} == {
        "id": 1_234, "x": None, "label": None, "anomaly_score": None, "is_anomaly": False,
    }  # fmt: skip


def test_csv_record_with_more_fields_fails_its_chunk_naming_the_line(tmp_path):
    lines = _csv_lines(3_000)
    lines[1 + 1_500] = "1500,0.5,l1500,extra"  # line 1502 of the file (the header is line 1)
    path = tmp_path / "long.csv"
    path.write_text("\n".join(lines) + "\n")
    result = run_job(str(path), tmp_path / "out", columns=["x"], chunk_size=1_000, engine="sequential", retries=0)
    assert result.status == "failed"
    assert result.chunks_done == 2 and result.chunks_failed == 1
    (error,) = result.errors
    assert error.chunk == 1
    assert str(path) in error.message and "1502" in error.message


# --------------------------------------------------------------------------------------------------
# Chunk plans
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ROW_FORMATS)
@pytest.mark.parametrize("chunk_size", [1_000, 2_500])
def test_row_format_chunk_i_holds_its_rows(fmt, chunk_size, sources, tmp_path):
    job = bn.BatchJob(sources[fmt], tmp_path / "out", chunk_size=chunk_size, engine="threads", allow_pickle=True,
                      resources=bn.Resources(max_workers=2))  # fmt: skip
    plan = job.plan()
    expected = [
        (i * chunk_size, min((i + 1) * chunk_size, BASE_ROWS)) for i in range(math.ceil(BASE_ROWS / chunk_size))
    ]
    assert [c.index for c in plan.chunks] == list(range(len(expected)))
    assert [c.rows for c in plan.chunks] == expected
    assert plan.rows_total == BASE_ROWS
    assert not part_files(tmp_path / "out")  # planning runs nothing
    assert job.run(progress=None).status == "succeeded"
    for i, (start, stop) in enumerate(expected):
        part = pl.read_parquet(tmp_path / "out" / f"part-{i:06d}.parquet")
        assert part.get_column("id").to_list() == list(range(start, stop)), f"chunk {i}"


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_text_format_chunks_cover_every_row_once(fmt, sources, tmp_path):
    chunk_size = 1_000
    job = bn.BatchJob(sources[fmt], tmp_path / "out", chunk_size=chunk_size, engine="threads",
                      resources=bn.Resources(max_workers=2))  # fmt: skip
    plan = job.plan()
    # Byte ranges: row counts are estimates from the sampled bytes per record until the chunks run.
    assert abs(plan.rows_total - BASE_ROWS) <= 0.05 * BASE_ROWS
    assert "about" in repr(plan)
    assert job.run(progress=None).status == "succeeded"
    status = job.status()  # the estimate gives way to the counted rows as chunks finish
    assert status.rows_total == status.rows_done == BASE_ROWS and status.percent == 100.0
    ids = [pl.read_parquet(tmp_path / "out" / f"part-{i:06d}.parquet").get_column("id").to_list()
           for i in range(len(plan.chunks))]  # fmt: skip
    assert [i for part in ids for i in part] == list(range(BASE_ROWS))  # every record once, in order
    assert all(0.5 * chunk_size <= len(part) <= 1.5 * chunk_size for part in ids[:-1])


def test_plan_opens_the_source_only_when_asked(tmp_path, frame):
    missing = tmp_path / "later.parquet"
    job = bn.BatchJob(str(missing), tmp_path / "out", chunk_size=1_000)  # a future pipeline input is fine
    with pytest.raises(bn.SourceError):
        job.plan()
    frame.write_parquet(missing)
    assert len(job.plan().chunks) == math.ceil(frame.height / 1_000)


def test_header_only_csv_is_an_empty_dataset(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("id,x1,label\n")
    job = bn.BatchJob(str(path), tmp_path / "out", columns=["x1"], engine="sequential",
                      read_options={"schema_overrides": {"id": pl.Int64, "x1": pl.Float64}})  # fmt: skip
    assert len(job.plan().chunks) == 0
    result = job.run(progress=None)
    assert result.status == "succeeded"
    assert result.chunks_total == 0 and result.rows_out == 0
    assert result.read().collect().height == 0


def test_zero_byte_file_is_a_source_error(tmp_path):
    path = tmp_path / "nothing.csv"
    path.write_bytes(b"")
    with pytest.raises(bn.SourceError):
        bn.BatchJob(str(path), tmp_path / "out").run(progress=None)


# --------------------------------------------------------------------------------------------------
# Resume
# --------------------------------------------------------------------------------------------------
def test_second_run_recomputes_nothing(sources, tmp_path):
    output = tmp_path / "out"
    first = run_job(sources["parquet"], output, chunk_size=1_000, engine="threads")
    assert first.status == "succeeded"
    stamps = part_stamps(output)
    assert len(stamps) == 6
    data = first.read().collect()

    # Engine, name and retries are not part of the job's identity: this is the same job.
    second = run_job(sources["parquet"], output, chunk_size=1_000, engine="sequential", name="renamed", retries=1)
    assert second.status == "succeeded"
    assert second.chunks_done == 6 and second.rows_out == BASE_ROWS
    assert part_stamps(output) == stamps  # no part was written again
    assert second.read().collect().equals(data)


def test_resume_redoes_only_missing_or_corrupt_parts(sources, tmp_path):
    output = tmp_path / "out"
    first = run_job(sources["feather"], output, chunk_size=1_000, engine="threads")
    data = first.read().collect()
    stamps = part_stamps(output)
    (output / "part-000003.parquet").unlink()
    corrupt = output / "part-000004.parquet"
    with open(corrupt, "r+b") as f:  # same size, different bytes: only the checksum can tell
        f.seek(10)
        byte = f.read(1)
        f.seek(10)
        f.write(bytes([byte[0] ^ 0xFF]))
    stamps[corrupt.name] = (corrupt.stat().st_ino, corrupt.stat().st_mtime_ns)
    again = run_job(sources["feather"], output, chunk_size=1_000, engine="threads")
    assert again.status == "succeeded"
    now = part_stamps(output)
    assert set(now) == set(stamps)
    changed = sorted(name for name in now if now[name] != stamps[name])
    assert changed == ["part-000003.parquet", "part-000004.parquet"]
    assert again.read().collect().equals(data)


FAIL_ON_IDS: set[int] = set()


def fail_on_marked_rows(chunk: pl.DataFrame) -> pl.DataFrame:
    """A callable detector that fails the chunks holding an id in FAIL_ON_IDS."""
    if FAIL_ON_IDS & set(chunk.get_column("id").to_list()):
        raise RuntimeError("marked row")
    return chunk.select("id", (pl.col("x1") * 2).alias("double"))


def test_resume_reruns_only_failed_chunks(sources, frame, tmp_path):
    output = tmp_path / "out"
    FAIL_ON_IDS.clear()
    FAIL_ON_IDS.add(2_500)
    try:
        first = run_job(sources["parquet"], output, detector=fail_on_marked_rows, chunk_size=1_000,
                        engine="sequential", retries=0)  # fmt: skip
    finally:
        FAIL_ON_IDS.clear()
    assert first.status == "failed"
    assert first.chunks_failed == 1 and first.chunks_done == 5
    assert [e.chunk for e in first.errors] == [2]
    assert first.errors[0].type == "RuntimeError"
    stamps = part_stamps(output)
    assert len(stamps) == 5 and "part-000002.parquet" not in stamps

    second = run_job(sources["parquet"], output, detector=fail_on_marked_rows, chunk_size=1_000, engine="threads")
    assert second.status == "succeeded"
    now = part_stamps(output)
    assert {k: v for k, v in now.items() if k != "part-000002.parquet"} == stamps
    assert second.read().collect().equals(fail_on_marked_rows(frame))


@pytest.mark.parametrize(
    "change",
    [
        {"detector": "mad"},
        {"chunk_size": 2_000},
        {"threshold": 2.0},
        {"columns": ["x1"]},
        {"keep": ["id"]},
        {"output_format": "csv"},
        {"fit_sample": 5_000},
        {"seed": 1},
    ],
    ids=lambda c: next(iter(c)),
)
def test_another_job_in_the_same_output_is_refused(change, sources, tmp_path):
    output = tmp_path / "out"
    assert run_job(sources["parquet"], output, chunk_size=1_000, engine="sequential").status == "succeeded"
    stamps = part_stamps(output)
    options = {"chunk_size": 1_000, "engine": "sequential", **change}
    with pytest.raises(bn.JobStateError, match="restart=True"):
        run_job(sources["parquet"], output, **options)
    assert part_stamps(output) == stamps  # the refused job touched nothing

    result = bn.BatchJob(sources["parquet"], output, **options).run(progress=None, restart=True)
    assert result.status == "succeeded"
    expected = run_job(sources["parquet"], tmp_path / "fresh", **options).read().collect()
    assert result.read().collect().equals(expected)
    assert len(part_files(output)) == result.chunks_total  # no part of the old job is left behind


def test_changed_source_is_refused(tmp_path):
    source = write_source(make_frame(3_000, seed=5), "parquet", tmp_path / "src.parquet")
    output = tmp_path / "out"
    assert run_job(source, output, chunk_size=1_000, engine="sequential").status == "succeeded"

    changed = make_frame(3_000, seed=6)
    write_source(changed, "parquet", source)
    with pytest.raises(bn.JobStateError, match="restart=True"):
        run_job(source, output, chunk_size=1_000, engine="sequential")

    result = bn.BatchJob(source, output, chunk_size=1_000, engine="sequential").run(progress=None, restart=True)
    assert result.status == "succeeded"
    assert result.read().collect().select(changed.columns).equals(changed)


def test_changed_csv_source_same_size_is_refused(tmp_path):
    """A same-size edit of a text source (one digit changed) is still a changed source."""
    path = tmp_path / "src.csv"
    frame = pl.DataFrame({"id": np.arange(2_000), "x": np.arange(2_000) % 10})
    frame.write_csv(path)
    output = tmp_path / "out"
    assert run_job(str(path), output, chunk_size=1_000, engine="sequential").status == "succeeded"
    stat = os.stat(path)
    data = bytearray(path.read_bytes())
    data[-2:-1] = b"0" if data[-2:-1] != b"0" else b"1"
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert os.path.getsize(path) == stat.st_size
    with pytest.raises(bn.JobStateError):
        run_job(str(path), output, chunk_size=1_000, engine="sequential")


def _typed_frame(n: int) -> pl.DataFrame:
    """Column types whose Arrow and Polars readings could differ: text, categories, time zones, decimals, nesting."""
    from datetime import datetime
    from decimal import Decimal

    return pl.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64),
            "text": [None if i % 7 == 0 else f"t{i}" for i in range(n)],
            "cat": pl.Series([f"c{i % 5}" for i in range(n)], dtype=pl.Categorical),
            "when": pl.Series([datetime(2026, 1, 1 + i % 28) for i in range(n)]).dt.replace_time_zone("Europe/Paris"),
            "price": pl.Series([Decimal(f"{i}.25") for i in range(n)], dtype=pl.Decimal(12, 2)),
            "tags": [[i, i + 1] if i % 3 else None for i in range(n)],
            "point": [{"x": float(i), "y": None if i % 4 == 0 else i} for i in range(n)],
            "small": pl.Series(np.arange(n) % 100, dtype=pl.Int8),
            "flag": [None if i % 9 == 0 else i % 2 == 0 for i in range(n)],
        }
    )


@pytest.mark.parametrize("writer", ["polars", "pyarrow", "pandas"])
def test_parquet_chunks_read_as_polars_reads_the_file(writer, tmp_path):
    """Chunks come from row groups decoded through a memory map; every column type must come out exactly as
    Polars itself reads the file, whoever wrote it, for chunks inside, across and at the ends of row groups."""
    import pyarrow.parquet as pq

    from batchnb.sources import Workdir, get, open_dataset

    frame, path = _typed_frame(3_000), tmp_path / "typed.parquet"
    if writer == "polars":
        frame.write_parquet(path, row_group_size=1_000)
    elif writer == "pyarrow":
        pq.write_table(frame.to_arrow(), path, row_group_size=1_000)
    else:
        frame.drop("point").to_pandas(use_pyarrow_extension_array=False).to_parquet(path, row_group_size=1_000)
    expected = pl.read_parquet(path)
    info = open_dataset(str(path), None, {}, workdir=Workdir(tmp_path), allow_pickle=False)
    for chunk_size in (700, 1_000, 3_000):
        specs = get("parquet").plan(info, chunk_size)
        got = pl.concat([get("parquet").read(info, spec) for spec in specs])
        assert got.schema == expected.schema, (writer, chunk_size)
        assert got.equals(expected), (writer, chunk_size)


def test_parquet_chunk_falls_back_to_polars_when_arrow_types_differ(tmp_path, monkeypatch):
    """Should pyarrow ever decode a column to another type than Polars' reader, chunks still come out as
    Polars reads the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from batchnb.sources import Workdir, get, open_dataset

    frame, path = _typed_frame(2_000), tmp_path / "typed.parquet"
    frame.write_parquet(path, row_group_size=1_000)
    read_row_group = pq.ParquetFile.read_row_group

    def as_text(self, i, *args, **kwargs):
        table = read_row_group(self, i, *args, **kwargs)
        return table.set_column(1, "text", table.column("text").cast(pa.large_binary()))

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", as_text)
    info = open_dataset(str(path), None, {}, workdir=Workdir(tmp_path), allow_pickle=False)
    got = pl.concat([get("parquet").read(info, spec) for spec in get("parquet").plan(info, 1_000)])
    assert got.equals(pl.read_parquet(path))


@pytest.mark.parametrize("output_format", ["parquet", "feather", "csv", "json"])
def test_rich_column_types_survive_the_job(output_format, tmp_path):
    """Time zones, decimals, categories and nested columns are kept from the source through the parts to
    `read()`, as far as the output format can hold them (NDJSON holds decimals as text)."""
    keep = {"csv": ["id", "x", "when", "price", "cat"], "json": ["id", "x", "when", "cat"]}.get(output_format)
    frame = _typed_frame(3_000).with_columns(x=pl.Series(np.linspace(0.0, 1.0, 3_000)))
    source = write_source(frame if keep is None else frame.select(keep), "parquet", tmp_path / "src.parquet")
    result = run_job(source, tmp_path / "out", columns=["x"], chunk_size=1_000, engine="threads",
                     output_format=output_format, retries=0)  # fmt: skip
    assert result.status == "succeeded", result.errors
    out = result.read().collect()
    expected = frame if keep is None else frame.select(keep)
    assert out.select(expected.columns).schema == expected.schema
    assert out.select(expected.columns).equals(expected)
