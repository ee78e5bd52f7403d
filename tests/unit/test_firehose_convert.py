"""Firehose blocks (hand-built sf.ethereum.type.v2.Block messages) -> Arrow record batches."""

from decimal import Decimal

import pyarrow as pa
import pytest

from ampd.extract.chunk import BlockHeader, ConversionError
from ampd.providers.evm_rpc.schema import TABLES as EVM_RPC_TABLES
from ampd.providers.firehose.convert import block_headers, convert
from ampd.providers.firehose.proto import ethereum_pb2 as pb
from ampd.providers.firehose.tables import SCHEMAS

TS = 1_700_000_000
NS = 1_000_000_000

# Firehose enums, by number.
CALL, DELEGATE, STATIC, CREATE = 1, 3, 4, 5
SUCCEEDED, FAILED, REVERTED = 1, 2, 3


# -- message builders -----------------------------------------------------------------------


def filled(tag: int, width: int) -> bytes:
    """`width` bytes that differ by `tag`: easy to tell apart in assertions."""
    return bytes([tag % 256]) * (width - 2) + tag.to_bytes(2, "big")


def block_hash(number: int) -> bytes:
    return filled(number, 32)


def make_block(number: int, txs=(), **header) -> pb.Block:
    b = pb.Block(number=number, hash=block_hash(number), ver=3)
    h = b.header
    h.number = number
    h.hash = block_hash(number)
    h.parent_hash = block_hash(number - 1)
    h.uncle_hash = filled(0xAA, 32)
    h.coinbase = filled(0xC0, 20)
    h.state_root = filled(0x51, 32)
    h.transactions_root = filled(0x52, 32)
    h.receipt_root = filled(0x53, 32)
    h.logs_bloom = bytes(256)
    h.difficulty.bytes = b""
    h.gas_limit = 30_000_000
    h.gas_used = 21_000 * len(txs)
    h.timestamp.seconds = TS + number
    h.extra_data = b"extra"
    h.mix_hash = filled(0x4D, 32)
    h.nonce = 0
    h.base_fee_per_gas.bytes = (7).to_bytes(1, "big")
    for name, value in header.items():
        if name in ("difficulty", "total_difficulty", "base_fee_per_gas"):
            if value is None:
                h.ClearField(name)
            else:
                getattr(h, name).bytes = value
        else:
            setattr(h, name, value)
    b.transaction_traces.extend(txs)
    return b


def make_tx(index: int, calls=(), status=SUCCEEDED, **fields) -> pb.TransactionTrace:
    t = pb.TransactionTrace(
        index=index,
        hash=filled(0x1000 + index, 32),
        to=filled(0x70 + index, 20),
        nonce=index,
        gas_limit=100_000,
        input=b"\xa9\x05\x9c\xbb" + bytes(64),
        v=b"\x01",
        r=filled(0x0E, 32),
        s=filled(0x05, 32),
        gas_used=21_000,
        type=2,
        status=status,
        return_data=b"",
        begin_ordinal=10 * index,
        end_ordinal=10 * index + 9,
    )
    setattr(t, "from", filled(0xF0 + index, 20))
    t.gas_price.bytes = (10**9).to_bytes(4, "big")
    t.max_fee_per_gas.bytes = (2 * 10**9).to_bytes(4, "big")
    t.max_priority_fee_per_gas.bytes = (10**8).to_bytes(4, "big")
    for name, value in fields.items():
        if name in ("gas_price", "value", "max_fee_per_gas", "max_priority_fee_per_gas"):
            if value is None:
                t.ClearField(name)
            else:
                getattr(t, name).bytes = value
        else:
            setattr(t, name, value)
    t.calls.extend(calls)
    # The receipt repeats the logs of the calls that kept their state; the tables don't use it.
    for call in calls:
        if not call.state_reverted:
            t.receipt.logs.extend(call.logs)
    return t


