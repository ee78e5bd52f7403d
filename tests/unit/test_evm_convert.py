"""JSON-RPC blocks and receipts (captured from a real anvil) -> Arrow record batches."""

import copy
import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from ampd.providers.evm_rpc.convert import ConversionError, block_headers, convert
from ampd.providers.evm_rpc.schema import TABLES

DATA = Path(__file__).parents[1] / "data" / "evm"
CHAIN_ID = 31337  # anvil's


def h(hex_str):
    return bytes.fromhex(hex_str[2:])


@pytest.fixture(scope="module")
def out(pairs):
    return convert(pairs)


def variant(variants, name):
    v = copy.deepcopy(variants[name])
    return [(v["block"], v["receipts"])]


@dataclass
class RawBlock:  # the shape the JSON-RPC client hands over
    number: int
    block: dict
    receipts: list


# -- shape ----------------------------------------------------------------------------------


def test_batches_have_the_table_schemas(out):
    assert set(out) == {"blocks", "transactions", "logs"}
    for name, batch in out.items():
        assert batch.schema.equals(TABLES[name]), name


def test_row_counts_and_order(out, pairs):
    assert out["blocks"].column("block_num").to_pylist() == [0, 1, 2]
    assert out["blocks"].column("_block_num").to_pylist() == [0, 1, 2]
    txs = out["transactions"]
    assert txs.num_rows == sum(len(b["transactions"]) for b, _ in pairs) == 8
    assert txs.column("block_num").to_pylist() == [1, 1, 1, 2, 2, 2, 2, 2]
    assert txs.column("tx_index").to_pylist() == [0, 1, 2, 0, 1, 2, 3, 4]
    expected_hashes = [h(t["hash"]) for b, _ in pairs for t in b["transactions"]]
    assert txs.column("tx_hash").to_pylist() == expected_hashes


def test_required_columns_have_no_nulls(out):
    for name, batch in out.items():
        for field, column in zip(batch.schema, batch.columns, strict=True):
            if not field.nullable:
                assert column.null_count == 0, f"{name}.{field.name}"


def test_accepts_raw_block_objects_and_tuples(pairs):
    objects = [RawBlock(int(b["number"], 16), b, r) for b, r in pairs]
    tuples = [(b, r) for b, r in pairs]
    a, b = convert(objects), convert(tuples)
    for name in a:
        assert a[name].equals(b[name])


def test_empty_input_gives_empty_batches():
    out = convert([])
    for name, batch in out.items():
        assert batch.num_rows == 0 and batch.schema.equals(TABLES[name])


# -- blocks ---------------------------------------------------------------------------------


def test_block_columns(out, pairs):
    block = pairs[2][0]
    row = out["blocks"].slice(2, 1).to_pylist()[0]
    assert row["hash"] == h(block["hash"])
    assert row["parent_hash"] == h(pairs[1][0]["hash"])
    assert row["timestamp"].timestamp() == int(block["timestamp"], 16)
    assert (
        out["blocks"].column("timestamp").cast(pa.int64())[2].as_py()
        == int(block["timestamp"], 16) * 10**9
    )
    assert row["ommers_hash"] == h(block["sha3Uncles"])
    assert row["miner"] == h(block["miner"])
    assert row["receipt_root"] == h(block["receiptsRoot"])
    assert len(row["logs_bloom"]) == 256
    assert row["difficulty"] == Decimal(0) and row["total_difficulty"] == Decimal(0)
    assert row["gas_limit"] == 30_000_000
    assert row["gas_used"] == int(block["gasUsed"], 16)
    assert row["extra_data"] == b""
    assert row["mix_hash"] == h(block["mixHash"])
    assert row["nonce"] == 0
    assert row["base_fee_per_gas"] == Decimal(int(block["baseFeePerGas"], 16))
    assert row["blob_gas_used"] == 131072  # one blob
    assert row["excess_blob_gas"] == 0
    assert row["withdrawals_root"] == h(block["withdrawalsRoot"])
    assert row["parent_beacon_root"] == bytes(32)
    assert row["requests_hash"] == h(block["requestsHash"])


def test_block_without_mix_hash_nonce_and_later_fork_fields(variants):
    out = convert(variant(variants, "pre_byzantium"))
    row = out["blocks"].to_pylist()[0]
    assert row["mix_hash"] == bytes(32)
    assert row["nonce"] == 0
    assert row["difficulty"] == Decimal(0x3FF800000)
    for column in (
        "total_difficulty",
        "base_fee_per_gas",
        "withdrawals_root",
        "blob_gas_used",
        "excess_blob_gas",
        "parent_beacon_root",
        "requests_hash",
    ):
        assert row[column] is None, column


