"""Column-at-a-time decoding of ABI words: an (n, 32) uint8 array of big-endian words
becomes one Arrow array, with numpy and pyarrow compute and no Python call per row.

A word decodes the way Amp's decoder does: the full 256-bit word is read whatever the
declared width (uintN, intN), and then has to fit the Arrow type (an error otherwise,
with Amp's text); an address is the low 20 bytes and a bool any non-zero word, dirty
high bytes ignored; bytesN is the first N bytes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ampd.sql.functions.abi_types import DEC128, DEC256, SolType
from ampd.sql.functions.errors import AbiError

_MAX128 = 10**38 - 1
_MAX256 = 10**76 - 1


def validity(valid: np.ndarray | None) -> pa.Buffer | None:
    """An Arrow validity bitmap for `valid` (None when every row is valid)."""
    if valid is None or valid.all():
        return None
    return pa.py_buffer(np.packbits(valid, bitorder="little"))


def fixed_binary(data: np.ndarray, valid: np.ndarray | None) -> pa.Array:
    """(n, w) uint8 -> FixedSizeBinary(w)."""
    n, width = data.shape
    data = np.ascontiguousarray(data)
    return pa.Array.from_buffers(pa.binary(width), n, [validity(valid), pa.py_buffer(data)])


def _primitive(t: pa.DataType, values: np.ndarray, valid: np.ndarray | None) -> pa.Array:
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(t, len(values), [validity(valid), pa.py_buffer(values)])


def _limbs(words: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Bytes start:stop of each word as big-endian uint64 limbs, most significant first."""
    part = np.ascontiguousarray(words[:, start:stop])
    return part.view(">u8").astype(np.uint64)


def _split(value: int, count: int) -> list[int]:
    return [(value >> (64 * (count - 1 - i))) & 0xFFFFFFFFFFFFFFFF for i in range(count)]


def _at_least(limbs: np.ndarray, value: int) -> np.ndarray:
    """Rows whose limbs, read as one unsigned number, are >= value."""
    consts = _split(value, limbs.shape[1])
    greater = np.zeros(len(limbs), dtype=bool)
    equal = np.ones(len(limbs), dtype=bool)
    for j, c in enumerate(consts):
        column = limbs[:, j]
        greater |= equal & (column > np.uint64(c))
        equal &= column == np.uint64(c)
    return greater | equal


def _signed(word: bytes) -> int:
    return int.from_bytes(word, "big", signed=True)


def _unsigned(word: bytes) -> int:
    return int.from_bytes(word, "big")


def _first(bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad)[0])


def _sign_extended(words: np.ndarray, keep: int) -> np.ndarray:
    """Rows whose bytes before the last `keep` are the sign extension of the rest."""
    head = words[:, : 32 - keep]
    negative = words[:, 32 - keep] >= 0x80
    fill = np.where(negative, 0xFF, 0).astype(np.uint8)
    return (head == fill[:, None]).all(axis=1)


def _zero_above(words: np.ndarray, keep: int) -> np.ndarray:
    return ~words[:, : 32 - keep].any(axis=1)


def _precision_error(value: int, kind: str) -> AbiError:
    digits, bound = (38, _MAX128) if kind == "Decimal128" else (76, _MAX256)
    if value > 0:
        text = f"{value} is too large to store in a {kind} of precision {digits}. Max is {bound}"
    else:
        text = f"{value} is too small to store in a {kind} of precision {digits}. Min is -{bound}"
    return AbiError(f"Invalid argument error: {text}")


def _in_range(limbs: np.ndarray, negative: np.ndarray, bits: int, bound: int) -> np.ndarray:
    """Rows whose `bits`-wide two's complement value (as limbs) lies in [-bound, bound]."""
    return np.where(negative, _at_least(limbs, (1 << bits) - bound), ~_at_least(limbs, bound + 1))


def _decimal(words: np.ndarray, start: int, valid: np.ndarray, what: str) -> pa.Array:
    """Bytes start:32 of each word as a two's complement Decimal128 (start 16) or
    Decimal256 (start 0), or Amp's error for a value beyond the decimal's digits."""
    kind, bound, arrow = (
        ("Decimal128", _MAX128, DEC128) if start else ("Decimal256", _MAX256, DEC256)
    )
    negative = words[:, start] >= 0x80
    bad = valid & ~_in_range(_limbs(words, start, 32), negative, 8 * (32 - start), bound)
    if bad.any():
        value = _signed(words[_first(bad), start:].tobytes())
        raise AbiError(f"{what}: {_precision_error(value, kind)}")
    return _primitive(arrow, words[:, start:][:, ::-1], valid)


