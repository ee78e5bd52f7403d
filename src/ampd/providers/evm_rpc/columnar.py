"""The three tables made straight from a chunk parsed into Arrow (`arrow_answers.BlockColumns`).

The same record batches as `convert.convert` makes of the chunk's dicts, column by column
from the parsed string columns, with no Python object per value. It takes the common forms
only: whenever a value is missing, malformed or in a rare legal form (a quantity padded with
zeros, an unknown transaction type, EIP-7702 authorizations), `convert_columns` returns None
and the caller converts the chunk's dicts with `convert.convert`, which accepts the rare
forms and names the bad value in its ConversionError.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ampd.providers.evm_rpc import hexdecode
from ampd.providers.evm_rpc.arrow_answers import BlockColumns, field, flat
from ampd.providers.evm_rpc.convert import (
    DERIVED_TYPES,
    ZERO_HASH,
    BlockHeader,
    SharedColumns,
    derive_columns,
    rows_of,
    timestamps_array,
)
from ampd.providers.evm_rpc.schema import (
    ACCESS_LIST_ENTRY,
    BLOCKS_SCHEMA,
    LOGS_SCHEMA,
    TRANSACTIONS_SCHEMA,
)

__all__ = ["convert_columns", "headers_of"]

_NS = 1_000_000_000


class _Declined(Exception):
    """A value the column-wise conversion does not take; the general one will."""


def _need(array: pa.Array | None) -> pa.Array:
    if array is None:
        raise _Declined
    return array


def convert_columns(chunk: BlockColumns) -> dict[str, pa.RecordBatch] | None:
    """`{"blocks", "transactions", "logs"}` record batches of a checked chunk, or None when
    it holds a value only the general conversion takes."""
    try:
        shared = _shared(chunk.blocks)
        txs, tx_counts = flat(field(chunk.blocks, "transactions"))
        receipts, _ = flat(chunk.receipts)
        row_block, positions = rows_of(tx_counts)
        transactions = _transactions(txs, receipts, row_block, positions, shared)
        return {
            "blocks": _blocks(chunk.blocks, shared),
            "transactions": transactions,
            "logs": _logs(receipts, transactions.column("tx_hash"), row_block, positions, shared),
        }
    except _Declined:
        return None


def headers_of(chunk: BlockColumns) -> list[BlockHeader] | None:
    """What a file records of each block (as `convert.block_headers`), or None when a
    timestamp is not a plain quantity."""
    seconds = hexdecode.uint64(field(chunk.blocks, "timestamp"))
    if seconds is None:
        return None
    return [
        BlockHeader(number=n, hash=h, parent_hash=p, timestamp=t)
        for n, h, p, t in zip(
            chunk.numbers,
            field(chunk.blocks, "hash").to_pylist(),
            field(chunk.blocks, "parentHash").to_pylist(),
            seconds.to_pylist(),
            strict=True,
        )
    ]


# -- tables ---------------------------------------------------------------------------------


def _shared(blocks: pa.StructArray) -> SharedColumns:
    seconds = _need(hexdecode.uint64(field(blocks, "timestamp"))).to_numpy()
    if len(seconds) and seconds.max() >= 2**63 // _NS:
        raise _Declined
    return SharedColumns(
        numbers=_need(hexdecode.uint64(field(blocks, "number"))),
        timestamps=timestamps_array(seconds.astype(np.int64) * _NS),
        hashes=_need(hexdecode.fixed_binary(field(blocks, "hash"), 32)),
    )


def _blocks(blocks: pa.StructArray, shared: SharedColumns) -> pa.RecordBatch:
    f = lambda name: field(blocks, name)  # noqa: E731
    fixed = lambda name, width=32, nullable=False: _need(  # noqa: E731
        hexdecode.fixed_binary(f(name), width, nullable)
    )
    u64 = lambda name, nullable=False: _need(hexdecode.uint64(f(name), nullable))  # noqa: E731
    wei = lambda values, nullable=False: _need(hexdecode.decimal128(values, nullable))  # noqa: E731
    arrays = [
        shared.numbers,
        shared.numbers,
        shared.timestamps,
        shared.hashes,
        fixed("parentHash"),
        fixed("sha3Uncles"),
        fixed("miner", 20),
        fixed("stateRoot"),
        fixed("transactionsRoot"),
        fixed("receiptsRoot"),
        _need(hexdecode.binary(f("logsBloom"))),
        wei(f("difficulty").fill_null("0x0")),
        wei(f("totalDifficulty"), True),
        u64("gasLimit"),
        u64("gasUsed"),
        _need(hexdecode.binary(f("extraData"))),
        _need(hexdecode.fixed_binary(f("mixHash").fill_null(ZERO_HASH), 32)),
        _need(hexdecode.uint64(f("nonce").fill_null("0x0"))),
        wei(f("baseFeePerGas"), True),
        fixed("withdrawalsRoot", nullable=True),
        u64("blobGasUsed", True),
        u64("excessBlobGas", True),
        fixed("parentBeaconBlockRoot", nullable=True),
        fixed("requestsHash", nullable=True),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=BLOCKS_SCHEMA)


def _transactions(
    txs: pa.StructArray,
    receipts: pa.StructArray,
    row_block: np.ndarray,
    positions: np.ndarray,
    shared: SharedColumns,
) -> pa.RecordBatch:
    t = lambda name: field(txs, name)  # noqa: E731
    d = derive_columns(t, lambda types: _type_lists(txs, types))
    if d is None:
        raise _Declined
    status = field(receipts, "status")
    plain = pc.or_(pc.is_in(status, pa.array(["0x0", "0x1"])), pc.is_null(status))
    if len(status) and not pc.all(plain).as_py():
        raise _Declined  # a status other than 0x0 / 0x1: the general rule
    block_num, timestamps, block_hashes = shared.take(row_block)
    arrays = [
        block_num,
        block_hashes,
        block_num,
        timestamps,
        pa.array(positions, pa.uint32()),
        _need(hexdecode.fixed_binary(t("hash"), 32)),
        _need(hexdecode.fixed_binary(t("to"), 20, nullable=True)),
        _need(hexdecode.uint64(t("nonce"))),
        d.gas_price,
        _need(hexdecode.uint64(t("gas"))),
        _need(hexdecode.decimal128(t("value"))).cast(pa.utf8()),
        _need(hexdecode.binary(t("input"))),
        d.r,
        d.s,
        d.v_parity,
        d.chain_id,
        _need(hexdecode.uint64(field(receipts, "cumulativeGasUsed"))),
        d.type,
        d.max_fee,
        d.max_priority_fee,
        d.max_blob_fee,
        _need(hexdecode.fixed_binary(t("from"), 20)),
        # Pre-Byzantium receipts carry a state root instead of a status; they succeeded.
        pc.not_equal(status, "0x0").fill_null(True),
        _need(hexdecode.fixed_binary(field(receipts, "root"), 32, nullable=True)),
        d.access_list,
        d.blob_hashes,
        d.authorizations,
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=TRANSACTIONS_SCHEMA)


def _logs(
    receipts: pa.StructArray,
    tx_hashes: pa.Array,
    tx_block: np.ndarray,
    tx_positions: np.ndarray,
    shared: SharedColumns,
) -> pa.RecordBatch:
    logs, counts = flat(field(receipts, "logs"))
    log_tx, _ = rows_of(counts)
    block_num, timestamps, block_hashes = shared.take(tx_block[log_tx])
    log_index = _need(hexdecode.uint64(field(logs, "logIndex")))
    if len(log_index) and pc.max(log_index).as_py() > 0xFFFFFFFF:
        raise _Declined
    arrays = [
        block_num,
        block_hashes,
        block_num,
        timestamps,
        tx_hashes.take(pa.array(log_tx)),
        pa.array(tx_positions[log_tx], pa.uint32()),
        log_index.cast(pa.uint32()),
        _need(hexdecode.fixed_binary(field(logs, "address"), 20)),
        *_topics(field(logs, "topics")),
        _need(hexdecode.binary(field(logs, "data"))),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=LOGS_SCHEMA)


def _topics(topics: pa.ListArray) -> list[pa.Array]:
    """The four topic columns: all topics decoded at once, then spread by position."""
    items, counts = flat(topics)
    if len(counts) and counts.max() > 4:
        raise _Declined
    decoded = _need(hexdecode.fixed_binary(items, 32))
    firsts = np.cumsum(counts) - counts
    return [decoded.take(pa.array(firsts + n, mask=counts <= n)) for n in range(4)]


# -- the list columns of typed transactions --------------------------------------------------


def _type_lists(txs: pa.StructArray, t: np.ndarray) -> tuple[pa.Array, pa.Array, pa.Array] | None:
    """Access lists (typed transactions), blob hashes (type 3) and authorizations (type 4):
    null for the other types, empty where the node sent none."""
    try:
        access = _lists(field(txs, "accessList"), t >= 1, _access_entries, "access_list")
        hashes = _lists(
            field(txs, "blobVersionedHashes"),
            t == 3,
            lambda items: _need(hexdecode.fixed_binary(items, 32)),
            "blob_hashes",
        )
        auths = field(txs, "authorizationList")
        if pc.sum(pc.list_value_length(auths)).as_py():
            return None  # EIP-7702 authorizations: the general conversion
        authorizations = _lists(auths, t == 4, lambda _: pa.array([]), "authorizations")
    except _Declined:
        return None
    return access, hashes, authorizations


def _lists(
    lists: pa.ListArray,
    present: np.ndarray,
    decode: Callable[[pa.Array], pa.Array],
    derived: str,
) -> pa.Array:
    """A list column: the decoded items of the rows where `present` (none where the list is
    null), null where not."""
    type_ = DERIVED_TYPES[derived]
    kept = pc.if_else(pa.array(present), lists, pa.nulls(len(lists), lists.type))
    items, counts = flat(kept)
    offsets = np.zeros(len(counts) + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    values = decode(items) if len(items) else pa.array([], type_.value_type)
    return pa.ListArray.from_arrays(
        pa.array(offsets), values.cast(type_.value_type), type=type_, mask=pa.array(~present)
    )


def _access_entries(entries: pa.StructArray) -> pa.Array:
    keys, counts = flat(field(entries, "storageKeys"))
    offsets = np.zeros(len(counts) + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    key_type = ACCESS_LIST_ENTRY.field("storage_keys").type
    decoded = _need(hexdecode.fixed_binary(keys, 32)) if len(keys) else pa.array([], pa.binary(32))
    storage_keys = pa.ListArray.from_arrays(pa.array(offsets), decoded, type=key_type)
    addresses = _need(hexdecode.fixed_binary(field(entries, "address"), 20))
    return pa.StructArray.from_arrays([addresses, storage_keys], fields=list(ACCESS_LIST_ENTRY))
