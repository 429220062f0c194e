"""Input formats behind a registry keyed by name; `open_dataset` is the driver's entry point."""

from __future__ import annotations

from typing import Any

from batchnb import storage
from batchnb.errors import SourceError
from batchnb.formats import CODE_RUNNING_FORMATS, code_running_message
from batchnb.registry import Registry
from batchnb.sources.base import Format, fingerprint, resolve_paths
from batchnb.sources.csv import CSV
from batchnb.sources.dataset import ChunkSpec, DatasetInfo
from batchnb.sources.feather import Feather
from batchnb.sources.hdf5 import HDF5
from batchnb.sources.json import NDJSON
from batchnb.sources.parquet import Parquet
from batchnb.sources.pickle import Pickle
from batchnb.sources.staging import Workdir, stage

__all__ = [
    "REGISTRY",
    "Format",
    "Workdir",
    "check_trusted",
    "fingerprint",
    "get",
    "names",
    "open_dataset",
    "read_chunk",
    "register",
    "resolve_paths",
]

# Input formats by name; plugins: entry points in the group "batchnb.sources" naming a Format.
REGISTRY: Registry[Format] = Registry("sources", noun="format")


def register(fmt: Format) -> Format:
    return REGISTRY.register(fmt.name, fmt)


def get(name: str) -> Format:
    return REGISTRY.get(name)


def names() -> list[str]:
    return REGISTRY.names()


def detect_format(paths: tuple[str, ...]) -> str:
    from batchnb.formats import format_from_suffix

    formats = {format_from_suffix(p) for p in paths}
    found = formats.pop() if len(formats) == 1 else None
    if found is None:
        raise SourceError(f"cannot tell the format of {list(paths)[:3]}: pass `format=` one of {names()}")
    return found


def open_dataset(
    source: str | tuple[str, ...],
    fmt: str | None,
    read_options: dict[str, Any],
    *,
    workdir: Workdir,
    allow_pickle: bool,
) -> DatasetInfo:
    """Resolve the files and read their metadata (never their data, except pickle and JSON arrays).

    Callers open it inside `errors.converted(SourceError, ...)`, which turns a reader's panic into a SourceError.
    """
    paths = resolve_paths(source)
    fmt = fmt or detect_format(paths)
    check_trusted(fmt, paths, allow_pickle=allow_pickle)
    get(fmt).check_options(read_options)  # here for a format known only from the files (config checks the rest)
    remote = [p for p in paths if storage.is_url(p)]
    if remote and fmt not in ("parquet", "csv", "json"):
        raise SourceError(
            f"{fmt} sources must be local files ({remote[0]!r} is a URL): copy them to a shared disk, or convert "
            "them to Parquet, which batchnb reads straight from object stores"
        )
    staged = stage(paths, fmt, workdir)  # compressed CSV/NDJSON -> staged plain copies; bytes checked against fmt
    origins = {copy: path for copy, path in zip(staged, paths, strict=True) if copy != path}
    return get(fmt).inspect(staged, dict(read_options), workdir=workdir, origins=origins)


def check_trusted(fmt: str, paths: tuple[str, ...], *, allow_pickle: bool) -> None:
    """Refuse, before a file is opened, a format whose reader can run code unless the user allowed it."""
    if fmt in CODE_RUNNING_FORMATS and not allow_pickle:
        trust = "whoever wrote it, or convert it to Parquet"
        raise SourceError(code_running_message(f"source {paths[0]!r} is", fmt, trust=trust))


def read_chunk(info: DatasetInfo, spec: ChunkSpec, fmt: Format | None = None) -> Any:
    """Worker side: exactly the rows of `spec`, with only the projection's columns (`info.columns`).

    `fmt` is the format object itself when the driver shipped it (one registered at run time is unknown to a
    worker process's registry). A format that does not honour the projection (a plugin) read more columns:
    they are dropped here, so every chunk holds the same columns.
    """
    frame = (fmt or get(info.format)).read(info, spec)
    if info.columns is not None and frame.columns != list(info.columns):
        frame = frame.select(info.columns)
    return frame


for _fmt in (CSV(), Parquet(), NDJSON(), Pickle(), HDF5(), Feather()):
    register(_fmt)
