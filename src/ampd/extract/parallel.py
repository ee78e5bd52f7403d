"""Fetching and converting blocks in child processes, to use more than one core.

`ProcessPoolSource` is the ChunkSource of `ampd dump` and of the worker's segment runs: it
hands each chunk of block numbers to one of the fetch processes (fetch_processes.py), in
turn, and asks them for the head and for block headers too, so that every request to the
provider goes out from them. It works for any source kind (providers/kinds.py).

The provider limits are shared out: each of N processes may have `concurrent_request_limit`
/ N requests in flight and send `rate_limit_per_minute` / N requests a minute, so all of
them together stay within what the provider file allows (and no more than the smallest
`concurrent_request_limit` of the processes serve one provider set). A worker's segments on
the same providers use the same processes and so the same limits.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Sequence
from typing import Any

from ampd.extract.chunk import BlockHeader, Chunk
from ampd.extract.fetch_processes import (
    FetchProcesses,
    RemoteConversionError,
    RemoteSourceError,
    WorkerProcessError,
    provider_key,
    read_batches,
    relax_gc,
)
from ampd.providers.config import ProviderConfig

__all__ = [
    "ProcessPoolSource",
    "RemoteConversionError",
    "RemoteSourceError",
    "WorkerProcessError",
    "relax_gc",
    "share_limits",
    "worker_count",
]


def worker_count(providers: Sequence[ProviderConfig], processes: int) -> int:
    """How many of `processes` serve `providers`: each needs one request in flight at
    least, so never more than the smallest `concurrent_request_limit`."""
    return max(1, min([processes, *(p.concurrent_request_limit for p in providers)]))


def share_limits(providers: Sequence[ProviderConfig], processes: int) -> list[dict[str, Any]]:
    """Each provider's file, as written, with its limits divided among `processes`."""
    return [p.shared_among(processes) for p in providers]


class ProcessPoolSource:
    """Chunks, the head and single calls of one provider set, from fetch processes.

    Given `shared` fetch processes (a worker's), it uses them and leaves them running when
    closed; otherwise it starts `processes` of its own (one per CPU by default) and stops
    them when closed.
    """

    def __init__(
        self,
        kind: str,
        providers: Sequence[ProviderConfig],
        processes: int | None = None,
        *,
        max_attempts: int | None = None,
        start_method: str = "spawn",
        shared: FetchProcesses | None = None,
        finalized: bool = False,
    ) -> None:
        available = shared.count if shared is not None else processes or os.cpu_count() or 1
        self.processes = worker_count(providers, available)
        self._owned = shared is None
        self._fetchers = shared or FetchProcesses(self.processes, start_method=start_method)
        # As written (placeholders kept): each process substitutes ${VAR} from its environment.
        names = [p.name for p in providers]
        files = list(zip(names, share_limits(providers, self.processes), strict=True))
        self._providers = (kind, files, max_attempts, finalized)
        self._key = provider_key(kind, files, max_attempts, finalized)
        # Segments sharing the processes start their turns at different ones.
        first = random.randrange(self.processes) if shared is not None else 0
        self._turn = itertools.cycle([(first + i) % self.processes for i in range(self.processes)])

    def start(self) -> None:
        """Start the processes now (a pool that forks: before any thread or loop exists)."""
        self._fetchers.start()

    @property
    def pids(self) -> list[int]:
        return self._fetchers.pids

    @property
    def exit_codes(self) -> list[int | None]:
        return self._fetchers.exit_codes

    async def chunk(self, numbers: Sequence[int]) -> Chunk:
        payload, headers = await self._request("blocks", list(numbers))
        return Chunk(read_batches(payload), [BlockHeader(*h) for h in headers])

    async def head(self, finalized: bool = False) -> int:
        return await self._request("head", finalized)

    async def header(self, number: int) -> BlockHeader | None:
        return await self._request("header", number)

    async def _request(self, op: str, *args: Any) -> Any:
        return await self._fetchers.request(next(self._turn), op, self._key, self._providers, *args)

    async def aclose(self) -> None:
        if self._owned:
            await self._fetchers.aclose()

    async def __aenter__(self) -> ProcessPoolSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
