"""Compressed CSV/NDJSON inputs are staged decompressed and read; files whose bytes say another format than
their name are refused with a message naming both (DESIGN.md section 1, "Format details"; section 5)."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import zipfile
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from conftest import make_frame, run_job

import batchnb as bn
from batchnb.errors import converted
from batchnb.sources import sniff, staging

ROWS = 3_000
CHUNK = 1_000


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return make_frame(ROWS, seed=3, all_missing=False).drop("label")


def compress(data: bytes, kind: str, path: Path, member: str = "data.csv") -> str:
    if kind == "gzip":
        path.write_bytes(gzip.compress(data))
    elif kind == "bzip2":
        path.write_bytes(bz2.compress(data))
    elif kind == "xz":
        path.write_bytes(lzma.compress(data))
    elif kind == "zstd":
        with pa.CompressedOutputStream(str(path), "zstd") as out:
            out.write(data)
    else:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(member, data)
    return str(path)


EXT = {"gzip": ".gz", "bzip2": ".bz2", "xz": ".xz", "zstd": ".zst", "zip": ".zip"}


def text_of(frame: pl.DataFrame, suffix: str) -> bytes:
    if suffix == ".tsv":
        return frame.write_csv(separator="\t").encode()
    return frame.write_csv().encode() if suffix == ".csv" else frame.write_ndjson().encode()


def staged_files(output: Path) -> list[Path]:
    return sorted(p for p in Path(output, "_batchnb", "converted").glob("*") if p.is_file())


def reference(frame: pl.DataFrame, tmp_path: Path, suffix: str) -> pl.DataFrame:
    """The output of the same job on the plain file."""
    src = tmp_path / f"plain{suffix}"
    src.write_bytes(text_of(frame, suffix))
    result = run_job(str(src), tmp_path / "plain-out", chunk_size=CHUNK, engine="sequential")
    return result.read().collect()


def no_second_pass(*args):
    raise AssertionError("decompressed again")


# --------------------------------------------------------------------------------------------------
# Reading compressed files
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "suffix"),
    [("gzip", ".csv"), ("zstd", ".csv"), ("bzip2", ".csv"), ("xz", ".csv"), ("zip", ".csv"),
     ("gzip", ".tsv"), ("zstd", ".jsonl"), ("bzip2", ".ndjson"), ("xz", ".json"), ("zip", ".jsonl"),
     ("gzip", ".ndjson"), ("zip", ".tsv")],
)  # fmt: skip
def test_compressed_text_is_read_like_the_plain_file(frame, tmp_path, kind, suffix):
    src = compress(text_of(frame, suffix), kind, tmp_path / f"data{suffix}{EXT[kind]}", member=f"data{suffix}")
    result = run_job(src, tmp_path / "out", chunk_size=CHUNK, engine="sequential")
    assert result.status == "succeeded", result.errors
    assert result.rows_in == result.rows_out == ROWS
    out = result.read().collect()
    assert out.get_column("id").to_list() == list(range(ROWS))
    assert out.equals(reference(frame, tmp_path, suffix))  # same values, types and scores as the plain file
    assert out.get_column("x2").equals(frame.get_column("x2"))
    staged = staged_files(tmp_path / "out")
    assert len(staged) == 1 and staged[0].suffix == suffix  # a .tsv stays tab-separated
    assert staged[0].stat().st_size == len(text_of(frame, suffix))


def test_compressed_stream_under_a_plain_name_is_read(frame, tmp_path):
    """A gzip stream named .csv (and a zip named .csv, which made Polars panic) is decompressed and read."""
    for kind in ("gzip", "zip"):
        src = compress(frame.write_csv().encode(), kind, tmp_path / f"{kind}.csv")
        result = run_job(src, tmp_path / f"out-{kind}", chunk_size=CHUNK, engine="sequential")
        assert result.status == "succeeded", result.errors
        assert result.read().collect().get_column("id").to_list() == list(range(ROWS))


def test_format_option_with_a_compressed_file_without_suffix(frame, tmp_path):
    src = compress(frame.write_ndjson().encode(), "xz", tmp_path / "export")
    result = run_job(src, tmp_path / "out", chunk_size=CHUNK, engine="sequential", format="json")
    assert result.status == "succeeded", result.errors
    assert result.rows_out == ROWS


def test_zip_named_only_zip_reads_its_member_with_format(frame, tmp_path):
    src = compress(frame.write_csv(separator="\t").encode(), "zip", tmp_path / "export.zip", member="inner/data.tsv")
    result = run_job(src, tmp_path / "out", chunk_size=CHUNK, engine="sequential", format="csv")
    assert result.status == "succeeded", result.errors
    assert result.read().collect().select(frame.columns).columns == frame.columns  # tab separator from .tsv


def test_glob_of_compressed_files_is_one_dataset(frame, tmp_path):
    thirds = [frame.slice(i * 1_000, 1_000) for i in range(3)]
    for i, part in enumerate(thirds):
        compress(part.write_csv().encode(), "gzip", tmp_path / f"day-{i}.csv.gz")
    result = run_job(str(tmp_path / "day-*.csv.gz"), tmp_path / "out", chunk_size=CHUNK, engine="threads")
    assert result.status == "succeeded", result.errors
    assert result.read().collect().get_column("id").to_list() == list(range(ROWS))
    assert len(staged_files(tmp_path / "out")) == 3


def test_list_of_files_mixing_compressions(frame, tmp_path):
    paths = []
    for i, kind in enumerate(("zstd", "bzip2", "zip")):
        paths.append(
            compress(frame.slice(i * 1_000, 1_000).write_csv().encode(), kind, tmp_path / f"p{i}.csv{EXT[kind]}")
        )
    result = run_job(paths, tmp_path / "out", chunk_size=CHUNK, engine="sequential")
    assert result.status == "succeeded", result.errors
    assert result.read().collect().get_column("id").to_list() == list(range(ROWS))


def test_json_array_inside_gzip(frame, tmp_path):
    src = compress(frame.write_json().encode(), "gzip", tmp_path / "data.json.gz")
    result = run_job(src, tmp_path / "out", chunk_size=CHUNK, engine="sequential")
    assert result.status == "succeeded", result.errors
    assert result.read().collect().get_column("id").to_list() == list(range(ROWS))


def test_plan_stages_and_plans_byte_ranges(frame, tmp_path, monkeypatch):
    src = compress(frame.write_csv().encode(), "gzip", tmp_path / "data.csv.gz")
    plan = bn.BatchJob(src, tmp_path / "out", chunk_size=CHUNK, engine="sequential").plan()
    (staged,) = plan.dataset.paths
    assert Path(staged).parent == tmp_path / "out" / "_batchnb" / "converted"
    assert plan.dataset.format == "csv" and len(plan.chunks) >= 2
    assert Path(staged).read_bytes() == frame.write_csv().encode()
    monkeypatch.setattr(staging, "_decompress", no_second_pass)
    result = bn.BatchJob(src, tmp_path / "out", chunk_size=CHUNK, engine="sequential").run(progress=None)
    assert result.rows_out == ROWS  # run() after plan() on the same output uses the staged copy


# --------------------------------------------------------------------------------------------------
# Identity, resume and staleness
# --------------------------------------------------------------------------------------------------
FAIL_ON = {"id": None}


def fails_on_one_chunk(df: pl.DataFrame) -> pl.DataFrame:
    if FAIL_ON["id"] is not None and FAIL_ON["id"] in df.get_column("id").to_list():
        raise RuntimeError("planned failure")
    return df.select(pl.col("id"), (pl.col("x1") * 2).alias("score"))


def resumable(tmp_path: Path, frame: pl.DataFrame) -> tuple[str, Path, Path]:
    """A .csv.gz job whose chunk holding row 2500 failed: a second run resumes it."""
    src = compress(frame.write_csv().encode(), "gzip", tmp_path / "data.csv.gz")
    out = tmp_path / "out"
    FAIL_ON["id"] = 2_500
    try:
        first = run_job(src, out, detector=fails_on_one_chunk, chunk_size=CHUNK, engine="sequential", retries=0)
    finally:
        FAIL_ON["id"] = None
    assert first.status == "failed" and first.chunks_failed == 1
    (staged,) = staged_files(out)
    return src, out, staged


def check_resumed(src: str, out: Path, frame: pl.DataFrame) -> None:
    result = run_job(src, out, detector=fails_on_one_chunk, chunk_size=CHUNK, engine="sequential", retries=0)
    assert result.status == "succeeded", result.errors
    got = result.read().collect()
    assert got.get_column("id").to_list() == list(range(ROWS))
    expected = (frame.get_column("x1") * 2).fill_nan(None)
    assert got.get_column("score").fill_nan(None).equals(expected, check_names=False)


def test_resume_reuses_the_staged_copy(frame, tmp_path, monkeypatch):
    src, out, staged = resumable(tmp_path, frame)
    before = staged.stat()
    monkeypatch.setattr(staging, "_decompress", no_second_pass)
    check_resumed(src, out, frame)
    assert (staged.stat().st_ino, staged.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.parametrize("damage", ["missing", "touched"])
def test_resume_restages_a_missing_or_stale_copy(frame, tmp_path, damage):
    src, out, staged = resumable(tmp_path, frame)
    if damage == "missing":
        staged.unlink()
    else:
        staged.write_bytes(b"id,x1\n" + b"9,9\n" * 4_000)  # same name, other bytes
    check_resumed(src, out, frame)
    assert staged.read_bytes() == frame.write_csv().encode()


def test_identity_is_the_original_file(frame, tmp_path):
    """A changed .csv.gz is a changed source, whatever its staged copy says."""
    src = compress(frame.write_csv().encode(), "gzip", tmp_path / "data.csv.gz")
    out = tmp_path / "out"
    assert run_job(src, out, chunk_size=CHUNK, engine="sequential").status == "succeeded"
    compress(frame.head(2_000).write_csv().encode(), "gzip", Path(src))
    os.utime(src, ns=(1, 1))
    with pytest.raises(bn.JobStateError, match=r"data\.csv\.gz"):
        run_job(src, out, chunk_size=CHUNK, engine="sequential")
    result = bn.BatchJob(src, out, chunk_size=CHUNK, engine="sequential").run(progress=None, restart=True)
    assert result.rows_out == 2_000
    assert len(staged_files(out)) == 1  # the copy of the old version is gone


# --------------------------------------------------------------------------------------------------
# Archives that cannot be read: SourceError at run() and plan(), never a failing chunk
# --------------------------------------------------------------------------------------------------
def refused(src: str, tmp_path: Path, **options) -> bn.SourceError:
    job = bn.BatchJob(src, tmp_path / "out", chunk_size=CHUNK, engine="sequential", **options)
    with pytest.raises(bn.SourceError) as planned:
        job.plan()
    with pytest.raises(bn.SourceError) as ran:
        job.run(progress=None)
    assert str(planned.value) == str(ran.value)
    assert not [p for p in Path(tmp_path, "out").rglob("*.tmp")]
    return ran.value


def test_zip_with_several_files_names_them(tmp_path):
    src = tmp_path / "bundle.csv.zip"
    with zipfile.ZipFile(src, "w") as archive:
        archive.writestr("jan.csv", "a\n1\n")
        archive.writestr("feb.csv", "a\n2\n")
    err = refused(str(src), tmp_path)
    for word in ("bundle.csv.zip", "jan.csv", "feb.csv", "2 files", "extract", "glob"):
        assert word in str(err)


def test_empty_zip(tmp_path):
    src = tmp_path / "empty.csv.zip"
    with zipfile.ZipFile(src, "w") as archive:
        archive.writestr("__MACOSX/._data.csv", "x")  # metadata only
    err = refused(str(src), tmp_path)
    assert "empty.csv.zip" in str(err) and "holds no file" in str(err)


@pytest.mark.parametrize("kind", ["gzip", "zstd", "bzip2", "xz", "zip"])
def test_truncated_archive_names_the_file_and_cause(frame, tmp_path, kind):
    whole = compress(frame.write_csv().encode(), kind, tmp_path / f"whole.csv{EXT[kind]}")
    data = Path(whole).read_bytes()
    src = tmp_path / f"cut.csv{EXT[kind]}"
    src.write_bytes(data[: len(data) * 2 // 3])
    err = refused(str(src), tmp_path)
    assert f"cut.csv{EXT[kind]}" in str(err)
    assert "truncated or corrupt" in str(err)


def test_corrupt_gzip_body(frame, tmp_path):
    data = bytearray(gzip.compress(frame.write_csv().encode()))
    data[len(data) // 2 : len(data) // 2 + 64] = b"\x00" * 64
    src = tmp_path / "bad.csv.gz"
    src.write_bytes(bytes(data))
    err = refused(str(src), tmp_path)
    assert "bad.csv.gz" in str(err) and "gzip" in str(err)


def test_compressed_file_holding_parquet(frame, tmp_path):
    frame.write_parquet(tmp_path / "p.parquet")
    src = compress((tmp_path / "p.parquet").read_bytes(), "gzip", tmp_path / "data.csv.gz")
    err = refused(src, tmp_path)
    assert "data.csv.gz" in str(err) and "Parquet" in str(err)


def test_compressed_file_holding_nothing(tmp_path):
    src = compress(b"", "gzip", tmp_path / "nothing.csv.gz")
    err = refused(src, tmp_path)
    assert "nothing.csv.gz" in str(err) and "no data" in str(err)


def test_gz_name_on_plain_text(frame, tmp_path):
    src = tmp_path / "already.csv.gz"
    src.write_bytes(frame.write_csv().encode())
    err = refused(str(src), tmp_path)
    assert "already.csv.gz" in str(err) and "rename" in str(err)


# --------------------------------------------------------------------------------------------------
# Content sniffing: a file whose bytes say another format than its name
# --------------------------------------------------------------------------------------------------
def write_other(frame: pl.DataFrame, kind: str, path: Path) -> str:
    if kind == "parquet":
        frame.write_parquet(path)
    elif kind == "feather":
        frame.write_ipc(path)
    else:  # the HDF5 signature is all the sniff reads
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(504))
    return str(path)


@pytest.mark.parametrize(
    ("kind", "name", "says"),
    [("parquet", "data.csv", "Parquet"), ("feather", "data.csv", "Arrow IPC"), ("hdf5", "data.jsonl", "HDF5"),
     ("parquet", "data.feather", "Parquet"), ("feather", "data.parquet", "Arrow IPC")],
)  # fmt: skip
def test_file_that_is_another_format_says_what_it_is(frame, tmp_path, kind, name, says):
    src = write_other(frame, kind, tmp_path / name)
    err = refused(src, tmp_path)
    assert name in str(err) and says in str(err) and f"format={kind!r}" in str(err)
    if kind != "hdf5":  # following the advice works
        result = run_job(src, tmp_path / "out2", chunk_size=CHUNK, engine="sequential", format=kind)
        assert result.rows_out == ROWS


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_compressed_binary_format_is_refused_with_what_to_do(frame, tmp_path, kind):
    frame.write_parquet(tmp_path / "p.parquet")
    src = tmp_path / "data.parquet"
    compress((tmp_path / "p.parquet").read_bytes(), kind, src)
    err = refused(str(src), tmp_path)
    assert "data.parquet" in str(err) and kind in str(err) and "decompress it first" in str(err)


def test_sniff_reads_magic_bytes(tmp_path):
    cases = {b"PAR1xxxx": "parquet", b"ARROW1\x00\x00": "feather", b"\x89HDF\r\n\x1a\n": "hdf5",
             b"PK\x03\x04": "zip", b"\x1f\x8b\x08": "gzip", b"BZh9": "bzip2", b"\xfd7zXZ\x00": "xz",
             b"\x28\xb5\x2f\xfd": "zstd", b"id,x\n1,2\n": None, b"": None}  # fmt: skip
    for head, kind in cases.items():
        assert sniff.sniff_bytes(head) == kind


# --------------------------------------------------------------------------------------------------
# Panics from the reader become SourceErrors; Ctrl-C passes through
# --------------------------------------------------------------------------------------------------
def test_reader_panic_becomes_source_error():
    with pytest.raises(bn.SourceError, match=r"names\.csv") as err:
        with converted(bn.SourceError, "cannot read 'names.csv'"):
            pl.DataFrame({"a\x00b": [1]}).to_arrow()  # Polars panics on a NUL byte in a column name
    assert not isinstance(err.value.__cause__, Exception)  # the cause was the BaseException panic


def test_panic_while_opening_a_source_is_a_batch_error(tmp_path):
    src = tmp_path / "names.csv"
    src.write_bytes(b"a\x00b,c\n" + b"1,2\n" * 2_000)
    job = bn.BatchJob(str(src), tmp_path / "out", chunk_size=CHUNK, engine="sequential")
    with pytest.raises(bn.BatchError, match=r"names\.csv"):
        job.plan()


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_interrupts_pass_through_the_panic_guard(exc):
    with pytest.raises(exc):
        with converted(bn.SourceError, "x"):
            raise exc()


# --------------------------------------------------------------------------------------------------
# Object stores: a compressed object is staged locally through fsspec
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3(s3_server):
    s3_server.mkdir("batchnb-compressed")
    return s3_server


def test_compressed_object_on_s3_is_staged_and_read(s3, frame, tmp_path):
    local = compress(frame.write_csv().encode(), "zstd", tmp_path / "data.csv.zst")
    s3.put(local, "batchnb-compressed/in/data.csv.zst")
    url = "s3://batchnb-compressed/in/data.csv.zst"
    remote = run_job(url, tmp_path / "remote", chunk_size=CHUNK, engine="threads")
    assert remote.status == "succeeded", remote.errors
    here = run_job(local, tmp_path / "local", chunk_size=CHUNK, engine="threads")
    assert remote.read().collect().equals(here.read().collect())
    (staged,) = staged_files(tmp_path / "remote")
    assert staged.read_bytes() == frame.write_csv().encode()
    s3.pipe("batchnb-compressed/in/cut.csv.zst", Path(local).read_bytes()[:5_000])
    err = refused("s3://batchnb-compressed/in/cut.csv.zst", tmp_path)
    assert "cut.csv.zst" in str(err) and "truncated or corrupt" in str(err)


def test_full_disk_while_staging_says_where_and_what_to_do(tmp_path):
    class FullDisk:
        def write(self, data):
            raise OSError(28, "No space left on device")

    with pytest.raises(bn.SourceError) as err:
        staging._write(FullDisk(), b"a,b\n", tmp_path / "out" / "_batchnb" / "converted" / "x.csv.tmp")
    assert "No space left" in str(err.value) and "free space" in str(err.value) and "x.csv.tmp" in str(err.value)
