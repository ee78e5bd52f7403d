"""The rows the evm-rpc tables should hold, built straight from a node's JSON, row by row.

This is the independent side of the extraction tests: it reads raw `eth_getBlockByNumber(n,
true)` and `eth_getBlockReceipts(n)` answers fetched by the test itself (`Anvil.rpc`, not
ampd's client) and applies the column meanings of spec/evm-rpc.md with plain per-row code,
sharing nothing with ampd's converter. Values are what `pyarrow.Table.to_pylist()` gives for
each column type: bytes for binary columns, int for integers, `decimal.Decimal` for
Decimal128, a UTC `datetime` for timestamps, lists of dicts for lists of structs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

ZERO_HASH = bytes(32)


@dataclass(frozen=True)
class RawBlock:
    """One block as the node sent it, with its receipts (empty for a block without txs)."""

    number: int
    block: dict[str, Any]
    receipts: list[dict[str, Any]]


def fetch_raw(anvil: Any, numbers: range | list[int]) -> list[RawBlock]:
    """Fetch each block (full transactions) and its receipts with the test's own client."""
    raw = []
    for n in numbers:
        block = anvil.rpc("eth_getBlockByNumber", hex(n), True)
        if block is None:
            raise AssertionError(f"the node has no block {n}")
        receipts = anvil.rpc("eth_getBlockReceipts", hex(n)) if block["transactions"] else []
        raw.append(RawBlock(n, block, receipts or []))
    return raw


def expected_tables(raw: list[RawBlock]) -> dict[str, list[dict[str, Any]]]:
    """`{"blocks": rows, "transactions": rows, "logs": rows}`, ordered by block then index."""
    tables: dict[str, list[dict[str, Any]]] = {"blocks": [], "transactions": [], "logs": []}
    for item in sorted(raw, key=lambda r: r.number):
        tables["blocks"].append(block_row(item.block))
        tables["transactions"].extend(transaction_rows(item.block, item.receipts))
        tables["logs"].extend(log_rows(item.block, item.receipts))
    return tables


# -- hex helpers ------------------------------------------------------------------------------


def _int(value: str) -> int:
    assert value.startswith("0x"), value
    return int(value, 16)


def _bytes(value: str) -> bytes:
    assert value.startswith("0x"), value
    return bytes.fromhex(value[2:])


def _fixed(value: str, width: int) -> bytes:
    data = _bytes(value)
    assert len(data) == width, f"{value} is not {width} bytes"
    return data


def _word(value: str) -> bytes:
    """A signature quantity (r, s): leading zeros may be dropped by the node; pad to 32."""
    number = _int(value)
    return number.to_bytes(32, "big")


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(_int(value))


def _opt_int(value: str | None) -> int | None:
    return None if value is None else _int(value)


def _opt_fixed(value: str | None, width: int) -> bytes | None:
    return None if value is None else _fixed(value, width)


def _time(block: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(_int(block["timestamp"]), tz=UTC)


# -- blocks -----------------------------------------------------------------------------------


def block_row(block: dict[str, Any]) -> dict[str, Any]:
    number = _int(block["number"])
    mix_hash = block.get("mixHash")
    nonce = block.get("nonce")
    return {
        "_block_num": number,
        "block_num": number,
        "timestamp": _time(block),
        "hash": _fixed(block["hash"], 32),
        "parent_hash": _fixed(block["parentHash"], 32),
        "ommers_hash": _fixed(block["sha3Uncles"], 32),
        "miner": _fixed(block["miner"], 20),
        "state_root": _fixed(block["stateRoot"], 32),
        "transactions_root": _fixed(block["transactionsRoot"], 32),
        "receipt_root": _fixed(block["receiptsRoot"], 32),
        "logs_bloom": _bytes(block["logsBloom"]),
        "difficulty": Decimal(_int(block.get("difficulty") or "0x0")),
        "total_difficulty": _decimal(block.get("totalDifficulty")),
        "gas_limit": _int(block["gasLimit"]),
        "gas_used": _int(block["gasUsed"]),
        "extra_data": _bytes(block["extraData"]),
        "mix_hash": ZERO_HASH if mix_hash is None else _fixed(mix_hash, 32),
        "nonce": 0 if nonce is None else _int(nonce),
        "base_fee_per_gas": _decimal(block.get("baseFeePerGas")),
        "withdrawals_root": _opt_fixed(block.get("withdrawalsRoot"), 32),
        "blob_gas_used": _opt_int(block.get("blobGasUsed")),
        "excess_blob_gas": _opt_int(block.get("excessBlobGas")),
        "parent_beacon_root": _opt_fixed(block.get("parentBeaconBlockRoot"), 32),
        "requests_hash": _opt_fixed(block.get("requestsHash"), 32),
    }


# -- transactions -----------------------------------------------------------------------------


def _receipts_by_hash(block: dict[str, Any], receipts: list[dict[str, Any]]) -> dict[str, dict]:
    txs = block["transactions"]
    by_hash = {r["transactionHash"].lower(): r for r in receipts}
    assert len(receipts) == len(txs), f"block {block['number']}: {len(receipts)} receipts"
    assert set(by_hash) == {t["hash"].lower() for t in txs}, f"block {block['number']}"
    return by_hash


def _signature_parity(tx: dict[str, Any], tx_type: int) -> bool:
    y_parity = tx.get("yParity")
    if y_parity is not None:
        return _int(y_parity) == 1
    v = _int(tx["v"])
    if tx_type != 0:
        return v == 1  # typed transactions carry the parity itself in v
    if v in (27, 28):
        return v == 28
    return (v - 35) % 2 == 1  # EIP-155: v = chain_id * 2 + 35 + parity


def _chain_id(tx: dict[str, Any], tx_type: int) -> int | None:
    if tx.get("chainId") is not None:
        return _int(tx["chainId"])
    if tx_type == 0:
        v = _int(tx["v"])
        return (v - 35) // 2 if v >= 35 else None
    return None


def _access_list(tx: dict[str, Any], tx_type: int) -> list[dict[str, Any]] | None:
    if tx_type == 0:
        return None
    return [
        {
            "address": _fixed(entry["address"], 20),
            "storage_keys": [_fixed(key, 32) for key in entry.get("storageKeys") or []],
        }
        for entry in tx.get("accessList") or []
    ]


def _authorizations(tx: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "chain_id": _int(auth["chainId"]),
            "address": _fixed(auth["address"], 20),
            "nonce": _int(auth["nonce"]),
            "y_parity": _int(auth["yParity"]) == 1,
            "r": _word(auth["r"]),
            "s": _word(auth["s"]),
        }
        for auth in tx.get("authorizationList") or []
    ]


