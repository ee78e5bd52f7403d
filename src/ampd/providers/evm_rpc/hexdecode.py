"""Whole-column decoding of `0x` hex strings into Arrow arrays.

A chunk of blocks holds tens of thousands of hashes, addresses and quantities; decoding
them one `bytes.fromhex` / `int(x, 16)` at a time is most of the conversion's CPU. Here a
column's strings sit in one Arrow string array (as the JSON parser made it, or built from a
Python list in one call); its character buffer is decoded by one `binascii.a2b_hex` call
and a few numpy operations, and the result array is built straight from the buffers.

Every function is strict and all-or-nothing: it returns None when any value is not what it
expects (not a string, no `0x` prefix, a non-hex digit, a wrong length, out of range, or a
null where `nullable` is false), and the caller then converts the column value by value,
which either names the bad value or handles a rare legal form (such as a quantity padded
with leading zeros).
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["binary", "decimal128", "fixed_binary", "quantity_bytes", "strings", "uint64"]

_ZERO, _X = ord("0"), ord("x")
_MAX_DECIMAL_HI, _MAX_DECIMAL_LO = divmod(10**38 - 1, 2**64)
_HEX_ERRORS = (binascii.Error, ValueError)

Strings = Sequence[str | None] | pa.Array


def strings(values: Strings) -> pa.StringArray | None:
    """The values as an Arrow string array (None if one is neither a string nor None)."""
    if isinstance(values, pa.Array):
        return values if pa.types.is_string(values.type) else None
    try:
        return pa.array(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return None


class _Text:
    """The non-null values of a string column as one ASCII buffer, and which rows they are."""

    __slots__ = ("size", "valid", "buffer", "starts", "lengths")

    def __init__(self, array: pa.StringArray) -> None:
        self.size = len(array)
        self.valid: np.ndarray | None = None  # bool per row; None when no row is null
        if array.null_count:
            self.valid = array.is_valid().to_numpy(zero_copy_only=False)
            array = array.drop_null()
        offsets = np.frombuffer(array.buffers()[1], np.int32, len(array) + 1, 4 * array.offset)
        data = array.buffers()[2]
        first, last = int(offsets[0]), int(offsets[-1])
        self.buffer = (
            np.frombuffer(data, np.uint8, last - first, first) if data is not None and last > first
            else np.zeros(0, np.uint8)
        )  # fmt: skip
        self.starts = offsets[:-1].astype(np.int64) - first
        self.lengths = np.diff(offsets).astype(np.int64)

    @property
    def rows(self) -> int:
        return len(self.lengths)

    def prefixed(self) -> bool:
        """Every value starts with `0x`."""
        if self.rows and self.lengths.min() < 2:
            return False
        b, s = self.buffer, self.starts
        return bool((b[s] == _ZERO).all() and (b[s + 1] == _X).all())

    def validity(self) -> pa.Buffer | None:
        if self.valid is None:
            return None
        return pa.array(self.valid, pa.bool_()).buffers()[1]

    def spread(self, values: np.ndarray) -> np.ndarray:
        """Values of the present rows -> values of all rows (zeros where null)."""
        if self.valid is None:
            return values
        out = np.zeros((self.size, *values.shape[1:]), values.dtype)
        out[self.valid] = values
        return out


def _text(values: Strings, nullable: bool) -> _Text | None:
    array = strings(values)
    if array is None or (array.null_count and not nullable):
        return None
    return _Text(array)


def fixed_binary(values: Strings, width: int, nullable: bool = False) -> pa.Array | None:
    """`0x` + exactly 2*width hex digits -> FixedSizeBinary(width)."""
    text = _text(values, nullable)
    if text is None:
        return None
    rows, chars = text.rows, 2 + 2 * width
    if rows and (text.lengths != chars).any():
        return None
    matrix = text.buffer.reshape(rows, chars)
    if rows and not ((matrix[:, 0] == _ZERO).all() and (matrix[:, 1] == _X).all()):
        return None
    try:
        data = binascii.a2b_hex(matrix[:, 2:].tobytes())
    except _HEX_ERRORS:
        return None
    if text.valid is not None:
        data = text.spread(np.frombuffer(data, np.uint8).reshape(rows, width))
    return pa.Array.from_buffers(pa.binary(width), text.size, [text.validity(), pa.py_buffer(data)])


def binary(values: Strings) -> pa.Array | None:
    """`0x` + an even number of hex digits -> Binary."""
    text = _text(values, False)
    if text is None:
        return None
    if not text.rows:
        return pa.array([], pa.binary())
    if (text.lengths & 1).any() or not text.prefixed():
        return None
    # Decode each `0x..` as `00..`: every value then starts with one zero byte, which a
    # slice drops (pyarrow's kernel copies the rest into a compact array).
    buffer = text.buffer.copy()
    buffer[text.starts + 1] = _ZERO
    try:
        decoded = binascii.a2b_hex(buffer)
    except _HEX_ERRORS:
        return None
    if len(decoded) >= 2**31:
        return None
    offsets = np.empty(text.rows + 1, np.int32)
    offsets[:-1] = text.starts // 2
    offsets[-1] = len(decoded)
    padded = pa.Array.from_buffers(
        pa.binary(), text.rows, [None, pa.py_buffer(offsets), pa.py_buffer(decoded)]
    )
    return pc.binary_slice(padded, 1, 2**31 - 1)


def _right_aligned(text: _Text, width: int) -> np.ndarray | None:
    """Quantities (1 to 2*width digits) -> rows of `width` bytes, big-endian, zero-padded."""
    rows = text.rows
    if not rows:
        return np.zeros((0, width), np.uint8)
    lengths, starts, buffer = text.lengths, text.starts, text.buffer
    slot = 2 + 2 * width
    if lengths.min() < 3 or lengths.max() > slot or not text.prefixed():
        return None
    # Copy each value, `0x` included, to the end of its own slot of `slot` characters
    # pre-filled with '0'; turn its `x` into '0'; decode the last 2*width of each slot.
    slot_starts = np.arange(rows) * slot + slot - lengths
    padded = np.full(rows * slot, _ZERO, np.uint8)
    padded[np.arange(len(buffer)) + np.repeat(slot_starts - starts, lengths)] = buffer
    padded[slot_starts + 1] = _ZERO
    try:
        raw = binascii.a2b_hex(padded.reshape(rows, slot)[:, 2:].tobytes())
    except _HEX_ERRORS:
        return None
    return np.frombuffer(raw, np.uint8).reshape(rows, width)


def uint64(values: Strings, nullable: bool = False) -> pa.Array | None:
    """Hex quantities of 1 to 16 digits -> UInt64."""
    text = _text(values, nullable)
    matrix = None if text is None else _right_aligned(text, 8)
    if matrix is None:
        return None
    numbers = text.spread(matrix.view(">u8")[:, 0].astype("<u8"))
    return pa.Array.from_buffers(pa.uint64(), text.size, [text.validity(), pa.py_buffer(numbers)])


def decimal128(values: Strings, nullable: bool = False) -> pa.Array | None:
    """Hex quantities of 1 to 32 digits, at most 10**38 - 1 -> Decimal128(38, 0)."""
    text = _text(values, nullable)
    matrix = None if text is None else _right_aligned(text, 16)
    if matrix is None:
        return None
    words = matrix.view(">u8")  # rows of (high, low)
    hi, lo = words[:, 0], words[:, 1]
    if ((hi > _MAX_DECIMAL_HI) | ((hi == _MAX_DECIMAL_HI) & (lo > _MAX_DECIMAL_LO))).any():
        return None
    little = text.spread(np.stack([lo, hi], axis=1).astype("<u8"))  # low word first
    return pa.Array.from_buffers(
        pa.decimal128(38, 0), text.size, [text.validity(), pa.py_buffer(little)]
    )


def quantity_bytes(values: Strings, width: int) -> pa.Array | None:
    """Hex quantities of 1 to 2*width digits -> FixedSizeBinary(width), big-endian,
    zero-padded on the left (signature `r` and `s`, which nodes send without leading zeros)."""
    text = _text(values, False)
    matrix = None if text is None else _right_aligned(text, width)
    if matrix is None:
        return None
    return pa.Array.from_buffers(pa.binary(width), text.size, [None, pa.py_buffer(matrix)])
