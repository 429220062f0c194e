"""Recompute every part's checksum and row count and compare them with the state."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from batchnb import sinks
from batchnb.checksum import file_checksum
from batchnb.result import VerifyReport
from batchnb.state import JobState
from batchnb.status import ChunkStatus

__all__ = ["verify"]


def verify(output: str | Path) -> VerifyReport:
    problems: list[str] = []
    checked = 0
    with JobState.open(output) as state:
        sink = sinks.get(state.get("config", {}).get("output_format", "parquet"))
        for chunk in state.chunks():
            if chunk.status != ChunkStatus.DONE:
                continue
            checked += 1
            path = Path(output, chunk.part or "")
            if not path.is_file():
                problems.append(f"{path}: missing (chunk {chunk.index})")
                continue
            checksum, _ = file_checksum(path)
            if checksum != chunk.checksum:
                problems.append(f"{path}: checksum {checksum} != recorded {chunk.checksum} (chunk {chunk.index})")
                continue
            rows = sinks.scan_parts([str(path)], sink).select(pl.len()).collect().item()
            if rows != chunk.rows_out:
                problems.append(f"{path}: {rows} rows != recorded {chunk.rows_out} (chunk {chunk.index})")
    return VerifyReport(parts_checked=checked, problems=problems)
