"""JSON-RPC batch answers parsed straight into Arrow arrays, without Python objects per value.

Decoding a batch answer into Python dicts, reading each field back out of them and freeing
them is most of what an extractor spends on a block beyond the node's own work. pyarrow's
JSON reader instead parses an answer into columns of strings in C++: a batch answer
`[{"id":..,"result":..},..]` is read, with the others of its chunk, as the one-row document
`{"b": [<block answers>], "r": [<receipts answers>]}` against an explicit schema that names
the fields the tables need (any other field is skipped). One parse per chunk: each parse
costs a thread start in pyarrow.

`BlockColumns` is a chunk of blocks in that form: the blocks (`eth_getBlockByNumber(n,
true)`) and each block's receipts (`eth_getBlockReceipts`). `check_blocks` holds it to the
same rules as `blocks.py` does for dicts (right numbers, whole transactions, receipts in
transaction order and of the same block); anything it cannot vouch for makes it return a
reason, and the caller takes the general path instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from ampd.providers.evm_rpc import hexdecode
from ampd.providers.evm_rpc.blocks import RawBlock

__all__ = ["CHUNK_ANSWERS", "SHAPE_MISMATCH", "BlockColumns", "check_blocks", "parse_chunk"]

_S = pa.string()


def _struct(*names: str, **nested: pa.DataType) -> pa.StructType:
    return pa.struct([pa.field(n, _S) for n in names] + [pa.field(k, t) for k, t in nested.items()])


# The JSON fields the conversion reads (convert.py), all as strings as nodes send them.
TRANSACTION = _struct(
    "type", "hash", "from", "to", "nonce", "gas", "value", "input", "gasPrice",
    "maxFeePerGas", "maxPriorityFeePerGas", "maxFeePerBlobGas", "r", "s", "v", "yParity",
    "chainId",
    accessList=pa.list_(_struct("address", storageKeys=pa.list_(_S))),
    blobVersionedHashes=pa.list_(_S),
    authorizationList=pa.list_(_struct("chainId", "address", "nonce", "yParity", "r", "s")),
)  # fmt: skip
BLOCK = _struct(
    "number", "hash", "parentHash", "sha3Uncles", "miner", "stateRoot", "transactionsRoot",
    "receiptsRoot", "logsBloom", "difficulty", "totalDifficulty", "gasLimit", "gasUsed",
    "timestamp", "extraData", "mixHash", "nonce", "baseFeePerGas", "withdrawalsRoot",
    "blobGasUsed", "excessBlobGas", "parentBeaconBlockRoot", "requestsHash",
    transactions=pa.list_(TRANSACTION),
)  # fmt: skip
LOG = _struct("address", "data", "logIndex", topics=pa.list_(_S))
RECEIPT = _struct(
    "transactionHash", "blockHash", "status", "cumulativeGasUsed", "root", logs=pa.list_(LOG)
)
_ERROR = pa.struct([pa.field("code", pa.int64()), pa.field("message", _S)])


def _answer(result: pa.DataType) -> pa.DataType:
    return pa.list_(pa.struct([("id", pa.int64()), ("result", result), ("error", _ERROR)]))


# One document per chunk: {"b": [every block answer], "r": [every receipts answer]}.
CHUNK_ANSWERS = pa.schema([("b", _answer(BLOCK)), ("r", _answer(pa.list_(RECEIPT)))])


# How parse_chunk's refusal starts when the JSON is of another shape than the schema's.
SHAPE_MISMATCH = "answer does not fit the expected JSON shape"


_SPACE = frozenset(b" \t\r\n")


def _trimmed(text: memoryview) -> memoryview:
    start, end = 0, len(text)
    while start < end and text[start] in _SPACE:
        start += 1
    while end > start and text[end - 1] in _SPACE:
        end -= 1
    return text[start:end]


def _items(bodies: Sequence[bytes]) -> list[memoryview] | None:
    """The items of each batch answer array, as views of the answers' text (no copy), the
    empty ones left out; None if an answer is not an array."""
    items = []
    for body in bodies:
        text = _trimmed(memoryview(body))
        if len(text) < 2 or text[0] != ord("[") or text[-1] != ord("]"):
            return None
        inner = _trimmed(text[1:-1])
        if len(inner):
            items.append(inner)
    return items


def _listed(items: list[memoryview]) -> list[bytes | memoryview]:
    """The items with a comma between each two."""
    parts: list[bytes | memoryview] = []
    for item in items:
        parts += (b",", item) if parts else (item,)
    return parts


def _document(blocks: list[memoryview], receipts: list[memoryview]) -> bytes:
    """`{"b": [<block answers>], "r": [<receipts answers>]}`, copied once."""
    return b"".join([b'{"b":[', *_listed(blocks), b'],"r":[', *_listed(receipts), b"]}"])


def parse_chunk(
    block_bodies: Sequence[bytes],
    receipt_bodies: Sequence[bytes],
    block_ids: Sequence[int],
    receipt_ids: Sequence[int],
) -> tuple[pa.Array, pa.Array] | str:
    """The results of a chunk's batch answers (`eth_getBlockByNumber` and
    `eth_getBlockReceipts`), each in the order of its calls' ids, or why not.

    All answers go through one parse. Refused (a reason string): an answer that is not a
    batch array, JSON the schema does not fit (such as a number where a hex string belongs,
    or transaction hashes instead of whole transactions), missing, unknown or repeated ids,
    an error answer, or a null result.
    """
    blocks, receipts = _items(block_bodies), _items(receipt_bodies)
    if blocks is None or receipts is None:
        return "an answer is not a batch array"
    document = _document(blocks, receipts)
    options = pj.ParseOptions(
        explicit_schema=CHUNK_ANSWERS,
        unexpected_field_behavior="ignore",
        newlines_in_values=b"\n" in document,
    )
    read = pj.ReadOptions(use_threads=False, block_size=len(document) + 1)
    try:
        table = pj.read_json(pa.BufferReader(document), read_options=read, parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        return f"{SHAPE_MISMATCH}: {str(exc).splitlines()[0]}"
    if table.num_rows != 1:
        return "answers are not one document"
    found = []
    for name, ids in (("b", block_ids), ("r", receipt_ids)):
        results = _results(table.column(name).chunk(0).values, ids)
        if isinstance(results, str):
            return results
        found.append(results)
    return found[0], found[1]


def _results(answers: pa.StructArray, ids: Sequence[int]) -> pa.Array | str:
    if len(answers) != len(ids):
        return f"{len(answers)} answers for {len(ids)} calls"
    got = pc.struct_field(answers, "id").to_numpy(zero_copy_only=False)
    want = np.asarray(ids, np.int64)
    if not np.array_equal(got, want):
        order = np.argsort(got, kind="stable")
        if not np.array_equal(got[order], np.sort(want)):
            return "answer ids do not match the calls"
        # Answers in another order than asked: put them in call order.
        answers = answers.take(pa.array(order[np.argsort(np.argsort(want))]))
    errors = pc.struct_field(answers, "error")
    if errors.null_count != len(errors):
        return "a call was answered with an error"
    results = pc.struct_field(answers, "result")
    if results.null_count:
        return "a call was answered with null"
    return results


@dataclass(frozen=True)
class BlockColumns:
    """A chunk of blocks as Arrow arrays: one row per block, in the order asked for."""

    numbers: list[int]
    blocks: pa.StructArray  # BLOCK
    receipts: pa.ListArray  # list<RECEIPT>, the block's receipts in transaction order

    def raw_blocks(self) -> list[RawBlock]:
        """The chunk as dicts, for the general conversion (fields absent here are None)."""
        blocks: list[dict[str, Any]] = self.blocks.to_pylist()
        receipts: list[list[dict[str, Any]]] = self.receipts.to_pylist()
        for block in blocks:
            block["transactions"] = block["transactions"] or []
        return [
            RawBlock(n, b, r or []) for n, b, r in zip(self.numbers, blocks, receipts, strict=True)
        ]


def field(array: pa.Array, name: str) -> pa.Array:
    """A struct array's child, offsets and nulls applied (`StructArray.field` applies neither)."""
    return pc.struct_field(array, name)


