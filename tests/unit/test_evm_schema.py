"""The three evm-rpc schemas, column by column, against spec/evm-rpc.md."""

import pyarrow as pa
import pytest

from ampd.providers.evm_rpc.schema import (
    BLOCKS_SCHEMA,
    LOGS_SCHEMA,
    TABLES,
    TRANSACTIONS_SCHEMA,
)

B32 = pa.binary(32)
B20 = pa.binary(20)
DEC = pa.decimal128(38, 0)
TS = pa.timestamp("ns", tz="+00:00")
U64 = pa.uint64()
NULL = True
REQ = False


def item_list(t):
    return pa.list_(pa.field("item", t, nullable=False))


ACCESS_LIST = item_list(
    pa.struct([pa.field("address", B20, False), pa.field("storage_keys", item_list(B32), False)])
)
AUTH_LIST = item_list(
    pa.struct(
        [
            pa.field("chain_id", U64, False),
            pa.field("address", B20, False),
            pa.field("nonce", U64, False),
            pa.field("y_parity", pa.bool_(), False),
            pa.field("r", B32, False),
            pa.field("s", B32, False),
        ]
    )
)

EXPECTED = {
    "blocks": [
        ("_block_num", U64, REQ),
        ("block_num", U64, REQ),
        ("timestamp", TS, REQ),
        ("hash", B32, REQ),
        ("parent_hash", B32, REQ),
        ("ommers_hash", B32, REQ),
        ("miner", B20, REQ),
        ("state_root", B32, REQ),
        ("transactions_root", B32, REQ),
        ("receipt_root", B32, REQ),
        ("logs_bloom", pa.binary(), REQ),
        ("difficulty", DEC, REQ),
        ("total_difficulty", DEC, NULL),
        ("gas_limit", U64, REQ),
        ("gas_used", U64, REQ),
        ("extra_data", pa.binary(), REQ),
        ("mix_hash", B32, REQ),
        ("nonce", U64, REQ),
        ("base_fee_per_gas", DEC, NULL),
        ("withdrawals_root", B32, NULL),
        ("blob_gas_used", U64, NULL),
        ("excess_blob_gas", U64, NULL),
        ("parent_beacon_root", B32, NULL),
        ("requests_hash", B32, NULL),
    ],
    "transactions": [
        ("_block_num", U64, REQ),
        ("block_hash", B32, REQ),
        ("block_num", U64, REQ),
        ("timestamp", TS, REQ),
        ("tx_index", pa.uint32(), REQ),
        ("tx_hash", B32, REQ),
        ("to", B20, NULL),
        ("nonce", U64, REQ),
        ("gas_price", DEC, NULL),
        ("gas_limit", U64, REQ),
        ("value", pa.utf8(), REQ),
        ("input", pa.binary(), REQ),
        ("r", B32, REQ),
        ("s", B32, REQ),
        ("v_parity", pa.bool_(), REQ),
        ("chain_id", U64, NULL),
        ("gas_used", U64, REQ),
        ("type", pa.int32(), REQ),
        ("max_fee_per_gas", DEC, NULL),
        ("max_priority_fee_per_gas", DEC, NULL),
        ("max_fee_per_blob_gas", DEC, NULL),
        ("from", B20, REQ),
        ("status", pa.bool_(), REQ),
        ("state_root", B32, NULL),
        ("access_list", ACCESS_LIST, NULL),
        ("blob_versioned_hashes", item_list(B32), NULL),
        ("authorization_list", AUTH_LIST, NULL),
    ],
    "logs": [
        ("_block_num", U64, REQ),
        ("block_hash", B32, REQ),
        ("block_num", U64, REQ),
        ("timestamp", TS, REQ),
        ("tx_hash", B32, REQ),
        ("tx_index", pa.uint32(), REQ),
        ("log_index", pa.uint32(), REQ),
        ("address", B20, REQ),
        ("topic0", B32, NULL),
        ("topic1", B32, NULL),
        ("topic2", B32, NULL),
        ("topic3", B32, NULL),
        ("data", pa.binary(), REQ),
    ],
}


def test_tables_maps_names_to_schemas():
    assert list(TABLES) == ["blocks", "transactions", "logs"]
    assert TABLES["blocks"] is BLOCKS_SCHEMA
    assert TABLES["transactions"] is TRANSACTIONS_SCHEMA
    assert TABLES["logs"] is LOGS_SCHEMA


@pytest.mark.parametrize("table,count", [("blocks", 24), ("transactions", 27), ("logs", 13)])
def test_column_count(table, count):
    assert len(TABLES[table]) == count


@pytest.mark.parametrize("table", ["blocks", "transactions", "logs"])
def test_columns_types_and_nullability(table):
    actual = [(f.name, f.type, f.nullable) for f in TABLES[table]]
    assert actual == EXPECTED[table]


@pytest.mark.parametrize("table", ["blocks", "transactions", "logs"])
def test_every_table_starts_with_block_num(table):
    first = TABLES[table].field(0)
    assert (first.name, first.type, first.nullable) == ("_block_num", U64, False)


def test_nested_items_are_named_item_and_not_nullable():
    def walk(t):
        if pa.types.is_list(t):
            assert t.value_field.name == "item"
            assert not t.value_field.nullable
            yield t
            yield from walk(t.value_type)
        elif pa.types.is_struct(t):
            for f in t:
                assert not f.nullable, f.name
                yield from walk(f.type)

    lists = [lst for f in TRANSACTIONS_SCHEMA for lst in walk(f.type)]
    assert len(lists) == 4  # access_list, its storage_keys, blob hashes, authorizations


def test_timestamp_is_utc_nanoseconds():
    for schema in TABLES.values():
        ts = schema.field("timestamp").type
        assert ts.unit == "ns" and ts.tz == "+00:00"
