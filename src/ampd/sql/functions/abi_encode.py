"""ABI encoding of Arrow columns (for evm_encode_type and evm_encode_params).

Each Arrow value is first converted to a value of the Solidity type with Amp's rules
and error texts (`converter`): booleans only to bool, integers and scale-0 decimals to
intN/uintN within the type's range, Binary to bytes, FixedSizeBinary(N) to bytesN or (N =
20) address, Utf8 to string, lists, fixed-size lists and structs to arrays, fixed arrays
and tuples of matching shape. Columns of plain word types (integers, bool, address,
bytesN) are then encoded with numpy, a whole column at once; everything else row by row
with eth-abi's encoder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal

import eth_abi
import numpy as np
import pyarrow as pa

from ampd.sql.functions.abi_types import SolType
from ampd.sql.functions.errors import AbiError, df_type_name
from ampd.sql.functions.words import validity

Convert = Callable[[object], object]


def _int_range(sol: SolType, signed_source: bool) -> Convert:
    n = sol.size
    if sol.kind == "int":
        low, high = -(1 << (n - 1)), (1 << (n - 1)) - 1

        def to_int(v):
            v = int(v)
            if n < 256 and not low <= v <= high:
                raise AbiError(f"cannot convert int to solidity int{n}: {v} not in [{low}, {high}]")
            return v

        return to_int
    limit = 1 << n
    source = "int" if signed_source else "uint"

    def to_uint(v):
        v = int(v)
        if v < 0 or v >= limit:
            raise AbiError(f"cannot convert {source} to solidity uint{n}: {v} not in [0, {limit})")
        return v

    return to_uint


def converter(arrow: pa.DataType, sol: SolType) -> Convert:
    """A function from a Python value of Arrow type `arrow` (as `to_pylist` gives it) to
    the Solidity value eth-abi encodes. Raises AbiError (Amp's text) when no value of
    `arrow` can become `sol`; the function raises it for a value out of range."""
    types = pa.types
    if types.is_boolean(arrow):
        if sol.kind != "bool":
            raise AbiError(f"cannot convert boolean to solidity type {sol}")
        return bool
    if types.is_integer(arrow):
        signed = types.is_signed_integer(arrow)
        if sol.kind not in ("int", "uint"):
            raise AbiError(f"expected {'int' if signed else 'uint'} type, got {sol}")
        return _int_range(sol, signed)
    if types.is_decimal(arrow) and arrow.scale <= 0:
        if sol.kind not in ("int", "uint"):
            raise AbiError(f"expected uint type, got {sol}")
        check = _int_range(sol, True)
        return lambda v: check(int(Decimal(v)))
    if types.is_binary(arrow) or types.is_large_binary(arrow) or types.is_binary_view(arrow):
        if sol.kind != "bytes":
            raise AbiError(f"cannot convert bytes to solidity type {sol}")
        return bytes
    if types.is_fixed_size_binary(arrow):
        width = arrow.byte_width
        if sol.kind == "fbytes":
            if width != sol.size:
                raise AbiError(
                    f"cannot convert fixed size binary of size {width} to Solidity fixed "
                    f"bytes of size {sol.size}"
                )
            return bytes
        if sol.kind == "address":
            if width != 20:
                raise AbiError(
                    f"cannot convert fixed size binary of size {width} to Solidity address, "
                    "expected 20 bytes"
                )
            return bytes
        raise AbiError(f"cannot convert fixed size binary to solidity type {sol}")
    if types.is_string(arrow) or types.is_large_string(arrow) or types.is_string_view(arrow):
        if sol.kind != "string":
            raise AbiError(f"cannot convert string to solidity type {sol}")
        return str
    if types.is_list(arrow) or types.is_large_list(arrow) or types.is_list_view(arrow):
        if sol.kind != "array":
            raise AbiError(f"cannot convert list to solidity type {sol}")
        item = converter(arrow.value_type, sol.inner)
        return lambda v: [_nonnull(item, x) for x in v]
    if types.is_fixed_size_list(arrow):
        if sol.kind != "farray" or sol.size != arrow.list_size:
            raise AbiError(
                f"cannot convert fixed size list of size {arrow.list_size} to solidity type {sol}"
            )
        item = converter(arrow.value_type, sol.inner)
        return lambda v: [_nonnull(item, x) for x in v]
    if types.is_struct(arrow):
        if sol.kind != "tuple":
            raise AbiError(f"cannot convert struct to solidity type {sol}")
        if len(sol.items) != arrow.num_fields:
            raise AbiError(
                f"cannot convert struct of size {arrow.num_fields} to solidity type {sol}"
            )
        parts = [converter(f.type, t) for f, t in zip(arrow, sol.items, strict=True)]
        return lambda v: tuple(_nonnull(c, x) for c, x in zip(parts, v.values(), strict=True))
    raise AbiError(f"Unsupported type {df_type_name(arrow)} for Solidity type {sol}")


def _nonnull(convert: Convert, value):
    if value is None:
        raise AbiError("cannot encode a NULL inside a list or struct")
    return convert(value)


_WORD_SOURCES = ("bool", "int", "uint", "address", "fbytes")


def _words(column: pa.Array, sol: SolType) -> np.ndarray | None:
    """The column encoded as one word per row with numpy, or None when this pair of
    types is not one the column path handles (the row path then does)."""
    arrow = column.type
    n = len(column)
    out = np.zeros((n, 32), np.uint8)
    if sol.kind in ("int", "uint") and pa.types.is_integer(arrow):
        values = column.fill_null(0).to_numpy()
        check = _int_range(sol, pa.types.is_signed_integer(arrow))
        limits = np.iinfo(values.dtype)
        if sol.kind == "int":
            low, high = -(1 << (sol.size - 1)), (1 << (sol.size - 1)) - 1
        else:
            low, high = 0, (1 << sol.size) - 1
        bad = np.zeros(n, bool)
        if low > limits.min:
            bad |= values < low
        if high < limits.max:
            bad |= values > high
        if column.null_count:
            bad &= ~column.is_null().to_numpy(zero_copy_only=False)
        if bad.any():
            check(int(values[np.flatnonzero(bad)[0]]))
        wide = values.astype(np.int64 if values.dtype.kind == "i" else np.uint64)
        out[:, 24:] = wide.astype(wide.dtype.newbyteorder(">")).view(np.uint8).reshape(n, 8)
        if wide.dtype.kind == "i":
            out[wide < 0, :24] = 0xFF
        return out
    if sol.kind == "bool" and pa.types.is_boolean(arrow):
        out[:, 31] = column.fill_null(False).to_numpy(zero_copy_only=False)
        return out
    if pa.types.is_fixed_size_binary(arrow) and sol.kind in ("address", "fbytes"):
        converter(arrow, sol)  # the type checks and their errors
        width = arrow.byte_width
        data = np.frombuffer(column.buffers()[1], np.uint8)
        data = data[column.offset * width : (column.offset + n) * width].reshape(n, width)
        if sol.kind == "address":
            out[:, 12:] = data
        else:
            out[:, :width] = data
        return out
    return None


def _binary(rows: np.ndarray, valid: np.ndarray | None) -> pa.Array:
    """(n, w) uint8 -> Binary with every row w bytes long."""
    n, width = rows.shape
    offsets = np.arange(n + 1, dtype=np.int32) * width
    data = np.ascontiguousarray(rows)
    return pa.Array.from_buffers(
        pa.binary(), n, [validity(valid), pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def encode_columns(
    columns: Sequence[pa.Array], types: Sequence[SolType], rows: int, prefix: bytes = b""
) -> pa.Array:
    """Each row's values, one per column, ABI-encoded as the sequence `types`, after
    `prefix` (a function selector). A row with a NULL value encodes as NULL."""
    n = rows
    valid = np.ones(n, bool)
    for column in columns:
        if column.null_count:
            valid &= ~column.is_null().to_numpy(zero_copy_only=False)
    if all(t.kind in _WORD_SOURCES for t in types):
        words = [_words(c, t) for c, t in zip(columns, types, strict=True)]
        if all(w is not None for w in words):
            head = np.frombuffer(prefix, np.uint8)[None, :].repeat(n, axis=0)
            return _binary(np.concatenate([head, *words], axis=1), valid)
    converts = [converter(c.type, t) for c, t in zip(columns, types, strict=True)]
    names = [t.name for t in types]
    values = [c.to_pylist() for c in columns]
    out: list[bytes | None] = []
    for row in range(n):
        if not valid[row]:
            out.append(None)
            continue
        args = [convert(v[row]) for convert, v in zip(converts, values, strict=True)]
        out.append(prefix + eth_abi.encode(names, args))
    return pa.array(out, pa.binary())
