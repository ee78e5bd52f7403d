"""A chunk of blocks fetched and converted to the three tables, by the fastest way that holds.

`fetch_chunk` first asks the provider for the chunk's blocks and its receipts in batches of
one method each (`eth_getBlockByNumber` batches, then `eth_getBlockReceipts` batches, as
many calls per request as `rpc_batch_size`) and parses the answers straight into Arrow
(arrow_answers.py). When anything is not as that path expects (a failed request, an answer
of another shape, receipts that do not match, a provider on WebSocket or IPC, receipts per
transaction), it fetches the chunk the general way: `fetch_blocks`, with its retries,
failover and exact error messages. An answer of another shape turns the fast path off for
that provider, so it is not asked twice for every chunk.

`convert_chunk` converts either form; the Arrow form falls back to the dicts' conversion
for values only that one takes (see columnar.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import pyarrow as pa

from ampd.extract.chunk import BlockHeader
from ampd.providers.evm_rpc.arrow_answers import (
    SHAPE_MISMATCH,
    BlockColumns,
    check_blocks,
    parse_chunk,
)
from ampd.providers.evm_rpc.blocks import RawBlock
from ampd.providers.evm_rpc.client import EvmRpcClient
from ampd.providers.evm_rpc.columnar import convert_columns, headers_of
from ampd.providers.evm_rpc.convert import block_headers, convert
from ampd.providers.evm_rpc.errors import RpcError
from ampd.providers.evm_rpc.pool import ProviderPool

__all__ = ["Declined", "convert_chunk", "fetch_chunk", "fetch_columns"]

log = logging.getLogger("ampd.providers.evm_rpc")

Chunk = BlockColumns | list[RawBlock]

_METHODS = {"blocks": "eth_getBlockByNumber", "receipts": "eth_getBlockReceipts"}


@dataclass(frozen=True)
class Declined:
    """Why the Arrow path did not deliver a chunk. `lasting`: it never will for this
    provider; `fault`: the provider failed (a failed request, an error or a mismatch), which
    the general path then retries."""

    reason: str
    lasting: bool = False
    fault: bool = True


async def fetch_chunk(pool: ProviderPool, numbers: Sequence[int]) -> Chunk:
    """The blocks `numbers` (distinct) with their receipts, as Arrow columns when the
    provider's answers allow it, else as raw blocks from `pool.fetch_blocks`."""
    client = pool.next_client()
    if client is not None and client.arrow_declined is None:
        chunk = await fetch_columns(client, numbers)
        if isinstance(chunk, BlockColumns):
            return chunk
        if chunk.lasting:
            if client.arrow_declined is not None:  # a chunk in flight meanwhile told first
                return await pool.fetch_blocks(numbers)
            client.arrow_declined = chunk.reason
            log.info(
                "provider '%s': reading its answers the general way from now on (%s)",
                client.name,
                chunk.reason,
            )
        elif chunk.fault:
            log.warning(
                "provider '%s': blocks %d..%d: %s; fetching them again the general way",
                client.name,
                min(numbers),
                max(numbers),
                chunk.reason,
            )
    return await pool.fetch_blocks(numbers)


def convert_chunk(chunk: Chunk) -> tuple[dict[str, pa.RecordBatch], list[BlockHeader]]:
    """The chunk's record batches and block headers. Raises ConversionError."""
    if isinstance(chunk, BlockColumns):
        batches, headers = convert_columns(chunk), headers_of(chunk)
        if batches is not None and headers is not None:
            return batches, headers
        chunk = chunk.raw_blocks()  # a value only the general conversion takes (or names)
    return convert(chunk), block_headers(chunk)


async def fetch_columns(client: EvmRpcClient, numbers: Sequence[int]) -> BlockColumns | Declined:
    """The chunk from one provider, parsed into Arrow and checked, or why not."""
    if client.config.fetch_receipts_per_tx:
        return Declined("receipts are fetched per transaction", lasting=True, fault=False)
    if not client.sends_bytes:
        return Declined("not an HTTP(S) provider", lasting=True, fault=False)
    numbers = list(numbers)
    if not numbers or len(set(numbers)) != len(numbers):
        return Declined("no blocks, or a block asked for twice", fault=False)
    if max(numbers) > client.known_head:
        try:
            await client.shared_head()
        except RpcError as exc:
            return Declined(f"head: {exc}", fault=False)  # the general path reports it
        if max(numbers) > client.known_head:
            return Declined("a block above the head", fault=False)
    size = client.batch_size
    groups = [
        (kind, numbers[k : k + size]) for k in range(0, len(numbers), size) for kind in _METHODS
    ]
    ids = [client.new_ids(len(group)) for _, group in groups]
    answers = await asyncio.gather(
        *(_request(client, kind, group, i) for (kind, group), i in zip(groups, ids, strict=True))
    )
    for answer in answers:
        if isinstance(answer, Declined):
            return answer
    bodies: list[bytes] = answers  # type: ignore[assignment]
    flat_ids = [[n for i in ids[k::2] for n in i] for k in (0, 1)]
    parsed = parse_chunk(bodies[0::2], bodies[1::2], *flat_ids)
    if isinstance(parsed, str):
        # A null result (a block the node lacks) or an error answer is the general path's to
        # judge and retry; results of another shape will not change.
        shape = parsed.startswith(SHAPE_MISMATCH)
        return Declined(parsed, lasting=shape and all(_well_answered(body) for body in bodies))
    chunk = BlockColumns(numbers, *parsed)
    problem = check_blocks(chunk)
    # A mismatch may be a reorg between the two calls: not lasting; the general path,
    # which fetches such blocks again, tells the two apart.
    return chunk if problem is None else Declined(problem)


async def _request(
    client: EvmRpcClient, kind: str, numbers: list[int], ids: list[int]
) -> bytes | Declined:
    method = _METHODS[kind]
    params = (lambda n: [hex(n), True]) if kind == "blocks" else (lambda n: [hex(n)])
    body = orjson.dumps(
        [
            {"jsonrpc": "2.0", "id": id_, "method": method, "params": params(n)}
            for id_, n in zip(ids, numbers, strict=True)
        ]
    )
    answer = await client.post_bytes(body)
    if isinstance(answer, str):
        return Declined(f"{method}: {answer}")
    return answer


def _well_answered(answer: bytes) -> bool:
    """Whether a batch answer the Arrow path refused has a result for every call (so the
    shape of the results is what it could not take)."""
    try:
        decoded = orjson.loads(answer)
    except ValueError:
        return False
    return isinstance(decoded, list) and all(
        isinstance(a, dict) and a.get("result") is not None for a in decoded
    )
