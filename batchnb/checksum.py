"""Part checksums: computed where the part is written, recomputed by `verify`.

xxh3-128 hashes at memory speed, so checksumming every part costs little next to writing it.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import xxhash

__all__ = ["file_checksum"]


def file_checksum(path: str | Path) -> tuple[str, int]:
    """("xxh3:<hex>", size) of a file.

    Hashed through a read-only memory map: a part just written is still in the page cache, and
    mapping it avoids copying every byte into Python (half the cost of hashing with read()).
    """
    digest = xxhash.xxh3_128()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
                digest.update(view)
    return f"xxh3:{digest.hexdigest()}", size
