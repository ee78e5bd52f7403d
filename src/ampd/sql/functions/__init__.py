"""Amp's built-in EVM SQL functions for DataFusion sessions (see docs/feat/sql-functions.md).

`register_functions` registers the functions whose types never change (evm_topic);
`prepare` rewrites a query so that every other call resolves to a UDF registered for
its literal and argument types; `restore_names` / `public_name` give column names and
messages back the function names the query was written with.
"""

from __future__ import annotations

from datafusion import DataFrame, SessionContext

from ampd.sql.functions import log
from ampd.sql.functions.errors import FunctionError, error_text
from ampd.sql.functions.eth_call import EthCaller, QualifiedCall
from ampd.sql.functions.prepare import NAMES, prepare, public_name

__all__ = [
    "NAMES",
    "EthCaller",
    "FunctionError",
    "QualifiedCall",
    "error_text",
    "prepare",
    "public_name",
    "register_functions",
    "restore_names",
]


def register_functions(ctx: SessionContext) -> None:
    """Register in `ctx` the EVM functions whose argument and result types are fixed.

    The others (evm_decode_log and its old name evm_decode, evm_decode_params,
    evm_decode_type, evm_encode_type, evm_encode_params, evm_encode_hex, evm_decode_hex,
    shift_units) depend on their literal or argument types: pass each query through
    `prepare(ctx, sql)` after its tables are registered and plan what it returns."""
    ctx.register_udf(log.evm_topic().udf("evm_topic"))


def restore_names(frame: DataFrame) -> DataFrame:
    """`frame` with its column names as the query wrote its function calls (a column
    left unnamed by the query is named after its expression, which `prepare` changed)."""
    for name in frame.schema().names:
        public = public_name(name)
        if public != name:
            frame = frame.with_column_renamed(name, public)
    return frame