def _decode_int(words: np.ndarray, t: SolType, valid: np.ndarray) -> pa.Array:
    signed = t.kind == "int"
    bits = t.size
    arrow = t.arrow
    what = f"error converting {t.kind}{bits}"
    if bits <= 64:
        width = arrow.bit_width // 8
        fits = _sign_extended(words, width) if signed else _zero_above(words, width)
        bad = valid & ~fits
        if bad.any():
            native = f"u{width * 8}"
            reason = (
                "output of range integer conversion attempted"
                if signed
                else f"Uint<256> value is too large for {native}"
            )
            raise AbiError(f"{what}: {reason}")
        raw = np.ascontiguousarray(words[:, 32 - width :])
        values = raw.view((">i" if signed else ">u") + str(width)).ravel()
        return _primitive(arrow, values.astype(values.dtype.newbyteorder("=")), valid)
    if arrow == DEC128:
        fits = (
            _sign_extended(words, 16) if signed else _zero_above(words, 16) & (words[:, 16] < 0x80)
        )
        bad = valid & ~fits
        if bad.any():
            reason = (
                "output of range integer conversion attempted"
                if signed
                else "Uint<256> value is too large for i128"
            )
            raise AbiError(f"{what}: {reason}")
        return _decimal(words, 16, valid, what)
    if arrow == DEC256:
        # The 256-bit word is taken as a two's complement number for uintN too.
        return _decimal(words, 0, valid, what)
    return int_text(words, signed, valid)


def int_text(words: np.ndarray, signed: bool, valid: np.ndarray) -> pa.Array:
    """256-bit words as decimal text. When every value fits 64 bits (amounts, counters and
    ids nearly always do) they go through Arrow's integer formatting, twice as fast as its
    decimal one; else values that fit a Decimal128 go through that, and the rest through
    Python integers."""
    small = _int64_text(words, signed, valid)
    if small is not None:
        return small
    limbs = _limbs(words, 0, 32)
    if signed:
        negative = limbs[:, 2] >> np.uint64(63) == 1
        fill = np.where(negative, np.uint64(0xFFFFFFFFFFFFFFFF), np.uint64(0))
        small = (limbs[:, 0] == fill) & (limbs[:, 1] == fill)
        small &= _in_range(limbs[:, 2:], negative, 128, _MAX128)
    else:
        small = (limbs[:, 0] == 0) & (limbs[:, 1] == 0) & ~_at_least(limbs[:, 2:], _MAX128 + 1)
    decimals = _primitive(DEC128, words[:, 16:][:, ::-1], valid & small)
    text = pc.cast(decimals, pa.string())
    large = np.flatnonzero(valid & ~small)
    if not len(large):
        return text
    convert = _signed if signed else _unsigned
    pieces, at = [], 0
    for row in large:
        pieces.append(text.slice(at, row - at))
        pieces.append(pa.array([str(convert(words[row].tobytes()))], pa.string()))
        at = row + 1
    pieces.append(text.slice(at))
    return pa.concat_arrays(pieces)


def _int64_text(words: np.ndarray, signed: bool, valid: np.ndarray) -> pa.Array | None:
    """The words as text through uint64 (int64 when `signed`), or None when a valid word
    does not fit: its top 24 bytes are not all zero (all 0xFF with the sign bit set, for a
    negative int)."""
    lanes = np.ascontiguousarray(words).view(np.uint64)  # 4 native lanes a word
    low = lanes[:, 3].byteswap()
    high = lanes[:, :3]
    if signed:
        negative = (low >> np.uint64(63)).astype(bool)
        fill = np.where(negative, np.uint64(0xFFFFFFFFFFFFFFFF), np.uint64(0))
        fits = (high == fill[:, None]).all(axis=1)
        values = pa.Array.from_buffers(pa.int64(), len(low), [validity(valid), pa.py_buffer(low)])
    else:
        fits = ~(high[:, 0] | high[:, 1] | high[:, 2]).astype(bool)
        values = pa.Array.from_buffers(pa.uint64(), len(low), [validity(valid), pa.py_buffer(low)])
    if not fits[valid].all():
        return None
    return pc.cast(values, pa.string())


def decode_words(words: np.ndarray, t: SolType, valid: np.ndarray) -> pa.Array:
    """One word per row of `words` ((n, 32) uint8) decoded as the word type `t`;
    rows where `valid` is False become null (and are not checked)."""
    kind = t.kind
    if kind in ("uint", "int"):
        return _decode_int(words, t, valid)
    if kind == "address":
        return fixed_binary(words[:, 12:], valid)
    if kind == "bool":
        values = words.any(axis=1)
        return pa.array(values, pa.bool_(), mask=~valid)
    if kind == "fbytes":
        return fixed_binary(words[:, : t.size], valid)
    raise AbiError(f"cannot convert solidity type {t} to arrow data type")


def decode_static(block: np.ndarray, t: SolType, valid: np.ndarray) -> pa.Array:
    """A static type laid out in place over `block` ((n, t.words, 32) uint8)."""
    n = len(block)
    if t.kind == "farray":
        inner = t.inner
        child_block = block.reshape(n * t.size, inner.words, 32)
        child = decode_static(child_block, inner, np.repeat(valid, t.size))
        return pa.FixedSizeListArray.from_arrays(child, type=t.arrow, mask=pa.array(~valid))
    if t.kind == "tuple":
        children = []
        at = 0
        for item in t.items:
            children.append(decode_static(block[:, at : at + item.words, :], item, valid))
            at += item.words
        return pa.StructArray.from_arrays(children, fields=list(t.arrow), mask=pa.array(~valid))
    return decode_words(np.ascontiguousarray(block[:, 0, :]), t, valid)
