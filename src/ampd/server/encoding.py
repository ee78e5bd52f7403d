"""Arrow record batches as JSON Lines, the way Amp's JSON Lines endpoint writes values.

- Binary and fixed-size binary: `0x`-prefixed lowercase hex.
- Decimal128: a JSON number when it is a whole number within ±2^53 (exact in every JSON
  reader), otherwise a string.
- Timestamps: RFC 3339 in UTC (`2026-11-30T12:00:00Z`, with fractional seconds when set).
- Lists and structs: the same rules inside. Everything else as JSON has it (NaN and
  infinities as null).

Whole columns are turned into JSON-ready Python values with Arrow, numpy and one hex call
per column; orjson then writes the rows.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

_SAFE = 2**53
_UTC = (None, "UTC", "Z", "+00:00", "Etc/UTC", "utc")  # None: no zone, taken as UTC
_TICKS_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
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
    if column.null_count == len(column):
        return [None] * len(column)
    fast = None
    if pa.types.is_timestamp(data_type):
        if data_type.tz not in _UTC:
            text = pc.strftime(column, format="%Y-%m-%dT%H:%M:%S").to_pylist()
            # Arrow prints all nine (or six, three) fraction digits; keep them only when set.
            return [None if t is None else _trim_fraction(t) + "Z" for t in text]
        fast = _utc_timestamps(column)
    elif pa.types.is_fixed_size_binary(data_type):
        fast = _hex_fixed(column)
    elif pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type):
        fast = _hex_variable(column)
    elif pa.types.is_decimal(data_type) and data_type.scale == 0:
        fast = _whole_decimals(column)
    if fast is not None:
        if column.null_count:
            fast = [None if null else v for v, null in zip(fast, _nulls(column), strict=True)]
        return fast
    values = column.to_pylist()
    convert = _converter(data_type)
    if convert is None:
        return values
    return [convert(v) for v in values]


def _utc_timestamps(column: pa.Array) -> list[str]:
    unit = column.type.unit
    ticks = column.cast(pa.int64()).fill_null(0).to_numpy()
    seconds = np.datetime_as_string(ticks.astype(f"datetime64[{unit}]"), unit="s").tolist()
    per_second = _TICKS_PER_SECOND[unit]
    values = [text + "Z" for text in seconds]
    if per_second > 1:
        # Sub-second parts are rare: only those values are printed in full, then trimmed.
        for i in np.flatnonzero(ticks % per_second).tolist():
            full = np.datetime_as_string(ticks[i : i + 1].astype(f"datetime64[{unit}]"))[0]
            values[i] = _trim_fraction(str(full)) + "Z"
    return values


def _nulls(column: pa.Array) -> list[bool]:
    return column.is_null().to_pylist()


def _hex_fixed(column: pa.Array) -> list[str]:
    width = column.type.byte_width
    start, size = column.offset * width, len(column) * width
    text = binascii.b2a_hex(memoryview(column.buffers()[1])[start : start + size]).decode()
    step = 2 * width
    return ["0x" + text[i : i + step] for i in range(0, len(text), step)]


def _hex_variable(column: pa.Array) -> list[str]:
    kind = np.int64 if pa.types.is_large_binary(column.type) else np.int32
    offsets = np.frombuffer(column.buffers()[1], kind)[
        column.offset : column.offset + len(column) + 1
    ]
    first, last = int(offsets[0]), int(offsets[-1])
    text = binascii.b2a_hex(memoryview(column.buffers()[2])[first:last]).decode()
    bounds = ((offsets - first) * 2).tolist()
    return ["0x" + text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def _whole_decimals(column: pa.Array) -> list[int | str] | None:
    """Whole-number decimals: ints within ±2^53, strings beyond (None: outside Int64)."""
    try:
        numbers = pc.cast(column, pa.int64()).fill_null(0).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    values: list[int | str] = numbers.tolist()
    for i in np.flatnonzero(np.abs(numbers) > _SAFE).tolist():
        values[i] = str(values[i])
    return values


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
    dumps, option = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    return b"".join(
        [
            dumps(dict(zip(names, row, strict=True)), option=option, default=str)
            for row in zip(*columns, strict=True)
        ]
    )
