"""Facts about file names and formats that config, sources, sinks and the record share.

A leaf: it imports nothing from batchnb but errors, so every module that needs a suffix, the formats whose
readers run code, or the names parts are given can import it without making a circle.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = [
    "CODE_RUNNING_FORMATS",
    "COMPRESSIBLE_FORMATS",
    "COMPRESSION_SUFFIXES",
    "EXTENSION",
    "PART_NAME",
    "SUFFIX_FORMATS",
    "TEMP_NAME",
    "code_running_message",
    "format_from_suffix",
    "part_name",
]

SUFFIX_FORMATS: dict[str, str] = {
    ".csv": "csv", ".tsv": "csv",
    ".parquet": "parquet", ".pq": "parquet",
    ".json": "json", ".jsonl": "json", ".ndjson": "json",
    ".pkl": "pickle", ".pickle": "pickle",
    ".h5": "hdf5", ".hdf5": "hdf5",
    ".feather": "feather", ".arrow": "feather", ".ipc": "feather",
}  # fmt: skip
# A compressed text file is named for its content plus the compression: data.csv.gz, events.jsonl.zst.
COMPRESSION_SUFFIXES: dict[str, str] = {".gz": "gzip", ".zst": "zstd", ".bz2": "bzip2", ".xz": "xz", ".zip": "zip"}
COMPRESSIBLE_FORMATS: tuple[str, ...] = ("csv", "json")

# Formats whose readers can run code written into the file (pickle by design; pandas opens HDF5 through PyTables,
# which unpickles attributes stored in it): such sources and parts are read only with `allow_pickle=True`.
CODE_RUNNING_FORMATS: dict[str, str] = {
    "pickle": "pickle format",
    "hdf5": "HDF5 format (pandas' reader, PyTables, unpickles attributes stored in such files)",
}


def code_running_message(subject: str, fmt: str, *, trust: str) -> str:
    """Why files of a `CODE_RUNNING_FORMATS` format are refused, and the consent that reads them."""
    return (
        f"{subject} in {CODE_RUNNING_FORMATS[fmt]}, and reading such files can run code written by whoever made "
        f"them: pass `allow_pickle=True` (`--allow-pickle`) if you trust {trust}"
    )


def format_from_suffix(path: str) -> str | None:
    """The format a file's name says; a compression suffix counts for CSV and NDJSON only (.csv.gz, .jsonl.zst)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in COMPRESSION_SUFFIXES:
        inner = SUFFIX_FORMATS.get(suffixes[-2])
        return inner if inner in COMPRESSIBLE_FORMATS else None
    return SUFFIX_FORMATS.get(Path(path).suffix.lower())


# A part's extension, built in or a plugin sink's: one dot and a few letters or digits, so a part name read from a
# state can never leave the output directory or name anything but a part.
EXTENSION = r"\.[A-Za-z0-9]{1,16}"


def part_name(index: int, extension: str) -> str:
    return f"part-{index:06d}{extension}"


# Every name part_name gives (group 1: the chunk index), and every temporary name a part is written under
# (its index, the 8 hex digits that make it fresh, the extension): nothing else is batchnb's to read or delete.
PART_NAME = re.compile(rf"part-(\d{{6,}}){EXTENSION}")
TEMP_NAME = re.compile(rf"tmp-\d{{6,}}-[0-9a-f]{{8}}{EXTENSION}")
