"""The evm-rpc kind: Ethereum JSON-RPC providers, the blocks, transactions and logs tables."""

from __future__ import annotations

from collections.abc import Sequence

from ampd.extract.chunk import BlockHeader
from ampd.providers.config import EVM_RPC_KIND, ProviderConfig
from ampd.providers.evm_rpc.chunks import convert_chunk, fetch_chunk
from ampd.providers.evm_rpc.pool import ProviderPool
from ampd.providers.evm_rpc.schema import TABLES
from ampd.providers.evm_rpc.transport import decode_on_loop_thread
from ampd.providers.kinds import SourceKind

__all__ = ["KIND"]


def _open(
    providers: Sequence[ProviderConfig], max_attempts: int | None, finalized: bool = False
) -> ProviderPool:
    # Finalized-only datasets ask the finalized head; the blocks are asked as any others.
    return ProviderPool(providers, max_attempts=max_attempts)


async def _head(pool: ProviderPool, finalized: bool) -> int:
    return await pool.head(finalized=finalized)


async def _header(pool: ProviderPool, number: int) -> BlockHeader | None:
    block = await pool.call("eth_getBlockByNumber", [hex(number), False])
    if block is None:
        return None
    return BlockHeader(
        number, block["hash"], block["parentHash"], int(block.get("timestamp") or "0x0", 16)
    )


KIND = SourceKind(
    name=EVM_RPC_KIND,
    tables=TABLES,
    open_pool=_open,
    fetch=fetch_chunk,
    convert=convert_chunk,
    head=_head,
    header=_header,
    in_fetch_process=decode_on_loop_thread,
)
