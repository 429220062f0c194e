"""What a worker needs to read its own chunk, and nothing else: the dataset and the chunk descriptions."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ChunkSpec", "DatasetInfo", "Piece"]


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
    dtypes: str = ""  # the exact schema (sources.base.schema_to_ipc); `schema` is its readable form

    def for_workers(self) -> DatasetInfo:
        """Without driver-only state (keys starting with "__"), so tasks stay small."""
        options = {k: v for k, v in self.read_options.items() if not k.startswith("__")}
        return DatasetInfo(**{**self.__dict__, "read_options": options})

    def to_json(self) -> dict[str, Any]:
        """Plain data for the record: a resumed run reads its chunks with the dataset planned first."""
        return {**self.__dict__, "paths": list(self.paths)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatasetInfo:
        return cls(**{**data, "paths": tuple(data["paths"])})

    def polars_schema(self):
        import polars as pl

        from batchnb.sources.schema import schema_of

        return schema_of(self.dtypes, self.schema) or pl.Schema()
