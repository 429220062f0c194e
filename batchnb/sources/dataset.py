"""What a worker needs to read its own chunk, and nothing else: the dataset and the chunk descriptions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, TypeVar

from batchnb.errors import JobStateError
from batchnb.sources.facts import RowCounts, facts_from_json, legacy_facts

if TYPE_CHECKING:
    import polars as pl

__all__ = ["ChunkSpec", "DatasetInfo", "Piece"]

F = TypeVar("F", bound=RowCounts)


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
    """What the driver learnt from metadata: shared by every chunk of the job.

    `read_options` is what the user passed, as given; what the format learnt for planning and reading is in
    `facts`; `origins` names the user's file of each copy batchnb read instead (a decompressed or converted file).
    `columns` is the projection: the columns a chunk is read with (the job's features and kept columns, in the
    file's order), set once when the job is prepared and stored with the dataset, so a resumed run reads the same
    columns; None reads them all. `schema` stays the files' own, which parsers of text formats need whole.
    """

    format: str
    paths: tuple[str, ...]
    schema: dict[str, str]  # column -> polars dtype, as text so it crosses JSON and processes
    read_options: dict[str, Any] = field(default_factory=dict)
    total_rows: int = 0
    total_bytes: int = 0
    dtypes: str = ""  # the exact schema (sources.schema.schema_to_ipc); `schema` is its readable form
    facts: RowCounts = field(default_factory=RowCounts)
    origins: dict[str, str] = field(default_factory=dict)  # copy -> the user's file it was made from
    columns: tuple[str, ...] | None = None  # the projection chunks are read with; None: every column

    def origin(self, path: str) -> str:
        """The user's file behind `path`, for messages (a line of a decompressed copy is the same line there)."""
        return self.origins.get(path, path)

    def facts_as(self, kind: type[F]) -> F:
        """The facts as the format that planned the dataset typed them."""
        if not isinstance(self.facts, kind):
            msg = (
                f"the {self.format} dataset was planned with {type(self.facts).__name__}, not {kind.__name__} "
                "(a job state from another version of batchnb?): run(restart=True) to plan the job again"
            )
            raise JobStateError(msg)
        return self.facts

    def for_workers(self) -> DatasetInfo:
        """Without driver-only facts (the exact-rows record index), so tasks stay small."""
        return replace(self, facts=self.facts.for_workers())

    def to_json(self) -> dict[str, Any]:
        """Plain data for the record: a resumed run reads its chunks with the dataset planned first."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        columns = None if self.columns is None else list(self.columns)
        return {**data, "paths": list(self.paths), "facts": self.facts.to_json(), "columns": columns}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatasetInfo:
        """Also a dataset recorded while the facts rode in `read_options`; one that cannot be read is a
        JobStateError (the record is another version's), never a chunk failing later."""
        data = dict(data)
        try:
            if "facts" not in data:
                data["read_options"], data["facts"] = legacy_facts(data["format"], data.get("read_options") or {})
            columns = data.get("columns")  # absent in a record of a version that read every column
            return cls(
                **{
                    **data,
                    "paths": tuple(data["paths"]),
                    "facts": facts_from_json(data["facts"]),
                    "columns": None if columns is None else tuple(columns),
                }
            )
        except (KeyError, TypeError, ValueError) as exc:
            msg = (
                f"the job state records its {data.get('format')!r} dataset in a form this version of batchnb cannot "
                f"read ({type(exc).__name__}: {exc}): run(restart=True) to plan the job again"
            )
            raise JobStateError(msg) from exc

    def polars_schema(self) -> pl.Schema:
        """The files' schema: every column, whatever the projection."""
        import polars as pl

        from batchnb.sources.schema import schema_of

        return schema_of(self.dtypes, self.schema) or pl.Schema()

    def projected(self, columns: Sequence[str] | None) -> DatasetInfo:
        """This dataset read with only `columns` (in the files' order; None: all of them). A projection that
        keeps every column is None, so reading it costs nothing extra; so is an empty one (a frame without
        columns would have no rows)."""
        if columns is None:
            return replace(self, columns=None)
        wanted = set(columns)
        unknown = sorted(wanted - set(self.schema))
        if unknown:
            raise ValueError(f"columns {unknown} are not in the dataset's schema {list(self.schema)}")
        kept = tuple(c for c in self.schema if c in wanted)
        return replace(self, columns=None if len(kept) in (0, len(self.schema)) else kept)

    def read_schema(self) -> pl.Schema:
        """The schema of what a chunk read returns: the files' schema, projected."""
        import polars as pl

        schema = self.polars_schema()
        return schema if self.columns is None else pl.Schema({c: schema[c] for c in self.columns})
