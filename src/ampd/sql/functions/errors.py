"""The error the SQL functions raise, and Arrow type names written the way DataFusion
prints them (Amp's messages embed DataFusion's type display, e.g. `Decimal128(10, 2)`)."""

from __future__ import annotations

import re

import pyarrow as pa


class FunctionError(Exception):
    """A query refused or failed by one of the EVM SQL functions.

    The message is the text Amp's function writes (its own words, after the function
    name where Amp prefixes it), without DataFusion's "Error during planning:" wrapper.
    Raised by `prepare` while rewriting a query, and from inside a function while a
    query runs (DataFusion then reports it inside its own execution error text; see
    `error_text`).
    """


class AbiError(Exception):
    """A value that could not be converted; callers add the function name."""


_SIMPLE = {
    pa.null(): "Null",
    pa.bool_(): "Boolean",
    pa.int8(): "Int8",
    pa.int16(): "Int16",
    pa.int32(): "Int32",
    pa.int64(): "Int64",
    pa.uint8(): "UInt8",
    pa.uint16(): "UInt16",
    pa.uint32(): "UInt32",
    pa.uint64(): "UInt64",
    pa.float16(): "Float16",
    pa.float32(): "Float32",
    pa.float64(): "Float64",
    pa.string(): "Utf8",
    pa.large_string(): "LargeUtf8",
    pa.string_view(): "Utf8View",
    pa.binary(): "Binary",
    pa.large_binary(): "LargeBinary",
    pa.binary_view(): "BinaryView",
    pa.date32(): "Date32",
    pa.date64(): "Date64",
}


def df_type_name(t: pa.DataType) -> str:
    """`t` as DataFusion displays it (the common types exactly, others approximately)."""
    if t in _SIMPLE:
        return _SIMPLE[t]
    if pa.types.is_fixed_size_binary(t):
        return f"FixedSizeBinary({t.byte_width})"
    if pa.types.is_decimal(t):
        return f"Decimal{t.bit_width}({t.precision}, {t.scale})"
    if pa.types.is_fixed_size_list(t):
        return f"FixedSizeList({t.list_size} x {_item(t.value_field)})"
    if pa.types.is_large_list(t):
        return f"LargeList({_item(t.value_field)})"
    if pa.types.is_list(t):
        return f"List({_item(t.value_field)})"
    if pa.types.is_struct(t):
        inner = ", ".join(f'"{f.name}": {_nullable(f)}{df_type_name(f.type)}' for f in t)
        return f"Struct({inner})"
    return str(t)


def _nullable(f: pa.Field) -> str:
    return "" if f.nullable else "non-null "


def _item(f: pa.Field) -> str:
    name = "" if f.name == "item" else f", field: '{f.name}'"
    return f"{_nullable(f)}{df_type_name(f.type)}{name}"


# DataFusion reports an exception raised inside a Python function as
# `... PyErr { type: <class '...FunctionError'>, value: FunctionError('text'), ... }`.
_WRAPPED = re.compile(r"FunctionError\((?P<q>['\"])(?P<text>.*?)(?P=q)\)", re.DOTALL)


def error_text(message: str) -> str | None:
    """The function's own message inside a DataFusion error text, or None when the error
    did not come from one of these functions."""
    match = _WRAPPED.search(message)
    if match is None:
        return None
    text = match.group("text")
    return text.replace("\\'", "'").replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
