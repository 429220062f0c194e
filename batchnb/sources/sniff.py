"""What a file really is, from its first bytes: a file named for one format but holding another is refused
with a message that names both, before a reader meets it (Polars panics on a zip or a Parquet file read as
CSV). Only the first few bytes of each file are read."""

from __future__ import annotations

from pathlib import Path

from batchnb import storage
from batchnb.errors import SourceError
from batchnb.formats import COMPRESSIBLE_FORMATS, COMPRESSION_SUFFIXES

__all__ = ["COMPRESSIONS", "check_content", "kind_name", "sniff", "sniff_bytes"]

MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PAR1", "parquet"),
    (b"ARROW1", "feather"),
    (b"FEA1", "feather"),
    (b"\x89HDF\r\n\x1a\n", "hdf5"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),  # an empty archive
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
HEAD = max(len(m) for m, _ in MAGIC)
COMPRESSIONS = ("gzip", "bzip2", "xz", "zstd", "zip")
_DESCRIPTIONS = {
    "parquet": "a Parquet file",
    "feather": "an Arrow IPC (Feather) file",
    "hdf5": "an HDF5 file",
    "zip": "a zip archive",
    "gzip": "gzip-compressed",
    "bzip2": "bzip2-compressed",
    "xz": "xz-compressed",
    "zstd": "zstd-compressed",
    "csv": "CSV",
    "json": "NDJSON",
    "pickle": "a pickle",
}
_SUFFIX = {"parquet": ".parquet", "feather": ".feather", "hdf5": ".h5"}
_TOOL = {"gzip": "gunzip", "bzip2": "bunzip2", "xz": "unxz", "zstd": "unzstd", "zip": "unzip"}


def kind_name(kind: str) -> str:
    """How a message names a format or compression ("a Parquet file", "gzip-compressed")."""
    return _DESCRIPTIONS.get(kind, kind)


def sniff_bytes(head: bytes) -> str | None:
    """The format or compression the leading bytes announce, or None (plain text, a pickle, unknown)."""
    return next((kind for magic, kind in MAGIC if head.startswith(magic)), None)


def sniff(path: str) -> str | None:
    try:
        with storage.open_input(path) as f:
            head = f.read(HEAD)
    except OSError as exc:
        raise SourceError(f"cannot read source file {path!r}: {exc}") from exc
    return sniff_bytes(head)


def suffix_compression(path: str) -> str | None:
    return COMPRESSION_SUFFIXES.get(Path(path).suffix.lower())


def check_content(path: str, fmt: str, kind: str | None) -> None:
    """Refuse `path` when its bytes (`kind`, from `sniff`) say it is not a `fmt` file batchnb can read.

    A compressed CSV or NDJSON stream is fine whatever its name: it is decompressed before planning.
    """
    named = suffix_compression(path)
    if kind in COMPRESSIONS and fmt in COMPRESSIBLE_FORMATS:
        return
    if named and kind is None and fmt in COMPRESSIBLE_FORMATS:
        msg = (
            f"source file {path!r} is named {Path(path).suffix!r} but its bytes are not {kind_name(named)}: "
            f"the download may have been decompressed already; rename it without {Path(path).suffix!r}"
        )
        raise SourceError(msg)
    if kind is None or kind == fmt:
        return
    if kind in COMPRESSIONS:
        msg = (
            f"source file {path!r} is {kind_name(kind)}, and batchnb decompresses only CSV and NDJSON: "
            f"decompress it first (e.g. `{_TOOL[kind]}`) and pass the {fmt} file it holds"
        )
        raise SourceError(msg)
    msg = (
        f"source file {path!r} is {kind_name(kind)} (its first bytes say so), not {kind_name(fmt)}: "
        f"rename it to {_SUFFIX[kind]}, or pass format={kind!r}"
    )
    raise SourceError(msg)