def flat(lists: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The items of a list array (a null list: no items) and how many each list has."""
    counts = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False)
    return pc.list_flatten(lists), counts.astype(np.int64)


def check_blocks(chunk: BlockColumns) -> str | None:
    """Why the chunk cannot be used as it is, or None when its blocks and receipts are whole.

    The rules of `blocks.block_problem` and the fast path of `blocks.match_receipts`: each
    block is the one asked for, has a hash and whole transactions with hashes, and its
    receipts are exactly its transactions', in order, from the same block.
    """
    blocks = chunk.blocks
    numbers = hexdecode.uint64(field(blocks, "number"))
    if numbers is None or numbers.to_pylist() != chunk.numbers:
        return "a block is not the one asked for"
    hashes = field(blocks, "hash")
    if hashes.null_count:
        return "a block has no hash"
    txs_lists = field(blocks, "transactions")
    if txs_lists.null_count:
        return "a block has no transactions list"
    txs, tx_counts = flat(txs_lists)
    tx_hashes = field(txs, "hash")
    if tx_hashes.null_count:
        return "a transaction has no hash"
    receipts, receipt_counts = flat(chunk.receipts)
    if not np.array_equal(tx_counts, receipt_counts):
        return "a block's receipts are not as many as its transactions"
    if not len(txs):
        return None
    if not _all_equal(field(receipts, "transactionHash"), tx_hashes):
        return "receipts are not in transaction order"
    block_of = hashes.take(pa.array(np.repeat(np.arange(len(hashes)), tx_counts)))
    if not _all_equal(field(receipts, "blockHash"), block_of):
        return "a receipt is from another block"
    return None


def _all_equal(a: pa.Array, b: pa.Array) -> bool:
    """Same strings row by row, with no null on either side."""
    return bool(pc.all(pc.equal(a, b), skip_nulls=False).as_py())
