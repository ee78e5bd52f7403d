"""Whole-column decoding of `0x` hex strings into Arrow arrays.

A chunk of blocks holds tens of thousands of hashes, addresses and quantities; decoding
them one `bytes.fromhex` / `int(x, 16)` at a time is most of the conversion's CPU. Here a
column's strings are joined into one ASCII buffer, decoded by one `binascii.a2b_hex` call
and a few numpy operations, and the Arrow array is built straight from the buffers.

Every function is strict and all-or-nothing: it returns None when any value is not what it
expects (not a string, no `0x` prefix, a non-hex digit, a wrong length, out of range), and
the caller then converts the column value by value, which either names the bad value or
handles a rare legal form (such as a quantity padded with leading zeros).
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["binary", "decimal128", "fixed_binary", "quantity_bytes", "uint64"]

_ZERO, _X = ord("0"), ord("x")
_MAX_DECIMAL_HI, _MAX_DECIMAL_LO = divmod(10**38 - 1, 2**64)
_HEX_ERRORS = (binascii.Error, ValueError)


class _Present:
    """The non-null values of a column, and which rows they are."""

    __slots__ = ("size", "valid", "values")

    def __init__(self, values: Sequence[str | None], nullable: bool) -> None:
        self.size = len(values)
        self.valid: np.ndarray | None = None  # bool per row; None when no row is null
        self.values = values
        if nullable and None in values:
            if values.count(None) == self.size:
                self.valid, self.values = np.zeros(self.size, bool), []
            else:
                self.valid = np.fromiter((v is not None for v in values), bool, self.size)
                self.values = [v for v in values if v is not None]

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


def _ascii(values: Sequence[str]) -> bytes | None:
    try:
        return "".join(values).encode("ascii")  # TypeError: None or not a string
    except (TypeError, UnicodeEncodeError):
        return None


def _lengths(values: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Each value's length and its start in the joined buffer."""
    try:
        lengths = np.fromiter(map(len, values), np.int64, len(values))
    except TypeError:
        return None
    return lengths, np.cumsum(lengths) - lengths


def _prefixed(buffer: np.ndarray, starts: np.ndarray) -> bool:
    return bool((buffer[starts] == _ZERO).all() and (buffer[starts + 1] == _X).all())


def fixed_binary(
    values: Sequence[str | None], width: int, nullable: bool = False
) -> pa.Array | None:
    """`0x` + exactly 2*width hex digits -> FixedSizeBinary(width)."""
    present = _Present(values, nullable)
    rows, chars = len(present.values), 2 + 2 * width
    try:
        if list(map(len, present.values)).count(chars) != rows:
            return None
    except TypeError:
        return None
    text = _ascii(present.values)
    if text is None:
        return None
    matrix = np.frombuffer(text, np.uint8).reshape(rows, chars)
    if rows and not ((matrix[:, 0] == _ZERO).all() and (matrix[:, 1] == _X).all()):
        return None
    try:
        data = binascii.a2b_hex(matrix[:, 2:].tobytes())
    except _HEX_ERRORS:
        return None
    if present.valid is not None:
        data = present.spread(np.frombuffer(data, np.uint8).reshape(rows, width))
    return pa.Array.from_buffers(
        pa.binary(width), present.size, [present.validity(), pa.py_buffer(data)]
    )


def binary(values: Sequence[str]) -> pa.Array | None:
    """`0x` + an even number of hex digits -> Binary."""
    located = _lengths(values)
    text = _ascii(values)
    if located is None or text is None or not len(values):
        return None if located is None or text is None else pa.array([], pa.binary())
    lengths, starts = located
    buffer = np.frombuffer(bytearray(text), np.uint8)
    if lengths.min() < 2 or (lengths & 1).any() or not _prefixed(buffer, starts):
        return None
    # Decode each `0x..` as `00..`: every value then starts with one zero byte, which a
    # slice drops (pyarrow's kernel copies the rest into a compact array).
    buffer[starts + 1] = _ZERO
    try:
        decoded = binascii.a2b_hex(buffer)
    except _HEX_ERRORS:
        return None
    if len(decoded) >= 2**31:
        return None
    offsets = np.empty(len(values) + 1, np.int32)
    offsets[:-1] = starts // 2
    offsets[-1] = len(decoded)
    padded = pa.Array.from_buffers(
        pa.binary(), len(values), [None, pa.py_buffer(offsets), pa.py_buffer(decoded)]
    )
    return pc.binary_slice(padded, 1, 2**31 - 1)


def _right_aligned(values: Sequence[str], width: int) -> np.ndarray | None:
    """Quantities (1 to 2*width digits) -> rows of `width` bytes, big-endian, zero-padded."""
    rows = len(values)
    located = _lengths(values)
    text = _ascii(values)
    if located is None or text is None:
        return None
    if not rows:
        return np.zeros((0, width), np.uint8)
    lengths, starts = located
    slot = 2 + 2 * width
    buffer = np.frombuffer(text, np.uint8)
    if lengths.min() < 3 or lengths.max() > slot or not _prefixed(buffer, starts):
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


def uint64(values: Sequence[str | None], nullable: bool = False) -> pa.Array | None:
    """Hex quantities of 1 to 16 digits -> UInt64."""
    present = _Present(values, nullable)
    matrix = _right_aligned(present.values, 8)
    if matrix is None:
        return None
    numbers = present.spread(matrix.view(">u8")[:, 0].astype("<u8"))
    return pa.Array.from_buffers(
        pa.uint64(), present.size, [present.validity(), pa.py_buffer(numbers)]
    )


def decimal128(values: Sequence[str | None], nullable: bool = False) -> pa.Array | None:
    """Hex quantities of 1 to 32 digits, at most 10**38 - 1 -> Decimal128(38, 0)."""
    present = _Present(values, nullable)
    matrix = _right_aligned(present.values, 16)
    if matrix is None:
        return None
    words = matrix.view(">u8")  # rows of (high, low)
    hi, lo = words[:, 0], words[:, 1]
    if ((hi > _MAX_DECIMAL_HI) | ((hi == _MAX_DECIMAL_HI) & (lo > _MAX_DECIMAL_LO))).any():
        return None
    little = present.spread(np.stack([lo, hi], axis=1).astype("<u8"))  # low word first
    return pa.Array.from_buffers(
        pa.decimal128(38, 0), present.size, [present.validity(), pa.py_buffer(little)]
    )


def quantity_bytes(values: Sequence[str], width: int) -> pa.Array | None:
    """Hex quantities of at most 2*width digits -> FixedSizeBinary(width), big-endian,
    zero-padded on the left (signature `r` and `s`, which nodes send without leading zeros)."""
    chars = 2 + 2 * width
    try:
        # Most are full length already; pad the others (keeping what stands for `0x`, which
        # fixed_binary then checks).
        padded = [v[:2] + v[2:].zfill(2 * width) if 2 < len(v) < chars else v for v in values]
    except TypeError:
        return None
    return fixed_binary(padded, width)
