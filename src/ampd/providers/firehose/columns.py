"""Column building for the Firehose conversion: protobuf values -> Arrow arrays.

Each column arrives as one Python list (a value per row, read from the messages in one pass)
and leaves as one Arrow array. Checks run over the whole list at once; only when one fails is
the list walked again, to name the row's block, the table and the column in a ConversionError.
"""

from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import numpy as np
import pyarrow as pa

from ampd.extract.chunk import ConversionError
from ampd.providers.firehose.tables import TIMESTAMP, WEI

__all__ = [
    "Rows",
    "amounts",
    "big_ints",
    "decimals",
    "fixed",
    "fixed_or_null",
    "shown",
    "timestamps",
    "topics",
]

_NS = 1_000_000_000
_MAX_SECONDS = (2**63 - 1) // _NS  # the last second a Timestamp(Nanosecond) can hold
_MAX_DECIMAL = 10**38 - 1
_MAX_HI, _MAX_LO = divmod(_MAX_DECIMAL, 2**64)


def shown(value: Any) -> Any:
    """How an error shows a value: bytes as 0x hex, anything else as it is."""
    if isinstance(value, bytes | bytearray):
        return "0x" + value.hex()
    return value


class Rows:
    """A table's rows: the table's name and, for errors, the block number of each row."""

    def __init__(self, table: str, numbers: Sequence[int], row_block: np.ndarray | None = None):
        self.table = table
        self.numbers = numbers
        self.row_block = row_block  # index into `numbers`; None: one row per block

    def block_num(self, row: int) -> int:
        if self.row_block is None:
            return self.numbers[row]
        return self.numbers[int(self.row_block[row])]

    def error(self, row: int, column: str, value: Any, reason: str) -> ConversionError:
        return ConversionError(self.block_num(row), self.table, column, shown(value), reason)


def fixed(rows: Rows, column: str, values: list[bytes], width: int) -> pa.Array:
    """Byte strings of exactly `width` bytes -> FixedSizeBinary(width)."""
    if values and set(map(len, values)) != {width}:
        row = next(i for i, v in enumerate(values) if len(v) != width)
        raise rows.error(
            row, column, values[row], f"expected {width} bytes, got {len(values[row])}"
        )
    buffer = pa.py_buffer(b"".join(values))
    return pa.Array.from_buffers(pa.binary(width), len(values), [None, buffer])


def fixed_or_null(rows: Rows, column: str, values: list[bytes], width: int) -> pa.Array:
    """Like `fixed`, but an empty byte string is a null."""
    present = [v for v in values if v]
    if present and set(map(len, present)) != {width}:
        row = next(i for i, v in enumerate(values) if v and len(v) != width)
        raise rows.error(
            row, column, values[row], f"expected {width} bytes, got {len(values[row])}"
        )
    return pa.array([v or None for v in values], pa.binary(width))


def big_ints(
    messages: Sequence, field: str, values: Sequence[bytes] | None = None
) -> list[bytes | None]:
    """The big-endian bytes of each message's BigInt `field`; None where the field is unset.

    `values`: the messages' `<field>.bytes`, when already read."""
    if values is None:
        values = list(map(attrgetter(field + ".bytes"), messages))
    values = list(values)
    if b"" in values:  # unset, or set to zero: only these need asking
        values = [
            v if v or m.HasField(field) else None for v, m in zip(values, messages, strict=True)
        ]
    return values