def test_block_headers(pairs):
    headers = block_headers(pairs)
    assert [x.number for x in headers] == [0, 1, 2]
    assert headers[2].hash == pairs[2][0]["hash"]
    assert headers[2].parent_hash == pairs[1][0]["hash"]
    assert headers[2].timestamp == int(pairs[2][0]["timestamp"], 16)


# -- transactions ---------------------------------------------------------------------------


def tx_rows(out):
    return out["transactions"].to_pylist()


def test_transaction_types_and_fees(out, pairs):
    rows = tx_rows(out)
    assert [r["type"] for r in rows] == [2, 0, 1, 2, 2, 4, 1, 3]
    jtx = [t for b, _ in pairs for t in b["transactions"]]
    for row, tx in zip(rows, jtx, strict=True):
        if row["type"] in (0, 1):
            assert row["gas_price"] == Decimal(int(tx["gasPrice"], 16))
            assert row["max_fee_per_gas"] == row["gas_price"]
            assert row["max_priority_fee_per_gas"] is None
        else:
            # anvil also sends gasPrice (the effective price) for these: not stored
            assert row["gas_price"] is None
            assert row["max_fee_per_gas"] == Decimal(int(tx["maxFeePerGas"], 16))
            assert row["max_priority_fee_per_gas"] == Decimal(int(tx["maxPriorityFeePerGas"], 16))
        if row["type"] == 3:
            assert row["max_fee_per_blob_gas"] == Decimal(int(tx["maxFeePerBlobGas"], 16))
        else:
            assert row["max_fee_per_blob_gas"] is None


def test_transaction_plain_columns(out, pairs):
    rows = tx_rows(out)
    jtx = [t for b, _ in pairs for t in b["transactions"]]
    blocks = {int(b["number"], 16): b for b, _ in pairs}
    for row, tx in zip(rows, jtx, strict=True):
        assert row["block_hash"] == h(tx["blockHash"])
        assert row["timestamp"].timestamp() == int(blocks[row["block_num"]]["timestamp"], 16)
        assert row["nonce"] == int(tx["nonce"], 16)
        assert row["gas_limit"] == int(tx["gas"], 16)
        assert row["value"] == str(int(tx["value"], 16))
        assert row["input"] == h(tx["input"])
        assert row["from"] == h(tx["from"])
        assert row["r"] == int(tx["r"], 16).to_bytes(32, "big")
        assert row["s"] == int(tx["s"], 16).to_bytes(32, "big")
    assert rows[1]["value"] == "1000000000000000000"


def test_r_and_s_with_dropped_leading_zeros_are_padded(out, pairs):
    short = [t for b, _ in pairs for t in b["transactions"] if len(t["r"]) < 66]
    assert short, "the capture has an r with a leading zero nibble"
    rows = {r["tx_hash"]: r for r in tx_rows(out)}
    for tx in short:
        assert rows[h(tx["hash"])]["r"] == int(tx["r"], 16).to_bytes(32, "big")


def test_contract_creation_has_null_to(out):
    rows = tx_rows(out)
    assert rows[0]["to"] is None  # the emitter contract's deployment
    assert all(r["to"] is not None for r in rows[1:])


def test_signature_parity_and_chain_id(out, pairs):
    rows = tx_rows(out)
    jtx = [t for b, _ in pairs for t in b["transactions"]]
    for row, tx in zip(rows, jtx, strict=True):
        assert row["chain_id"] == CHAIN_ID
        if row["type"] == 0:
            v = int(tx["v"], 16)  # EIP-155: chain_id * 2 + 35 + parity
            assert v in (CHAIN_ID * 2 + 35, CHAIN_ID * 2 + 36)
            assert row["v_parity"] == (v == CHAIN_ID * 2 + 36)
        else:
            assert row["v_parity"] == (tx["yParity"] == "0x1")


def test_legacy_pre_eip155(variants):
    rows = tx_rows(convert(variant(variants, "legacy_pre_eip155")))
    legacy = rows[1]
    assert legacy["type"] == 0
    assert legacy["v_parity"] is True  # v = 28
    assert legacy["chain_id"] is None
    assert legacy["access_list"] is None