def make_call(index: int, parent: int, depth: int, logs=(), **fields) -> pb.Call:
    c = pb.Call(
        index=index,
        parent_index=parent,
        depth=depth,
        call_type=CALL,
        caller=filled(0xCA, 20),
        address=filled(0xAD + index, 20),
        gas_limit=90_000,
        gas_consumed=30_000,
        input=b"\x01\x02",
        return_data=b"\x03",
        executed_code=True,
        begin_ordinal=100 + index,
        end_ordinal=200 + index,
    )
    for name, value in fields.items():
        if name == "value":
            c.value.bytes = value
        else:
            setattr(c, name, value)
    c.logs.extend(logs)
    return c


def make_log(block_index: int, n_topics: int = 2, **fields) -> pb.Log:
    log = pb.Log(
        address=filled(0x10 + block_index, 20),
        topics=[filled(0x7000 + 16 * block_index + n, 32) for n in range(n_topics)],
        data=b"data%d" % block_index,
        blockIndex=block_index,
        ordinal=1000 + block_index,
    )
    for name, value in fields.items():
        setattr(log, name, value)
    return log


def column(out, table, name):
    return out[table].column(name).to_pylist()


def raises(blocks, table, column_name):
    with pytest.raises(ConversionError) as e:
        convert(blocks)
    assert (e.value.table, e.value.column) == (table, column_name), str(e.value)
    return e.value


# -- schemas --------------------------------------------------------------------------------

# The four tables as Amp documents them (docs/schemas/tables/firehose-evm.md): column, Arrow
# type, nullable.
EXPECTED = {
    "blocks": """
        _block_num UInt64 NO
        block_num UInt64 NO
        timestamp Timestamp(Nanosecond,+00:00) NO
        hash FixedSizeBinary(32) NO
        parent_hash FixedSizeBinary(32) NO
        ommers_hash FixedSizeBinary(32) NO
        miner FixedSizeBinary(20) NO
        state_root FixedSizeBinary(32) NO
        transactions_root FixedSizeBinary(32) NO
        receipt_root FixedSizeBinary(32) NO
        logs_bloom Binary NO
        difficulty Decimal128(38,0) NO
        total_difficulty Decimal128(38,0) YES
        gas_limit UInt64 NO
        gas_used UInt64 NO
        extra_data Binary NO
        mix_hash FixedSizeBinary(32) NO
        nonce UInt64 NO
        base_fee_per_gas Decimal128(38,0) YES
        withdrawals_root FixedSizeBinary(32) YES
        blob_gas_used UInt64 YES
        excess_blob_gas UInt64 YES
        parent_beacon_root FixedSizeBinary(32) YES
        requests_hash FixedSizeBinary(32) YES
    """,
    "transactions": """
        _block_num UInt64 NO
        block_hash FixedSizeBinary(32) NO
        block_num UInt64 NO
        timestamp Timestamp(Nanosecond,+00:00) NO
        tx_index UInt32 NO
        tx_hash FixedSizeBinary(32) NO
        to FixedSizeBinary(20) YES
        nonce UInt64 NO
        gas_price Decimal128(38,0) YES
        gas_limit UInt64 NO
        value Utf8 YES
        input Binary NO
        v Binary NO
        r Binary NO
        s Binary NO
        gas_used UInt64 NO
        type Int32 NO
        max_fee_per_gas Decimal128(38,0) YES
        max_priority_fee_per_gas Decimal128(38,0) YES
        from FixedSizeBinary(20) NO
        status Int32 NO
        return_data Binary NO
        public_key Binary NO
        begin_ordinal UInt64 NO
        end_ordinal UInt64 NO
    """,
    "calls": """
        _block_num UInt64 NO
        block_hash FixedSizeBinary(32) NO
        block_num UInt64 NO
        timestamp Timestamp(Nanosecond,+00:00) NO
        tx_index UInt32 NO
        tx_hash FixedSizeBinary(32) NO
        index UInt32 NO
        parent_index UInt32 NO
        depth UInt32 NO
        call_type Int32 NO
        caller FixedSizeBinary(20) NO
        address FixedSizeBinary(20) NO
        value Decimal128(38,0) YES
        gas_limit UInt64 NO
        gas_consumed UInt64 NO
        return_data Binary NO
        input Binary NO
        selfdestruct Boolean NO
        executed_code Boolean NO
        begin_ordinal UInt64 NO
        end_ordinal UInt64 NO
    """,
    "logs": """
        _block_num UInt64 NO
        block_hash FixedSizeBinary(32) NO
        block_num UInt64 NO
        timestamp Timestamp(Nanosecond,+00:00) NO
        tx_hash FixedSizeBinary(32) NO
        tx_index UInt32 NO
        log_index UInt32 NO
        address FixedSizeBinary(20) NO
        topic0 FixedSizeBinary(32) YES
        topic1 FixedSizeBinary(32) YES
        topic2 FixedSizeBinary(32) YES
        topic3 FixedSizeBinary(32) YES
        data Binary NO
    """,
}

