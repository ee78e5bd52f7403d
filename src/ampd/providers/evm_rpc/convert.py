"""JSON-RPC blocks and receipts -> Arrow record batches for the blocks, transactions, logs tables.

Input: raw blocks, each `eth_getBlockByNumber(n, true)` (hex strings) with its receipts in
transaction order: any object with `.block` and `.receipts`, or a `(block, receipts)` pair.
Output: one record batch per table, rows ordered by block then index (spec/evm-rpc.md).

Built column by column for speed (see `columns.py`); the rules that depend on the
transaction type run once per transaction in `_derive`.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ampd.extract.chunk import BlockHeader
from ampd.providers.evm_rpc import hexdecode
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
    shared = SharedColumns(
        numbers=col.array("block_num", numbers, pa.uint64()),
        timestamps=timestamps_array(
            col.values("timestamp", [b.get("timestamp") for b in blocks], seconds_to_ns)
        ),
        hashes=col.fixed("hash", blocks, "hash", 32),
    )
    flat = _flatten(blocks, receipt_lists, numbers)
    transactions = _transactions_batch(flat, numbers, shared)
    return {
        "blocks": _blocks_batch(col, blocks, shared),
        "transactions": transactions,
        "logs": _logs_batch(flat, transactions.column("tx_hash"), numbers, shared),
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
class SharedColumns:
    numbers: pa.Array
    timestamps: pa.Array
    hashes: pa.Array

    def take(self, row_block: np.ndarray) -> tuple[pa.Array, pa.Array, pa.Array]:
        indices = pa.array(row_block, pa.int64())
        return self.numbers.take(indices), self.timestamps.take(indices), self.hashes.take(indices)


def _blocks_batch(col: "Columns", blocks: list[dict], shared: SharedColumns) -> pa.RecordBatch:
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


class _RowNumbers:
    """The block number of each row, looked up only when an error names one."""

    def __init__(self, numbers: list[int], row_block: np.ndarray) -> None:
        self.numbers, self.row_block = numbers, row_block

    def __getitem__(self, row: int) -> int:
        return self.numbers[int(self.row_block[row])]


@dataclass(frozen=True)
class _Transactions:
    """Every transaction of the chunk with its receipt, flattened, and where each one sits."""

    txs: list[dict]
    receipts: list[dict]
    row_block: np.ndarray  # index into the chunk's blocks
    positions: np.ndarray  # index within its block


def _flatten(blocks: list[dict], receipt_lists: list[list], numbers: list[int]) -> _Transactions:
    txs: list[dict] = []
    receipts: list[dict] = []
    counts: list[int] = []
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
        counts.append(n)
    row_block, positions = rows_of(counts)
    return _Transactions(txs, receipts, row_block, positions)


def rows_of(counts: list[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For parents with `counts` children each: each child's parent, and its index within it."""
    counts = np.asarray(counts, np.int64)
    parent = np.repeat(np.arange(len(counts)), counts)
    firsts = np.cumsum(counts) - counts
    return parent, np.arange(len(parent)) - firsts[parent]


def _transactions_batch(
    t: _Transactions, numbers: list[int], shared: SharedColumns
) -> pa.RecordBatch:
    txs, receipts = t.txs, t.receipts
    col = Columns("transactions", _RowNumbers(numbers, t.row_block))
    d = _derive_all(col, txs)
    block_num, timestamps, block_hashes = shared.take(t.row_block)
    arrays = [
        block_num,
        block_hashes,
        block_num,
        timestamps,
        pa.array(t.positions, pa.uint32()),
        col.fixed("tx_hash", txs, "hash", 32),
        col.fixed("to", txs, "to", 20, nullable=True),
        col.uint64("nonce", txs, "nonce"),
        d.gas_price,
        col.uint64("gas_limit", txs, "gas"),
        col.amounts("value", [t.get("value") for t in txs]),
        col.binary("input", txs, "input"),
        d.r,
        d.s,
        d.v_parity,
        d.chain_id,
        col.uint64("gas_used", receipts, "cumulativeGasUsed"),
        d.type,
        d.max_fee,
        d.max_priority_fee,
        d.max_blob_fee,
        col.fixed("from", txs, "from", 20),
        col.array("status", col.values("status", receipts, _status), pa.bool_()),
        col.fixed("state_root", receipts, "root", 32, nullable=True),
        d.access_list,
        d.blob_hashes,
        d.authorizations,
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=TRANSACTIONS_SCHEMA)


