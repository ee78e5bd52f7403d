"""JSON Lines encoding: whole-column conversion gives what the documented value rules say,
for every column shape a query can return (nulls, slices, wide decimals, nested values)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pyarrow as pa
import pytest

from ampd.server.encoding import encode_batch


def reference(value: object) -> object:
    """The rules of the module docstring, value by value."""
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, Decimal):
        whole = value == value.to_integral_value() and abs(value) <= 2**53
        return int(value) if whole else str(value)
    if isinstance(value, dt.datetime):
        text = value.replace(tzinfo=None).isoformat()
        return (text.rstrip("0").rstrip(".") if "." in text else text) + "Z"
    if isinstance(value, list):
        return [reference(v) for v in value]
    if isinstance(value, dict):
        return {k: reference(v) for k, v in value.items()}
    return value


def decoded(batch: pa.RecordBatch) -> list[dict]:
    return [json.loads(line) for line in encode_batch(batch).decode().splitlines()]


BINARY = [b"", b"\x00\xff", None, b"\x12" * 40]
HASHES = [bytes([i]) * 32 for i in range(3)] + [None]
BIG = [Decimal(0), Decimal(2**53), Decimal(-(2**53) - 1), None, Decimal(10**38 - 1)]
TIMES = [
    dt.datetime(2026, 11, 30, 12, 0, 0, tzinfo=dt.UTC),
    dt.datetime(2026, 11, 30, 12, 0, 0, 250_000, tzinfo=dt.UTC),
    None,
    dt.datetime(1960, 1, 1, 0, 0, 0, 1, tzinfo=dt.UTC),
]


@pytest.mark.parametrize(
    ("values", "type_"),
    [
        (BINARY, pa.binary()),
        (BINARY, pa.large_binary()),
        (HASHES, pa.binary(32)),
        (BIG, pa.decimal128(38, 0)),
        (BIG[:4], pa.decimal128(20, 0)),
        ([Decimal("1.50"), Decimal("-2.00"), None, Decimal("3")], pa.decimal128(10, 2)),
        (TIMES, pa.timestamp("ns", tz="+00:00")),
        (TIMES, pa.timestamp("us", tz="UTC")),
        ([t.replace(tzinfo=None) if t else None for t in TIMES], pa.timestamp("ms")),
        ([[b"\x01", b"\x02"], [], None], pa.list_(pa.binary())),
        ([{"a": b"\x0a", "n": 1}, None], pa.struct([("a", pa.binary(1)), ("n", pa.int64())])),
        ([1, None, 2**64 - 1], pa.uint64()),
        ([1.5, None, float("nan")], pa.float64()),
        (["é", None, 'quote " and \\n'], pa.utf8()),
        ([True, None, False], pa.bool_()),
        ([None, None], pa.binary(32)),
    ],
)
def test_each_column_type_follows_the_rules(values: list, type_: pa.DataType) -> None:
    array = pa.array(values, type_)
    # Also from an offset into the buffers, as query results often are.
    for column in (array, pa.concat_arrays([pa.array(values[:1], type_), array]).slice(1)):
        rows = decoded(pa.RecordBatch.from_arrays([column], names=["v"]))
        want = [reference(v) for v in column.to_pylist()]
        if pa.types.is_floating(type_):
            want = [None if isinstance(v, float) and v != v else v for v in want]  # NaN: null
        assert [row["v"] for row in rows] == want


def test_rows_keep_column_order_and_end_with_newlines() -> None:
    batch = pa.RecordBatch.from_pydict({"b": [1, 2], "a": ["x", "y"]})
    assert encode_batch(batch) == b'{"b":1,"a":"x"}\n{"b":2,"a":"y"}\n'
    assert encode_batch(batch.slice(0, 0)) == b""
