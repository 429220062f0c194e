"""Each format's planning facts: what inspect learnt from the files that planning and reading need, typed.

They ride on `DatasetInfo.facts`, never inside the user's `read_options`, and cross JSON (the record, which a
resumed run reads its chunks with) and pickling (the tasks) exactly. A field marked driver-only (the record
index of an exact-rows text file) stays on the driver: `for_workers` drops it and JSON leaves it out.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from batchnb.sources.record_index import FileIndex

__all__ = ["HDF5Facts", "ParquetFacts", "RowCounts", "TextFacts", "facts_from_json", "legacy_facts"]

_KINDS: dict[str, type[RowCounts]] = {}
_DRIVER_ONLY = {"driver_only": True}


@dataclass(frozen=True, kw_only=True)
class RowCounts:
    """Rows per file from metadata (Feather, the Arrow copies of pickles); every format's facts extend it."""

    kind: ClassVar[str] = "rows"
    row_counts: tuple[int, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _KINDS[cls.kind] = cls  # a plugin format's facts read back from a record too

    @property
    def rows_estimated(self) -> bool:
        """Whether the row counts are estimates until the chunks run (text byte ranges)."""
        return False

    @property
    def group_rows(self) -> tuple[int, ...]:
        """Rows of each unit a reader decodes whole (Parquet row groups), in dataset order; () when none."""
        return ()

    def for_workers(self) -> RowCounts:
        """Without driver-only fields, so tasks stay small."""
        empty: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(self) if f.metadata.get("driver_only")}
        return dataclasses.replace(self, **empty) if empty else self

    def to_json(self) -> dict[str, Any]:
        shipped = (f.name for f in dataclasses.fields(self) if not f.metadata.get("driver_only"))
        return {"kind": self.kind, **{name: getattr(self, name) for name in shipped}}


_KINDS[RowCounts.kind] = RowCounts


@dataclass(frozen=True, kw_only=True)
class ParquetFacts(RowCounts):
    """Row groups from the footers: chunks are cut from decoded groups, and an object is read at its version."""

    kind: ClassVar[str] = "parquet"
    row_groups: tuple[tuple[tuple[int, int], ...], ...] = ()  # per file, (rows, uncompressed bytes) per group
    versions: tuple[str | None, ...] = ()  # per file, an object's version (ETag); None for a local file

    @property
    def group_rows(self) -> tuple[int, ...]:
        return tuple(rows for groups in self.row_groups for rows, _ in groups)


@dataclass(frozen=True, kw_only=True)
class HDF5Facts(RowCounts):
    """The pandas table each file is read from."""

    kind: ClassVar[str] = "hdf5"
    keys: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class TextFacts(RowCounts):
    """CSV and NDJSON: where each file's records are, and how to parse a block of them.

    `row_counts` are exact only with `exact_rows`; otherwise rows are estimated from `bytes_per_row`.
    """

    kind: ClassVar[str] = "text"
    files: tuple[tuple[int, int], ...] = ()  # per file, (offset of the first data record, size in bytes)
    names: tuple[str, ...] | None = None  # the header's columns (None: records name their own)
    header: str | None = None  # what sample blocks are parsed behind, as latin-1 text so any bytes round-trip
    separator: str | None = None  # CSV's field separator, from the options or the file name (.tsv)
    bytes_per_row: float | None = None  # from the type sample; None when rows are exact
    indexes: tuple[FileIndex, ...] = field(default=(), compare=False, repr=False, metadata=_DRIVER_ONLY)

    @property
    def rows_estimated(self) -> bool:
        return self.bytes_per_row is not None


def _tuples(value: Any) -> Any:
    """JSON's lists back to the tuples the facts hold."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def facts_from_json(data: dict[str, Any]) -> RowCounts:
    """Inverse of `to_json`; a KeyError for a kind no format registered, a TypeError for an unknown field."""
    cls = _KINDS[data["kind"]]
    return cls(**{k: _tuples(v) for k, v in data.items() if k != "kind"})


_LEGACY_KINDS = {"parquet": "parquet", "hdf5": "hdf5", "csv": "text", "json": "text"}


def legacy_facts(fmt: str, read_options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the user's read_options, the facts as JSON) of a dataset recorded when the facts rode inside
    `read_options` as "_"-prefixed keys of the same names ("_row_groups", "_files", ...)."""
    user = {k: v for k, v in read_options.items() if not k.startswith("_")}
    private = {k[1:]: v for k, v in read_options.items() if k.startswith("_") and not k.startswith("__")}
    return user, {"kind": _LEGACY_KINDS.get(fmt, RowCounts.kind), **private}