ARROW_TYPES = {
    "UInt64": pa.uint64(),
    "UInt32": pa.uint32(),
    "Int32": pa.int32(),
    "Boolean": pa.bool_(),
    "Binary": pa.binary(),
    "Utf8": pa.utf8(),
    "FixedSizeBinary(20)": pa.binary(20),
    "FixedSizeBinary(32)": pa.binary(32),
    "Decimal128(38,0)": pa.decimal128(38, 0),
    "Timestamp(Nanosecond,+00:00)": pa.timestamp("ns", tz="+00:00"),
}


def expected_schema(text: str) -> pa.Schema:
    fields = []
    for line in text.strip().splitlines():
        name, type_, nullable = line.split()
        fields.append(pa.field(name, ARROW_TYPES[type_], nullable=nullable == "YES"))
    return pa.schema(fields)


def test_schemas_are_amps():
    assert list(SCHEMAS) == ["blocks", "transactions", "calls", "logs"]
    for name, text in EXPECTED.items():
        assert SCHEMAS[name].equals(expected_schema(text)), name


def test_blocks_and_logs_match_the_evm_rpc_tables():
    assert SCHEMAS["blocks"].equals(EVM_RPC_TABLES["blocks"])
    assert SCHEMAS["logs"].equals(EVM_RPC_TABLES["logs"])


def test_batches_are_in_the_table_schemas():
    out = convert([make_block(5, [make_tx(0, [make_call(1, 0, 0, [make_log(0)])])])])
    assert list(out) == ["blocks", "transactions", "calls", "logs"]
    for name, batch in out.items():
        assert batch.schema.equals(SCHEMAS[name]), name
        assert batch.num_rows == 1, name
        batch.validate(full=True)
        for field, array in zip(batch.schema, batch.columns, strict=True):
            if not field.nullable:
                assert array.null_count == 0, (name, field.name)


# -- blocks ---------------------------------------------------------------------------------


def test_block_row():
    out = convert([make_block(7, total_difficulty=(10**20).to_bytes(9, "big"))])
    (row,) = out["blocks"].to_pylist()
    assert row["_block_num"] == row["block_num"] == 7
    assert row["timestamp"].timestamp() == TS + 7
    assert out["blocks"].column("timestamp").cast(pa.int64()).to_pylist() == [(TS + 7) * NS]
    assert row["hash"] == block_hash(7)
    assert row["parent_hash"] == block_hash(6)
    assert row["ommers_hash"] == filled(0xAA, 32)
    assert row["miner"] == filled(0xC0, 20)
    assert (row["state_root"], row["transactions_root"], row["receipt_root"]) == (
        filled(0x51, 32),
        filled(0x52, 32),
        filled(0x53, 32),
    )
    assert row["logs_bloom"] == bytes(256)
    assert row["difficulty"] == Decimal(0)
    assert row["total_difficulty"] == Decimal(10**20)
    assert (row["gas_limit"], row["gas_used"], row["nonce"]) == (30_000_000, 0, 0)
    assert row["extra_data"] == b"extra"
    assert row["mix_hash"] == filled(0x4D, 32)
    assert row["base_fee_per_gas"] == Decimal(7)
    # Empty roots and unset blob fields are nulls; Firehose has no requests hash.
    assert row["withdrawals_root"] is None
    assert row["blob_gas_used"] is None and row["excess_blob_gas"] is None
    assert row["parent_beacon_root"] is None
    assert row["requests_hash"] is None


