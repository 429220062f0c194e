"""Part checksums: computed where the part is written, recomputed by `verify`."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["file_checksum"]

_BLOCK = 4 * 1024 * 1024


def file_checksum(path: str | Path, *, fsync: bool = False) -> tuple[str, int]:
    """("blake2b:<hex>", size) of a file; with `fsync`, the bytes are on disk before we vouch for them."""
    digest = hashlib.blake2b(digest_size=16)
    size = 0
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
            size += len(block)
        if fsync:
            os.fsync(f.fileno())
    return f"blake2b:{digest.hexdigest()}", size
