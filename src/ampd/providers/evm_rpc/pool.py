"""Several providers of one network sharing the work, and standing in for each other.

Each operation (`call`, `batch`, `head`, `fetch_blocks`) goes to the next provider in
turn. A provider that keeps failing (`failover_after` attempts in a row) is skipped for
`cooldown_secs` while the others serve; when all are cooling down, the one back soonest
is tried after a backoff. A provider that refuses requests (HTTP 4xx) or lacks a block is
passed over for that operation; the error is raised only when every provider agrees.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ampd.providers.config import ProviderConfig
from ampd.providers.evm_rpc.errors import (
    BlockNotFoundError,
    ProviderRejectedError,
    RetriesExhaustedError,
    RpcError,
)
from ampd.providers.evm_rpc.limits import backoff_delay

if TYPE_CHECKING:
    from ampd.providers.evm_rpc.blocks import RawBlock
    from ampd.providers.evm_rpc.client import EvmRpcClient

log = logging.getLogger("ampd.providers.evm_rpc")

T = TypeVar("T")


class _Member:
    def __init__(self, client: EvmRpcClient) -> None:
        self.client = client
        self.cooling_until = 0.0


class ProviderPool:
    """The providers of one network behind the EvmRpcClient API.

    With one provider, the pool is that provider's client and `max_attempts` bounds the
    attempts per call. With several, each provider gets `failover_after` attempts per
    operation, and `max_attempts` bounds how many times providers may give up before the
    pool does (None: never).
    """

    def __init__(
        self,
        providers: Sequence[ProviderConfig],
        *,
        max_attempts: int | None = None,
        failover_after: int = 3,
        cooldown_secs: float = 30.0,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from ampd.providers.evm_rpc.client import EvmRpcClient  # the client imports this module

        if not providers:
            raise ValueError("a ProviderPool needs at least one provider")
        names = [p.name for p in providers]
        if len(set(names)) != len(names):
            raise ValueError(f"provider names must be unique, got {names}")
        per_client = max_attempts if len(providers) == 1 else failover_after
        self._members = [
            _Member(
                EvmRpcClient(
                    p, max_attempts=per_client, backoff_base=backoff_base, backoff_cap=backoff_cap
                )
            )
            for p in providers
        ]
        self.max_attempts = max_attempts
        self._cooldown = cooldown_secs
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._clock = clock
        self._cursor = 0

    @property
    def clients(self) -> list[EvmRpcClient]:
        return [m.client for m in self._members]

    def cooling_down(self) -> list[str]:
        """Names of the providers being skipped right now."""
        now = self._clock()
        return [m.client.name for m in self._members if m.cooling_until > now]

    async def __aenter__(self) -> ProviderPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await asyncio.gather(*(m.client.aclose() for m in self._members))

    async def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        return await self._run(lambda c: c.call(method, params))

    async def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        return await self._run(lambda c: c.batch(calls))

    async def call_each(
        self,
        calls: Sequence[tuple[str, Sequence[Any]]],
        answers: Callable[[dict[str, Any]], bool],
    ) -> list[Any]:
        """EvmRpcClient.call_each on the next provider in turn."""
        return await self._run(lambda c: c.call_each(calls, answers))

    async def head(self, finalized: bool = False) -> int:
        return await self._run(lambda c: c.head(finalized))

    async def fetch_blocks(self, numbers: Sequence[int]) -> list[RawBlock]:
        return await self._run(lambda c: c.fetch_blocks(numbers))

    async def _run(self, operation: Callable[[EvmRpcClient], Awaitable[T]]) -> T:
        if len(self._members) == 1:
            return await operation(self._members[0].client)
        passed_over: dict[str, RpcError] = {}  # refused the request or lacks the block
        gave_up = 0
        while True:
            member, cooling = self._pick(passed_over)
            if member is None:
                raise next(iter(passed_over.values()))
            if cooling:
                # Every provider failed lately: pause before asking again.
                await asyncio.sleep(
                    backoff_delay(gave_up, base=self._backoff_base, cap=self._backoff_cap)
                )
            client = member.client
            try:
                return await operation(client)
            except ProviderRejectedError as e:
                passed_over[client.name] = e
                member.cooling_until = self._clock() + self._cooldown
                log.error("provider '%s' refused a request, trying another: %s", client.name, e)
            except BlockNotFoundError as e:
                passed_over[client.name] = e
                log.info("provider '%s' lacks a block, trying another: %s", client.name, e)
            except RetriesExhaustedError as e:
                gave_up += 1
                member.cooling_until = self._clock() + self._cooldown
                if self.max_attempts is not None and gave_up >= self.max_attempts:
                    raise
                log.warning(
                    "provider '%s' keeps failing, skipping it for %gs: %s",
                    client.name,
                    self._cooldown,
                    e,
                )

    def next_client(self) -> EvmRpcClient | None:
        """The next provider in turn that is not cooling down (None when all are)."""
        if len(self._members) == 1:
            return self._members[0].client
        member, cooling = self._pick({})
        return None if member is None or cooling else member.client

    def _pick(self, passed_over: dict[str, RpcError]) -> tuple[_Member | None, bool]:
        """The next provider in turn that is not cooling down (else the one back soonest)."""
        now = self._clock()
        n = len(self._members)
        candidates = [
            (k, self._members[(self._cursor + k) % n])
            for k in range(n)
            if self._members[(self._cursor + k) % n].client.name not in passed_over
        ]
        if not candidates:
            return None, False
        for k, member in candidates:
            if member.cooling_until <= now:
                self._cursor = (self._cursor + k + 1) % n
                return member, False
        _, member = min(candidates, key=lambda c: c[1].cooling_until)
        return member, True