def transaction_rows(block: dict[str, Any], receipts: list[dict[str, Any]]) -> list[dict]:
    number = _int(block["number"])
    by_hash = _receipts_by_hash(block, receipts)
    rows = []
    for position, tx in enumerate(block["transactions"]):
        receipt = by_hash[tx["hash"].lower()]
        tx_type = _int(tx.get("type") or "0x0")
        legacy_fees = tx_type in (0, 1)
        gas_price = Decimal(_int(tx["gasPrice"])) if legacy_fees else None
        to = tx.get("to")
        rows.append(
            {
                "_block_num": number,
                "block_hash": _fixed(block["hash"], 32),
                "block_num": number,
                "timestamp": _time(block),
                "tx_index": position,
                "tx_hash": _fixed(tx["hash"], 32),
                "to": None if to is None else _fixed(to, 20),
                "nonce": _int(tx["nonce"]),
                "gas_price": gas_price,
                "gas_limit": _int(tx["gas"]),
                "value": str(_int(tx["value"])),
                "input": _bytes(tx["input"]),
                "r": _word(tx["r"]),
                "s": _word(tx["s"]),
                "v_parity": _signature_parity(tx, tx_type),
                "chain_id": _chain_id(tx, tx_type),
                "gas_used": _int(receipt["cumulativeGasUsed"]),
                "type": tx_type,
                "max_fee_per_gas": gas_price if legacy_fees else Decimal(_int(tx["maxFeePerGas"])),
                "max_priority_fee_per_gas": (
                    None if legacy_fees else Decimal(_int(tx["maxPriorityFeePerGas"]))
                ),
                "max_fee_per_blob_gas": (
                    Decimal(_int(tx["maxFeePerBlobGas"])) if tx_type == 3 else None
                ),
                "from": _fixed(tx["from"], 20),
                "status": _int(receipt["status"]) == 1 if "status" in receipt else True,
                "state_root": _opt_fixed(receipt.get("root"), 32),
                "access_list": _access_list(tx, tx_type),
                "blob_versioned_hashes": (
                    [_fixed(h, 32) for h in tx.get("blobVersionedHashes") or []]
                    if tx_type == 3
                    else None
                ),
                "authorization_list": _authorizations(tx) if tx_type == 4 else None,
            }
        )
    return rows


# -- logs -------------------------------------------------------------------------------------


def log_rows(block: dict[str, Any], receipts: list[dict[str, Any]]) -> list[dict]:
    number = _int(block["number"])
    by_hash = _receipts_by_hash(block, receipts)
    rows = []
    log_index = 0  # block-relative: counts the logs of every earlier tx in the block
    for position, tx in enumerate(block["transactions"]):
        for log in by_hash[tx["hash"].lower()].get("logs") or []:
            assert _int(log["logIndex"]) == log_index, "the node's logIndex is not block-relative"
            topics = [_fixed(t, 32) for t in log.get("topics") or []]
            assert len(topics) <= 4
            topics += [None] * (4 - len(topics))
            rows.append(
                {
                    "_block_num": number,
                    "block_hash": _fixed(block["hash"], 32),
                    "block_num": number,
                    "timestamp": _time(block),
                    "tx_hash": _fixed(tx["hash"], 32),
                    "tx_index": position,
                    "log_index": log_index,
                    "address": _fixed(log["address"], 20),
                    "topic0": topics[0],
                    "topic1": topics[1],
                    "topic2": topics[2],
                    "topic3": topics[3],
                    "data": _bytes(log["data"]),
                }
            )
            log_index += 1
    return rows