def test_block_row_post_cancun_fields():
    block = make_block(
        8,
        withdrawals_root=filled(0x57, 32),
        parent_beacon_root=filled(0xBE, 32),
        blob_gas_used=0,
        excess_blob_gas=131072,
    )
    (row,) = convert([block])["blocks"].to_pylist()
    assert row["withdrawals_root"] == filled(0x57, 32)
    assert row["parent_beacon_root"] == filled(0xBE, 32)
    assert (row["blob_gas_used"], row["excess_blob_gas"]) == (0, 131072)


def test_empty_block():
    out = convert([make_block(9)])
    assert out["blocks"].num_rows == 1
    for name in ("transactions", "calls", "logs"):
        assert out[name].num_rows == 0
        assert out[name].schema.equals(SCHEMAS[name])


def test_no_blocks():
    out = convert([])
    assert {name: batch.num_rows for name, batch in out.items()} == dict.fromkeys(SCHEMAS, 0)
    assert block_headers([]) == []


def test_block_headers():
    blocks = [make_block(10), make_block(11)]
    assert block_headers(blocks) == [
        BlockHeader(10, "0x" + block_hash(10).hex(), "0x" + block_hash(9).hex(), TS + 10),
        BlockHeader(11, "0x" + block_hash(11).hex(), "0x" + block_hash(10).hex(), TS + 11),
    ]


# -- transactions ---------------------------------------------------------------------------


def test_transaction_row():
    tx = make_tx(3, value=(10**18).to_bytes(8, "big"), public_key=b"\x04" * 65)
    (row,) = convert([make_block(12, [tx])])["transactions"].to_pylist()
    assert row["_block_num"] == row["block_num"] == 12
    assert row["block_hash"] == block_hash(12)
    assert row["timestamp"].timestamp() == TS + 12
    assert row["tx_index"] == 3
    assert row["tx_hash"] == filled(0x1003, 32)
    assert row["to"] == filled(0x73, 20)
    assert row["from"] == filled(0xF3, 20)
    assert (row["nonce"], row["gas_limit"], row["gas_used"]) == (3, 100_000, 21_000)
    assert row["gas_price"] == Decimal(10**9)
    assert row["max_fee_per_gas"] == Decimal(2 * 10**9)
    assert row["max_priority_fee_per_gas"] == Decimal(10**8)
    assert row["value"] == str(10**18)
    assert row["input"] == b"\xa9\x05\x9c\xbb" + bytes(64)
    assert (row["v"], row["r"], row["s"]) == (b"\x01", filled(0x0E, 32), filled(0x05, 32))
    assert (row["type"], row["status"]) == (2, SUCCEEDED)
    assert row["return_data"] == b""
    assert row["public_key"] == b"\x04" * 65
    assert (row["begin_ordinal"], row["end_ordinal"]) == (30, 39)


def test_transaction_gas_used_is_its_own_not_the_receipts_cumulative():
    txs = [make_tx(0, gas_used=21_000), make_tx(1, gas_used=50_000)]
    for n, tx in enumerate(txs):
        tx.receipt.cumulative_gas_used = 71_000 * (n + 1)
    assert column(convert([make_block(13, txs)]), "transactions", "gas_used") == [21_000, 50_000]


def test_legacy_transaction_has_no_fee_caps():
    tx = make_tx(0, type=0, max_fee_per_gas=None, max_priority_fee_per_gas=None, v=b"\x25")
    (row,) = convert([make_block(14, [tx])])["transactions"].to_pylist()
    assert row["type"] == 0 and row["v"] == b"\x25"
    assert row["gas_price"] == Decimal(10**9)
    assert row["max_fee_per_gas"] is None and row["max_priority_fee_per_gas"] is None