def test_legacy_pre_eip155_v27():
    v = json.loads((DATA / "variants.json").read_text())["legacy_pre_eip155"]
    v["block"]["transactions"][1]["v"] = "0x1b"
    legacy = tx_rows(convert([(v["block"], v["receipts"])]))[1]
    assert legacy["v_parity"] is False and legacy["chain_id"] is None


def test_unknown_type_is_kept_with_zero_signature(variants):
    rows = tx_rows(convert(variant(variants, "unknown_type_126")))
    deposit = rows[1]
    assert deposit["type"] == 126
    assert deposit["r"] == bytes(32) and deposit["s"] == bytes(32)
    assert deposit["v_parity"] is False
    assert deposit["chain_id"] is None
    assert deposit["gas_price"] is None
    assert deposit["access_list"] is None
    assert deposit["blob_versioned_hashes"] is None
    assert deposit["authorization_list"] is None
    assert deposit["nonce"] == 5 and deposit["gas_limit"] == 1_000_000
    assert deposit["from"] == h("0xdeaddeaddeaddeaddeaddeaddeaddeaddead0001")


def test_status_and_cumulative_gas_from_receipts(out, pairs):
    rows = tx_rows(out)
    receipts = [r for _, rs in pairs for r in rs]
    assert [r["status"] for r in rows] == [x["status"] == "0x1" for x in receipts]
    assert rows[4]["status"] is False  # the reverted call
    assert [r["gas_used"] for r in rows] == [int(x["cumulativeGasUsed"], 16) for x in receipts]
    assert all(r["state_root"] is None for r in rows)


def test_pre_byzantium_receipt_root(variants):
    rows = tx_rows(convert(variant(variants, "pre_byzantium")))
    assert rows[0]["state_root"] == bytes([0x5E]) * 32
    assert rows[0]["status"] is True
    assert rows[0]["gas_used"] == 21000


def test_access_lists(out, pairs):
    rows = tx_rows(out)
    assert rows[1]["access_list"] is None  # legacy
    assert rows[0]["access_list"] == []  # typed without entries
    assert rows[6]["access_list"] == []  # EIP-2930 with an empty list
    entry = pairs[1][0]["transactions"][2]["accessList"][0]
    assert rows[2]["access_list"] == [
        {"address": h(entry["address"]), "storage_keys": [h(k) for k in entry["storageKeys"]]}
    ]


def test_blob_hashes_only_for_type_3(out, pairs):
    rows = tx_rows(out)
    blob_tx = pairs[2][0]["transactions"][4]
    assert rows[7]["blob_versioned_hashes"] == [h(x) for x in blob_tx["blobVersionedHashes"]]
    assert all(r["blob_versioned_hashes"] is None for r in rows[:7])


def test_authorization_list_only_for_type_4(out, pairs):
    rows = tx_rows(out)
    auth = pairs[2][0]["transactions"][2]["authorizationList"][0]
    assert rows[5]["authorization_list"] == [
        {
            "chain_id": CHAIN_ID,
            "address": h(auth["address"]),
            "nonce": int(auth["nonce"], 16),
            "y_parity": auth["yParity"] == "0x1",
            "r": int(auth["r"], 16).to_bytes(32, "big"),
            "s": int(auth["s"], 16).to_bytes(32, "big"),
        }
    ]
    assert all(r["authorization_list"] is None for i, r in enumerate(rows) if i != 5)


# -- logs -----------------------------------------------------------------------------------


def test_logs_from_receipts(out, pairs):
    logs = out["logs"].to_pylist()
    jlogs = [log for _, rs in pairs for r in rs for log in r["logs"]]
    assert len(logs) == len(jlogs) == 10
    assert [x["log_index"] for x in logs] == list(range(10))  # block-relative
    assert [x["tx_index"] for x in logs] == [0] * 5 + [2] * 5
    assert all(x["block_num"] == 2 and x["_block_num"] == 2 for x in logs)
    for row, log in zip(logs, jlogs, strict=True):
        assert row["tx_hash"] == h(log["transactionHash"])
        assert row["block_hash"] == h(log["blockHash"])
        assert row["address"] == h(log["address"])
        assert row["data"] == h(log["data"])
        topics = [row[f"topic{i}"] for i in range(4)]
        assert topics == [h(t) for t in log["topics"]] + [None] * (4 - len(log["topics"]))
    # 0 to 4 topics, twice over
    assert [sum(x[f"topic{i}"] is not None for i in range(4)) for x in logs] == [0, 1, 2, 3, 4] * 2


