"""Schemas: their exact text form (which crosses JSON and processes), and one schema for the files of one dataset,
whose column types widen without loss or the dataset is refused.

Two widenings hold every value only for some values, so they are checked where the values are known:

- UInt64 with a signed integer of at most 64 bits becomes Int64 (Int128 would hold both, but it does not
  cross Arrow, which every part and schema goes through). A UInt64 value above 2**63 - 1 does not fit: the
  strict cast fails its chunk (DataError naming the column, file and value), and where a file's statistics
  show such a value the dataset is refused before any chunk runs.
- An integer wider than a float's mantissa (Int64, UInt64, Int128 to Float64) becomes Float64 only while
  every value is exact in it, |v| <= 2**53: `exact_range` gives the bounds, and the cast (`conform`) and
  the files' statistics at inspect check them, so no run succeeds with a rounded integer.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import polars as pl

from batchnb.errors import DataError, SourceError

__all__ = [
    "check_exact",
    "dtype_from_text",
    "dtype_to_text",
    "exact_range",
    "polars_schema_of",
    "range_message",
    "schema_from_ipc",
    "schema_of",
    "schema_to_ipc",
    "schema_to_text",
    "unify_schemas",
    "widen",
]

_DtypeClass = type[pl.DataType]
_INT_BITS: dict[_DtypeClass, int] = {pl.Int8: 8, pl.Int16: 16, pl.Int32: 32, pl.Int64: 64, pl.Int128: 128}
_UINT_BITS: dict[_DtypeClass, int] = {pl.UInt8: 8, pl.UInt16: 16, pl.UInt32: 32, pl.UInt64: 64}
_SIGNED: dict[int, _DtypeClass] = {8: pl.Int8, 16: pl.Int16, 32: pl.Int32, 64: pl.Int64, 128: pl.Int128}
_TIME_UNITS = ("ms", "us", "ns")


_MANTISSA: dict[_DtypeClass, int] = {pl.Float32: 24, pl.Float64: 53}


def _bits(integer: _DtypeClass) -> int:
    return _INT_BITS.get(integer) or _UINT_BITS[integer]


def _widen_ints(a: pl.DataType, b: pl.DataType) -> pl.DataType:
    """The narrowest integer type holding every value of both; Int64 for UInt64 and a signed type up to
    64 bits (Int128 does not cross Arrow), which holds the UInt64 values up to 2**63 - 1 (see the module)."""
    ta, tb = a.base_type(), b.base_type()
    if a.is_unsigned_integer() and b.is_unsigned_integer():
        return max(ta, tb, key=_UINT_BITS.__getitem__)()
    # a signed type holds an unsigned one of half its width
    bits = max(_INT_BITS[t] if t in _INT_BITS else 2 * _UINT_BITS[t] for t in (ta, tb))
    if bits > 64 and pl.Int128 not in (ta, tb):
        return pl.Int64()
    return _SIGNED[bits]()


def exact_range(source: pl.DataType, target: pl.DataType) -> tuple[int, int] | None:
    """The values of integer type `source` that `target` holds exactly, when it does not hold them all
    (UInt64 in Int64, a 64-bit integer in Float64); None when every value fits or no integer is cast."""
    ts, tt = source.base_type(), target.base_type()
    if not source.is_integer() or ts == tt:
        return None
    bits = _bits(ts)
    if tt in _MANTISSA:
        limit = 2 ** _MANTISSA[tt]
        return (-limit, limit) if bits > _MANTISSA[tt] else None
    if target.is_integer():
        width = _bits(tt)
        if target.is_signed_integer() and source.is_unsigned_integer() and bits >= width:
            return (0, 2 ** (width - 1) - 1)
    return None


def range_message(column: str, path: str | None, dtype, target, value, bounds: tuple[int, int]) -> str:
    """Why `value` of `column` cannot be read as the dataset's type, and what to do."""
    where = f" of {path!r}" if path else ""
    return (
        f"column {column!r}{where} is {dtype}, which the dataset's files share as {target}, but it holds {value}, "
        f"which {target} cannot hold exactly (only {bounds[0]} ..= {bounds[1]}): write the files with one integer "
        "type (e.g. cast the column to Int64 in every file), or read them as separate jobs"
    )


def check_exact(frame: pl.DataFrame, schema: pl.Schema, path: str | None) -> None:
    """An integer cast to a type that holds only some of its values (Int64 -> Float64 beyond 2**53) would
    round or fail silently: a value outside the exact range fails the chunk instead (never retried)."""
    for column, dtype in frame.schema.items():
        bounds = exact_range(dtype, schema[column]) if column in schema else None
        if bounds is None:
            continue
        values = frame.get_column(column)
        ends = (values.min(), values.max())  # integers, or None for an empty or all-null column
        value = next((v for v in ends if isinstance(v, int) and not bounds[0] <= v <= bounds[1]), None)
        if value is not None:
            raise DataError(range_message(column, path, dtype, schema[column], value, bounds))


