"""Firehose blocks (sf.ethereum.type.v2.Block) -> Arrow record batches for the four tables.

Rows follow Amp's firehose conversion: one per block header; one per transaction trace; one
per call whose state was kept (`state_reverted` calls, and so all calls of a failed
transaction, are left out), in the transaction's call order; one per log of a kept call, in
call order and then the call's log order. Rows are in block order, then transaction order.
Logs come from the calls, not the receipt, so a block without call traces has no logs.

Errors are ConversionErrors naming the block, table, column and value: a block without a
header, timestamp or difficulty; a hash, address or topic of the wrong length; a log with more
than four topics; a difficulty, total difficulty or call value beyond Decimal128(38, 0); a base
fee beyond UInt64; a transaction value beyond 256 bits. A transaction's gas price and fee caps
beyond Decimal128(38, 0) are nulls instead, as in Amp: chains have sent nonsense values there.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress
from operator import attrgetter

import numpy as np
import pyarrow as pa

from ampd.extract.chunk import BlockHeader, ConversionError
from ampd.providers.firehose.columns import (
    Rows,
    amounts,
    big_ints,
    decimals,
    fixed,
    fixed_or_null,
    timestamps,
    topics,
)
from ampd.providers.firehose.proto import ethereum_pb2
from ampd.providers.firehose.tables import (
    BLOCKS_SCHEMA,
    CALLS_SCHEMA,
    HASH,
    LOGS_SCHEMA,
    TRANSACTIONS_SCHEMA,
)

__all__ = ["BlockHeader", "ConversionError", "block_headers", "convert"]

_U64 = pa.uint64()
_U32 = pa.uint32()
_I32 = pa.int32()
_BOOL = pa.bool_()
_BINARY = pa.binary()
_TRANSACTION_TRACES = attrgetter("transaction_traces")


def convert(blocks: Sequence[ethereum_pb2.Block]) -> dict[str, pa.RecordBatch]:
    """Convert Firehose blocks to `{"blocks", "transactions", "calls", "logs"}` record batches,
    each in its table's schema. Raises ConversionError for a value that does not fit."""
    headers = _headers(blocks)
    numbers = [h.number for h in headers]
    shared, blocks_batch = _blocks_batch(headers, numbers)

    trace_lists = list(map(_TRANSACTION_TRACES, blocks))
    txs = [tx for each in trace_lists for tx in each]
    tx_block = _parents(list(map(len, trace_lists)))
    tx_cols = _fields(txs, _TX_FIELDS)

    call_lists = tx_cols["calls"]
    calls = [call for each in call_lists for call in each]
    call_tx = _parents(list(map(len, call_lists)))
    call_cols = _fields(calls, _CALL_FIELDS)
    reverted = call_cols["state_reverted"]
    if True in reverted:  # leave out the calls whose state was reverted
        keep = [not r for r in reverted]
        call_cols = {name: list(compress(col, keep)) for name, col in call_cols.items()}
        calls = list(compress(calls, keep))
        call_tx = call_tx[np.array(keep, np.bool_)]

    log_lists = call_cols["logs"]
    logs = [log for each in log_lists for log in each]
    log_tx = call_tx[_parents(list(map(len, log_lists)))]

    transactions = _transactions_batch(
        txs, tx_cols, Rows("transactions", numbers, tx_block), shared
    )
    tx_index = transactions.column("tx_index")
    tx_hash = transactions.column("tx_hash")
    call_rows = Rows("calls", numbers, tx_block[call_tx])
    log_rows = Rows("logs", numbers, tx_block[log_tx])
    return {
        "blocks": blocks_batch,
        "transactions": transactions,
        "calls": _calls_batch(
            calls, call_cols, call_rows, shared, _take(tx_index, tx_hash, call_tx)
        ),
        "logs": _logs_batch(logs, log_rows, shared, _take(tx_index, tx_hash, log_tx)),
    }


def block_headers(blocks: Sequence[ethereum_pb2.Block]) -> list[BlockHeader]:
    """Number, 0x-hex hash and parent hash, and timestamp in seconds of each block."""
    headers = _headers(blocks)
    rows = Rows("blocks", [h.number for h in headers])
    hashes = [h.hash for h in headers]
    parents = [h.parent_hash for h in headers]
    fixed(rows, "hash", hashes, 32)
    fixed(rows, "parent_hash", parents, 32)
    return [
        BlockHeader(h.number, "0x" + hash_.hex(), "0x" + parent.hex(), h.timestamp.seconds)
        for h, hash_, parent in zip(headers, hashes, parents, strict=True)
    ]