def _logs_batch(
    t: _Transactions, tx_hashes: pa.Array, numbers: list[int], shared: SharedColumns
) -> pa.RecordBatch:
    per_tx = [receipt.get("logs") or _EMPTY for receipt in t.receipts]
    logs = [log for tx_logs in per_tx for log in tx_logs]
    log_tx, _ = rows_of(np.fromiter(map(len, per_tx), np.int64, len(per_tx)))
    row_block = t.row_block[log_tx]
    col = Columns("logs", _RowNumbers(numbers, row_block))
    block_num, timestamps, block_hashes = shared.take(row_block)
    arrays = [
        block_num,
        block_hashes,
        block_num,
        timestamps,
        tx_hashes.take(pa.array(log_tx)),
        pa.array(t.positions[log_tx], pa.uint32()),
        col.uint32("log_index", logs, "logIndex"),
        col.fixed("address", logs, "address", 20),
        *_topics(col, logs),
        col.binary("data", logs, "data"),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=LOGS_SCHEMA)


def _topics(col: Columns, logs: list[dict]) -> list[pa.Array]:
    """The four topic columns: all topics decoded at once, then spread by position."""
    topics = [log.get("topics") or _EMPTY for log in logs]
    counts = np.fromiter(map(len, topics), np.int64, len(topics))
    if len(topics) and counts.max() > 4:
        row = int(np.argmax(counts > 4))
        raise ConversionError(
            col.row_numbers[row], "logs", "topic3", topics[row], "more than 4 topics"
        )
    flat = hexdecode.fixed_binary([topic for each in topics for topic in each], 32)
    if flat is None:  # a bad topic: column by column, to name it
        return [
            col.fixed_hex(f"topic{n}", [t[n] if len(t) > n else None for t in topics], 32, True)
            for n in range(4)
        ]
    firsts = np.cumsum(counts) - counts
    return [flat.take(pa.array(firsts + n, mask=counts <= n)) for n in range(4)]


# -- per-transaction rules that depend on the transaction type ------------------------------


# Columns of the transactions table whose value depends on the transaction type, and their
# Arrow types.
DERIVED_TYPES = {
    "type": pa.int32(),
    "gas_price": WEI,
    "max_fee": WEI,
    "max_priority_fee": WEI,
    "max_blob_fee": WEI,
    "r": pa.binary(32),
    "s": pa.binary(32),
    "v_parity": pa.bool_(),
    "chain_id": pa.uint64(),
    "access_list": TRANSACTIONS_SCHEMA.field("access_list").type,
    "blob_hashes": TRANSACTIONS_SCHEMA.field("blob_versioned_hashes").type,
    "authorizations": TRANSACTIONS_SCHEMA.field("authorization_list").type,
}
_COLUMN_NAMES = {
    "max_fee": "max_fee_per_gas",
    "max_priority_fee": "max_priority_fee_per_gas",
    "max_blob_fee": "max_fee_per_blob_gas",
    "blob_hashes": "blob_versioned_hashes",
    "authorizations": "authorization_list",
}


@dataclass
class _Derived:
    """Columns of the transactions table whose value depends on the transaction type."""

    type: pa.Array
    gas_price: pa.Array
    max_fee: pa.Array
    max_priority_fee: pa.Array
    max_blob_fee: pa.Array
    r: pa.Array
    s: pa.Array
    v_parity: pa.Array
    chain_id: pa.Array
    access_list: pa.Array
    blob_hashes: pa.Array
    authorizations: pa.Array


class _FieldError(Exception):
    def __init__(self, column: str, value: Any, reason: str) -> None:
        super().__init__(reason)
        self.column, self.value, self.reason = column, value, reason


def _derive_all(col: "Columns", txs: list[dict]) -> _Derived:
    fast = _derive_columns(txs)
    if fast is not None:
        return fast
    # An unknown type, or a value to name in an error: transaction by transaction.
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
    columns = zip(*rows, strict=True) if rows else ([] for _ in DERIVED_TYPES)
    return _Derived(
        *(
            col.array(_COLUMN_NAMES.get(name, name), values, type_)
            for (name, type_), values in zip(DERIVED_TYPES.items(), columns, strict=True)
        )
    )


def _derive_columns(txs: list[dict]) -> _Derived | None:
    """`_derive` for a whole column at once, when every type is known (0 to 4) and every
    value is well formed; None otherwise."""

    def lists(t: np.ndarray) -> tuple[pa.Array, pa.Array, pa.Array] | None:
        try:
            rows = [_type_lists(tx, tt) for tx, tt in zip(txs, t.tolist(), strict=True)]
        except CONVERSION_ERRORS:
            return None
        access, hashes, auths = zip(*rows, strict=True) if rows else ([], [], [])
        return (
            pa.array(access, DERIVED_TYPES["access_list"]),
            pa.array(hashes, DERIVED_TYPES["blob_hashes"]),
            pa.array(auths, DERIVED_TYPES["authorizations"]),
        )

    return derive_columns(lambda key: [tx.get(key) for tx in txs], lists)


