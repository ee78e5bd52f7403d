"""evm_encode_hex(text) and evm_decode_hex(binary).

evm_encode_hex turns a literal hex string (40 or 64 digits, `0x` optional) into
FixedSizeBinary(20) or FixedSizeBinary(32), the type following the literal's length;
evm_decode_hex writes a FixedSizeBinary(20) or (32) column as lowercase `0x` hex (NULL
stays NULL).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ampd.sql.functions.common import Built, failing, repeat, single_text
from ampd.sql.functions.errors import FunctionError

ENCODE = "evm_encode_hex"
DECODE = "evm_decode_hex"

_DIGITS = np.frombuffer(b"0123456789abcdef", np.uint8)
_HEX = set(b"0123456789abcdefABCDEF")


def hex_bytes(text: str) -> bytes:
    """`text` decoded like Amp's hex decoder (length checked first, then an optional
    0x / 0X prefix dropped), or Amp's error."""
    raw = text.encode()
    if len(raw) % 2:
        raise FunctionError(f"{ENCODE}: invalid hex string: odd number of digits")
    if raw[:2] in (b"0x", b"0X"):
        raw = raw[2:]
    for index, byte in enumerate(raw):
        if byte not in _HEX:
            raise FunctionError(
                f"{ENCODE}: invalid hex string: invalid character {chr(byte)!r} at position {index}"
            )
    value = bytes.fromhex(raw.decode())
    if len(value) not in (20, 32):
        raise FunctionError(f"{ENCODE}: expected 20 or 32 bytes, got {len(value)}")
    return value


def evm_encode_hex(literal: str | None, *, null: bool = False) -> Built:
    """For a literal argument the result type follows its length; for anything else (or
    a NULL literal, `null`) Amp types the result FixedSizeBinary(20) and fails when it
    runs."""
    if literal is None:
        if null:
            message = f"{ENCODE}: input cannot be null"
        else:
            message = f"{ENCODE}: expected scalar argument but got Utf8"
        result = pa.field(ENCODE, pa.binary(20), nullable=False)
        return Built(failing(message, pa.binary(20)), [pa.string()], result)
    value = hex_bytes(literal)

    def body(text: pa.Array) -> pa.Array:
        single_text(text, f"{ENCODE}: expected scalar argument but got Utf8")
        return repeat(value, len(text))

    return Built(body, [pa.string()], pa.field(ENCODE, pa.binary(len(value)), nullable=False))


def evm_decode_hex(width: int) -> Built:
    """For a FixedSizeBinary(width) argument, width 20 or 32."""

    def body(column: pa.Array) -> pa.Array:
        n = len(column)
        data = column.buffers()[1]
        raw = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
        raw = raw[column.offset * width : (column.offset + n) * width].reshape(n, width)
        text = np.empty((n, 2 + 2 * width), np.uint8)
        text[:, 0], text[:, 1] = ord("0"), ord("x")
        text[:, 2::2] = _DIGITS[raw >> 4]
        text[:, 3::2] = _DIGITS[raw & 15]
        size = 2 + 2 * width
        offsets = np.arange(n + 1, dtype=np.int32) * size
        nulls = column.buffers()[0]
        if column.null_count == 0:
            nulls = None
        elif column.offset:
            nulls = pa.py_buffer(
                np.packbits(~column.is_null().to_numpy(zero_copy_only=False), bitorder="little")
            )
        return pa.Array.from_buffers(
            pa.string(), n, [nulls, pa.py_buffer(offsets), pa.py_buffer(text)]
        )

    if width not in (20, 32):
        raise FunctionError(
            f"{DECODE}: expected FixedSizeBinary(20) or FixedSizeBinary(32), got "
            f"FixedSizeBinary({width})"
        )
    return Built(body, [pa.binary(width)], pa.field(DECODE, pa.string()))
