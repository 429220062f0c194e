"""HDF5 written by pandas in table format: row counts from the table, chunks are row ranges read in place."""

from __future__ import annotations

from typing import Any

import polars as pl

from batchnb.errors import SourceError, cause_of
from batchnb.sources.base import RowFormat, reading
from batchnb.sources.dataset import DatasetInfo
from batchnb.sources.facts import HDF5Facts

__all__ = ["HDF5"]

_WRITE_HINT = "write the data with `DataFrame.to_hdf(path, key=..., format='table')`, or convert it to Parquet"


def _tables(store) -> list[str]:
    """The user's tables: pandas keeps a categorical column's categories as a table of its own under
    `<key>/meta/`, which is part of `<key>`, not a table to pick."""
    keys = store.keys()
    return [k for k in keys if not any(k.startswith(f"{owner}/meta/") for owner in keys if owner != k)]


def _key(store, path: str, read_options: dict[str, Any]) -> str:
    keys = _tables(store)
    key = read_options.get("key")
    if key is None:
        if not keys:
            raise SourceError(f"HDF5 file {path!r} holds no pandas table ({_contents(store)}): {_WRITE_HINT}")
        if len(keys) != 1:
            raise SourceError(
                f"HDF5 file {path!r} holds {len(keys)} tables {keys}: pass read_options={{'key': ...}} to pick one"
            )
        return keys[0]
    key = key if key.startswith("/") else "/" + key
    if key not in keys:
        held = f"its pandas tables are {keys}" if keys else f"{_contents(store)}, but no pandas table: {_WRITE_HINT}"
        raise SourceError(f"HDF5 file {path!r} has no pandas table {key!r}: {held}")
    return key


def _contents(store) -> str:
    """What a file without pandas tables holds, e.g. "arrays /x, /grp/y; groups /grp"."""
    kinds: dict[str, list[str]] = {}
    for node in store.root._f_walknodes():
        kind = "groups" if type(node).__name__ == "Group" else "arrays" if "Array" in type(node).__name__ else "tables"
        kinds.setdefault(kind, []).append(node._v_pathname)
    if not kinds:
        return "it is empty"
    shown = [f"{kind} {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}" for kind, names in kinds.items()]
    return "it holds " + "; ".join(shown)


class HDF5(RowFormat):
    name = "hdf5"
    options = {"key": (lambda v: v is None or isinstance(v, str), "the key of a pandas table in the file, like '/df'")}

    def _open(self, path: str):
        import pandas as pd

        try:
            return pd.HDFStore(path, mode="r")
        except Exception as exc:
            raise SourceError(
                f"cannot open HDF5 file {path!r}: {cause_of(exc)}; is it a complete HDF5 file written by pandas?"
            ) from exc

    def facts(self, paths: tuple[str, ...], read_options: dict[str, Any]) -> HDF5Facts:
        keys, counts = [], []
        for p in paths:
            with self._open(p) as store, reading(p, "HDF5"):
                key = _key(store, p, read_options)
                storer = store.get_storer(key)
                if not storer.is_table:
                    raise SourceError(
                        f"HDF5 table {key!r} in {p!r} is in pandas' fixed format, which cannot be read in chunks: "
                        "write it with `to_hdf(..., format='table')`"
                    )
                keys.append(key)
                counts.append(int(storer.nrows))
        return HDF5Facts(row_counts=tuple(counts), keys=tuple(keys))

    def read_schema(self, path: str, read_options: dict[str, Any]) -> pl.Schema:
        """Types from the table's first row, but a pandas object column is text: its first value may be None."""
        with self._open(path) as store, reading(path, "HDF5"):
            head = store.select(_key(store, path, read_options), start=0, stop=1)
            schema = dict(pl.from_pandas(head, include_index=False).schema)
        return pl.Schema({c: pl.String if head[c].dtype == object else t for c, t in schema.items()})

    def read_rows(self, info: DatasetInfo, path: str, start: int, stop: int) -> pl.DataFrame:
        """Rows [start, stop) of the projection's columns: PyTables still reads whole rows of its table (it
        stores rows, not columns), but only those columns are converted."""
        key = info.facts_as(HDF5Facts).keys[info.paths.index(path)]
        columns = None if info.columns is None else list(info.columns)
        with self._open(path) as store, reading(path, "HDF5", chunk=True):
            frame = store.select(key, start=start, stop=stop, columns=columns)
            return pl.from_pandas(frame, include_index=False)
