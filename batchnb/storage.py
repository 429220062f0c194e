"""Where input files live: local paths, or object-store URLs (s3://, gs://, ...) through fsspec.

A cluster's workers rarely share a disk with the driver, but they all reach the same bucket. URLs
are resolved, listed and read with fsspec; credentials and endpoints come from the environment
(AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, GOOGLE_APPLICATION_CREDENTIALS, ...), as for every client of
that store, so a task carries no secret. Local paths keep going through the operating system.
"""

from __future__ import annotations

import os
from typing import IO, Any

from batchnb.errors import SourceError

__all__ = ["file_size", "filesystem", "glob", "info", "is_url", "open_input"]


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _fs(url: str):
    try:
        import fsspec
        from fsspec.core import url_to_fs
    except ImportError as exc:  # pragma: no cover - fsspec comes with dask; the message says what to add
        raise SourceError(f"reading {url!r} needs fsspec: pip install 'batchnb[s3]' (or gcs)") from exc
    try:
        return url_to_fs(url)
    except (ImportError, ValueError) as exc:
        protocol = url.split("://", 1)[0]
        known = ", ".join(sorted(fsspec.available_protocols())[:12])
        raise SourceError(
            f"cannot open {url!r}: {exc}; install the filesystem for {protocol!r} (s3fs for s3://, gcsfs for "
            f"gs://), e.g. pip install 'batchnb[s3]' (fsspec knows: {known}, ...)"
        ) from None


def filesystem(url: str):
    """(fsspec filesystem, path inside it) of a URL; a SourceError when its protocol is unknown."""
    return _fs(url)


def _with_protocol(url: str, path: str) -> str:
    protocol = url.split("://", 1)[0]
    return path if "://" in path else f"{protocol}://{path}"


def glob(pattern: str) -> list[str]:
    """Files matching a URL pattern, as URLs, sorted."""
    fs, path = _fs(pattern)
    return sorted(_with_protocol(pattern, p) for p in fs.glob(path) if fs.isfile(p))


def info(url: str) -> dict[str, Any] | None:
    """{"type", "size", "version"} of an object, or None when it does not exist."""
    fs, path = _fs(url)
    try:
        data = fs.info(path)
    except FileNotFoundError:
        return None
    version = (
        data.get("ETag") or data.get("etag") or data.get("md5Hash") or data.get("LastModified") or data.get("mtime")
    )
    return {"type": data.get("type"), "size": int(data.get("size") or 0), "version": str(version)}


def list_parts(url: str) -> list[str]:
    """The part-* files of a job output directory given as a URL."""
    return glob(url.rstrip("/") + "/part-*")


def file_size(path: str) -> int:
    if not is_url(path):
        return os.path.getsize(path)
    found = info(path)
    if found is None:
        raise SourceError(f"source {path!r} does not exist: check the URL and the credentials in the environment")
    return found["size"]


def open_input(path: str) -> IO[bytes]:
    """A binary file object with seek and read, local or remote."""
    if not is_url(path):
        return open(path, "rb")
    fs, inner = _fs(path)
    return fs.open(inner, "rb")
