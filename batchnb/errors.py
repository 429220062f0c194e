"""One root for every error a user can cause; each survives pickling across processes."""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator
from dataclasses import asdict, dataclass

# A Polars panic: a BaseException (pyo3), so `except Exception` misses it and its class cannot be pickled.
from polars.exceptions import PanicException

__all__ = [
    "BatchError",
    "ChunkError",
    "ConfigError",
    "DataError",
    "EngineError",
    "JobStateError",
    "PanicException",
    "SourceError",
    "cause_of",
    "converted",
    "describe",
    "fails_again",
    "is_panic",
    "one_line",
]

# Never converted: the user (Ctrl-C) or the interpreter asked to stop.
PASS_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit)


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


def one_line(exc: BaseException) -> str:
    """The whole message on one line (a Polars panic's message spans several lines); empty if it has none."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def describe(exc: BaseException) -> str:
    """`Type: message` on one line, for any exception."""
    text = one_line(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def portable(exc: BaseException) -> BaseException:
    """`exc` when it survives pickling to the driver; else a RuntimeError saying what it was (retried, as an
    unknown error is)."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any reason it does not travel
        return RuntimeError(describe(exc))
    return exc


def cause_of(exc: BaseException) -> str:
    """The one line of a library error that says what went wrong: its first line (HDF5 puts it last, at the end
    of a back trace), or the type's name when it has no message."""
    text = str(exc).strip() or type(exc).__name__
    if "HDF5 error back trace" in text:
        lines = [line.strip() for line in text.split("End of HDF5 error back trace")[0].splitlines() if line.strip()]
        return lines[-1] if lines else text
    return text.splitlines()[0]


def is_panic(exc: BaseException) -> bool:
    """A Polars panic, told by its base: pyo3's `PanicException` derives from BaseException alone. Not by class:
    a panic raised by cloudpickled code in a worker process is an instance of a copy of that class."""
    return not isinstance(exc, (Exception, *PASS_THROUGH))


def fails_again(exc: BaseException | None) -> bool:
    """A chunk error that the same chunk raises again on every attempt, so retrying only delays the job.

    A `DataError` (bytes that do not parse, a schema mismatch, a Polars panic), a `ConfigError` (the job's
    options), and a `TypeError`, which means code and data disagree on a type (a detector returning something
    other than a DataFrame). A plain `SourceError` inside a chunk is retried: sources raise it for an OS error
    while reading, which may pass (a network file system). Engines hand the runner the chunk's own exception
    type (the processes pool re-raises the pickled original, Dask does too, Ray's engine unwraps
    `RayTaskError`), so an `isinstance` check sees through them.
    """
    return isinstance(exc, DataError | ConfigError | TypeError)


@contextlib.contextmanager
def converted(cls: type[BatchError], what: str) -> Iterator[None]:
    """Any error but a batchnb one (Polars panics included) leaves as `cls`, saying `what` failed and why.

    Ctrl-C and `SystemExit` pass untouched. Used where the driver calls into libraries: opening and planning
    the source, fitting the detector, starting the engine.
    """
    try:
        yield
    except (BatchError, *PASS_THROUGH):
        raise
    except BaseException as exc:  # a Polars PanicException is a BaseException
        raise cls(f"{what}: {describe(exc)}") from exc
