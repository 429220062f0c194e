"""What one corpus entry is: how its file is made, how batchnb is asked to read it, and what must happen."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import batchnb as bn

__all__ = ["OK", "Entry", "Expect", "fails", "ok_or", "sample_frame"]

Source = str | list[str]


@dataclass(frozen=True)
class Expect:
    """`ok`: the job succeeds with the reference values. `error`: a BatchError of that class whose message
    holds every word (a word "a|b" accepts either). Both set: reading it right or refusing it clearly is fine."""

    ok: bool = True
    error: type[bn.BatchError] | None = None
    words: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.error is None:
            return "ok"
        wanted = f"{self.error.__name__}({', '.join(self.words)})"
        return f"ok or {wanted}" if self.ok else wanted


OK = Expect()


def fails(error: type[bn.BatchError], *words: str) -> Expect:
    return Expect(ok=False, error=error, words=words)


def ok_or(error: type[bn.BatchError], *words: str) -> Expect:
    return Expect(ok=True, error=error, words=words)


@dataclass(frozen=True)
class Entry:
    """One file (or glob) of the corpus.

    `make(folder)` writes the file into its own empty folder (or returns a path that a library ships) and
    returns the source to hand to BatchJob. `reference(source)` overrides the default reference reader.
    """

    id: str
    origin: str
    fmt: str
    make: Callable[[Path], Source]
    read_options: dict[str, Any] = field(default_factory=dict)
    expect: Expect = OK
    chunk_size: int = 1_000
    pass_format: bool = False
    reference: Callable[[Source], pl.DataFrame] | None = None


def sample_frame(n: int, seed: int = 0) -> pl.DataFrame:
    """Numbers a detector has something to say about: outliers, NaN, nulls, ints, a constant, strings."""
    rng = np.random.default_rng(seed)
    x = rng.normal(50.0, 10.0, n)
    x[rng.choice(n, size=max(2, n // 200), replace=False)] += 120.0
    x[rng.choice(n, size=max(1, n // 300), replace=False)] = np.nan
    y = rng.lognormal(0.0, 0.7, n)
    nulls = rng.random(n) < 0.02
    return pl.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64),
            "x": x,
            "y": y,
            "k": rng.integers(-3, 9, n).astype(np.int64),
            "c": np.full(n, 2.5),
            "name": np.array(["a", "b,c", 'd"e', "f g", "héllo"])[rng.integers(0, 5, n)],
        }
    ).with_columns(pl.when(pl.Series(nulls)).then(None).otherwise(pl.col("y")).alias("y"))
