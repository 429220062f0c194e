"""Where a job's output lives: a local directory, or an object-store prefix whose record stays on the driver.

A Dask or Ray cluster on Kubernetes or a cloud service shares no POSIX file system, but every node reaches the
same bucket. The record (sqlite in WAL mode, a lock) needs a local disk, which only the driver has: for an output
such as `s3://bucket/scores` the driver keeps `_batchnb/` in a local state directory (its `home`), each worker
writes its part as one object (a single PUT, or a multipart upload that appears whole when it completes: never a
partial part, no rename), and the driver publishes `s3://bucket/scores/_batchnb/manifest.json` (the parts, their
rows and checksums) after every pass. Credentials and endpoints come from each node's environment, as for
sources (`storage`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from batchnb import storage
from batchnb.errors import BatchError, ConfigError, JobStateError, describe
from batchnb.formats import PART_NAME

__all__ = [
    "MANIFEST",
    "STATE_DIR_ENV",
    "absolute",
    "check_output_url",
    "fresh_filesystem",
    "home",
    "is_remote",
    "output_name",
    "part_path",
    "part_sizes",
    "publish_part",
    "remote_checksum",
    "remove_part",
    "write_manifest",
]

STATE_DIR_ENV = "BATCHNB_STATE_DIR"  # where the records of object-store outputs live on the driver
MANIFEST = "_batchnb/manifest.json"


def is_remote(output: str | os.PathLike) -> bool:
    return storage.is_url(os.fspath(output))


def check_output_url(output: str, protocol: str, output_format: str) -> None:
    """An output URL must name an object store every worker reaches, and the parts there are Parquet."""
    if protocol in ("file", "local", "memory"):
        why = (
            "a path"
            if protocol != "memory"
            else "a path, or a bucket every worker reaches (memory:// is one process's)"
        )
        raise ConfigError(f"`output` {output!r}: give {why}")
    if output_format != "parquet":
        msg = (
            f"`output` {output!r} is on an object store, where parts are written as Parquet only: "
            f"drop `output_format={output_format!r}` or write to a local path"
        )
        raise ConfigError(msg)


def state_root() -> Path:
    """`$BATCHNB_STATE_DIR`, else `$XDG_STATE_HOME/batchnb`, else `~/.local/state/batchnb`."""
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "batchnb"


def home(output: str | os.PathLike) -> str:
    """The local directory holding the job's `_batchnb/` (record, lock, staged copies): the output itself, or
    for an object-store output a directory of the state root named after the URL (readable, and unique by its
    digest), the same for every process on this machine."""
    text = os.fspath(output)
    if not is_remote(text):
        return text
    url = text.rstrip("/")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", url.split("://", 1)[1]).strip("-.")[-60:] or "output"
    return str(state_root() / f"{slug}-{hashlib.sha256(url.encode()).hexdigest()[:16]}")


def output_name(output: str | os.PathLike) -> str:
    """The output's last path segment (of a URL too): a job's default name."""
    return Path(os.fspath(output).rstrip("/")).name


def absolute(output: str | os.PathLike) -> str:
    """The output as a user should see it: the URL of an object-store output, else the resolved path."""
    text = os.fspath(output)
    return text if is_remote(text) else str(Path(text).resolve())


def part_path(output: str | os.PathLike, name: str) -> str:
    """Where part `name` of the output is: a local path, or the object's URL."""
    text = os.fspath(output)
    return f"{text.rstrip('/')}/{name}" if is_remote(text) else str(Path(text, name))


def fresh_filesystem(url: str):
    """(fsspec filesystem, path) of a URL under an output, with no listing cached from before: parts come and go
    by other processes (workers, a later run), and fsspec filesystems cache directory listings per process."""
    fs, path = storage.filesystem(url)
    fs.invalidate_cache(path.rsplit("/", 1)[0])
    return fs, path


@contextlib.contextmanager
def reaching(output: str, what: str) -> Iterator[None]:
    """The driver's calls to the store: a failure (no credentials, no such bucket, no network) is a
    JobStateError that names the output and what to check, never the client's raw exception."""
    try:
        yield
    except (BatchError, FileNotFoundError):  # a missing object or prefix is an answer, not a failure
        raise
    except Exception as exc:
        msg = (
            f"cannot {what} the object-store output {output!r} ({describe(exc)}): check the URL, that the bucket "
            "exists, and the credentials and endpoint in the environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS)"
        )
        raise JobStateError(msg) from exc


def _listing(output: str) -> list[dict[str, Any]]:
    """What lies directly under an object-store output, as fsspec lists it (one request, never a cached one)."""
    fs, path = storage.filesystem(output)
    try:
        with reaching(output, "list"):
            return list(fs.ls(path.rstrip("/"), detail=True, refresh=True))
    except FileNotFoundError:
        return []


def _name(entry: dict[str, Any]) -> str:
    return str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]


def part_sizes(output: str) -> dict[str, int]:
    """Every `part-*` object under an object-store output, with its size (one listing)."""
    return {
        _name(e): int(e.get("size") or 0)
        for e in _listing(output)
        if e.get("type") == "file" and PART_NAME.fullmatch(_name(e))
    }


def existing_objects(output: str) -> list[str]:
    """The names under an object-store output besides batchnb's own `_batchnb/` (parts included: without a record
    here they are someone else's); a JobStateError when its bucket does not exist (every part would fail to
    upload)."""
    fs, path = storage.filesystem(output)
    bucket = path.split("/", 1)[0]
    with reaching(output, "reach"):
        if not fs.exists(bucket):
            raise JobStateError(f"the bucket {bucket!r} of the output {output!r} does not exist: create it first")
    return sorted(name for name in map(_name, _listing(output)) if name != "_batchnb")


def publish_part(local: str | os.PathLike, output: str, name: str) -> None:
    """Upload a finished part as one object: it appears whole, or not at all."""
    fs, path = storage.filesystem(part_path(output, name))
    fs.put_file(os.fspath(local), path)


def remove_part(output: str, name: str) -> None:
    """Delete a part batchnb wrote (a local link is removed itself, never what it points to)."""
    if not is_remote(output):
        Path(output, name).unlink(missing_ok=True)
        return
    fs, path = storage.filesystem(part_path(output, name))
    try:
        with reaching(output, "delete a part of"):
            fs.rm_file(path)
    except FileNotFoundError:
        pass


def remote_checksum(url: str) -> tuple[str, int]:
    """("xxh3:<hex>", size) of an object, streamed: the same value `checksum.file_checksum` gives its bytes."""
    import xxhash

    digest, size = xxhash.xxh3_128(), 0
    fs, path = fresh_filesystem(url)
    with fs.open(path, "rb") as f:
        while block := f.read(8 * 2**20):
            digest.update(block)
            size += len(block)
    return f"xxh3:{digest.hexdigest()}", size


def write_manifest(output: str, manifest: dict[str, Any]) -> None:
    """Publish the manifest beside the parts, as one object."""
    fs, path = storage.filesystem(part_path(output, MANIFEST))
    with reaching(output, "publish the manifest of"):
        fs.pipe_file(path, json.dumps(manifest, indent=1, sort_keys=True).encode())