def test_failed_transactions_have_no_logs(out):
    failed = {r["tx_index"] for r in tx_rows(out) if not r["status"] and r["block_num"] == 2}
    assert failed == {1, 4}
    assert not failed & {x["tx_index"] for x in out["logs"].to_pylist()}


# -- errors ---------------------------------------------------------------------------------


def test_fee_beyond_decimal128_is_a_conversion_error(variants):
    with pytest.raises(ConversionError) as info:
        convert(variant(variants, "overflowing_fee"))
    err = info.value
    assert (err.block_num, err.table, err.column) == (2, "transactions", "max_fee_per_gas")
    assert "block 2" in str(err) and "transactions.max_fee_per_gas" in str(err)


def edited(pairs, n, edit):
    copied = copy.deepcopy(pairs[n])
    edit(*copied)
    return [copied]


@pytest.mark.parametrize(
    "n,edit,table,column",
    [
        (1, lambda b, r: b.update(difficulty=hex(10**38)), "blocks", "difficulty"),
        (1, lambda b, r: b.update(baseFeePerGas="-0x1"), "blocks", "base_fee_per_gas"),
        (1, lambda b, r: b.update(gasLimit=hex(2**64)), "blocks", "gas_limit"),
        (1, lambda b, r: b.update(hash="0x1234"), "blocks", "hash"),
        (1, lambda b, r: b.update(miner="0xzz" + "00" * 19), "blocks", "miner"),
        (1, lambda b, r: b.pop("stateRoot"), "blocks", "state_root"),
        (1, lambda b, r: b["transactions"][0].update(value="0xg"), "transactions", "value"),
        (1, lambda b, r: b["transactions"][0].update(value="-0x5"), "transactions", "value"),
        (1, lambda b, r: b["transactions"][1].update(to="0x" + "11" * 21), "transactions", "to"),
        (
            1,
            lambda b, r: b["transactions"][1].update(gasPrice=hex(10**38)),
            "transactions",
            "gas_price",
        ),
        (1, lambda b, r: b["transactions"][1].update(nonce="-0x1"), "transactions", "nonce"),
        (1, lambda b, r: b["transactions"][2].update(r="0x1" + "00" * 32), "transactions", "r"),
        (
            1,
            lambda b, r: b["transactions"][2].update(chainId=hex(2**64)),
            "transactions",
            "chain_id",
        ),
        (
            1,
            lambda b, r: b["transactions"][2]["accessList"][0].update(address="0x12"),
            "transactions",
            "access_list",
        ),
        (1, lambda b, r: r[1].update(cumulativeGasUsed=None), "transactions", "gas_used"),
        (2, lambda b, r: r[0]["logs"][2].update(address="0x"), "logs", "address"),
        (2, lambda b, r: r[0]["logs"][2].update(topics=["0x" + "ff" * 32] * 5), "logs", "topic3"),
        (2, lambda b, r: r[0]["logs"][2].update(logIndex=hex(2**32)), "logs", "log_index"),
        (2, lambda b, r: r[0]["logs"][2]["topics"].__setitem__(0, "0x00"), "logs", "topic0"),
    ],
)
def test_unrepresentable_values_name_block_table_and_column(pairs, n, edit, table, column):
    with pytest.raises(ConversionError) as info:
        convert(edited(pairs, n, edit))
    err = info.value
    assert (err.block_num, err.table, err.column) == (n, table, column), str(err)
    assert f"block {n}" in str(err) and f"{table}.{column}" in str(err)


def test_bad_block_number(pairs):
    with pytest.raises(
        ConversionError, match="a block: cannot convert blocks.block_num = '0xnope'"
    ):
        convert(edited(pairs, 1, lambda b, r: b.update(number="0xnope")))


def test_missing_receipt_is_an_error(pairs):
    block, receipts = copy.deepcopy(pairs[1])
    with pytest.raises(ConversionError, match="3 transactions, 2 receipts"):
        convert([(block, receipts[:2])])


def test_error_reports_the_failing_block_not_the_first(pairs):
    blocks = copy.deepcopy(pairs)
    blocks[2][0]["transactions"][3]["gas"] = "0x"
    with pytest.raises(ConversionError) as info:
        convert(blocks)
    assert (info.value.block_num, info.value.column) == (2, "gas_limit")