def derive_columns(
    field: Callable[[str], hexdecode.Strings],
    lists: Callable[[np.ndarray], tuple[pa.Array, pa.Array, pa.Array] | None],
) -> _Derived | None:
    """The type-dependent columns from the transactions' JSON fields (`field(key)`: one
    value or None per transaction) and `lists(types)`: their access lists, blob hashes and
    authorizations. None when a type is unknown or a value is not well formed."""
    types = hexdecode.uint64(field("type"), nullable=True)
    if types is None:
        return None
    t = types.fill_null(0).to_numpy()  # no type: legacy
    if len(t) and t.max() > 4:
        return None
    fees = [
        hexdecode.decimal128(field(key), nullable=True)
        for key in ("gasPrice", "maxFeePerGas", "maxPriorityFeePerGas", "maxFeePerBlobGas")
    ]
    r = hexdecode.quantity_bytes(field("r"), 32)
    s = hexdecode.quantity_bytes(field("s"), 32)
    ints = [hexdecode.uint64(field(key), nullable=True) for key in ("v", "yParity", "chainId")]
    if r is None or s is None or any(a is None for a in (*fees, *ints)):
        return None
    gas_price, max_fee, priority_fee, blob_fee = fees
    gas_priced, dynamic, blob = t < 2, t >= 2, t == 3
    missing = lambda array, rows: bool((array.is_null().to_numpy(False) & rows).any())  # noqa: E731
    if (
        missing(gas_price, gas_priced)
        or missing(max_fee, dynamic)
        or missing(priority_fee, dynamic)
        or missing(blob_fee, blob)
    ):
        return None
    v, y_parity, chain = ints
    v_n = v.fill_null(0).to_numpy()
    legacy, typed = t == 0, t >= 1
    # Typed transactions carry yParity (older nodes only v, which then is the parity).
    parity_source = pc.coalesce(y_parity, v)
    if missing(v, legacy) or missing(parity_source, typed) or missing(chain, typed):
        return None
    eip155 = legacy & (v_n >= 35)  # v = chain_id * 2 + 35 + parity
    parity = np.where(
        typed,
        parity_source.fill_null(0).to_numpy() == 1,
        np.where(eip155, (v_n - 35) % 2 == 1, (v_n == 1) | (v_n == 28)),
    )
    chain_n = np.where(
        chain.is_null().to_numpy(False), (v_n - 35) // 2, chain.fill_null(0).to_numpy()
    )
    listed = lists(t)
    if listed is None:
        return None
    access, hashes, auths = listed
    null_wei = pa.nulls(len(t), WEI)
    return _Derived(
        type=pa.array(t.astype(np.int32)),
        gas_price=pc.if_else(gas_priced, gas_price, null_wei),
        max_fee=pc.if_else(gas_priced, gas_price, max_fee),
        max_priority_fee=pc.if_else(gas_priced, null_wei, priority_fee),
        max_blob_fee=pc.if_else(blob, blob_fee, null_wei),
        r=r,
        s=s,
        v_parity=pa.array(parity, pa.bool_()),
        chain_id=pa.array(chain_n, pa.uint64(), mask=legacy & ~eip155),
        access_list=access,
        blob_hashes=hashes,
        authorizations=auths,
    )


def _type_lists(tx: dict, t: int) -> tuple[list | None, list | None, list | None]:
    """Access list, blob hashes and authorizations of one transaction of known type `t`."""
    access = None
    if t:
        value = tx.get("accessList")
        access = _access_list(value) if value else _EMPTY
    hashes = [fixed(h, 32) for h in tx.get("blobVersionedHashes") or _EMPTY] if t == 3 else None
    auths = [_authorization(a) for a in tx.get("authorizationList") or _EMPTY] if t == 4 else None
    return access, hashes, auths


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
        column, value = "r", tx.get("r")
        r = quantity32(value)
        column, value = "s", tx.get("s")
        s = quantity32(value)
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


def timestamps_array(nanos: list[int]) -> pa.Array:
    return pa.array(nanos, pa.int64()).view(TIMESTAMP)


def _unpack(raw: Any) -> tuple[dict, list]:
    block = getattr(raw, "block", None)
    if block is not None:
        return block, list(getattr(raw, "receipts", None) or _EMPTY)
    block, receipts = raw
    return block, list(receipts or _EMPTY)
