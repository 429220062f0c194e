"""One root for every error a user can cause; each survives pickling across processes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = [
    "BatchError",
    "ChunkError",
    "ConfigError",
    "DataError",
    "EngineError",
    "JobStateError",
    "SourceError",
]


class BatchError(Exception):
    """Root of every batchnb error: ``except bn.BatchError`` catches all of them."""

    def __reduce__(self):
        return (type(self), self.args)


class ConfigError(BatchError, ValueError):
    """An option of the job is invalid; the message names it and what to do."""


class SourceError(BatchError):
    """The source cannot be found, opened or planned."""


class DataError(SourceError, ValueError):
    """A chunk's bytes cannot be read as the dataset's schema says (a parse error, a type the plan did not
    expect, a record with extra fields). The same bytes fail the same way again: never retried."""


class JobStateError(BatchError):
    """The output directory holds another job's state, or the source changed."""


class EngineError(BatchError):
    """An engine could not start, or lost its cluster while running."""


@dataclass(frozen=True, kw_only=True)
class ChunkError:
    """Why a chunk failed for good: enough to find and fix the bad rows."""

    chunk: int
    attempts: int
    type: str
    message: str
    traceback: str
    rows: tuple[int, int] | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ChunkError:
        rows = data.get("rows")
        return cls(
            chunk=int(data["chunk"]),
            attempts=int(data["attempts"]),
            type=str(data["type"]),
            message=str(data["message"]),
            traceback=str(data["traceback"]),
            rows=tuple(rows) if rows is not None else None,
        )

    def __str__(self) -> str:
        return f"chunk {self.chunk} failed after {self.attempts} attempt(s): {self.type}: {self.message}"
