"""HDF5 written by pandas: table format is sliced in place; fixed format is converted once to Arrow IPC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from batchnb.errors import SourceError
from batchnb.plan import DatasetInfo
from batchnb.sources.base import RowFormat

__all__ = ["HDF5"]


def _key(store, path: str, read_options: dict[str, Any]) -> str:
    keys = store.keys()
    key = read_options.get("key")
    if key is None:
        if len(keys) != 1:
            raise SourceError(
                f"HDF5 file {path!r} holds {len(keys)} tables {keys}: pass read_options={{'key': ...}} to pick one"
            )
        return keys[0]
    key = key if key.startswith("/") else "/" + key
    if key not in keys:
        raise SourceError(f"HDF5 file {path!r} has no table {key!r}: it holds {keys}")
    return key


class HDF5(RowFormat):
    name = "hdf5"

    def _open(self, path: str):
        import pandas as pd

        try:
            return pd.HDFStore(path, mode="r")
        except Exception as exc:
            raise SourceError(
                f"cannot open HDF5 file {path!r}: {exc}; is it a complete HDF5 file written by pandas?"
            ) from exc

    def inspect(self, paths: tuple[str, ...], read_options: dict[str, Any], *, workdir: Path) -> DatasetInfo:
        keys = []
        for p in paths:
            with self._open(p) as store:
                key = _key(store, p, read_options)
                if not store.get_storer(key).is_table:
                    raise SourceError(
                        f"HDF5 table {key!r} in {p!r} is in pandas' fixed format, which cannot be read in chunks: "
                        "write it with `to_hdf(..., format='table')`"
                    )
                keys.append(key)
        return super().inspect(paths, {**read_options, "_keys": keys}, workdir=workdir)

    def row_counts(self, paths: tuple[str, ...], read_options: dict[str, Any]) -> list[int]:
        counts = []
        for p, key in zip(paths, read_options["_keys"], strict=True):
            with self._open(p) as store:
                counts.append(int(store.get_storer(key).nrows))
        return counts

    def read_schema(self, path: str, read_options: dict[str, Any]) -> pl.Schema:
        key = read_options["_keys"][0]
        with self._open(path) as store:
            head = store.select(key, start=0, stop=1)
        return pl.from_pandas(head, include_index=False).schema

    def read_rows(self, info: DatasetInfo, path: str, start: int, stop: int) -> pl.DataFrame:
        key = info.read_options["_keys"][info.paths.index(path)]
        with self._open(path) as store:
            frame = store.select(key, start=start, stop=stop)
        return pl.from_pandas(frame, include_index=False)