def test_failed_transaction_keeps_its_row_but_no_calls_or_logs():
    root = make_call(1, 0, 0, [make_log(0)], state_reverted=True, status_failed=True)
    child = make_call(2, 1, 1, [make_log(0)], state_reverted=True)
    failed = make_tx(0, [root, child], status=FAILED, return_data=b"\x08\xc3\x79\xa0")
    ok = make_tx(1, [make_call(1, 0, 0, [make_log(0)])])
    out = convert([make_block(15, [failed, ok])])
    assert column(out, "transactions", "status") == [FAILED, SUCCEEDED]
    assert column(out, "transactions", "return_data") == [b"\x08\xc3\x79\xa0", b""]
    assert column(out, "calls", "tx_index") == [1]
    assert column(out, "logs", "tx_index") == [1]
    assert column(out, "logs", "tx_hash") == [filled(0x1001, 32)]


def test_contract_creation():
    created = filled(0xCC, 20)
    create = make_call(1, 0, 0, call_type=CREATE, address=created, input=b"\x60\x80")
    tx = make_tx(0, [create], to=b"", input=b"\x60\x80")
    out = convert([make_block(16, [tx])])
    assert column(out, "transactions", "to") == [None]
    assert column(out, "calls", "call_type") == [CREATE]
    assert column(out, "calls", "address") == [created]
    assert column(out, "calls", "input") == [b"\x60\x80"]


# -- calls ----------------------------------------------------------------------------------


def test_nested_calls_keep_their_tree_positions():
    #   1 (depth 0)
    #   |- 2 (depth 1)
    #   |  `- 3 (depth 2)
    #   `- 4 (depth 1)
    calls = [
        make_call(1, 0, 0),
        make_call(2, 1, 1, call_type=DELEGATE),
        make_call(3, 2, 2, call_type=STATIC),
        make_call(4, 1, 1, value=(5).to_bytes(1, "big"), suicide=True, executed_code=False),
    ]
    out = convert([make_block(17, [make_tx(0, calls)])])
    rows = out["calls"].to_pylist()
    assert [(r["index"], r["parent_index"], r["depth"]) for r in rows] == [
        (1, 0, 0),
        (2, 1, 1),
        (3, 2, 2),
        (4, 1, 1),
    ]
    assert [r["call_type"] for r in rows] == [CALL, DELEGATE, STATIC, CALL]
    assert [r["value"] for r in rows] == [None, None, None, Decimal(5)]
    assert [r["selfdestruct"] for r in rows] == [False, False, False, True]
    assert [r["executed_code"] for r in rows] == [True, True, True, False]
    first = rows[0]
    assert first["_block_num"] == first["block_num"] == 17
    assert first["block_hash"] == block_hash(17)
    assert first["timestamp"].timestamp() == TS + 17
    assert (first["tx_index"], first["tx_hash"]) == (0, filled(0x1000, 32))
    assert (first["caller"], first["address"]) == (filled(0xCA, 20), filled(0xAE, 20))
    assert (first["gas_limit"], first["gas_consumed"]) == (90_000, 30_000)
    assert (first["input"], first["return_data"]) == (b"\x01\x02", b"\x03")
    assert (first["begin_ordinal"], first["end_ordinal"]) == (101, 201)


def test_reverted_call_and_its_children_are_left_out():
    # Call 2 reverted: it and its child 3 lose their state, with their logs; 4 runs on.
    calls = [
        make_call(1, 0, 0, [make_log(0)]),
        make_call(2, 1, 1, [make_log(0)], status_reverted=True, state_reverted=True),
        make_call(3, 2, 2, [make_log(0)], state_reverted=True),
        make_call(4, 1, 1, [make_log(1)]),
    ]
    out = convert([make_block(18, [make_tx(0, calls)])])
    assert column(out, "calls", "index") == [1, 4]
    assert column(out, "calls", "parent_index") == [0, 1]
    assert column(out, "logs", "log_index") == [0, 1]
    assert column(out, "logs", "address") == [filled(0x10, 20), filled(0x11, 20)]


def test_a_call_that_failed_without_reverting_state_is_kept():
    # Only `state_reverted` decides, as in Amp.
    calls = [make_call(1, 0, 0), make_call(2, 1, 1, status_failed=True)]
    out = convert([make_block(19, [make_tx(0, calls)])])
    assert column(out, "calls", "index") == [1, 2]


# -- logs -----------------------------------------------------------------------------------


