"""Byte ranges of whole records in text files, placed without parsing: chunk cuts and sample blocks.

Planning reads a few KiB around each chunk boundary, never the whole file: the record that starts
at or after the boundary is found from the quote parity there, inferred from the roles of nearby
quotes (an opening quote follows a separator or newline, a closing one precedes one). Each worker
then proves its own cut (`TextFormat.check_balanced`): a chunk whose bytes hold an odd number of quotes
began or ended inside a quoted field, and fails with a message instead of splitting a record.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from batchnb import storage
from batchnb.sources.base import SAMPLE_BLOCKS
from batchnb.sources.dataset import ChunkSpec, Piece
from batchnb.sources.record_index import parity_at_start, real_newlines

__all__ = ["LOOK", "FileSpan", "Place", "byte_range_specs", "record_start", "sample_blocks"]

LOOK = 64 * 1024  # bytes read on each side of a chunk boundary to place it
FileSpan = tuple[str, int, int]  # (path, offset of the first data record, size)
Place = Callable[[str, int, int, int], int]  # (path, byte x, first record, size) -> first record start >= x


def record_start(path: str, x: int, lo_limit: int, size: int, quote: int | None, separator: int | None) -> int:
    """Offset of the first record that starts at or after byte `x` (`lo_limit` is a known record start)."""
    if x <= lo_limit:
        return lo_limit
    look = LOOK
    while True:
        lo = max(lo_limit, x - look)
        with storage.open_input(path) as f:
            f.seek(lo)
            buf = np.frombuffer(f.read(min(size, x + look) - lo), dtype=np.uint8)
        parity = 0
        if quote is not None and lo > lo_limit:  # from lo_limit on, the parity is known to be 0
            parity = parity_at_start(buf, quote, separator) or 0
        real = real_newlines(buf, quote, parity)
        after = real[real >= x - 1 - lo]  # a record starts just past each real newline
        if after.size:
            return lo + int(after[0]) + 1
        if x + look >= size:
            return size
        look *= 4  # a record longer than the window: look further


def byte_range_specs(files: Sequence[FileSpan], chunk_size: int, per_row: float, place: Place) -> tuple[ChunkSpec, ...]:
    """Chunks of about `chunk_size` records (`per_row` bytes each, estimated): one cut every so many bytes,
    moved to the next record start; row numbers are estimates until the chunks run."""
    target = max(1, round(chunk_size * per_row))
    specs: list[ChunkSpec] = []
    rows = 0
    for path, first, size in files:
        cuts = [first, *(place(path, x, first, size) for x in range(first + target, size, target))]
        bounds = sorted({*cuts, size})  # a record longer than a chunk merges two cuts into one
        for a, b in itertools.pairwise(bounds):
            estimate = max(1, round((b - a) / per_row))
            piece = Piece(path=path, start=a, stop=b)
            specs.append(ChunkSpec(index=len(specs), pieces=(piece,), rows=(rows, rows + estimate), nbytes=b - a))
            rows += estimate
    return tuple(specs)


def sample_blocks(files: Sequence[FileSpan], block_bytes: int, seed: int, place: Place) -> list[Piece]:
    """Stratified blocks of whole records: one at a seeded offset in each of SAMPLE_BLOCKS equal
    slices of the data bytes (so the sample depends only on the source and the seed)."""
    total = sum(size - first for _, first, size in files)
    rng = np.random.default_rng(seed)
    pieces = []
    for j in range(SAMPLE_BLOCKS if total else 0):
        lo, hi = j * total // SAMPLE_BLOCKS, (j + 1) * total // SAMPLE_BLOCKS
        offset = lo + int(rng.integers(0, max(1, hi - lo - block_bytes + 1)))
        for path, first, size in files:  # the global byte offset -> its file
            if offset < size - first:
                start = place(path, first + offset, first, size)
                stop = place(path, min(size, start + block_bytes), first, size)
                if start < stop:
                    pieces.append(Piece(path=path, start=start, stop=stop))
                break
            offset -= size - first
    return pieces
