"""Pickle parts written by pandas: reading them back runs code, so only with allow_pickle."""

from __future__ import annotations

import polars as pl

from batchnb.sinks.base import DeferredScan, Sink

__all__ = ["SINK"]


def _write_pickle(frame: pl.DataFrame, path: str) -> None:
    frame.to_pandas().to_pickle(path)


def _read_pickle(path: str) -> pl.DataFrame:
    import pandas as pd

    return pl.from_pandas(pd.read_pickle(path), include_index=False)


# Named functions, not lambdas: a chunk task carries its Sink, and these pickle as references.
SINK = Sink("pickle", ".pkl", _write_pickle, DeferredScan(_read_pickle))
