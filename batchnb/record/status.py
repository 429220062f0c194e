"""Job and chunk states as the record holds them: enums, so terminal states are a property, not a set
repeated everywhere, and the typed row of one chunk."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from batchnb.errors import ChunkError

__all__ = ["ChunkRecord", "ChunkStatus", "JobStatus"]


class JobStatus(StrEnum):
    PENDING = "pending"
    PLANNING = "planning"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Never written: what a reader of the record calls a job whose driver is gone while the record says it runs
    # (killed, crashed, machine rebooted). It resumes like a cancelled one.
    INTERRUPTED = "interrupted"

    @property
    def is_terminal(self) -> bool:
        """No driver works on the job: it will not change until it is run again."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED)


class ChunkStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, kw_only=True)
class ChunkRecord:
    index: int
    status: ChunkStatus
    attempts: int
    rows: tuple[int, int]
    rows_in: int | None
    rows_out: int | None
    anomalies: int | None
    part: str | None
    nbytes: int | None
    checksum: str | None
    seconds: float | None
    error: ChunkError | None
