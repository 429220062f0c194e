"""HDF5 parts written by pandas (PyTables): reading them back can run code, so only with allow_pickle."""

from __future__ import annotations

import polars as pl

from batchnb.sinks.base import DeferredScan, Sink

__all__ = ["SINK"]


def _write_hdf5(frame: pl.DataFrame, path: str) -> None:
    # PyTables stores no nullable booleans: they travel as float (NaN for null) and are cast back on read.
    nullable_bools = [c for c, t in frame.schema.items() if t == pl.Boolean and frame[c].null_count()]
    frame = frame.with_columns(pl.col(nullable_bools).cast(pl.Float64)) if nullable_bools else frame
    frame.to_pandas().to_hdf(path, key="data", format="table", index=False)


def _read_hdf5(path: str) -> pl.DataFrame:
    import pandas as pd

    return pl.from_pandas(pd.read_hdf(path, key="data"), include_index=False)


# Named functions, not lambdas: a chunk task carries its Sink, and these pickle as references.
SINK = Sink("hdf5", ".h5", _write_hdf5, DeferredScan(_read_hdf5))
