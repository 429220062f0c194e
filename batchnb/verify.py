"""Recompute every part's checksum and row count and compare them with the state."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from batchnb import sinks
from batchnb.checksum import file_checksum
from batchnb.place import is_remote, part_path, remote_checksum
from batchnb.record.status import ChunkStatus
from batchnb.record.store import JobState
from batchnb.result import VerifyReport

__all__ = ["verify"]


def verify(output: str | Path, *, allow_pickle: bool = False) -> VerifyReport:
    """Checksums of every done part (hashing bytes runs nothing); row counts too, except for pickle/HDF5
    parts without `allow_pickle=True`: reading those can run code, so the report says they were not counted."""
    problems: list[str] = []
    checked = unchecked = 0
    with JobState.open(output) as state:
        sink = sinks.get(state.get("config", {}).get("output_format", "parquet"))
        count_rows = allow_pickle or not sinks.runs_code(sink)
        for chunk in state.chunks():
            if chunk.status != ChunkStatus.DONE:
                continue
            checked += 1
            path = part_path(output, chunk.part or "")
            found = _checksum(path)
            if found is None:
                problems.append(f"{path}: missing (chunk {chunk.index})")
                continue
            checksum = found
            if checksum != chunk.checksum:
                problems.append(f"{path}: checksum {checksum} != recorded {chunk.checksum} (chunk {chunk.index})")
                continue
            if not count_rows:
                unchecked += 1
                continue
            rows = sinks.scan_parts([path], sink, allow_pickle=allow_pickle).select(pl.len()).collect().item()
            if rows != chunk.rows_out:
                problems.append(f"{path}: {rows} rows != recorded {chunk.rows_out} (chunk {chunk.index})")
    return VerifyReport(parts_checked=checked, problems=problems, rows_unchecked=unchecked)


def _checksum(path: str) -> str | None:
    """The part's checksum, or None when it is missing (a local path that is no regular file, a missing object)."""
    if is_remote(path):
        try:
            return remote_checksum(path)[0]
        except FileNotFoundError:
            return None
    if not Path(path).is_file():
        return None
    return file_checksum(path)[0]