def test_logs_come_from_the_calls_in_call_order():
    # The root logs once before and once after its child's log: rows follow the calls, so
    # log_index (the block position) is not sorted, as in Amp's output.
    calls = [
        make_call(1, 0, 0, [make_log(4), make_log(6, n_topics=0)]),
        make_call(2, 1, 1, [make_log(5, n_topics=4)]),
    ]
    txs = [make_tx(0, [make_call(1, 0, 0, [make_log(3, n_topics=1)])]), make_tx(1, calls)]
    out = convert([make_block(20, txs)])
    rows = out["logs"].to_pylist()
    assert [r["log_index"] for r in rows] == [3, 4, 6, 5]
    assert [r["tx_index"] for r in rows] == [0, 1, 1, 1]
    assert [r["tx_hash"] for r in rows] == [filled(0x1000, 32)] + [filled(0x1001, 32)] * 3
    assert [r["address"] for r in rows] == [filled(0x10 + i, 20) for i in (3, 4, 6, 5)]
    assert [r["data"] for r in rows] == [b"data3", b"data4", b"data6", b"data5"]

    def topics(r):
        return [r[f"topic{n}"] for n in range(4)]

    t = [[filled(0x7000 + 16 * i + n, 32) for n in range(4)] for i in range(7)]
    assert topics(rows[0]) == [t[3][0], None, None, None]
    assert topics(rows[1]) == [t[4][0], t[4][1], None, None]
    assert topics(rows[2]) == [None, None, None, None]
    assert topics(rows[3]) == t[5]
    assert rows[0]["_block_num"] == rows[0]["block_num"] == 20
    assert rows[0]["block_hash"] == block_hash(20)
    assert rows[0]["timestamp"].timestamp() == TS + 20


def test_receipt_logs_are_not_rows():
    tx = make_tx(0, [make_call(1, 0, 0, [make_log(0)])])
    tx.receipt.logs.append(make_log(9))  # in the receipt only
    assert column(convert([make_block(21, [tx])]), "logs", "log_index") == [0]


def test_more_than_four_topics():
    tx = make_tx(0, [make_call(1, 0, 0, [make_log(0, n_topics=5)])])
    e = raises([make_block(22, [tx])], "logs", "topic3")
    assert e.block_num == 22


def test_topic_of_wrong_length():
    log = make_log(0, n_topics=3)
    log.topics[2] = b"\x01" * 31
    e = raises([make_block(23, [make_tx(0, [make_call(1, 0, 0, [log])])])], "logs", "topic2")
    assert e.value == "0x" + "01" * 31


# -- several blocks -------------------------------------------------------------------------


def test_several_blocks_in_one_conversion():
    blocks = [
        make_block(30, [make_tx(0, [make_call(1, 0, 0, [make_log(0)])])]),
        make_block(31),
        make_block(
            32,
            [
                make_tx(0, [make_call(1, 0, 0, [make_log(0), make_log(1)])]),
                make_tx(1, [make_call(1, 0, 0), make_call(2, 1, 1, [make_log(2)])]),
            ],
        ),
    ]
    out = convert(blocks)
    assert column(out, "blocks", "block_num") == [30, 31, 32]
    assert column(out, "transactions", "block_num") == [30, 32, 32]
    assert column(out, "transactions", "block_hash") == [block_hash(n) for n in (30, 32, 32)]
    assert column(out, "transactions", "tx_index") == [0, 0, 1]
    assert column(out, "calls", "block_num") == [30, 32, 32, 32]
    assert column(out, "calls", "tx_index") == [0, 0, 1, 1]
    assert column(out, "calls", "index") == [1, 1, 1, 2]
    assert column(out, "logs", "_block_num") == [30, 32, 32, 32]
    assert column(out, "logs", "block_hash") == [block_hash(n) for n in (30, 32, 32, 32)]
    assert column(out, "logs", "tx_index") == [0, 0, 0, 1]
    assert column(out, "logs", "log_index") == [0, 0, 1, 2]
    seconds = [t.timestamp() for t in column(out, "logs", "timestamp")]
    assert seconds == [TS + 30, TS + 32, TS + 32, TS + 32]


