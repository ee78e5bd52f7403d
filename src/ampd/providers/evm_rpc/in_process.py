"""Chunks of any source of raw evm-rpc blocks (a client, a pool, or a test's own source
with `fetch_blocks`), fetched the general way and converted in this process: what the
tests' extractions use. `ampd dump` and the worker use extract/in_process.py, by kind."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from ampd.extract.chunk import Chunk
from ampd.providers.evm_rpc.blocks import RawBlock
from ampd.providers.evm_rpc.convert import block_headers, convert

__all__ = ["BlockSource", "InProcessSource"]


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


def _convert(raw: list[RawBlock]) -> Chunk:
    return Chunk(convert(raw), block_headers(raw))
