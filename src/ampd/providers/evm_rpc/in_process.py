"""The evm-rpc kind's chunks fetched and converted in this process (no fetch processes):
what `ampd dump --processes 0` and the tests' extractions use."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from ampd.extract.chunk import Chunk
from ampd.providers.evm_rpc.blocks import RawBlock
from ampd.providers.evm_rpc.convert import block_headers, convert

__all__ = ["BlockSource", "InProcessSource", "chunk_source"]


class BlockSource(Protocol):
    """A provider (client or pool): raw blocks with their receipts."""

    async def fetch_blocks(self, numbers: Sequence[int]) -> list[RawBlock]: ...


class InProcessSource:
    """Fetch on the event loop, convert on a thread of this process."""

    def __init__(self, source: BlockSource) -> None:
        self.source = source

    async def chunk(self, numbers: Sequence[int]) -> Chunk:
        raw = await self.source.fetch_blocks(numbers)
        return await asyncio.to_thread(_convert, raw)

    async def __aenter__(self) -> InProcessSource:
        await self.source.__aenter__()  # type: ignore[attr-defined]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.source.__aexit__(*exc)  # type: ignore[attr-defined]


def chunk_source(pool: object) -> object:
    """`pool` as a ChunkSource: itself if it makes chunks (the fetch processes), else its
    blocks converted in this process."""
    return pool if hasattr(pool, "chunk") else InProcessSource(pool)  # type: ignore[arg-type]


def _convert(raw: list[RawBlock]) -> Chunk:
    return Chunk(convert(raw), block_headers(raw))
