"""Arrow schemas of the evm-rpc dataset's three tables: blocks, transactions, logs.

These are a contract shared with Amp (spec/evm-rpc.md): column names, order, types and
nullability must not change. The manifest's `tables` are informational; these win.
"""

import pyarrow as pa

BLOCK_NUM_COLUMN = "_block_num"

HASH = pa.binary(32)
ADDRESS = pa.binary(20)
# Wei amounts and other big integers: the largest precision Decimal128 allows, no scale.
WEI = pa.decimal128(38, 0)
TIMESTAMP = pa.timestamp("ns", tz="+00:00")


def _required(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


def _optional(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=True)


def _list_of(item_type: pa.DataType) -> pa.DataType:
    # Amp's lists name their item `item` and forbid null items.
    return pa.list_(pa.field("item", item_type, nullable=False))


ACCESS_LIST_ENTRY = pa.struct(
    [
        _required("address", ADDRESS),
        _required("storage_keys", _list_of(HASH)),
    ]
)

AUTHORIZATION = pa.struct(
    [
        _required("chain_id", pa.uint64()),
        _required("address", ADDRESS),
        _required("nonce", pa.uint64()),
        _required("y_parity", pa.bool_()),
        _required("r", HASH),
        _required("s", HASH),
    ]
)

BLOCKS_SCHEMA = pa.schema(
    [
        _required(BLOCK_NUM_COLUMN, pa.uint64()),
        _required("block_num", pa.uint64()),
        _required("timestamp", TIMESTAMP),
        _required("hash", HASH),
        _required("parent_hash", HASH),
        _required("ommers_hash", HASH),
        _required("miner", ADDRESS),
        _required("state_root", HASH),
        _required("transactions_root", HASH),
        _required("receipt_root", HASH),
        _required("logs_bloom", pa.binary()),
        _required("difficulty", WEI),
        _optional("total_difficulty", WEI),
        _required("gas_limit", pa.uint64()),
        _required("gas_used", pa.uint64()),
        _required("extra_data", pa.binary()),
        _required("mix_hash", HASH),
        _required("nonce", pa.uint64()),
        _optional("base_fee_per_gas", WEI),
        _optional("withdrawals_root", HASH),
        _optional("blob_gas_used", pa.uint64()),
        _optional("excess_blob_gas", pa.uint64()),
        _optional("parent_beacon_root", HASH),
        _optional("requests_hash", HASH),
    ]
)

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
        _required("value", pa.utf8()),
        _required("input", pa.binary()),
        _required("r", HASH),
        _required("s", HASH),
        _required("v_parity", pa.bool_()),
        _optional("chain_id", pa.uint64()),
        _required("gas_used", pa.uint64()),
        _required("type", pa.int32()),
        _optional("max_fee_per_gas", WEI),
        _optional("max_priority_fee_per_gas", WEI),
        _optional("max_fee_per_blob_gas", WEI),
        _required("from", ADDRESS),
        _required("status", pa.bool_()),
        _optional("state_root", HASH),
        _optional("access_list", _list_of(ACCESS_LIST_ENTRY)),
        _optional("blob_versioned_hashes", _list_of(HASH)),
        _optional("authorization_list", _list_of(AUTHORIZATION)),
    ]
)

LOGS_SCHEMA = pa.schema(
    [
        _required(BLOCK_NUM_COLUMN, pa.uint64()),
        _required("block_hash", HASH),
        _required("block_num", pa.uint64()),
        _required("timestamp", TIMESTAMP),
        _required("tx_hash", HASH),
        _required("tx_index", pa.uint32()),
        _required("log_index", pa.uint32()),
        _required("address", ADDRESS),
        _optional("topic0", HASH),
        _optional("topic1", HASH),
        _optional("topic2", HASH),
        _optional("topic3", HASH),
        _required("data", pa.binary()),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "blocks": BLOCKS_SCHEMA,
    "transactions": TRANSACTIONS_SCHEMA,
    "logs": LOGS_SCHEMA,
}
