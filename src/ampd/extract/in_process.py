"""A kind's chunks fetched and converted in this process (no fetch processes): what
`ampd dump --processes 0` and a worker without fetch processes use."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ampd.extract.chunk import BlockHeader, Chunk
from ampd.providers.kinds import SourceKind

__all__ = ["InProcessSource"]


class InProcessSource:
    """Fetch on the event loop, convert on a thread of this process."""

    def __init__(self, kind: SourceKind, pool: Any) -> None:
        self.kind = kind
        self.pool = pool

    async def chunk(self, numbers: Sequence[int]) -> Chunk:
        fetched = await self.kind.fetch(self.pool, numbers)
        batches, headers = await asyncio.to_thread(self.kind.convert, fetched)
        return Chunk(batches, headers)

    async def head(self, finalized: bool = False) -> int:
        return await self.kind.head(self.pool, finalized)

    async def header(self, number: int) -> BlockHeader | None:
        return await self.kind.header(self.pool, number)

    async def __aenter__(self) -> InProcessSource:
        await self.pool.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.__aexit__(*exc)