def _headers(blocks: Sequence[ethereum_pb2.Block]) -> list:
    """Each block's header; a ConversionError for one without a header or timestamp."""
    for block in blocks:
        if not block.HasField("header"):
            raise ConversionError(block.number, "blocks", "block_num", None, "block has no header")
        if not block.header.HasField("timestamp"):
            raise ConversionError(block.number, "blocks", "timestamp", None, "missing")
    return [block.header for block in blocks]


# The fields read from each message, in one pass per table (for a BigInt, its bytes: whether
# it is set is asked only where they are empty).
_HEADER_FIELDS = (
    "hash",
    "parent_hash",
    "uncle_hash",
    "coinbase",
    "state_root",
    "transactions_root",
    "receipt_root",
    "logs_bloom",
    "gas_limit",
    "gas_used",
    "extra_data",
    "mix_hash",
    "nonce",
    "withdrawals_root",
    "parent_beacon_root",
    "timestamp.seconds",
    "difficulty.bytes",
    "total_difficulty.bytes",
    "base_fee_per_gas.bytes",
)
_TX_FIELDS = (
    "index",
    "hash",
    "to",
    "nonce",
    "gas_limit",
    "input",
    "v",
    "r",
    "s",
    "gas_used",
    "type",
    "from",
    "status",
    "return_data",
    "public_key",
    "begin_ordinal",
    "end_ordinal",
    "calls",
    "gas_price.bytes",
    "value.bytes",
    "max_fee_per_gas.bytes",
    "max_priority_fee_per_gas.bytes",
)
_CALL_FIELDS = (
    "index",
    "parent_index",
    "depth",
    "call_type",
    "caller",
    "address",
    "gas_limit",
    "gas_consumed",
    "return_data",
    "input",
    "suicide",
    "executed_code",
    "begin_ordinal",
    "end_ordinal",
    "state_reverted",
    "logs",
    "value.bytes",
)
_LOG_FIELDS = ("blockIndex", "address", "topics", "data")


def _fields(messages: list, names: tuple[str, ...]) -> dict[str, Sequence]:
    """Each named field of every message, as one sequence per field."""
    # One getter for all fields reads each message once, which is faster than a pass per field.
    columns = (
        zip(*map(attrgetter(*names), messages), strict=True) if messages else [()] * len(names)
    )
    return dict(zip(names, columns, strict=True))


def _parents(counts: list[int]) -> np.ndarray:
    """For parents with `counts` children each: the parent of each child, in order."""
    return np.repeat(np.arange(len(counts)), np.asarray(counts, np.int64))


def _take(tx_index: pa.Array, tx_hash: pa.Array, rows_tx: np.ndarray) -> tuple[pa.Array, ...]:
    indices = pa.array(rows_tx, pa.int64())
    return tx_index.take(indices), tx_hash.take(indices)


@dataclass(frozen=True)
class _Shared:
    """The block columns every table repeats: block number, block hash, timestamp."""

    numbers: pa.Array
    hashes: pa.Array
    timestamps: pa.Array

    def take(self, rows: Rows) -> tuple[pa.Array, pa.Array, pa.Array]:
        indices = pa.array(rows.row_block, pa.int64())
        return (
            self.numbers.take(indices),
            self.hashes.take(indices),
            self.timestamps.take(indices),
        )


def _blocks_batch(headers: list, numbers: list[int]) -> tuple[_Shared, pa.RecordBatch]:
    rows = Rows("blocks", numbers)
    f = _fields(headers, _HEADER_FIELDS)

    def big(field: str) -> list[bytes | None]:
        return big_ints(headers, field, f[field + ".bytes"])

    def hashes(column: str, field: str) -> pa.Array:
        return fixed(rows, column, f[field], 32)

    shared = _Shared(
        numbers=pa.array(numbers, _U64),
        hashes=hashes("hash", "hash"),
        timestamps=timestamps(rows, "timestamp", f["timestamp.seconds"]),
    )
    arrays = [
        shared.numbers,
        shared.numbers,
        shared.timestamps,
        shared.hashes,
        hashes("parent_hash", "parent_hash"),
        hashes("ommers_hash", "uncle_hash"),
        fixed(rows, "miner", f["coinbase"], 20),
        hashes("state_root", "state_root"),
        hashes("transactions_root", "transactions_root"),
        hashes("receipt_root", "receipt_root"),
        pa.array(f["logs_bloom"], _BINARY),
        decimals(rows, "difficulty", big("difficulty"), nullable=False),
        decimals(rows, "total_difficulty", big("total_difficulty")),
        pa.array(f["gas_limit"], _U64),
        pa.array(f["gas_used"], _U64),
        pa.array(f["extra_data"], _BINARY),
        hashes("mix_hash", "mix_hash"),
        pa.array(f["nonce"], _U64),
        # A BigInt in Firehose; like Amp, it must fit a UInt64.
        decimals(rows, "base_fee_per_gas", big("base_fee_per_gas"), max_bytes=8),
        fixed_or_null(rows, "withdrawals_root", f["withdrawals_root"], 32),
        pa.array(_optional_ints(headers, "blob_gas_used"), _U64),
        pa.array(_optional_ints(headers, "excess_blob_gas"), _U64),
        fixed_or_null(rows, "parent_beacon_root", f["parent_beacon_root"], 32),
        # Firehose's header has no requests hash.
        pa.nulls(len(headers), HASH),
    ]
    return shared, pa.RecordBatch.from_arrays(arrays, schema=BLOCKS_SCHEMA)