def decimals(
    rows: Rows,
    column: str,
    values: list[bytes | None],
    *,
    max_bytes: int = 16,
    nullable: bool = True,
    null_on_overflow: bool = False,
) -> pa.Array:
    """Unsigned big-endian integers (None: null) -> Decimal128(38, 0).

    A value is judged by its number, not its length: leading zero bytes are ignored. One wider
    than `max_bytes` or beyond 38 digits is a ConversionError, or a null with
    `null_on_overflow`. An empty byte string is zero.
    """
    n = len(values)
    null = None
    if None in values:
        if not nullable:
            raise rows.error(values.index(None), column, None, "missing")
        null = np.fromiter((v is None for v in values), np.bool_, n)
        values = [b"" if v is None else v for v in values]
    if n and max(map(len, values)) > max_bytes:
        values = [v.lstrip(b"\0") if len(v) > max_bytes else v for v in values]
        wide = [i for i, v in enumerate(values) if len(v) > max_bytes]
        if wide:
            limit = "UInt64" if max_bytes <= 8 else "Decimal128(38, 0)"
            null = _overflow(rows, column, values, wide, null, null_on_overflow, limit)
            for i in wide:
                values[i] = b""
    raw = np.frombuffer(b"".join([v.rjust(16, b"\0") for v in values]), ">u8").reshape(n, 2)
    hi, lo = raw[:, 0], raw[:, 1]
    over = (hi > _MAX_HI) | ((hi == _MAX_HI) & (lo > _MAX_LO))
    if over.any():
        wide = np.flatnonzero(over).tolist()
        null = _overflow(rows, column, values, wide, null, null_on_overflow, "Decimal128(38, 0)")
        hi, lo = np.where(over, 0, hi), np.where(over, 0, lo)
    words = np.empty((n, 2), "<u8")
    words[:, 0] = lo
    words[:, 1] = hi
    validity = pa.array(~null).buffers()[1] if null is not None and null.any() else None
    return pa.Array.from_buffers(WEI, n, [validity, pa.py_buffer(words)])


def _overflow(
    rows: Rows,
    column: str,
    values: list[bytes],
    wide: list[int],
    null: np.ndarray | None,
    null_on_overflow: bool,
    limit: str,
) -> np.ndarray:
    """Raise for the first value too big for the column, or (null_on_overflow) null them all."""
    if not null_on_overflow:
        row = wide[0]
        value = int.from_bytes(values[row], "big")
        raise rows.error(row, column, value, f"out of range for {limit}")
    if null is None:
        null = np.zeros(len(values), np.bool_)
    null[wide] = True
    return null


def amounts(rows: Rows, column: str, values: list[bytes | None]) -> pa.Array:
    """Unsigned big-endian integers of up to 32 bytes (None: null) -> decimal strings (Utf8)."""
    from_bytes = int.from_bytes
    try:
        text = [None if v is None else str(from_bytes(_u256(v), "big")) for v in values]
    except ValueError:
        row = next(i for i, v in enumerate(values) if v is not None and len(v.lstrip(b"\0")) > 32)
        value = from_bytes(values[row], "big")
        raise rows.error(row, column, value, "out of range for a 256-bit integer") from None
    return pa.array(text, pa.utf8())


def _u256(value: bytes) -> bytes:
    if len(value) > 32 and len(value := value.lstrip(b"\0")) > 32:
        raise ValueError("wider than 256 bits")
    return value


def timestamps(rows: Rows, column: str, seconds: list[int]) -> pa.Array:
    """Whole seconds since the epoch -> Timestamp(Nanosecond, +00:00)."""
    if seconds and (min(seconds) < 0 or max(seconds) > _MAX_SECONDS):
        row = next(i for i, s in enumerate(seconds) if not 0 <= s <= _MAX_SECONDS)
        raise rows.error(row, column, seconds[row], "out of range for Timestamp(Nanosecond)")
    return pa.array(np.asarray(seconds, np.int64) * _NS, pa.int64()).view(TIMESTAMP)


def topics(rows: Rows, per_log: list) -> list[pa.Array]:
    """The four topic columns from each log's topics: all decoded at once, then spread."""
    counts = np.fromiter(map(len, per_log), np.int64, len(per_log))
    if len(counts) and counts.max() > 4:
        row = int(np.argmax(counts > 4))
        raise rows.error(row, "topic3", len(per_log[row]), "a log has at most four topics")
    flat = [topic for each in per_log for topic in each]
    if flat and set(map(len, flat)) != {32}:
        for row, each in enumerate(per_log):
            for n, topic in enumerate(each):
                if len(topic) != 32:
                    raise rows.error(
                        row, f"topic{n}", topic, f"expected 32 bytes, got {len(topic)}"
                    )
    hashes = fixed(rows, "topic0", flat, 32)
    firsts = np.cumsum(counts) - counts
    return [hashes.take(pa.array(firsts + n, mask=counts <= n)) for n in range(4)]
