"""Files written byte by byte: the CSV and NDJSON edge cases that real exports contain, and broken files."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

import batchnb as bn
from corpus.spec import OK, Entry, fails, ok_or, sample_frame

__all__ = ["HANDMADE"]


def raw(name: str, data: bytes):
    def make(folder: Path) -> str:
        (folder / name).write_bytes(data)
        return str(folder / name)

    return make


def many(*files: tuple[str, bytes], pattern: str = "*.csv"):
    """Several files of one dataset, read by a glob."""

    def make(folder: Path) -> str:
        for name, data in files:
            (folder / name).write_bytes(data)
        return str(folder / pattern)

    return make


def csv_rows(header: str, rows) -> bytes:
    return (header + "\n" + "".join(f"{r}\n" for r in rows)).encode()


N = 2_600
rng = np.random.default_rng(21)
VALUES = rng.normal(0.0, 1.0, N).round(6)
VALUES[[100, 2_000]] = [40.0, -35.0]

CRLF = csv_rows("id,v,s", (f"{i},{v},s{i}" for i, v in enumerate(VALUES))).replace(b"\n", b"\r\n")
QUOTED = csv_rows("id,text,v", (f'{i},"line one\nline ""two"", {i}\r\nend",{v}' for i, v in enumerate(VALUES)))
EMPTY_STRETCH = csv_rows("id,sparse,v", (f"{i},{'' if i < 2_300 else i * 0.5},{v}" for i, v in enumerate(VALUES)))
LATE_FLOAT = csv_rows("id,n", (f"{i},{i if i < N - 1 else 0.5}" for i in range(N)))
LATE_TEXT = csv_rows("id,n,v", (f"{i},{i if i < N - 1 else 'N/A'},{v}" for i, v in enumerate(VALUES)))
ALL_EMPTY = csv_rows("id,nothing,v", (f"{i},,{v}" for i, v in enumerate(VALUES[:1_500])))
SPECIAL = csv_rows("id,v,w", (f"{i},{['inf', '-inf', 'NaN', 'nan', ''][i] if i < 5 else v},{v}"
                              for i, v in enumerate(VALUES[:1_200])))  # fmt: skip
RAGGED_SHORT = csv_rows("id,a,b", (f"{i},{v}" if i % 250 == 7 else f"{i},{v},{-v}" for i, v in enumerate(VALUES)))
RAGGED_LONG = csv_rows("id,a,b", (f"{i},{v},{v},99" if i == 1_500 else f"{i},{v},{-v}" for i, v in enumerate(VALUES)))
SEMICOLONS = csv_rows("id;v;w", (f"{i};{v};{v * 2}" for i, v in enumerate(VALUES[:1_100])))
COMMENTS = csv_rows("id,v", (f"# note {i}" if i % 100 == 0 else f"{i},{v}" for i, v in enumerate(VALUES)))
TRAILING_SEP = csv_rows("id,v,", (f"{i},{v}," for i, v in enumerate(VALUES[:1_100])))
DUPLICATE_NAMES = csv_rows("v,v,id", (f"{v},{v + 1},{i}" for i, v in enumerate(VALUES[:1_100])))
PADDED = csv_rows("id, v", (f"{i}, {v}" for i, v in enumerate(VALUES[:1_100])))
NDJSON = "".join(json.dumps({"id": i, "v": float(v), "s": f"s{i}"}) + "\n" for i, v in enumerate(VALUES)).encode()
NDJSON_SPARSE = "".join(
    json.dumps({"id": i, "v": float(v)} if i % 3 else {"id": i, "w": i * 2}) + "\n" for i, v in enumerate(VALUES)
).encode()
NDJSON_LATE_FLOAT = "".join(json.dumps({"id": i, "n": i if i < N - 1 else 0.5}) + "\n" for i in range(N)).encode()
NDJSON_LATE_TEXT = "".join(json.dumps({"id": i, "n": i if i < N - 1 else "x"}) + "\n" for i in range(N)).encode()
NDJSON_INT_V = "".join(json.dumps({"id": i, "v": i % 7, "s": "t"}) + "\n" for i in range(900)).encode()
NDJSON_BROKEN = NDJSON.replace(b'{"id": 1500,', b'{"id": 1500 ', 1)


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("inner.csv", CRLF.decode())
    return buffer.getvalue()


def _parquet_bytes() -> bytes:
    buffer = io.BytesIO()
    pq.write_table(sample_frame(1_000).to_arrow(), buffer)
    return buffer.getvalue()


def _ipc_bytes() -> bytes:
    buffer = io.BytesIO()
    sample_frame(1_000).write_ipc(buffer)
    return buffer.getvalue()


def _e(id, make, fmt="csv", expect=OK, **kw) -> Entry:
    return Entry(id=id, origin="bytes", fmt=fmt, make=make, expect=expect, **kw)


EMPTY_FILE = "empty|0 bytes|0-byte|no data"
NOT_UTF8 = "utf"
PART_A = csv_rows("id,v", (f"{i},{v}" for i, v in enumerate(VALUES[:1_300])))
PART_B_FLOAT_ID = csv_rows("id,v", (f"{i}.5,{v}" for i, v in enumerate(VALUES[:900])))
PART_B_TEXT_V = csv_rows("id,v", (f"{i},v{v}" for i, v in enumerate(VALUES[:900])))

HANDMADE: list[Entry] = [
    _e("bytes-csv-0-bytes", raw("a.csv", b""), expect=fails(bn.SourceError, "a.csv", EMPTY_FILE)),
    _e("bytes-jsonl-0-bytes", raw("a.jsonl", b""), "json", expect=fails(bn.SourceError, "a.jsonl", EMPTY_FILE)),
    _e("bytes-parquet-0-bytes", raw("a.parquet", b""), "parquet", expect=fails(bn.SourceError, "a.parquet")),
    _e("bytes-csv-header-only", raw("a.csv", b"id,v,s\n")),
    _e("bytes-csv-header-only-crlf", raw("a.csv", b"id,v,s\r\n")),
    _e("bytes-csv-header-no-newline", raw("a.csv", b"id,v,s")),
    _e("bytes-csv-crlf", raw("a.csv", CRLF)),
    _e("bytes-csv-bom-crlf", raw("a.csv", b"\xef\xbb\xbf" + CRLF)),
    _e("bytes-csv-no-final-newline", raw("a.csv", CRLF.rstrip())),
    _e("bytes-csv-blank-lines-at-end", raw("a.csv", PART_A + b"\n\n\n")),
    _e("bytes-csv-quoted-newlines", raw("a.csv", QUOTED)),
    _e("bytes-csv-quoted-newlines-exact", raw("a.csv", QUOTED), read_options={"exact_rows": True}),
    _e("bytes-csv-long-empty-stretch", raw("a.csv", EMPTY_STRETCH)),
    _e("bytes-csv-int-then-float-late", raw("a.csv", LATE_FLOAT)),
    _e("bytes-csv-number-then-text-late", raw("a.csv", LATE_TEXT)),
    _e("bytes-csv-all-empty-column", raw("a.csv", ALL_EMPTY)),
    _e("bytes-csv-inf-nan-text", raw("a.csv", SPECIAL)),
    _e("bytes-csv-short-records", raw("a.csv", RAGGED_SHORT)),
    _e("bytes-csv-long-record", raw("a.csv", RAGGED_LONG), expect=fails(bn.SourceError, "a.csv", "line 1502")),
    _e("bytes-csv-semicolons-no-option", raw("a.csv", SEMICOLONS), expect=fails(bn.ConfigError, "numeric")),
    _e("bytes-csv-comment-lines", raw("a.csv", COMMENTS), read_options={"comment_prefix": "#"}),
    _e("bytes-csv-trailing-separator", raw("a.csv", TRAILING_SEP)),
    _e("bytes-csv-duplicate-names", raw("a.csv", DUPLICATE_NAMES)),
    _e("bytes-csv-padded-fields", raw("a.csv", PADDED)),
    _e("bytes-csv-one-row", raw("a.csv", b"id,v\n0,1.5\n")),
    _e("bytes-csv-two-rows", raw("a.csv", b"id,v\n0,1.5\n1,-2.25\n")),
    _e("bytes-csv-bad-utf8-header", raw("a.csv", b"id,v\xff\xfe\n1,2\n"), expect=fails(bn.SourceError, NOT_UTF8)),
    _e("bytes-csv-bad-utf8-value", raw("a.csv", PART_A + b"9999,\xff\xfe\n"), expect=fails(bn.SourceError, NOT_UTF8)),
    _e("bytes-csv-is-a-zip", raw("a.csv", _zip_bytes()), expect=ok_or(bn.SourceError, "a.csv"),
       reference=lambda p: pl.read_csv(zipfile.ZipFile(p).read("inner.csv"), infer_schema_length=None)),
    _e("bytes-csv-gz-not-gzip", raw("a.csv.gz", CRLF), expect=fails(bn.SourceError, "a.csv.gz")),
    _e("bytes-parquet-truncated", raw("a.parquet", _parquet_bytes()[:-300]), "parquet",
       expect=fails(bn.SourceError, "a.parquet")),
    _e("bytes-parquet-is-csv", raw("a.parquet", CRLF), "parquet", expect=fails(bn.SourceError, "a.parquet")),
    _e("bytes-feather-truncated", raw("a.feather", _ipc_bytes()[:-200]), "feather",
       expect=fails(bn.SourceError, "a.feather")),
    _e("bytes-ndjson", raw("a.jsonl", NDJSON), "json"),
    _e("bytes-ndjson-crlf", raw("a.jsonl", NDJSON.replace(b"\n", b"\r\n")), "json"),
    _e("bytes-ndjson-blank-lines", raw("a.jsonl", NDJSON.replace(b"}\n", b"}\n\n")), "json"),
    _e("bytes-ndjson-missing-keys", raw("a.jsonl", NDJSON_SPARSE), "json"),
    _e("bytes-ndjson-int-then-float-late", raw("a.jsonl", NDJSON_LATE_FLOAT), "json"),
    _e("bytes-ndjson-number-then-text-late", raw("a.jsonl", NDJSON_LATE_TEXT), "json"),
    _e("bytes-ndjson-broken-line", raw("a.jsonl", NDJSON_BROKEN), "json",
       expect=fails(bn.SourceError, "a.jsonl", "line")),
    _e("bytes-csv-glob-int-float", many(("a.csv", PART_A), ("b.csv", PART_B_FLOAT_ID))),
    _e("bytes-csv-glob-float-text", many(("a.csv", PART_A), ("b.csv", PART_B_TEXT_V)),
       expect=fails(bn.SourceError, "'v'|\"v\"|`v`", "a.csv|b.csv")),
    _e("bytes-csv-glob-header-only-part", many(("a.csv", PART_A), ("b.csv", b"id,v\n"))),
    _e("bytes-ndjson-glob", many(("a.jsonl", NDJSON), ("b.jsonl", NDJSON_INT_V), pattern="*.jsonl"), "json"),
]  # fmt: skip
