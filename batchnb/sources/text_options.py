"""The `read_options` that CSV and NDJSON share: checks of their values, dtypes given by name, and the message
that names the override reading a value the sampled rows did not show."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import polars as pl

from batchnb.sources.base import Check
from batchnb.sources.schema import dtype_from_text

__all__ = ["BOOL", "SCHEMA", "Check", "ParseMode", "as_dtype", "dtypes_option", "type_message"]

ParseMode = Literal["strict", "lenient", "infer"]


def as_dtype(value: Any) -> pl.DataType | None:
    """A Polars dtype from a dtype, a dtype class or its name ("String", "Float64"); None if it is none."""
    if isinstance(value, str):
        value = getattr(pl, value, None)
    if isinstance(value, type) and issubclass(value, pl.DataType):
        return value()
    return value if isinstance(value, pl.DataType) else None


def dtypes_option(read_options: Mapping[str, Any], key: str) -> dict[str, pl.DataType]:
    """`read_options[key]` (a column -> dtype mapping) with every dtype as a Polars dtype; a dtype kept as
    text in a job's state ("Datetime(time_unit='us', ...)") is read back from that text."""
    return {name: as_dtype(t) or dtype_from_text(str(t)) for name, t in (read_options.get(key) or {}).items()}


def _is_schema(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(k, str) and as_dtype(t) is not None for k, t in value.items())


def type_message(where: str, column: str, value: str, dtype: pl.DataType) -> str:
    """A value the sampled rows did not show breaks the column's type: say which, and the option that reads it."""
    wider = "String"
    if dtype.is_integer():
        try:
            float(value)
            wider = "Float64"
        except ValueError:
            pass
    return (
        f"{where}: column {column!r} holds {value!r}, which is not {dtype} (the type the sampled rows of the file "
        f"gave it): pass read_options={{'schema_overrides': {{{column!r}: pl.{wider}}}}} (or {wider!r}) to read "
        "the column as that type, or fix the value"
    )


BOOL: Check = (lambda v: isinstance(v, bool), "True or False")
SCHEMA: Check = (_is_schema, 'a dict of column name -> Polars dtype (pl.Float64, or its name "Float64")')
