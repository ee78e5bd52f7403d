"""Column building for the conversion: hex JSON values -> Python values -> Arrow arrays.

Each column is converted with one list comprehension and one `pa.array` call; only when that
fails is the column walked again, value by value, to name the block, the table and the
column in the ConversionError.
"""

from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ampd.extract.chunk import ConversionError
from ampd.providers.evm_rpc import hexdecode
from ampd.providers.evm_rpc.schema import WEI

_NS = 1_000_000_000
_MAX_DECIMAL = 10**38 - 1
MAX_U64 = 2**64 - 1

_fromhex = bytes.fromhex


def u64(value: int) -> int:
    """The value, if it fits UInt64; else ValueError."""
    if not 0 <= value <= MAX_U64:
        raise ValueError("out of range for UInt64")
    return value


def wei(value: int) -> int:
    """The value, if it fits Decimal128(38, 0) and is not negative; else ValueError."""
    if not 0 <= value <= _MAX_DECIMAL:
        raise ValueError("out of range for Decimal128(38, 0)")
    return value


def amount(value: str) -> str:
    """A hex quantity as a decimal string (the `value` column). ValueError if negative."""
    n = int(value, 16)
    if n < 0:
        raise ValueError("negative amount")
    return str(n)


def hex_int(value: str) -> int:
    """`"0x1a"` -> 26. ValueError for bad hex, TypeError for None."""
    return int(value, 16)


def seconds_to_ns(value: str) -> int:
    """Hex block seconds -> nanoseconds, if they fit Timestamp(Nanosecond)."""
    seconds = int(value, 16)
    if not 0 <= seconds < 2**63 // _NS:
        raise ValueError("out of range for Timestamp(Nanosecond)")
    return seconds * _NS


def hex_bytes(value: str) -> bytes:
    """0x hex -> bytes; ValueError without the prefix or for a non-hex digit."""
    if value[:2] != "0x":
        raise ValueError("expected 0x-prefixed hex")
    return _fromhex(value[2:])


def fixed(value: str, width: int) -> bytes:
    """0x hex of exactly `width` bytes -> bytes; ValueError otherwise."""
    raw = hex_bytes(value)
    if len(raw) != width:
        raise ValueError(f"expected {width} bytes, got {len(raw)}")
    return raw


def quantity32(value: str) -> bytes:
    """A hex quantity of at most 32 bytes -> 32 big-endian bytes; ValueError otherwise."""
    # r and s are quantities: the node drops leading zeros, so pad back to 32 bytes.
    if value[:2] != "0x":
        raise ValueError("expected 0x-prefixed hex")
    raw = _fromhex(value[2:].zfill(64))
    if len(raw) != 32:
        raise ValueError(f"expected at most 32 bytes, got {len(raw)}")
    return raw


CONVERSION_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError)
ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError)


