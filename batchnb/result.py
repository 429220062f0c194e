"""What a run returns, read back from the job's state so it is the same from any process."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from batchnb import sinks
from batchnb.errors import ChunkError
from batchnb.sources.base import schema_of
from batchnb.state import JobState
from batchnb.status import ChunkStatus

__all__ = ["JobResult", "VerifyReport", "read_output"]


def read_output(output: str | Path) -> pl.LazyFrame:
    """The done parts of a job as one LazyFrame, in input row order."""
    with JobState.open(output) as state:
        parts = [str(Path(output, c.part)) for c in state.chunks() if c.status == ChunkStatus.DONE and c.part]
        schema, dtypes = state.get("output_schema"), state.get("output_dtypes")
        output_format = state.get("config", {}).get("output_format", "parquet")
    polars_schema = schema_of(dtypes, schema)
    if not parts:
        return pl.LazyFrame(schema=polars_schema or {})
    return sinks.scan_parts(parts, sinks.get(output_format), polars_schema)


@dataclass(frozen=True, kw_only=True)
class JobResult:
    output: str
    status: str
    rows_in: int
    rows_out: int
    anomalies: int
    chunks_total: int
    chunks_done: int
    chunks_failed: int
    chunks_skipped: int
    retries: int
    elapsed_s: float
    rows_per_s: float
    errors: list[ChunkError] = field(default_factory=list)
    reason: str | None = None

    @classmethod
    def from_state(cls, output: str | Path) -> JobResult:
        with JobState.open(output) as state:
            counts, totals = state.counts(), state.totals()
            elapsed = float(state.get("elapsed_s", 0.0))
            return cls(
                output=str(output),
                status=state.status().value,
                rows_in=totals["rows_in"],
                rows_out=totals["rows_out"],
                anomalies=totals["anomalies"],
                chunks_total=sum(counts.values()),
                chunks_done=counts.get(ChunkStatus.DONE.value, 0),
                chunks_failed=counts.get(ChunkStatus.FAILED.value, 0),
                chunks_skipped=counts.get(ChunkStatus.SKIPPED.value, 0),
                retries=state.retries(),
                elapsed_s=elapsed,
                rows_per_s=totals["rows_in"] / elapsed if elapsed > 0 else 0.0,
                errors=state.errors(),
                reason=state.get("reason"),
            )

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def read(self) -> pl.LazyFrame:
        return read_output(self.output)

    def to_pandas(self):
        return self.read().collect().to_pandas()

    def summary(self) -> str:
        lines = [
            f"status     {self.status}",
            f"rows       {self.rows_in:,} in, {self.rows_out:,} out, {self.anomalies:,} anomalies",
            f"chunks     {self.chunks_done}/{self.chunks_total} done, {self.chunks_failed} failed, "
            f"{self.chunks_skipped} skipped, {self.retries} retries",
            f"time       {self.elapsed_s:.2f} s, {self.rows_per_s:,.0f} rows/s",
            f"output     {Path(self.output).resolve()}",
        ]
        if self.reason:
            lines.append(f"reason     {self.reason}")
        lines.extend(f"error      {e}" for e in self.errors[:5])
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        from batchnb.views.html import result_html

        return result_html(self)


@dataclass(frozen=True, kw_only=True)
class VerifyReport:
    """Every done part checked against its recorded checksum and row count."""

    parts_checked: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if self.ok:
            return f"verify: ok, {self.parts_checked} parts match their checksums and row counts"
        return "\n".join([f"verify: {len(self.problems)} problem(s) in {self.parts_checked} parts", *self.problems])
