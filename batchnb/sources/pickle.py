"""Pickle: a file that cannot be sliced, loaded once on the driver and read as its staged Arrow IPC copy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from batchnb.errors import SourceError
from batchnb.sources.dataset import DatasetInfo
from batchnb.sources.feather import Feather
from batchnb.sources.staging import Workdir, arrow_copies

__all__ = ["Pickle"]


def _load_pickle(path: str) -> pl.DataFrame:
    import pandas as pd

    try:
        obj = pd.read_pickle(path)
    except Exception as exc:
        raise SourceError(f"cannot unpickle {path!r}: {exc}") from exc
    if isinstance(obj, pl.DataFrame):
        return obj
    if isinstance(obj, pd.DataFrame):
        return pl.from_pandas(obj, include_index=False)
    raise SourceError(f"pickle file {path!r} holds a {type(obj).__name__}, not a pandas or polars DataFrame")


class Pickle(Feather):
    name = "pickle"

    def inspect(
        self,
        paths: tuple[str, ...],
        read_options: dict[str, Any],
        *,
        workdir: Workdir,
        origins: Mapping[str, str] | None = None,
    ) -> DatasetInfo:
        converted = arrow_copies(paths, workdir, _load_pickle)  # an error names the user's files, not their copies
        return self.describe(tuple(converted), read_options, origins=converted)
