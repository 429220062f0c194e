"""Output formats: write one part atomically, read all parts back as one LazyFrame in input order."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from batchnb import formats
from batchnb.errors import PASS_THROUGH, ConfigError
from batchnb.formats import CODE_RUNNING_FORMATS, PART_NAME, TEMP_NAME, code_running_message
from batchnb.place import is_remote, publish_part
from batchnb.registry import Registry
from batchnb.sinks import csv, feather, hdf5, json, parquet, pickle
from batchnb.sinks.base import Sink

__all__ = [
    "PART_NAME",
    "REGISTRY",
    "TEMP_NAME",
    "Sink",
    "check_readable",
    "get",
    "names",
    "part_name",
    "register",
    "runs_code",
    "scan_parts",
    "write_atomic",
    "write_split_atomic",
]


# Output formats by name; plugins: entry points in the group "batchnb.sinks" naming a Sink.
def _checked(item: object) -> Sink:
    if not isinstance(item, Sink):
        raise ConfigError(f"an output format must be a batchnb.sinks.Sink, got {item!r}")
    return item


REGISTRY: Registry[Sink] = Registry("sinks", noun="output format", convert=_checked)
for _sink in (csv.SINK, feather.SINK, hdf5.SINK, json.SINK, parquet.SINK, pickle.SINK):
    REGISTRY.register(_sink.name, _sink)


def register(sink: Sink) -> Sink:
    """Make `sink` an output format: `output_format=sink.name` then writes and reads its parts."""
    return REGISTRY.register(sink.name, sink)


def get(name: str) -> Sink:
    return REGISTRY.get(name)


def names() -> list[str]:
    return REGISTRY.names()


def part_name(index: int, sink: Sink) -> str:
    return formats.part_name(index, sink.extension)


_TEMP_DIRS: dict[str, Path] = {}  # per process: output -> its checked `_batchnb/tmp`


def _temp_dir(output: str) -> Path:
    """`_batchnb/tmp`, made and checked for a planted link once per output in this process, not per chunk.

    The driver's JobLock checks it before any chunk is written; a worker on another machine holds no lock,
    so its first chunk makes and checks the directory there.
    """
    key = os.path.abspath(output)
    found = _TEMP_DIRS.get(key)
    if found is None:
        from batchnb.files import private_dir

        found = _TEMP_DIRS[key] = private_dir(output, "tmp")
    return found


def write_atomic(frame: pl.DataFrame, output: str, index: int, sink: Sink) -> tuple[str, int, str, dict[str, float]]:
    """Write to a temp name, hash, then rename: a reader never sees a partial part.

    No fsync: a killed process loses nothing that reached the page cache, and after a power cut a part
    whose bytes did not reach the disk fails its checksum when the job resumes and is written again.

    Returns (part file name, size in bytes, checksum, seconds spent writing and hashing).
    """
    from batchnb.files import atomic_file

    name = part_name(index, sink)
    if is_remote(output):
        return _put_part(frame, output, name, sink)
    # The sink fills the fresh temp (never matches part-*), which then replaces whatever is at the part's name.
    # Making the temp counts as writing: a file per chunk costs its inode (0.3-1 ms here) whoever creates it.
    t = time.perf_counter()
    with atomic_file(
        Path(output, name), directory=_temp_dir(output), prefix=f"tmp-{index:06d}-", suffix=sink.extension,
        mode=0o644,
    ) as tmp:  # fmt: skip
        made = time.perf_counter() - t
        size, checksum, timings = _write_and_hash(frame, tmp, sink)
        t = time.perf_counter()
    return name, size, checksum, {**timings, "write": made + timings["write"], "rename": time.perf_counter() - t}


def write_split_atomic(
    frames: Sequence[pl.DataFrame], output: str, indices: Sequence[int], sink: Sink
) -> list[tuple[str, int, str, dict[str, float]]] | None:
    """The parts of several chunks written by one query (`Sink.write_split`), each to a temp name, then hashed
    and renamed as `write_atomic` does; what `write_atomic` returns, per chunk.

    None where that does not apply (a sink without `write_split`, an object store, chunks of unequal size) or
    when the files written are not exactly the chunks' rows: no temp is left and each chunk writes its own part.
    """
    rows = frames[0].height if frames else 0
    if (
        sink.write_split is None or is_remote(output) or len(frames) < 2 or rows == 0
        or any(f.height != rows for f in frames[:-1]) or not 0 < frames[-1].height <= rows
    ):  # fmt: skip
        return None
    from batchnb.checksum import file_checksum
    from batchnb.files import fresh_file

    t = time.perf_counter()
    directory = _temp_dir(output)
    temps: list[Path] = []
    try:
        temps = [fresh_file(directory, f"tmp-{i:06d}-", sink.extension, 0o644) for i in indices]
        written = sink.write_split(pl.concat(frames, rechunk=False), [str(p) for p in temps], rows)
        if {os.path.normpath(p): n for p, n in written} != {
            str(p): f.height for p, f in zip(temps, frames, strict=True)
        }:
            return None
        write_s, out = (time.perf_counter() - t) / len(frames), []
        for index, tmp in zip(indices, temps, strict=True):
            t0 = time.perf_counter()
            checksum, size = file_checksum(tmp)
            t1, name = time.perf_counter(), part_name(index, sink)
            os.replace(tmp, Path(output, name))
            timings = {"write": write_s, "checksum": t1 - t0, "rename": time.perf_counter() - t1}
            out.append((name, size, checksum, timings))
        return out
    except PASS_THROUGH:
        raise
    except BaseException:  # noqa: BLE001 - a panic too: each chunk's own write then tells what is wrong
        return None
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def _put_part(frame: pl.DataFrame, output: str, name: str, sink: Sink) -> tuple[str, int, str, dict[str, float]]:
    """An object-store part: written to a local temporary file, hashed, then put as one object (it appears
    whole or not at all, so no temporary object is ever visible)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="batchnb-part-") as tmp_dir:
        tmp = Path(tmp_dir, name)
        size, checksum, timings = _write_and_hash(frame, tmp, sink)
        t = time.perf_counter()
        publish_part(tmp, output, name)
    return name, size, checksum, {**timings, "upload": time.perf_counter() - t}


