"""JSON-RPC blocks and receipts -> Arrow record batches for the blocks, transactions, logs tables.

Input: raw blocks, each `eth_getBlockByNumber(n, true)` (hex strings) with its receipts in
transaction order: any object with `.block` and `.receipts`, or a `(block, receipts)` pair.
Output: one record batch per table, rows ordered by block then index (spec/evm-rpc.md).

Built column by column for speed: each column is one list comprehension over the JSON objects
and one `pa.array` call. Only when that fails do we walk the column again, value by value, to
name the block, the table and the column in the ConversionError.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ampd.providers.evm_rpc.schema import (
    BLOCKS_SCHEMA,
    LOGS_SCHEMA,
    TIMESTAMP,
    TRANSACTIONS_SCHEMA,
    WEI,
)

ZERO_HASH = "0x" + "00" * 32
_ZERO_32 = bytes(32)
_NS = 1_000_000_000
_MAX_DECIMAL = 10**38 - 1
_MAX_U64 = 2**64 - 1
# Types whose signature and fee fields we know. Others (e.g. 126, OP deposits) are kept with a
# zero signature, v_parity false and no chain id.
_KNOWN_TYPES = frozenset((0, 1, 2, 3, 4))
_EMPTY: list = []

_fromhex = bytes.fromhex


class ConversionError(ValueError):
    """A value that cannot be represented in its column. Fatal: a retry fetches the same value."""

    def __init__(self, block_num: int | None, table: str, column: str, value: Any, reason: str):
        self.block_num = block_num
        self.table = table
        self.column = column
        self.value = value
        self.reason = reason
        text = repr(value)
        if len(text) > 100:
            text = text[:97] + "..."
        where = "a block" if block_num is None else f"block {block_num}"
        super().__init__(f"{where}: cannot convert {table}.{column} = {text}: {reason}")


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
    numbers = _Columns("blocks", [None] * len(blocks)).ints("block_num", blocks, "number")
    col = _Columns("blocks", numbers)
    # Per-block values shared by the rows of all tables, taken by row index for the others.
    shared = _Shared(
        numbers=col.array("block_num", numbers, pa.uint64()),
        timestamps=_timestamps(
            col.values("timestamp", [b.get("timestamp") for b in blocks], _seconds_to_ns)
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


def _blocks_batch(col: "_Columns", blocks: list[dict], shared: _Shared) -> pa.RecordBatch:
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
        col.array("mix_hash", col.values("mix_hash", mix_hashes, _fixed32), pa.binary(32)),
        col.array("nonce", col.values("nonce", nonces, _int), pa.uint64()),
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
    col = _Columns("transactions", row_numbers)
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
        col.array("value", col.values("value", [t.get("value") for t in txs], _amount), pa.utf8()),
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
    col = _Columns("logs", row_numbers)
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
        col.array("log_index", col.ints("log_index", logs, "logIndex"), pa.uint32()),
        col.fixed("address", logs, "address", 20),
        *(
            col.array(
                f"topic{n}",
                col.values(f"topic{n}", [t[n] if len(t) > n else None for t in topics], _opt_bytes),
                pa.binary(32),
            )
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


def _derive_all(col: "_Columns", txs: list[dict]) -> _Derived:
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
        if t < 2:
            column, value = "gas_price", tx.get("gasPrice")
            gas_price = _wei(int(value, 16))
            max_fee = gas_price
            priority_fee = None
        else:
            gas_price = None
            column, value = "max_fee_per_gas", tx.get("maxFeePerGas")
            max_fee = _wei(int(value, 16))
            column, value = "max_priority_fee_per_gas", tx.get("maxPriorityFeePerGas")
            priority_fee = _wei(int(value, 16))
        blob_fee = None
        if t == 3:
            column, value = "max_fee_per_blob_gas", tx.get("maxFeePerBlobGas")
            blob_fee = _wei(int(value, 16))
        column, value = "r", tx.get("r")
        r = _quantity32(value)
        column, value = "s", tx.get("s")
        s = _quantity32(value)
        if t == 0:
            column, value = "v_parity", tx.get("v")
            v = int(value, 16)
            if v >= 35:  # EIP-155: v = chain_id * 2 + 35 + parity
                parity = (v - 35) % 2 == 1
                column, value = "chain_id", tx.get("chainId")
                chain_id = (v - 35) // 2 if value is None else _u64(int(value, 16))
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
            chain_id = _u64(int(value, 16))
            column, value = "access_list", tx.get("accessList")
            access_list = _access_list(value) if value else _EMPTY
        blob_hashes = None
        if t == 3:
            column, value = "blob_versioned_hashes", tx.get("blobVersionedHashes")
            blob_hashes = [_fixed(h, 32) for h in value or _EMPTY]
        authorizations = None
        if t == 4:
            column, value = "authorization_list", tx.get("authorizationList")
            authorizations = [_authorization(a) for a in value or _EMPTY]
    except _CONVERSION_ERRORS as exc:
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
        max_fee = None if fee is None else _wei(int(fee, 16))
        column = "max_priority_fee_per_gas"
        priority_fee = None if priority is None else _wei(int(priority, 16))
    except _CONVERSION_ERRORS as exc:
        value = fee if column == "max_fee_per_gas" else priority
        raise _FieldError(column, value, str(exc)) from None
    return (t, None, max_fee, priority_fee, None, _ZERO_32, _ZERO_32, False, None, None, None, None)


def _access_list(entries: list) -> list:
    return [
        {
            "address": _fixed(entry["address"], 20),
            "storage_keys": [_fixed(key, 32) for key in entry.get("storageKeys") or _EMPTY],
        }
        for entry in entries
    ]


def _authorization(auth: dict) -> dict:
    chain_id = int(auth["chainId"], 16)
    return {
        # A signed authorization may name any chain id (it is then skipped on chain); like
        # Amp, store 0 for one beyond UInt64 rather than fail the block.
        "chain_id": chain_id if 0 <= chain_id <= _MAX_U64 else 0,
        "address": _fixed(auth["address"], 20),
        "nonce": _u64(int(auth["nonce"], 16)),
        "y_parity": int(auth["yParity"], 16) != 0,
        "r": _quantity32(auth["r"]),
        "s": _quantity32(auth["s"]),
    }


def _status(receipt: dict) -> bool:
    status = receipt.get("status")
    # Pre-Byzantium receipts carry a state root instead of a status; they succeeded.
    return status is None or status == "0x1" or (status != "0x0" and int(status, 16) == 1)


# -- value conversions ----------------------------------------------------------------------


def _u64(value: int) -> int:
    if not 0 <= value <= _MAX_U64:
        raise ValueError("out of range for UInt64")
    return value


def _wei(value: int) -> int:
    if not 0 <= value <= _MAX_DECIMAL:
        raise ValueError("out of range for Decimal128(38, 0)")
    return value


def _amount(value: str) -> str:
    n = int(value, 16)
    if n < 0:
        raise ValueError("negative amount")
    return str(n)


def _int(value: str) -> int:
    return int(value, 16)


def _seconds_to_ns(value: str) -> int:
    seconds = int(value, 16)
    if not 0 <= seconds < 2**63 // _NS:
        raise ValueError("out of range for Timestamp(Nanosecond)")
    return seconds * _NS


def _fixed32(value: str) -> bytes:
    return _fixed(value, 32)


def _opt_bytes(value: str | None) -> bytes | None:
    return None if value is None else _fromhex(value[2:])


def _fixed(value: str, width: int) -> bytes:
    raw = _fromhex(value[2:])
    if len(raw) != width:
        raise ValueError(f"expected {width} bytes, got {len(raw)}")
    return raw


def _quantity32(value: str) -> bytes:
    # r and s are quantities: the node drops leading zeros, so pad back to 32 bytes.
    raw = _fromhex(value[2:].zfill(64))
    if len(raw) != 32:
        raise ValueError(f"expected at most 32 bytes, got {len(raw)}")
    return raw


def _timestamps(nanos: list[int]) -> pa.Array:
    return pa.array(nanos, pa.int64()).view(TIMESTAMP)


def _unpack(raw: Any) -> tuple[dict, list]:
    block = getattr(raw, "block", None)
    if block is not None:
        return block, list(getattr(raw, "receipts", None) or _EMPTY)
    block, receipts = raw
    return block, list(receipts or _EMPTY)


_CONVERSION_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError)
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError)


class _Columns:
    """Builds one table's columns; on a failure, names the block, the table and the column."""

    def __init__(self, table: str, row_numbers: Sequence[int | None]) -> None:
        self.table = table
        self.row_numbers = row_numbers

    def values(self, column: str, items: list, fn: Callable[[Any], Any]) -> list:
        try:
            return [fn(item) for item in items]
        except _CONVERSION_ERRORS:
            raise self._locate(column, items, fn) from None

    def array(self, column: str, values: list, type_: pa.DataType) -> pa.Array:
        try:
            return pa.array(values, type=type_)
        except _ARROW_ERRORS:
            raise self._locate(column, values, lambda v: pa.array([v], type=type_)) from None

    def ints(self, column: str, rows: list[dict], key: str) -> list[int]:
        try:
            return [int(row[key], 16) for row in rows]
        except _CONVERSION_ERRORS:
            raise self._locate(column, rows, lambda row: int(row[key], 16), key) from None

    def uint64(self, column: str, rows: list[dict], key: str, nullable: bool = False) -> pa.Array:
        if not nullable:
            return self.array(column, self.ints(column, rows, key), pa.uint64())
        try:
            ints = [None if (v := row.get(key)) is None else int(v, 16) for row in rows]
        except _CONVERSION_ERRORS:
            raise self._locate(column, rows, lambda row: int(row[key], 16), key) from None
        return self.array(column, ints, pa.uint64())

    def wei(self, column: str, raw: list[str | None], nullable: bool = False) -> pa.Array:
        if nullable:
            ints = self.values(column, raw, lambda v: None if v is None else int(v, 16))
        else:
            ints = self.values(column, raw, _int)
        array = self.array(column, ints, WEI)  # pyarrow rejects more than 38 digits
        if array.null_count < len(array) and pc.min(array).as_py() < 0:
            raise self._locate(column, raw, lambda v: v is None or _wei(int(v, 16)))
        return array

    def fixed(
        self, column: str, rows: list[dict], key: str, width: int, nullable: bool = False
    ) -> pa.Array:
        return self.array(
            column, self.fixed_values(column, rows, key, width, nullable), pa.binary(width)
        )

    def fixed_values(
        self, column: str, rows: list[dict], key: str, width: int, nullable: bool = False
    ) -> list:
        try:
            if nullable:
                return [None if (v := row.get(key)) is None else _fromhex(v[2:]) for row in rows]
            return [_fromhex(row[key][2:]) for row in rows]
        except _CONVERSION_ERRORS:
            if nullable:
                check = lambda row: row.get(key) is None or _fixed(row[key], width)  # noqa: E731
            else:
                check = lambda row: _fixed(row[key], width)  # noqa: E731
            raise self._locate(column, rows, check, key) from None

    def binary(self, column: str, rows: list[dict], key: str) -> pa.Array:
        try:
            values = [_fromhex(row[key][2:]) for row in rows]
        except _CONVERSION_ERRORS:
            raise self._locate(column, rows, lambda row: _fromhex(row[key][2:]), key) from None
        return self.array(column, values, pa.binary())

    def _locate(
        self, column: str, items: list, fn: Callable[[Any], Any], key: str | None = None
    ) -> ConversionError:
        for i, item in enumerate(items):
            try:
                fn(item)
            except _ARROW_ERRORS + _CONVERSION_ERRORS as exc:
                value = item.get(key) if key is not None and isinstance(item, dict) else item
                reason = "missing" if value is None or isinstance(exc, KeyError) else str(exc)
                return ConversionError(self.row_numbers[i], self.table, column, value, reason)
        return ConversionError(None, self.table, column, None, "conversion failed")
