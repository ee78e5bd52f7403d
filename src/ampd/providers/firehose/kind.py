"""The firehose kind: StreamingFast Firehose endpoints, the blocks, transactions, calls and
logs tables (providers/kinds.py).

A chunk of blocks is one stream, `Stream/Blocks` from its first block to its last
(`stop_block_num`): the blocks are kept by number as they come, a STEP_UNDO drops the block
it names (the server then sends the new branch's blocks), and the chunk is complete when
every number is there and each block's parent hash is the hash of the block before it. A
stream that breaks is resumed from its cursor by the client (client.py). The head is the
block a stream from -1 starts at; a block's header (for a reorg walk-back) comes from
`Fetch/Block`.

Several providers for one network are used in turn, chunk by chunk; a provider that fails
a chunk (out of retries, refusing it) hands it to the next one, and the chunk fails when
every provider failed it. A bad token fails at once with the provider's name.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import TypeVar

import grpc

from ampd.extract.chunk import BlockHeader, SourceError
from ampd.logs import get_logger
from ampd.providers.config import FIREHOSE_KIND, ProviderConfig
from ampd.providers.firehose.client import FirehoseClient
from ampd.providers.firehose.convert import block_headers, convert
from ampd.providers.firehose.errors import FirehoseAuthError, FirehoseError
from ampd.providers.firehose.proto import ethereum_pb2, firehose_pb2
from ampd.providers.firehose.tables import SCHEMAS
from ampd.providers.kinds import SourceKind

__all__ = ["KIND", "FirehosePool", "FirehoseSourceError"]

log = get_logger("providers.firehose")

T = TypeVar("T")


class FirehoseSourceError(SourceError):
    """Every provider failed to give a chunk, or one refused the credentials."""


class FirehosePool:
    """The providers of one network, each a FirehoseClient, used in turn."""

    def __init__(
        self, providers: Sequence[ProviderConfig], max_attempts: int | None, final: bool = False
    ) -> None:
        """`final`: a finalized-only dataset's pool, whose streams ask for final blocks only."""
        self.final = final
        if not providers:
            raise ValueError("a firehose pool needs at least one provider")
        self.clients: list[tuple[str, FirehoseClient]] = []
        for provider in providers:
            resolved = provider.resolved()
            client = FirehoseClient(
                resolved.url,
                resolved.token,
                display_url=provider.display_url,
                max_attempts=max_attempts,
                backoff_base=_seconds("AMP_FIREHOSE_RETRY_SECS", 5.0, 60),
                idle_timeout=_seconds("AMP_FIREHOSE_IDLE_SECS", 60.0, 3600) or None,
            )
            self.clients.append((provider.name, client))
        self._turn = itertools.cycle(range(len(self.clients)))

    async def __aenter__(self) -> FirehosePool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for _, client in self.clients:
            await client.close()

    def _order(self) -> list[tuple[str, FirehoseClient]]:
        first = next(self._turn)
        return self.clients[first:] + self.clients[:first]

    async def blocks(self, numbers: Sequence[int]) -> list[ethereum_pb2.Block]:
        """The blocks `numbers` (consecutive), from the first provider that gives them."""
        first, last = numbers[0], numbers[-1]
        return await self._in_turn(
            lambda client: _stream_range(client, first, last, self.final),
            f"blocks {first}..{last}",
        )

    async def head(self, finalized: bool) -> int:
        return await self._in_turn(lambda client: client.head(final=finalized))

    async def header(self, number: int) -> BlockHeader | None:
        async def fetch(client: FirehoseClient) -> BlockHeader | None:
            try:
                block = await client.fetch_block(number)
            except FirehoseError as exc:
                if exc.code is grpc.StatusCode.NOT_FOUND:
                    return None  # not a block of this chain (any more)
                raise
            return block_headers([block])[0]

        return await self._in_turn(fetch)

    async def _in_turn(
        self, call: Callable[[FirehoseClient], Awaitable[T]], what: str | None = None
    ) -> T:
        """`call` on each provider in turn until one answers; a refused token ends it at
        once, and when every provider failed, the error names each one's failure."""
        failures = []
        for name, client in self._order():
            try:
                return await call(client)
            except FirehoseAuthError as exc:
                raise FirehoseSourceError(f"provider '{name}': {exc}") from exc
            except FirehoseError as exc:
                if what is not None:
                    log.warning("provider '%s': %s: %s", name, what, exc)
                failures.append(f"provider '{name}': {exc}")
        raise FirehoseSourceError("; ".join(failures))


async def _stream_range(
    client: FirehoseClient, first: int, last: int, final: bool = False
) -> list[ethereum_pb2.Block]:
    """Blocks `first..last` of one stream (`final`: final blocks only), with the undone ones
    replaced by the new branch."""
    kept: dict[int, ethereum_pb2.Block] = {}
    items = client.stream(first, last, final_blocks_only=final)
    async with aclosing(items):
        async for item in items:
            number = item.block.number
            if item.step == firehose_pb2.STEP_UNDO:
                kept.pop(number, None)
                continue
            if first <= number <= last:
                kept[number] = item.block
            if number == last and len(kept) == last - first + 1:
                break
    blocks = [kept.get(n) for n in range(first, last + 1)]
    missing = [n for n, b in zip(range(first, last + 1), blocks, strict=True) if b is None]
    if missing:
        raise FirehoseError(client.url, f"the stream ended without blocks {missing[:5]}")
    for before, block in itertools.pairwise(blocks):
        if block.header.parent_hash != before.header.hash:  # a reorg mid-stream, not undone
            raise FirehoseError(
                client.url, f"block {block.number} does not follow block {before.number}"
            )
    return blocks  # type: ignore[return-value]


def _seconds(var: str, default: float, most: float) -> float:
    """Seconds from `var`, else `default`: AMP_FIREHOSE_RETRY_SECS is the first wait before a
    broken stream is opened again (5 s as Amp; it doubles with each failure in a row, up to
    60 s), AMP_FIREHOSE_IDLE_SECS how long a chunk's stream may send nothing before it is
    taken as stalled and opened again (60 s; 0: no limit)."""
    raw = os.environ.get(var)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= most:
        raise ValueError(f"invalid {var}={raw!r}: expected seconds, 0 to {most:g}")
    return value


def _open(
    providers: Sequence[ProviderConfig], max_attempts: int | None, finalized: bool = False
) -> FirehosePool:
    return FirehosePool(providers, max_attempts, final=finalized)


async def _fetch(pool: FirehosePool, numbers: Sequence[int]) -> list[ethereum_pb2.Block]:
    return await pool.blocks(numbers)


def _convert(blocks: list[ethereum_pb2.Block]):  # noqa: ANN202
    return convert(blocks), block_headers(blocks)


async def _head(pool: FirehosePool, finalized: bool) -> int:
    return await pool.head(finalized)


async def _header(pool: FirehosePool, number: int) -> BlockHeader | None:
    return await pool.header(number)


KIND = SourceKind(
    name=FIREHOSE_KIND,
    tables=SCHEMAS,
    open_pool=_open,
    fetch=_fetch,
    convert=_convert,
    head=_head,
    header=_header,
)