def widen(a: pl.DataType, b: pl.DataType) -> pl.DataType | None:
    """The type both `a` and `b` cast to without losing a value, or None when there is none.

    Null -> anything; integers -> the narrowest integer holding both (UInt64 with a signed type -> Int64);
    any integer or Float32 with a float -> Float64 (both checked against `exact_range` where values are read); Datetime of one time zone -> its finer unit (a value out of range fails the cast);
    Categorical/Enum with String -> String. Anything else, String with a number included, has no common type.
    """
    if a == b:
        return a
    if a == pl.Null or b == pl.Null:
        return b if a == pl.Null else a
    if a.is_integer() and b.is_integer():
        return _widen_ints(a, b)
    if a.is_numeric() and b.is_numeric() and (a.is_float() or b.is_float()) and not (a.is_decimal() or b.is_decimal()):
        return pl.Float64()
    if isinstance(a, pl.Datetime) and isinstance(b, pl.Datetime) and a.time_zone == b.time_zone:
        unit = max(a.time_unit, b.time_unit, key=_TIME_UNITS.index)
        return pl.Datetime(unit, a.time_zone)
    textual = (pl.String, pl.Categorical, pl.Enum)
    if isinstance(a, textual) or a == pl.String:
        if isinstance(b, textual) or b == pl.String:
            return pl.String()
    return None


def unify_schemas(named: Sequence[tuple[str, pl.Schema]]) -> pl.Schema:
    """One schema for the files of one dataset, given (path, schema) per file.

    Columns keep the first file's order (a file with the same columns in another order is read in
    that order); a column's types are widened without loss (`widen`). A file with other columns, or a
    column whose types have no lossless common type, is a SourceError naming the files and types.
    """
    if not named:
        return pl.Schema()
    first_path, first = named[0]
    merged = dict(first)
    origin = dict.fromkeys(first.names(), first_path)  # the file each column's current type came from
    for path, schema in named[1:]:
        if set(schema.names()) != set(first.names()):
            raise SourceError(
                f"file {path!r} has columns {schema.names()}, but {first_path!r} has {first.names()}: "
                "one dataset needs one set of columns"
            )
        for name, dtype in schema.items():
            wide = widen(merged[name], dtype)
            if wide is None:
                raise SourceError(
                    f"column {name!r} is {merged[name]} in {origin[name]!r} but {dtype} in {path!r}, and the two "
                    "types have no common type that keeps every value: convert the files to one type, or read them "
                    "as separate jobs"
                )
            if wide != merged[name]:
                merged[name], origin[name] = wide, path
    return pl.Schema(merged)


_DTYPES: dict[str, pl.DataType] = {str(t): t() for t in (
    pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64,
    pl.Float32, pl.Float64, pl.Boolean, pl.String, pl.Date, pl.Null,
)}  # fmt: skip


def dtype_to_text(dtype: pl.DataType) -> str:
    return str(dtype)


def dtype_from_text(text: str) -> pl.DataType:
    """Inverse of `dtype_to_text` for plain types; anything richer is read back as-is via eval-free parsing."""
    if text in _DTYPES:
        return _DTYPES[text]
    if text.startswith("Datetime"):
        return pl.Datetime("us" if "us" in text else "ns" if "ns" in text else "ms")
    if text.startswith("Duration"):
        return pl.Duration()
    return pl.String()  # Categorical and Enum too: their categories are not in the text


def schema_to_text(schema: pl.Schema) -> dict[str, str]:
    return {name: dtype_to_text(dtype) for name, dtype in schema.items()}


def schema_to_ipc(schema: pl.Schema) -> str:
    """The exact schema (time zones, decimals, nesting, categories) as text that crosses JSON and Polars versions:
    an Arrow IPC schema message, base64. Every chunk's part has the same schema: encoded once per worker."""
    return _ipc_of(tuple(schema.items()))


@functools.lru_cache(maxsize=64)
def _ipc_of(columns: tuple) -> str:
    import base64

    arrow = pl.DataFrame(schema=pl.Schema(columns)).to_arrow().schema
    return base64.b64encode(arrow.serialize().to_pybytes()).decode("ascii")


@functools.lru_cache(maxsize=64)
def schema_from_ipc(text: str) -> pl.Schema:
    import base64

    import pyarrow as pa

    arrow = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))
    # The names as kept: Polars renames an empty one ("" -> "column_0") when it converts Arrow data.
    return pl.Schema(zip(arrow.names, polars_schema_of(arrow).dtypes(), strict=True))


def schema_of(dtypes: str | None, text: dict[str, str] | None) -> pl.Schema | None:
    """The exact schema where it was kept (`dtypes`), else its readable form parsed (states and datasets
    recorded before exact schemas were kept); None without either."""
    if dtypes:
        return schema_from_ipc(dtypes)
    return pl.Schema({name: dtype_from_text(t) for name, t in text.items()}) if text else None


def polars_schema_of(arrow_schema) -> pl.Schema:
    """The Polars schema of an Arrow schema (without `Schema.empty_table()`, which imports pandas)."""
    import pyarrow as pa

    return pl.DataFrame(pa.Table.from_batches([], schema=arrow_schema)).schema
