"""Chunk descriptions: what a worker needs to read its own chunk, and nothing else."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ChunkSpec", "DatasetInfo", "Piece", "Plan", "decoded_bytes_per_row"]

_WIDTHS = {"Float32": 4, "Int32": 4, "UInt32": 4, "Int16": 2, "UInt16": 2, "Int8": 1, "UInt8": 1, "Boolean": 1}


def decoded_bytes_per_row(schema: dict[str, str]) -> float:
    """In-memory bytes per row, from the schema (8 bytes a number, 32 a string)."""
    return float(sum(_WIDTHS.get(t, 32 if t == "String" else 8) for t in schema.values()) or 8)


@dataclass(frozen=True, kw_only=True)
class Piece:
    """A contiguous run inside one file: rows for row formats, bytes for text formats."""

    path: str
    start: int
    stop: int


@dataclass(frozen=True, kw_only=True)
class ChunkSpec:
    """Chunk `index`: input rows `rows` of the dataset, read from `pieces`."""

    index: int
    pieces: tuple[Piece, ...]
    rows: tuple[int, int]
    nbytes: int

    @property
    def n_rows(self) -> int:
        return self.rows[1] - self.rows[0]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ChunkSpec:
        data = json.loads(text)
        pieces = tuple(Piece(**p) for p in data["pieces"])
        return cls(index=data["index"], pieces=pieces, rows=tuple(data["rows"]), nbytes=data["nbytes"])


@dataclass(frozen=True, kw_only=True)
class DatasetInfo:
    """What the driver learnt from metadata: shared by every chunk of the job."""

    format: str
    paths: tuple[str, ...]
    schema: dict[str, str]  # column -> polars dtype, as text so it crosses JSON and processes
    read_options: dict[str, Any] = field(default_factory=dict)
    total_rows: int = 0
    total_bytes: int = 0

    def for_workers(self) -> DatasetInfo:
        """Without driver-only state (keys starting with "__"), so tasks stay small."""
        options = {k: v for k, v in self.read_options.items() if not k.startswith("__")}
        return DatasetInfo(**{**self.__dict__, "read_options": options})

    def polars_schema(self):
        import polars as pl

        from batchnb.sources.base import dtype_from_text

        return pl.Schema({name: dtype_from_text(t) for name, t in self.schema.items()})


@dataclass(frozen=True, kw_only=True)
class Plan:
    """The chunk plan of a job and what it will cost, before anything runs."""

    dataset: DatasetInfo
    chunk_size: int
    chunks: tuple[ChunkSpec, ...]
    workers: int
    memory_limit: int
    bytes_per_row: float

    @property
    def rows_total(self) -> int:
        return self.dataset.total_rows

    @property
    def memory_per_chunk(self) -> int:
        """Rough working-set of one chunk: decoded input, scores and the output frame."""
        return int(self.chunk_size * self.bytes_per_row * 3)

    @property
    def recommended_chunk_size(self) -> int:
        budget = self.memory_limit / max(1, 2 * self.workers)
        by_memory = int(budget / max(1.0, self.bytes_per_row * 3))
        return max(1_000, min(1_000_000, by_memory, 250_000))

    def summary(self) -> dict[str, Any]:
        return {
            "format": self.dataset.format,
            "files": len(self.dataset.paths),
            "rows": self.rows_total,
            "bytes": self.dataset.total_bytes,
            "chunks": len(self.chunks),
            "chunk_size": self.chunk_size,
            "memory_per_chunk": self.memory_per_chunk,
            "workers": self.workers,
            "recommended_chunk_size": self.recommended_chunk_size,
        }

    def __repr__(self) -> str:
        s = self.summary()
        return (
            f"Plan({s['format']}, {s['files']} file(s), {s['rows']:_} rows, {s['chunks']} chunks of "
            f"{s['chunk_size']:_} rows, ~{s['memory_per_chunk'] / 2**20:.1f} MiB per chunk, {s['workers']} workers)"
        )
