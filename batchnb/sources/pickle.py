"""Pickle (and other formats that cannot be sliced): loaded once on the driver, kept as Arrow IPC."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from batchnb.errors import SourceError
from batchnb.files import atomic_file
from batchnb.sources.dataset import DatasetInfo
from batchnb.sources.feather import Feather
from batchnb.sources.staging import Workdir

__all__ = ["Pickle", "materialize"]


def materialize(paths: tuple[str, ...], workdir: Workdir, load: Callable[[str], pl.DataFrame]) -> dict[str, str]:
    """Arrow IPC copies of `paths` in the job's work directory, reused while the input is unchanged:
    copy -> the user's file, in the order of `paths`."""
    folder = workdir.path()
    out = {}
    for p in paths:
        st = os.stat(p)
        tag = hashlib.sha256(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
        target = folder / f"{Path(p).stem}-{tag}.arrow"
        if not target.exists():
            frame = load(p)
            with atomic_file(target) as tmp:  # never a planted link
                frame.write_ipc(tmp)
        out[str(target)] = p
    return out


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
        converted = materialize(paths, workdir, _load_pickle)  # an error names the user's files, not their copies
        return self.describe(tuple(converted), read_options, origins=converted)
