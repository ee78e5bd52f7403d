"""evm_decode_params(data, signature) and evm_encode_params(value, ..., signature).

The signature names a function with named parameters. evm_decode_params returns a
struct of those parameters from call data (4-byte selector, then the ABI-encoded
arguments); the struct is NULL when the data is NULL, shorter than 4 bytes, has another
selector or does not decode. evm_encode_params builds such call data from one value per
parameter.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ampd.sql.functions.abi_decode import Rows, decode_sequence
from ampd.sql.functions.abi_encode import converter, encode_columns
from ampd.sql.functions.common import Built, encoder
from ampd.sql.functions.errors import AbiError, FunctionError
from ampd.sql.functions.signatures import Function, parse_function

DECODE = "evm_decode_params"
ENCODE = "evm_encode_params"


def function(name: str, signature: str) -> Function:
    try:
        return parse_function(signature)
    except AbiError as exc:
        raise FunctionError(f"{name}: {exc}") from None


def _fields(fn: Function) -> list[pa.Field]:
    try:
        return fn.fields
    except AbiError as exc:
        raise FunctionError(f"{DECODE}: {exc}") from None


def evm_decode_params(signature: str) -> Built:
    fn = function(DECODE, signature)
    fields = _fields(fn)
    selector = np.frombuffer(fn.selector, np.uint8)
    struct = pa.struct(fields)

    def body(data: pa.Array, _sig) -> pa.Array:
        rows = Rows(data)
        lengths = rows.lengths
        long_enough = rows.present & (lengths >= 4)
        starts = np.where(long_enough, rows.starts, 0)
        values = rows.values if len(rows.values) >= 4 else np.zeros(4, np.uint8)
        heads = values[starts[:, None] + np.arange(4)]
        keep = long_enough & (heads == selector).all(axis=1)
        args = rows.skip(4, keep)
        try:
            columns, ok = decode_sequence(args, fn.types, per_item_check=True)
        except AbiError as exc:
            raise FunctionError(f"{DECODE}: {exc}") from None
        if not columns:
            return pa.array([{} if k else None for k in ok], struct)
        return pa.StructArray.from_arrays(columns, fields=fields, mask=pa.array(~ok))

    return Built(body, [pa.binary(), pa.string()], pa.field(DECODE, struct), memo=1)


def evm_encode_params(arg_types: list[pa.DataType], signature: str | None) -> Built:
    """`arg_types` are the value arguments' Arrow types; `signature` the literal last
    argument (None when it is not a literal: it is then read from the column)."""
    return encoder(
        ENCODE,
        [*arg_types, pa.string()],
        signature,
        lambda text: _plan(text, arg_types),
        lambda fn, columns, rows: encode_columns(columns, fn.types, rows, prefix=fn.selector),
        f"{ENCODE}: expected scalar argument for the Solidity function signature but got Utf8",
        f"{ENCODE}: ",
    )


def _plan(signature: str, arg_types: list[pa.DataType]) -> Function:
    """The function, after Amp's checks of it against the arguments' types."""
    fn = function(ENCODE, signature)
    if len(arg_types) != len(fn.params):
        raise FunctionError(
            f"{ENCODE}: expected {len(fn.params)} arguments for the function signature but "
            f"got {len(arg_types)}"
        )
    for arrow, t in zip(arg_types, fn.types, strict=True):
        try:
            converter(arrow, t)
        except AbiError as exc:
            raise FunctionError(str(exc)) from None
    return fn
