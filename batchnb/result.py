"""What a run returns, read back from the job's state so it is the same from any process."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from batchnb import sinks
from batchnb.errors import ChunkError
from batchnb.place import absolute, part_path
from batchnb.record.status import ChunkStatus, JobStatus
from batchnb.record.store import JobState
from batchnb.sources.schema import schema_of

__all__ = ["JobResult", "VerifyReport", "read_output"]


def read_output(output: str | Path, *, allow_pickle: bool = False) -> pl.LazyFrame:
    """The done parts of a job as one LazyFrame, in input row order.

    Pickle and HDF5 parts can run code when read: they are read only with `allow_pickle=True`, the reader's
    own consent, whatever the output's state says.
    """
    with JobState.open(output) as state:
        parts = [part_path(output, c.part) for c in state.chunks() if c.status == ChunkStatus.DONE and c.part]
        schema, dtypes = state.get("output_schema"), state.get("output_dtypes")
        output_format = state.get("config", {}).get("output_format", "parquet")
    sink = sinks.get(output_format)
    polars_schema = schema_of(dtypes, schema)
    if not parts:  # nothing to scan, but the reader's consent is asked all the same
        sinks.check_readable(sink, allow_pickle=allow_pickle, output=output)
        return pl.LazyFrame(schema=polars_schema or {})
    return sinks.scan_parts(parts, sink, polars_schema, allow_pickle=allow_pickle)


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
    # Whether read() may load pickle/HDF5 parts: the job's own option when the result comes from its run.
    allow_pickle: bool = field(default=False, repr=False, compare=False)

    @classmethod
    def from_state(cls, output: str | Path, *, allow_pickle: bool = False) -> JobResult:
        """The result recorded in `output`; `allow_pickle=True` lets read() load pickle/HDF5 parts."""
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
                errors=[c.error for c in state.chunks() if c.status == ChunkStatus.FAILED and c.error],
                reason=state.get("reason"),
                allow_pickle=allow_pickle,
            )

    @property
    def ok(self) -> bool:
        return self.status == JobStatus.SUCCEEDED

    def read(self, *, allow_pickle: bool | None = None) -> pl.LazyFrame:
        """The output in input row order; pickle/HDF5 parts need `allow_pickle` (default: the result's own)."""
        return read_output(self.output, allow_pickle=self.allow_pickle if allow_pickle is None else allow_pickle)

    def to_pandas(self, *, allow_pickle: bool | None = None):
        return self.read(allow_pickle=allow_pickle).collect().to_pandas()

    def summary(self) -> str:
        lines = [
            f"status     {self.status}",
            f"rows       {self.rows_in:,} in, {self.rows_out:,} out, {self.anomalies:,} anomalies",
            f"chunks     {self.chunks_done}/{self.chunks_total} done, {self.chunks_failed} failed, "
            f"{self.chunks_skipped} skipped, {self.retries} retries",
            f"time       {self.elapsed_s:.2f} s, {self.rows_per_s:,.0f} rows/s",
            f"output     {absolute(self.output)}",
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
    # Parts whose row count was not checked: pickle/HDF5 parts, read only with allow_pickle=True.
    rows_unchecked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if self.ok and not self.rows_unchecked:
            return f"verify: ok, {self.parts_checked} parts match their checksums and row counts"
        if self.ok:
            lines = [f"verify: ok, {self.parts_checked} parts match their checksums"]
        else:
            lines = [f"verify: {len(self.problems)} problem(s) in {self.parts_checked} parts", *self.problems]
        if self.rows_unchecked:
            lines.append(
                f"row counts of {self.rows_unchecked} pickle/HDF5 parts not checked: reading them can run code; "
                "pass allow_pickle=True (batchnb verify --allow-pickle) if you trust the output"
            )
        return "\n".join(lines)
