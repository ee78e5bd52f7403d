"""evm_decode_type(data, type) and evm_encode_type(value, type): one ABI value, as
`abi.decode(data, (T))` / `abi.encode(value)` do it. The result of evm_decode_type has
the Arrow type of T (see abi_types.py) and is NULL where the data is NULL or does not
decode."""

from __future__ import annotations

import pyarrow as pa

from ampd.sql.functions.abi_decode import Rows, decode_single
from ampd.sql.functions.abi_encode import converter, encode_columns
from ampd.sql.functions.abi_types import SolType, parse_type
from ampd.sql.functions.common import Built, encoder
from ampd.sql.functions.errors import AbiError, FunctionError

DECODE = "evm_decode_type"
ENCODE = "evm_encode_type"


def sol_type(text: str) -> SolType:
    try:
        return parse_type(text)
    except AbiError as exc:
        raise FunctionError(f"failed to parse Solidity type: {exc}") from None


def evm_decode_type(type_text: str) -> Built:
    t = sol_type(type_text)
    try:
        arrow = t.arrow
    except AbiError as exc:
        raise FunctionError(str(exc)) from None

    def body(data: pa.Array, _type) -> pa.Array:
        try:
            return decode_single(Rows(data), t)
        except AbiError as exc:
            raise FunctionError(f"{DECODE}: {exc}") from None

    return Built(body, [pa.binary(), pa.string()], pa.field(DECODE, arrow), memo=1)


def evm_encode_type(value_type: pa.DataType, type_text: str | None) -> Built:
    """`type_text` is the literal type argument, or None when it is not a literal (it is
    then read from the column)."""
    return encoder(
        ENCODE,
        [value_type, pa.string()],
        type_text,
        lambda text: _checked(text, value_type),
        lambda t, columns, rows: encode_columns(columns, [t], rows),
        f"{ENCODE}: expected scalar argument for the Solidity type but got Utf8",
    )


def _checked(type_text: str, value_type: pa.DataType) -> SolType:
    t = sol_type(type_text)
    try:
        converter(value_type, t)
    except AbiError as exc:
        raise FunctionError(str(exc)) from None
    return t
