"""Arrow schemas of the firehose dataset's four tables: blocks, transactions, calls, logs.

A contract shared with Amp (its firehose-evm table docs): column names, order, types and
nullability must not change. Every table starts with `_block_num`, the block the row belongs to.

- blocks: one row per block header. The same columns as the evm-rpc `blocks` table, as in Amp,
  where both kinds share one definition; `requests_hash` is always null (Firehose sends none).
- transactions: one row per transaction trace, failed ones included (`status` is Firehose's
  TransactionTraceStatus: 1 succeeded, 2 failed, 3 reverted). `gas_used` is the transaction's
  own gas, `type` the Firehose type number, `v`, `r`, `s` the signature bytes as sent, and
  `begin_ordinal`/`end_ordinal` its span in the block's total ordering of execution events.
- calls: one row per call whose state was kept (calls with `state_reverted` are left out, so a
  failed transaction has none). `index` is the call's position in its transaction (the root
  call is 1), `parent_index` the index of its caller (0 for the root), `depth` its nesting
  (0 for the root); `call_type` is Firehose's CallType (1 call, 2 callcode, 3 delegate,
  4 static, 5 create).
- logs: one row per log emitted by a kept call, in call order; `log_index` is the log's
  position in the block. The same columns as the evm-rpc `logs` table.
"""

import pyarrow as pa

from ampd.providers.evm_rpc.schema import (
    ADDRESS,
    BLOCK_NUM_COLUMN,
    BLOCKS_SCHEMA,
    HASH,
    LOGS_SCHEMA,
    TIMESTAMP,
    WEI,
)

__all__ = [
    "ADDRESS",
    "BLOCK_NUM_COLUMN",
    "BLOCKS_SCHEMA",
    "CALLS_SCHEMA",
    "HASH",
    "LOGS_SCHEMA",
    "SCHEMAS",
    "TIMESTAMP",
    "TRANSACTIONS_SCHEMA",
    "WEI",
]


def _required(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


def _optional(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=True)


TRANSACTIONS_SCHEMA = pa.schema(
    [
        _required(BLOCK_NUM_COLUMN, pa.uint64()),
        _required("block_hash", HASH),
        _required("block_num", pa.uint64()),
        _required("timestamp", TIMESTAMP),
        _required("tx_index", pa.uint32()),
        _required("tx_hash", HASH),
        _optional("to", ADDRESS),
        _required("nonce", pa.uint64()),
        _optional("gas_price", WEI),
        _required("gas_limit", pa.uint64()),
        _optional("value", pa.utf8()),
        _required("input", pa.binary()),
        _required("v", pa.binary()),
        _required("r", pa.binary()),
        _required("s", pa.binary()),
        _required("gas_used", pa.uint64()),
        _required("type", pa.int32()),
        _optional("max_fee_per_gas", WEI),
        _optional("max_priority_fee_per_gas", WEI),
        _required("from", ADDRESS),
        _required("status", pa.int32()),
        _required("return_data", pa.binary()),
        _required("public_key", pa.binary()),
        _required("begin_ordinal", pa.uint64()),
        _required("end_ordinal", pa.uint64()),
    ]
)

CALLS_SCHEMA = pa.schema(
    [
        _required(BLOCK_NUM_COLUMN, pa.uint64()),
        _required("block_hash", HASH),
        _required("block_num", pa.uint64()),
        _required("timestamp", TIMESTAMP),
        _required("tx_index", pa.uint32()),
        _required("tx_hash", HASH),
        _required("index", pa.uint32()),
        _required("parent_index", pa.uint32()),
        _required("depth", pa.uint32()),
        _required("call_type", pa.int32()),
        _required("caller", ADDRESS),
        _required("address", ADDRESS),
        _optional("value", WEI),
        _required("gas_limit", pa.uint64()),
        _required("gas_consumed", pa.uint64()),
        _required("return_data", pa.binary()),
        _required("input", pa.binary()),
        _required("selfdestruct", pa.bool_()),
        _required("executed_code", pa.bool_()),
        _required("begin_ordinal", pa.uint64()),
        _required("end_ordinal", pa.uint64()),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "blocks": BLOCKS_SCHEMA,
    "transactions": TRANSACTIONS_SCHEMA,
    "calls": CALLS_SCHEMA,
    "logs": LOGS_SCHEMA,
}