def _write_and_hash(frame: pl.DataFrame, path: Path, sink: Sink) -> tuple[int, str, dict[str, float]]:
    """(size, checksum, seconds writing and hashing) of the part the sink writes to `path`."""
    from batchnb.checksum import file_checksum

    t0 = time.perf_counter()
    sink.write(frame, str(path))
    t1 = time.perf_counter()
    checksum, size = file_checksum(path)
    return size, checksum, {"write": t1 - t0, "checksum": time.perf_counter() - t1}


def runs_code(sink: Sink) -> bool:
    return sink.name in CODE_RUNNING_FORMATS


def check_readable(sink: Sink, *, allow_pickle: bool, output: str | os.PathLike) -> None:
    """Refuse to read pickle/HDF5 parts back unless the reader allowed it, whatever the job state says."""
    if runs_code(sink) and not allow_pickle:
        raise ConfigError(code_running_message(f"the parts of {str(output)!r} are", sink.name, trust="the output"))


def scan_parts(
    paths: Sequence[str], sink: Sink, schema: pl.Schema | None = None, *, allow_pickle: bool = False
) -> pl.LazyFrame:
    """All parts as one LazyFrame with the job's output schema (text formats would re-guess types).

    Pickle and HDF5 parts are read only with `allow_pickle=True` from the caller.
    """
    if paths:
        check_readable(sink, allow_pickle=allow_pickle, output=Path(paths[0]).parent)
    if paths and is_remote(paths[0]):
        return _scan_remote(list(paths), schema)
    return sink.scan(list(paths), schema)


def _scan_remote(urls: list[str], schema: pl.Schema | None) -> pl.LazyFrame:
    """Object-store parts (Parquet) as one lazy scan through fsspec, with the credentials of this process's
    environment as every read of the store: pyarrow reads only the row groups and columns a query needs."""
    import pyarrow.dataset as ds
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    from batchnb.place import fresh_filesystem
    from batchnb.storage import filesystem

    fs, _ = fresh_filesystem(urls[0])
    paths = [filesystem(url)[1] for url in urls]
    dataset = ds.dataset(paths, filesystem=PyFileSystem(FSSpecHandler(fs)), format="parquet")
    frame = pl.scan_pyarrow_dataset(dataset)
    return frame.cast(schema) if schema else frame
