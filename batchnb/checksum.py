"""Part checksums: computed where the part is written, recomputed by `verify`.

xxh3-128 hashes at memory speed, so checksumming every part costs little next to writing it.
"""

from __future__ import annotations

from pathlib import Path

import xxhash

__all__ = ["file_checksum"]

_BLOCK = 8 * 1024 * 1024


def file_checksum(path: str | Path) -> tuple[str, int]:
    """("xxh3:<hex>", size) of a file."""
    digest = xxhash.xxh3_128()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
            size += len(block)
    return f"xxh3:{digest.hexdigest()}", size