def test_a_thousand_blocks():
    def block(n):
        txs = []
        for i in range(6):
            logs = [make_log(2 * i), make_log(2 * i + 1, n_topics=3)]
            txs.append(make_tx(i, [make_call(1, 0, 0, logs)], hash=filled(n * 8 + i, 32)))
        return make_block(n, txs)

    blocks = [pb.Block.FromString(block(1000 + k).SerializeToString()) for k in range(1000)]
    out = convert(blocks)
    assert {name: batch.num_rows for name, batch in out.items()} == {
        "blocks": 1000,
        "transactions": 6000,
        "calls": 6000,
        "logs": 12000,
    }
    for name, batch in out.items():
        assert batch.schema.equals(SCHEMAS[name])
        batch.validate(full=True)
    numbers = list(range(1000, 2000))
    assert column(out, "blocks", "block_num") == numbers
    assert column(out, "transactions", "block_num") == [n for n in numbers for _ in range(6)]
    assert column(out, "transactions", "tx_index") == list(range(6)) * 1000
    tx_hashes = [filled(n * 8 + i, 32) for n in numbers for i in range(6)]
    assert column(out, "transactions", "tx_hash") == tx_hashes
    assert column(out, "calls", "tx_hash") == tx_hashes
    assert column(out, "logs", "tx_hash") == [h for h in tx_hashes for _ in range(2)]
    assert column(out, "logs", "log_index") == list(range(12)) * 1000
    assert column(out, "logs", "block_hash") == [block_hash(n) for n in numbers for _ in range(12)]
    assert out["logs"].column("topic2").null_count == 6000
    assert column(out, "logs", "topic2")[1] == filled(0x7000 + 16 + 2, 32)


# -- BigInt values --------------------------------------------------------------------------

MAX_DECIMAL = 10**38 - 1


def be(n: int) -> bytes:
    return n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")


def call_value(value: bytes):
    tx = make_tx(0, [make_call(1, 0, 0, value=value)])
    return column(convert([make_block(40, [tx])]), "calls", "value")[0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"", Decimal(0)),  # set, but zero
        (b"\x00", Decimal(0)),
        (be(10**18), Decimal(10**18)),
        (be(2**64), Decimal(2**64)),
        (be(2**100 + 1), Decimal(2**100 + 1)),
        (be(MAX_DECIMAL), Decimal(MAX_DECIMAL)),
        (bytes(4) + be(2**70), Decimal(2**70)),  # leading zeros are only padding
    ],
)
def test_call_value(value, expected):
    assert call_value(value) == expected


def test_unset_call_value_is_null():
    assert column(
        convert([make_block(41, [make_tx(0, [make_call(1, 0, 0)])])]), "calls", "value"
    ) == [None]


@pytest.mark.parametrize("value", [MAX_DECIMAL + 1, 2**127, 2**128 - 1, 2**200])
def test_call_value_beyond_decimal128_is_an_error(value):
    tx = make_tx(0, [make_call(1, 0, 0), make_call(2, 1, 1, value=be(value))])
    e = raises([make_block(42, [tx])], "calls", "value")
    assert e.block_num == 42 and e.value == value


@pytest.mark.parametrize("field", ["difficulty", "total_difficulty"])
def test_block_difficulty_beyond_decimal128_is_an_error(field):
    blocks = [make_block(43), make_block(44, **{field: be(10**38)})]
    e = raises(blocks, "blocks", field)
    assert e.block_num == 44 and e.value == 10**38


def test_block_difficulty_large():
    out = convert([make_block(45, difficulty=be(2**80), total_difficulty=be(MAX_DECIMAL))])
    assert column(out, "blocks", "difficulty") == [Decimal(2**80)]
    assert column(out, "blocks", "total_difficulty") == [Decimal(MAX_DECIMAL)]


def test_missing_difficulty_is_an_error():
    raises([make_block(46, difficulty=None)], "blocks", "difficulty")


def test_base_fee_must_fit_uint64():
    out = convert(
        [make_block(47, base_fee_per_gas=be(2**64 - 1)), make_block(48, base_fee_per_gas=None)]
    )
    assert column(out, "blocks", "base_fee_per_gas") == [Decimal(2**64 - 1), None]
    e = raises([make_block(49, base_fee_per_gas=be(2**64))], "blocks", "base_fee_per_gas")
    assert e.value == 2**64


