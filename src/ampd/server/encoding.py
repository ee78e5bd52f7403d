"""Arrow record batches as JSON Lines, the way Amp's JSON Lines endpoint writes values.

- Binary and fixed-size binary: `0x`-prefixed lowercase hex.
- Decimal128: a JSON number when it is a whole number within ±2^53 (exact in every JSON
  reader), otherwise a string.
- Timestamps: RFC 3339 in UTC (`2026-11-30T12:00:00Z`, with fractional seconds when set).
- Lists and structs: the same rules inside. Everything else as JSON has it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

_SAFE = 2**53
Convert = Callable[[Any], Any]


def _hex(value: bytes | None) -> str | None:
    return None if value is None else "0x" + value.hex()


def _decimal(value: Decimal | None) -> int | str | None:
    if value is None:
        return None
    if value == value.to_integral_value() and -_SAFE <= value <= _SAFE:
        return int(value)
    return str(value)


def _converter(data_type: pa.DataType) -> Convert | None:
    """How to turn one Python value of this type into its JSON value (None: as is)."""
    if (
        pa.types.is_binary(data_type)
        or pa.types.is_fixed_size_binary(data_type)
        or pa.types.is_large_binary(data_type)
    ):
        return _hex
    if pa.types.is_decimal(data_type):
        return _decimal
    if pa.types.is_timestamp(data_type):
        return _rfc3339
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        inner = _converter(data_type.value_type)
        if inner is None:
            return None
        return lambda items: None if items is None else [inner(v) for v in items]
    if pa.types.is_struct(data_type):
        fields = [(f.name, _converter(f.type)) for f in data_type]
        if all(conv is None for _, conv in fields):
            return None

        def struct(value: dict | None) -> dict | None:
            if value is None:
                return None
            return {name: (conv(value[name]) if conv else value[name]) for name, conv in fields}

        return struct
    return None


def _rfc3339(value: Any) -> str | None:
    # Only reached inside lists and structs; top-level columns are formatted by Arrow.
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def _column_values(column: pa.Array) -> list[Any]:
    data_type = column.type
    if pa.types.is_timestamp(data_type):
        text = pc.strftime(column, format="%Y-%m-%dT%H:%M:%S").to_pylist()
        # Arrow prints all nine (or six, three) fraction digits; keep them only when not zero.
        return [None if t is None else _trim_fraction(t) + "Z" for t in text]
    values = column.to_pylist()
    convert = _converter(data_type)
    if convert is None:
        return values
    return [convert(v) for v in values]


def _trim_fraction(text: str) -> str:
    head, dot, fraction = text.partition(".")
    if not dot:
        return text
    fraction = fraction.rstrip("0")
    return f"{head}.{fraction}" if fraction else head


def encode_batch(batch: pa.RecordBatch) -> bytes:
    """One JSON object per row, newline-terminated."""
    if batch.num_rows == 0:
        return b""
    names = batch.schema.names
    columns = [_column_values(batch.column(i)) for i in range(batch.num_columns)]
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
    lines = [dumps(dict(zip(names, row, strict=True))) for row in zip(*columns, strict=True)]
    return ("\n".join(lines) + "\n").encode("utf-8")
