"""Fetching and converting blocks in worker processes, to use more than one core.

Python runs one thread at a time, and fetching plus converting is most of an extractor's
CPU. `ProcessPoolSource` hands each chunk of block numbers to a worker process that fetches
it (with its own provider pool and event loop, kept between chunks) and converts it to
Arrow; the record batches come back as Arrow IPC, which costs little to move. Writing and
committing stay in the calling process.
"""

from __future__ import annotations

import asyncio
import atexit
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pyarrow as pa

from ampd.extract.engine import Chunk
from ampd.logs import setup_logging
from ampd.providers.config import ProviderConfig, parse_provider
from ampd.providers.evm_rpc.convert import BlockHeader, ConversionError, block_headers, convert
from ampd.providers.evm_rpc.errors import RpcError

# Per worker process: its event loop and provider pool, made on the first chunk.
_STATE: dict[str, Any] = {}


class RemoteConversionError(ConversionError):
    """A ConversionError raised in a worker process (message kept, fields not)."""

    def __init__(self, message: str) -> None:
        ValueError.__init__(self, message)
        self.block_num, self.table, self.column, self.value, self.reason = (
            None,
            "",
            "",
            None,
            message,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteConversionError, (str(self),))


class RemoteRpcError(RpcError):
    """An RpcError raised in a worker process (message kept, fields not)."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)
        self.provider, self.url, self.detail, self.method = "", "", message, None

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteRpcError, (str(self),))


def _init_worker() -> None:
    # Spawned processes start blank: same log format and level (AMP_LOG) as the parent.
    setup_logging()


def _close_worker() -> None:
    loop, pool = _STATE.pop("loop", None), _STATE.pop("pool", None)
    if loop is not None and pool is not None:
        loop.run_until_complete(pool.aclose())
        loop.close()


def _worker_chunk(
    providers: list[tuple[str, dict[str, Any]]], max_attempts: int | None, numbers: list[int]
) -> tuple:
    from ampd.providers.evm_rpc.pool import ProviderPool

    if "loop" not in _STATE:
        _STATE["loop"] = asyncio.new_event_loop()
        configs = [parse_provider(name, raw) for name, raw in providers]
        _STATE["pool"] = ProviderPool(configs, max_attempts=max_attempts)
        atexit.register(_close_worker)
    loop, pool = _STATE["loop"], _STATE["pool"]
    try:
        raw = loop.run_until_complete(pool.fetch_blocks(numbers))
    except RpcError as exc:  # its own fields do not survive pickling
        raise RemoteRpcError(str(exc)) from None
    try:
        batches = convert(raw)
    except ConversionError as exc:
        raise RemoteConversionError(str(exc)) from None
    headers = [(h.number, h.hash, h.parent_hash, h.timestamp) for h in block_headers(raw)]
    payload = {}
    for table, batch in batches.items():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        payload[table] = sink.getvalue()
    return payload, headers


def _read(buffer: pa.Buffer) -> pa.RecordBatch:
    return pa.ipc.open_stream(buffer).read_next_batch()


class ProcessPoolSource:
    """A ChunkSource running fetch and conversion in `processes` worker processes."""

    def __init__(
        self,
        providers: Sequence[ProviderConfig],
        processes: int | None = None,
        *,
        max_attempts: int | None = None,
        start_method: str = "spawn",
    ) -> None:
        # As written (placeholders kept): each worker substitutes ${VAR} from its environment.
        self.providers = [(p.name, dict(p.raw)) for p in providers]
        self.processes = processes or os.cpu_count() or 1
        self.max_attempts = max_attempts
        # spawn by default: a process with threads and an event loop must not fork. A
        # caller that has neither yet may choose fork, which starts workers in
        # milliseconds instead of re-importing everything (see `start`).
        self._executor = ProcessPoolExecutor(
            self.processes,
            mp_context=multiprocessing.get_context(start_method),
            initializer=_init_worker,
        )

    def start(self) -> None:
        """Start every worker now (blocking); call before any thread or event loop exists
        when the pool forks."""
        futures = [self._executor.submit(os.getpid) for _ in range(self.processes * 2)]
        for future in futures:
            future.result()

    async def chunk(self, numbers: Sequence[int]) -> Chunk:
        loop = asyncio.get_running_loop()
        payload, headers = await loop.run_in_executor(
            self._executor, _worker_chunk, self.providers, self.max_attempts, list(numbers)
        )
        batches = {table: _read(buffer) for table, buffer in payload.items()}
        return Chunk(batches, [BlockHeader(*h) for h in headers])

    async def aclose(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, True, cancel_futures=True)

    async def __aenter__(self) -> ProcessPoolSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
