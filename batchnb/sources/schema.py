"""One schema for the files of one dataset: a column's types widen without loss, or the dataset is refused."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from batchnb.errors import SourceError

__all__ = ["unify_schemas", "widen"]

_INT_BITS = {pl.Int8: 8, pl.Int16: 16, pl.Int32: 32, pl.Int64: 64, pl.Int128: 128}
_UINT_BITS = {pl.UInt8: 8, pl.UInt16: 16, pl.UInt32: 32, pl.UInt64: 64}
_SIGNED = {8: pl.Int8, 16: pl.Int16, 32: pl.Int32, 64: pl.Int64, 128: pl.Int128}
_TIME_UNITS = ("ms", "us", "ns")


def _widen_ints(a: pl.DataType, b: pl.DataType) -> pl.DataType:
    """The narrowest integer type holding every value of both; Float64 when only Int128 would (UInt64 and a
    signed type), as other integers widen to floats."""
    a, b = a.base_type(), b.base_type()
    if a.is_unsigned_integer() and b.is_unsigned_integer():
        return max(a, b, key=_UINT_BITS.__getitem__)
    # a signed type holds an unsigned one of half its width
    bits = max(_INT_BITS[t] if t.is_signed_integer() else 2 * _UINT_BITS[t] for t in (a, b))
    if bits > 64 and pl.Int128 not in (a, b):
        return pl.Float64
    return _SIGNED[bits]


def widen(a: pl.DataType, b: pl.DataType) -> pl.DataType | None:
    """The type both `a` and `b` cast to without losing a value, or None when there is none.

    Null -> anything; integers -> the narrowest integer holding both; any integer or Float32 with a
    float -> Float64; Datetime of one time zone -> its finer unit (a value out of range fails the cast);
    Categorical/Enum with String -> String. Anything else, String with a number included, has no common type.
    """
    if a == b:
        return a
    if a == pl.Null or b == pl.Null:
        return b if a == pl.Null else a
    if a.is_integer() and b.is_integer():
        return _widen_ints(a, b)
    if a.is_numeric() and b.is_numeric() and (a.is_float() or b.is_float()) and not (a.is_decimal() or b.is_decimal()):
        return pl.Float64
    if isinstance(a, pl.Datetime) and isinstance(b, pl.Datetime) and a.time_zone == b.time_zone:
        unit = max(a.time_unit, b.time_unit, key=_TIME_UNITS.index)
        return pl.Datetime(unit, a.time_zone)
    textual = (pl.String, pl.Categorical, pl.Enum)
    if isinstance(a, textual) or a == pl.String:
        if isinstance(b, textual) or b == pl.String:
            return pl.String
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