class Columns:
    """Builds one table's columns; on a failure, names the block, the table and the column."""

    def __init__(self, table: str, row_numbers: Sequence[int | None]) -> None:
        self.table = table
        self.row_numbers = row_numbers

    def values(self, column: str, items: list, fn: Callable[[Any], Any]) -> list:
        try:
            return [fn(item) for item in items]
        except CONVERSION_ERRORS:
            raise self._locate(column, items, fn) from None

    def array(self, column: str, values: Sequence, type_: pa.DataType) -> pa.Array:
        """`pa.array(values, type_)`; pyarrow checks widths, UInt ranges and decimal digits,
        we add that decimals are not negative. Raises ConversionError."""
        try:
            array = pa.array(values, type=type_)
        except ARROW_ERRORS:
            raise self._locate(column, values, lambda v: pa.array([v], type=type_)) from None
        if type_ == WEI and array.null_count < len(array) and pc.min(array).as_py() < 0:
            raise self._locate(column, values, lambda v: v is None or wei(v))
        return array

    def ints(self, column: str, rows: list[dict], key: str) -> list[int]:
        try:
            return [int(row[key], 16) for row in rows]
        except CONVERSION_ERRORS:
            raise self._locate(column, rows, lambda row: int(row[key], 16), key) from None

    def raw(self, column: str, rows: list[dict], key: str, nullable: bool = False) -> list:
        """The JSON values of `key`, row by row (None where absent when nullable)."""
        if nullable:
            return [row.get(key) for row in rows]
        try:
            return [row[key] for row in rows]
        except (KeyError, TypeError):
            raise self._locate(column, rows, lambda row: row[key], key) from None

    def uint64(self, column: str, rows: list[dict], key: str, nullable: bool = False) -> pa.Array:
        return self.quantities(column, self.raw(column, rows, key, nullable), nullable)

    def quantities(self, column: str, raw: list[str | None], nullable: bool = False) -> pa.Array:
        """Hex quantities -> UInt64."""
        fast = hexdecode.uint64(raw, nullable)
        if fast is not None:
            return fast
        return self.array(column, self._ints_one_by_one(column, raw, nullable), pa.uint64())

    def uint32(self, column: str, rows: list[dict], key: str) -> pa.Array:
        fast = hexdecode.uint64(self.raw(column, rows, key))
        if fast is not None and (not len(fast) or pc.max(fast).as_py() <= 0xFFFFFFFF):
            return fast.cast(pa.uint32())
        return self.array(column, self.ints(column, rows, key), pa.uint32())

    def wei(self, column: str, raw: list[str | None], nullable: bool = False) -> pa.Array:
        fast = hexdecode.decimal128(raw, nullable)
        if fast is not None:
            return fast
        return self.array(column, self._ints_one_by_one(column, raw, nullable), WEI)

    def _ints_one_by_one(self, column: str, raw: list[str | None], nullable: bool) -> list:
        if nullable:
            return self.values(column, raw, lambda v: None if v is None else int(v, 16))
        return self.values(column, raw, hex_int)

    def amounts(self, column: str, raw: list[str]) -> pa.Array:
        """Hex quantities as decimal strings (any size)."""
        fast = hexdecode.decimal128(raw)
        if fast is not None:
            return fast.cast(pa.utf8())
        return self.array(column, self.values(column, raw, amount), pa.utf8())

    def fixed(
        self, column: str, rows: list[dict], key: str, width: int, nullable: bool = False
    ) -> pa.Array:
        return self.fixed_hex(column, self.raw(column, rows, key, nullable), width, nullable)

    def fixed_hex(
        self, column: str, raw: list[str | None], width: int, nullable: bool = False
    ) -> pa.Array:
        """0x hex values of exactly `width` bytes (None allowed when nullable)."""
        fast = hexdecode.fixed_binary(raw, width, nullable)
        if fast is not None:
            return fast
        # A bad value, or a rare form the fast path does not take: decode one by one.
        if nullable:
            check = lambda v: v is None or fixed(v, width)  # noqa: E731
        else:
            check = lambda v: fixed(v, width)  # noqa: E731
        try:
            if nullable:
                values = [None if v is None else fixed(v, width) for v in raw]
            else:
                values = [fixed(v, width) for v in raw]
        except CONVERSION_ERRORS:
            raise self._locate(column, raw, check) from None
        return self.array(column, values, pa.binary(width))

    def binary(self, column: str, rows: list[dict], key: str) -> pa.Array:
        fast = hexdecode.binary(self.raw(column, rows, key))
        if fast is not None:
            return fast
        try:
            values = [hex_bytes(row[key]) for row in rows]
        except CONVERSION_ERRORS:
            raise self._locate(column, rows, lambda row: hex_bytes(row[key]), key) from None
        return self.array(column, values, pa.binary())

    def _locate(
        self, column: str, items: list, fn: Callable[[Any], Any], key: str | None = None
    ) -> ConversionError:
        for i, item in enumerate(items):
            try:
                fn(item)
            except ARROW_ERRORS + CONVERSION_ERRORS as exc:
                value = item.get(key) if key is not None and isinstance(item, dict) else item
                reason = "missing" if value is None or isinstance(exc, KeyError) else str(exc)
                return ConversionError(self.row_numbers[i], self.table, column, value, reason)
        return ConversionError(None, self.table, column, None, "conversion failed")