@pytest.mark.parametrize("field", ["gas_price", "max_fee_per_gas", "max_priority_fee_per_gas"])
def test_transaction_fees_beyond_decimal128_are_null(field):
    txs = [make_tx(0), make_tx(1, **{field: be(10**38)}), make_tx(2, **{field: be(2**200)})]
    out = convert([make_block(50, txs)])
    values = column(out, "transactions", field)
    assert values[1:] == [None, None]
    assert values[0] is not None


def test_transaction_fee_zero_and_unset():
    txs = [make_tx(0, gas_price=b""), make_tx(1, gas_price=None)]
    assert column(convert([make_block(51, txs)]), "transactions", "gas_price") == [Decimal(0), None]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (b"", "0"),
        (be(1), "1"),
        (be(2**256 - 1), str(2**256 - 1)),
        (bytes(3) + be(2**255), str(2**255)),
    ],
)
def test_transaction_value_is_a_decimal_string(value, expected):
    out = convert([make_block(52, [make_tx(0, value=value)])])
    assert column(out, "transactions", "value") == [expected]


def test_transaction_value_beyond_256_bits_is_an_error():
    e = raises(
        [make_block(53, [make_tx(0), make_tx(1, value=be(2**256))])], "transactions", "value"
    )
    assert e.value == 2**256


# -- malformed values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "column_name", "mutate"),
    [
        ("transactions", "from", lambda b: setattr(b.transaction_traces[0], "from", bytes(19))),
        ("transactions", "to", lambda b: setattr(b.transaction_traces[0], "to", bytes(21))),
        ("transactions", "tx_hash", lambda b: setattr(b.transaction_traces[0], "hash", b"")),
        ("calls", "caller", lambda b: setattr(b.transaction_traces[0].calls[0], "caller", b"")),
        (
            "calls",
            "address",
            lambda b: setattr(b.transaction_traces[0].calls[0], "address", bytes(32)),
        ),
        (
            "logs",
            "address",
            lambda b: setattr(b.transaction_traces[0].calls[0].logs[0], "address", bytes(19)),
        ),
        ("blocks", "miner", lambda b: setattr(b.header, "coinbase", bytes(19))),
        ("blocks", "hash", lambda b: setattr(b.header, "hash", bytes(31))),
        ("blocks", "parent_hash", lambda b: setattr(b.header, "parent_hash", b"")),
        ("blocks", "ommers_hash", lambda b: setattr(b.header, "uncle_hash", bytes(33))),
        ("blocks", "mix_hash", lambda b: setattr(b.header, "mix_hash", b"")),
        ("blocks", "withdrawals_root", lambda b: setattr(b.header, "withdrawals_root", bytes(20))),
        ("blocks", "parent_beacon_root", lambda b: setattr(b.header, "parent_beacon_root", b"1")),
    ],
)
def test_wrong_length_is_an_error(table, column_name, mutate):
    good = make_block(60, [make_tx(0, [make_call(1, 0, 0, [make_log(0)])])])
    bad = make_block(61, [make_tx(0, [make_call(1, 0, 0, [make_log(0)])])])
    mutate(bad)
    e = raises([good, bad], table, column_name)
    assert e.block_num == 61
    assert isinstance(e.value, str) and e.value.startswith("0x")
    assert "bytes" in e.reason


def test_missing_header_is_an_error():
    e = raises([make_block(62), pb.Block(number=63)], "blocks", "block_num")
    assert e.block_num == 63
    with pytest.raises(ConversionError):
        block_headers([pb.Block(number=63)])


def test_missing_timestamp_is_an_error():
    block = make_block(64)
    block.header.ClearField("timestamp")
    assert raises([block], "blocks", "timestamp").block_num == 64


def test_negative_timestamp_is_an_error():
    block = make_block(65)
    block.header.timestamp.seconds = -1
    e = raises([block], "blocks", "timestamp")
    assert e.value == -1