def _optional_ints(messages: list, field: str) -> list[int | None]:
    return [getattr(m, field) if m.HasField(field) else None for m in messages]


def _transactions_batch(
    txs: list, f: dict[str, Sequence], rows: Rows, shared: _Shared
) -> pa.RecordBatch:
    def big(field: str) -> list[bytes | None]:
        return big_ints(txs, field, f[field + ".bytes"])

    def fee(field: str) -> pa.Array:
        return decimals(rows, field, big(field), null_on_overflow=True)

    block_num, block_hash, timestamp = shared.take(rows)
    arrays = [
        block_num,
        block_hash,
        block_num,
        timestamp,
        pa.array(f["index"], _U32),
        fixed(rows, "tx_hash", f["hash"], 32),
        fixed_or_null(rows, "to", f["to"], 20),
        pa.array(f["nonce"], _U64),
        fee("gas_price"),
        pa.array(f["gas_limit"], _U64),
        amounts(rows, "value", big("value")),
        pa.array(f["input"], _BINARY),
        pa.array(f["v"], _BINARY),
        pa.array(f["r"], _BINARY),
        pa.array(f["s"], _BINARY),
        pa.array(f["gas_used"], _U64),
        pa.array(f["type"], _I32),
        fee("max_fee_per_gas"),
        fee("max_priority_fee_per_gas"),
        fixed(rows, "from", f["from"], 20),
        pa.array(f["status"], _I32),
        pa.array(f["return_data"], _BINARY),
        pa.array(f["public_key"], _BINARY),
        pa.array(f["begin_ordinal"], _U64),
        pa.array(f["end_ordinal"], _U64),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=TRANSACTIONS_SCHEMA)


def _calls_batch(
    calls: list, f: dict[str, Sequence], rows: Rows, shared: _Shared, tx: tuple[pa.Array, ...]
) -> pa.RecordBatch:
    block_num, block_hash, timestamp = shared.take(rows)
    tx_index, tx_hash = tx
    arrays = [
        block_num,
        block_hash,
        block_num,
        timestamp,
        tx_index,
        tx_hash,
        pa.array(f["index"], _U32),
        pa.array(f["parent_index"], _U32),
        pa.array(f["depth"], _U32),
        pa.array(f["call_type"], _I32),
        fixed(rows, "caller", f["caller"], 20),
        fixed(rows, "address", f["address"], 20),
        decimals(rows, "value", big_ints(calls, "value", f["value.bytes"])),
        pa.array(f["gas_limit"], _U64),
        pa.array(f["gas_consumed"], _U64),
        pa.array(f["return_data"], _BINARY),
        pa.array(f["input"], _BINARY),
        pa.array(f["suicide"], _BOOL),
        pa.array(f["executed_code"], _BOOL),
        pa.array(f["begin_ordinal"], _U64),
        pa.array(f["end_ordinal"], _U64),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=CALLS_SCHEMA)


def _logs_batch(
    logs: list, rows: Rows, shared: _Shared, tx: tuple[pa.Array, ...]
) -> pa.RecordBatch:
    f = _fields(logs, _LOG_FIELDS)
    block_num, block_hash, timestamp = shared.take(rows)
    tx_index, tx_hash = tx
    arrays = [
        block_num,
        block_hash,
        block_num,
        timestamp,
        tx_hash,
        tx_index,
        pa.array(f["blockIndex"], _U32),
        fixed(rows, "address", f["address"], 20),
        *topics(rows, f["topics"]),
        pa.array(f["data"], _BINARY),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=LOGS_SCHEMA)
