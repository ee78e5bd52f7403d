"""JSON-RPC blocks and receipts -> Arrow record batches for the blocks, transactions, logs tables.

Input: raw blocks, each `eth_getBlockByNumber(n, true)` (hex strings) with its receipts in
transaction order: any object with `.block` and `.receipts`, or a `(block, receipts)` pair.
Output: one record batch per table, rows ordered by block then index (spec/evm-rpc.md).

Built column by column for speed (see `columns.py`); the rules that depend on the
transaction type run once per transaction in `_derive`.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ampd.providers.evm_rpc.columns import (
    CONVERSION_ERRORS,
    MAX_U64,
    Columns,
    ConversionError,
    fixed,
    quantity32,
    seconds_to_ns,
    u64,
    wei,
)
from ampd.providers.evm_rpc.schema import (
    BLOCKS_SCHEMA,
    LOGS_SCHEMA,
    TIMESTAMP,
    TRANSACTIONS_SCHEMA,
    WEI,
)

__all__ = ["BlockHeader", "ConversionError", "block_headers", "convert"]

ZERO_HASH = "0x" + "00" * 32
_ZERO_32 = bytes(32)
# Types whose signature and fee fields we know. Others (e.g. 126, OP deposits) are kept with a
# zero signature, v_parity false and no chain id.
_KNOWN_TYPES = frozenset((0, 1, 2, 3, 4))
_EMPTY: list = []
_fromhex = bytes.fromhex


@dataclass(frozen=True)
class BlockHeader:
    """What a Parquet file records about each block it covers."""

    number: int
    hash: str  # 0x hex
    parent_hash: str  # 0x hex
    timestamp: int  # seconds


def convert(raw_blocks: Iterable[Any]) -> dict[str, pa.RecordBatch]:
    """Convert raw blocks to `{"blocks": ..., "transactions": ..., "logs": ...}` record batches.

    Raises ConversionError naming the block number, table and column of the first value that
    cannot be represented: bad hex, wrong byte length, negative, beyond UInt64 or
    Decimal128(38, 0), or missing; also when a block's receipts don't match its transactions
    in number.
    """
    blocks: list[dict] = []
    receipt_lists: list[list] = []
    for raw in raw_blocks:
        block, receipts = _unpack(raw)
        blocks.append(block)
        receipt_lists.append(receipts)
    numbers = Columns("blocks", [None] * len(blocks)).ints("block_num", blocks, "number")
    col = Columns("blocks", numbers)
    # Per-block values shared by the rows of all tables, taken by row index for the others.
    shared = _Shared(
        numbers=col.array("block_num", numbers, pa.uint64()),
        timestamps=_timestamps(
            col.values("timestamp", [b.get("timestamp") for b in blocks], seconds_to_ns)
        ),
        hashes=col.fixed("hash", blocks, "hash", 32),
    )
    return {
        "blocks": _blocks_batch(col, blocks, shared),
        "transactions": _transactions_batch(blocks, receipt_lists, numbers, shared),
        "logs": _logs_batch(blocks, receipt_lists, numbers, shared),
    }


def block_headers(raw_blocks: Iterable[Any]) -> list[BlockHeader]:
    """Number, hash, parent hash and timestamp of each raw block (for a file's block range)."""
    headers = []
    for raw in raw_blocks:
        block, _ = _unpack(raw)
        headers.append(
            BlockHeader(
                number=int(block["number"], 16),
                hash=block["hash"],
                parent_hash=block["parentHash"],
                timestamp=int(block["timestamp"], 16),
            )
        )
    return headers


# -- tables ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shared:
    numbers: pa.Array
    timestamps: pa.Array
    hashes: pa.Array

    def take(self, row_block: list[int]) -> tuple[pa.Array, pa.Array, pa.Array]:
        indices = pa.array(row_block, pa.int64())
        return self.numbers.take(indices), self.timestamps.take(indices), self.hashes.take(indices)


def _blocks_batch(col: "Columns", blocks: list[dict], shared: _Shared) -> pa.RecordBatch:
    mix_hashes = [b.get("mixHash") or ZERO_HASH for b in blocks]
    nonces = [b.get("nonce") or "0x0" for b in blocks]
    arrays = [
        shared.numbers,
        shared.numbers,
        shared.timestamps,
        shared.hashes,
        col.fixed("parent_hash", blocks, "parentHash", 32),
        col.fixed("ommers_hash", blocks, "sha3Uncles", 32),
        col.fixed("miner", blocks, "miner", 20),
        col.fixed("state_root", blocks, "stateRoot", 32),
        col.fixed("transactions_root", blocks, "transactionsRoot", 32),
        col.fixed("receipt_root", blocks, "receiptsRoot", 32),
        col.binary("logs_bloom", blocks, "logsBloom"),
        # Post-merge nodes send 0x0; some L2 nodes leave it out.
        col.wei("difficulty", [b.get("difficulty") or "0x0" for b in blocks]),
        col.wei("total_difficulty", [b.get("totalDifficulty") for b in blocks], nullable=True),
        col.uint64("gas_limit", blocks, "gasLimit"),
        col.uint64("gas_used", blocks, "gasUsed"),
        col.binary("extra_data", blocks, "extraData"),
        col.fixed_hex("mix_hash", mix_hashes, 32),
        col.quantities("nonce", nonces),
        col.wei("base_fee_per_gas", [b.get("baseFeePerGas") for b in blocks], nullable=True),
        col.fixed("withdrawals_root", blocks, "withdrawalsRoot", 32, nullable=True),
        col.uint64("blob_gas_used", blocks, "blobGasUsed", nullable=True),
        col.uint64("excess_blob_gas", blocks, "excessBlobGas", nullable=True),
        col.fixed("parent_beacon_root", blocks, "parentBeaconBlockRoot", 32, nullable=True),
        col.fixed("requests_hash", blocks, "requestsHash", 32, nullable=True),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=BLOCKS_SCHEMA)


def _transactions_batch(
    blocks: list[dict], receipt_lists: list[list], numbers: list[int], shared: _Shared
) -> pa.RecordBatch:
    txs: list[dict] = []
    receipts: list[dict] = []
    row_block: list[int] = []  # index into `blocks` of each row
    positions: list[int] = []
    for i, (block, block_receipts) in enumerate(zip(blocks, receipt_lists, strict=True)):
        block_txs = block.get("transactions") or _EMPTY
        n = len(block_txs)
        if n != len(block_receipts):
            raise ConversionError(
                numbers[i],
                "transactions",
                "status",
                f"{n} transactions, {len(block_receipts)} receipts",
                "every transaction needs its receipt",
            )
        if n and not isinstance(block_txs[0], dict):
            raise ConversionError(
                numbers[i], "transactions", "tx_hash", block_txs[0], "expected full transactions"
            )
        txs.extend(block_txs)
        receipts.extend(block_receipts)
        row_block.extend([i] * n)
        positions.extend(range(n))

    row_numbers = [numbers[i] for i in row_block]
    col = Columns("transactions", row_numbers)
    d = _derive_all(col, txs)
    block_num, timestamps, block_hashes = shared.take(row_block)
    arrays = [
        block_num,
        block_hashes,
        block_num,
        timestamps,
        pa.array(positions, pa.uint32()),
        col.fixed("tx_hash", txs, "hash", 32),
        col.fixed("to", txs, "to", 20, nullable=True),
        col.uint64("nonce", txs, "nonce"),
        col.array("gas_price", d.gas_price, WEI),
        col.uint64("gas_limit", txs, "gas"),
        col.amounts("value", [t.get("value") for t in txs]),
        col.binary("input", txs, "input"),
        col.array("r", d.r, pa.binary(32)),
        col.array("s", d.s, pa.binary(32)),
        pa.array(d.v_parity, pa.bool_()),
        col.array("chain_id", d.chain_id, pa.uint64()),
        col.uint64("gas_used", receipts, "cumulativeGasUsed"),
        pa.array(d.type, pa.int32()),
        col.array("max_fee_per_gas", d.max_fee, WEI),
        col.array("max_priority_fee_per_gas", d.max_priority_fee, WEI),
        col.array("max_fee_per_blob_gas", d.max_blob_fee, WEI),
        col.fixed("from", txs, "from", 20),
        col.array("status", col.values("status", receipts, _status), pa.bool_()),
        col.fixed("state_root", receipts, "root", 32, nullable=True),
        col.array("access_list", d.access_list, TRANSACTIONS_SCHEMA.field("access_list").type),
        col.array(
            "blob_versioned_hashes",
            d.blob_hashes,
            TRANSACTIONS_SCHEMA.field("blob_versioned_hashes").type,
        ),
        col.array(
            "authorization_list",
            d.authorizations,
            TRANSACTIONS_SCHEMA.field("authorization_list").type,
        ),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=TRANSACTIONS_SCHEMA)


def _logs_batch(
    blocks: list[dict], receipt_lists: list[list], numbers: list[int], shared: _Shared
) -> pa.RecordBatch:
    logs: list[dict] = []
    row_block: list[int] = []
    tx_index: list[int] = []
    tx_hashes: list = []
    for i, (block, block_receipts) in enumerate(zip(blocks, receipt_lists, strict=True)):
        block_txs = block.get("transactions") or _EMPTY
        for position, receipt in enumerate(block_receipts):
            receipt_logs = receipt.get("logs")
            if not receipt_logs:
                continue
            n = len(receipt_logs)
            logs.extend(receipt_logs)
            row_block.extend([i] * n)
            tx_index.extend([position] * n)
            tx_hashes.extend([block_txs[position]] * n)

    row_numbers = [numbers[i] for i in row_block]
    col = Columns("logs", row_numbers)
    topics = [log.get("topics") or _EMPTY for log in logs]
    too_many = next((i for i, t in enumerate(topics) if len(t) > 4), None)
    if too_many is not None:
        raise ConversionError(
            row_numbers[too_many], "logs", "topic3", topics[too_many], "more than 4 topics"
        )
    block_num, timestamps, block_hashes = shared.take(row_block)
    arrays = [
        block_num,
        block_hashes,
        block_num,
        timestamps,
        col.fixed("tx_hash", tx_hashes, "hash", 32),
        pa.array(tx_index, pa.uint32()),
        col.uint32("log_index", logs, "logIndex"),
        col.fixed("address", logs, "address", 20),
        *(
            col.fixed_hex(f"topic{n}", [t[n] if len(t) > n else None for t in topics], 32, True)
            for n in range(4)
        ),
        col.binary("data", logs, "data"),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=LOGS_SCHEMA)


# -- per-transaction rules that depend on the transaction type ------------------------------


_DERIVED = (
    "type",
    "gas_price",
    "max_fee",
    "max_priority_fee",
    "max_blob_fee",
    "r",
    "s",
    "v_parity",
    "chain_id",
    "access_list",
    "blob_hashes",
    "authorizations",
)


@dataclass
class _Derived:
    """Columns of the transactions table whose value depends on the transaction type."""

    type: Sequence[int]
    gas_price: Sequence[int | None]
    max_fee: Sequence[int | None]
    max_priority_fee: Sequence[int | None]
    max_blob_fee: Sequence[int | None]
    r: Sequence[bytes]
    s: Sequence[bytes]
    v_parity: Sequence[bool]
    chain_id: Sequence[int | None]
    access_list: Sequence[list | None]
    blob_hashes: Sequence[list | None]
    authorizations: Sequence[list | None]


class _FieldError(Exception):
    def __init__(self, column: str, value: Any, reason: str) -> None:
        super().__init__(reason)
        self.column, self.value, self.reason = column, value, reason


def _derive_all(col: "Columns", txs: list[dict]) -> _Derived:
    try:
        rows = [_derive(tx) for tx in txs]
    except _FieldError:
        for i, tx in enumerate(txs):
            try:
                _derive(tx)
            except _FieldError as exc:
                raise ConversionError(
                    col.row_numbers[i], "transactions", exc.column, exc.value, exc.reason
                ) from None
        raise
    if not rows:
        return _Derived(*([] for _ in _DERIVED))
    return _Derived(*zip(*rows, strict=True))


def _derive(tx: dict) -> tuple:
    column = "type"
    value: Any = tx.get("type")
    try:
        # Nodes that predate EIP-2718 send no type: those transactions are legacy.
        t = 0 if value is None else int(value, 16)
        if not 0 <= t < 2**31:
            raise ValueError("transaction type out of range for Int32")
        if t not in _KNOWN_TYPES:
            return _unknown_type(tx, t)
        # Range and length checks happen once per column, in Columns.array.
        if t < 2:
            column, value = "gas_price", tx.get("gasPrice")
            gas_price = max_fee = int(value, 16)
            priority_fee = None
        else:
            gas_price = None
            column, value = "max_fee_per_gas", tx.get("maxFeePerGas")
            max_fee = int(value, 16)
            column, value = "max_priority_fee_per_gas", tx.get("maxPriorityFeePerGas")
            priority_fee = int(value, 16)
        blob_fee = None
        if t == 3:
            column, value = "max_fee_per_blob_gas", tx.get("maxFeePerBlobGas")
            blob_fee = int(value, 16)
        # r and s are quantities: the node drops leading zeros, so pad back to 32 bytes.
        column, value = "r", tx.get("r")
        r = _fromhex(value[2:].zfill(64))
        column, value = "s", tx.get("s")
        s = _fromhex(value[2:].zfill(64))
        if t == 0:
            column, value = "v_parity", tx.get("v")
            v = int(value, 16)
            if v >= 35:  # EIP-155: v = chain_id * 2 + 35 + parity
                parity = (v - 35) % 2 == 1
                column, value = "chain_id", tx.get("chainId")
                chain_id = (v - 35) // 2 if value is None else int(value, 16)
            else:  # pre-EIP-155 (27, 28): the signature commits to no chain
                parity = v in (1, 28)
                chain_id = None
            access_list = None
        else:
            column, value = "v_parity", tx.get("yParity")
            if value is None:  # older nodes send only v, which is the parity for typed txs
                value = tx.get("v")
            parity = int(value, 16) == 1
            column, value = "chain_id", tx.get("chainId")
            chain_id = int(value, 16)
            column, value = "access_list", tx.get("accessList")
            access_list = _access_list(value) if value else _EMPTY
        blob_hashes = None
        if t == 3:
            column, value = "blob_versioned_hashes", tx.get("blobVersionedHashes")
            blob_hashes = [fixed(h, 32) for h in value or _EMPTY]
        authorizations = None
        if t == 4:
            column, value = "authorization_list", tx.get("authorizationList")
            authorizations = [_authorization(a) for a in value or _EMPTY]
    except CONVERSION_ERRORS as exc:
        reason = "missing" if value is None or isinstance(exc, KeyError) else str(exc)
        raise _FieldError(column, value, reason) from None
    return (
        t,
        gas_price,
        max_fee,
        priority_fee,
        blob_fee,
        r,
        s,
        parity,
        chain_id,
        access_list,
        blob_hashes,
        authorizations,
    )


def _unknown_type(tx: dict, t: int) -> tuple:
    # No known signature or chain id; keep the fee fields the node sends.
    fee = tx.get("maxFeePerGas") or tx.get("gasPrice")
    priority = tx.get("maxPriorityFeePerGas")
    column = "max_fee_per_gas"
    try:
        max_fee = None if fee is None else wei(int(fee, 16))
        column = "max_priority_fee_per_gas"
        priority_fee = None if priority is None else wei(int(priority, 16))
    except CONVERSION_ERRORS as exc:
        value = fee if column == "max_fee_per_gas" else priority
        raise _FieldError(column, value, str(exc)) from None
    return (t, None, max_fee, priority_fee, None, _ZERO_32, _ZERO_32, False, None, None, None, None)


def _access_list(entries: list) -> list:
    return [
        {
            "address": fixed(entry["address"], 20),
            "storage_keys": [fixed(key, 32) for key in entry.get("storageKeys") or _EMPTY],
        }
        for entry in entries
    ]


def _authorization(auth: dict) -> dict:
    chain_id = int(auth["chainId"], 16)
    return {
        # A signed authorization may name any chain id (it is then skipped on chain); like
        # Amp, store 0 for one beyond UInt64 rather than fail the block.
        "chain_id": chain_id if 0 <= chain_id <= MAX_U64 else 0,
        "address": fixed(auth["address"], 20),
        "nonce": u64(int(auth["nonce"], 16)),
        "y_parity": int(auth["yParity"], 16) != 0,
        "r": quantity32(auth["r"]),
        "s": quantity32(auth["s"]),
    }


def _status(receipt: dict) -> bool:
    status = receipt.get("status")
    # Pre-Byzantium receipts carry a state root instead of a status; they succeeded.
    return status is None or status == "0x1" or (status != "0x0" and int(status, 16) == 1)


def _timestamps(nanos: list[int]) -> pa.Array:
    return pa.array(nanos, pa.int64()).view(TIMESTAMP)


def _unpack(raw: Any) -> tuple[dict, list]:
    block = getattr(raw, "block", None)
    if block is not None:
        return block, list(getattr(raw, "receipts", None) or _EMPTY)
    block, receipts = raw
    return block, list(receipts or _EMPTY)
