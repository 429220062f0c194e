"""Pickle (and other formats that cannot be sliced): loaded once on the driver, kept as Arrow IPC."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import polars as pl

from batchnb.errors import SourceError
from batchnb.files import atomic_file
from batchnb.sources.dataset import DatasetInfo
from batchnb.sources.feather import Feather

__all__ = ["Pickle", "materialize"]


def materialize(paths: tuple[str, ...], workdir: Path, load, label: str) -> tuple[str, ...]:
    """Arrow IPC copies of `paths` under `workdir`, reused while the input is unchanged."""
    from batchnb.sources.staging import real_dir

    workdir = real_dir(workdir)
    out = []
    for p in paths:
        st = os.stat(p)
        tag = hashlib.sha256(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
        target = workdir / f"{Path(p).stem}-{tag}.arrow"
        if not target.exists():
            frame = load(p)
            with atomic_file(target) as tmp:  # never a planted link
                frame.write_ipc(tmp)
        out.append(str(target))
    return tuple(out)


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

    def inspect(self, paths: tuple[str, ...], read_options: dict[str, Any], *, workdir: Path) -> DatasetInfo:
        converted = materialize(paths, workdir, _load_pickle, "pickle")
        originals = dict(zip(converted, paths, strict=True))  # an error names the user's files, not their copies
        return super().inspect(converted, read_options, workdir=workdir, originals=originals)
