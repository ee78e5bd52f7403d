"""The record batches of a planned query, pulled without blocking the event loop.

DataFusion runs a plan on its own threads and hands out its batches as they come; some
operators make them small (a cross join emits a batch per row of one input: 60-row batches
for 60-row tables). Every batch a server sends costs a thread hop and an encoding or
framing pass of its own, so a result that is not a stream (`SETTINGS stream = true`) is
sent in batches of COALESCE_ROWS rows or COALESCE_BYTES bytes of Arrow data at least. The
byte bound keeps wide rows' batches small: the encoded copy of a batch is a few times its
size, and the server's peak memory follows it. A cross join of 1,057,100 rows of 340 bytes
as JSON Lines (tests/e2e/test_query.py) took 87 s in 60-row batches and 39 s coalesced,
with the server's peak memory 81 MiB and 109 MiB above its start (8,192-row batches
without the byte bound: 34 s and 253 MiB).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator

import pyarrow as pa

from ampd.sql.catalog import CatalogSnapshot
from ampd.sql.engine import Limits, QueryError, classify, no_memory, timed_out

COALESCE_ROWS = 8192
COALESCE_BYTES = 1 << 20
BUDGET_POLL_SECS = 0.05  # how often a query waiting for memory looks again


async def _hold_memory(limits: Limits, started: float) -> Callable[[], None]:
    """Wait until the query's pool fits in the server's budget and hold it; the function
    that gives it back (once, however often it is called). Raises QueryError when it does
    not fit within the query's time limit."""
    budget, mb = limits.budget, limits.pool_mb
    if budget is None or not mb:
        return lambda: None
    while not budget.try_hold(mb):
        if limits.timeout_secs and time.monotonic() - started >= limits.timeout_secs:
            raise no_memory(limits)
        await asyncio.sleep(BUDGET_POLL_SECS)
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            budget.release(mb)

    return release


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """`batch` with the schema the plan declared. DataFusion's batches can differ from it in
    nullability only (a list literal's column: nullable in the plan, not null in the batch),
    which Flight refuses as a schema mismatch."""
    if batch.schema.equals(schema):
        return batch
    try:
        return pa.RecordBatch.from_arrays(batch.columns, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a nested field's nullability differs
        return batch.cast(schema)


class BatchStream:
    """The record batches of a planned query, pulled asynchronously.

    DataFusion runs the plan on its own threads; awaiting the next batch never blocks the
    event loop. A batch that does not arrive within the query's time limit (counted from the
    start) ends the stream with QueryError(QUERY_TIMEOUT) and drops DataFusion's stream,
    which stops the execution. A stream holds its query's memory pool in the server's
    budget (`max_mem_mb`) from `open()` until it ends, is cancelled or is collected. Use
    `open()` to create one.
    """

    def __init__(
        self, stream, schema: pa.Schema, limits: Limits, snapshot: CatalogSnapshot
    ) -> None:  # noqa: ANN001
        self._stream = stream
        self.schema = schema
        self._limits = limits
        self._snapshot = snapshot
        self._started = time.monotonic()
        self._failed: QueryError | None = None  # raised after the rows that came before it
        self._release: Callable[[], None] = lambda: None

    @classmethod
    async def open(cls, dataframe, limits: Limits, snapshot: CatalogSnapshot) -> BatchStream:  # noqa: ANN001
        """Start executing `dataframe` (physical planning runs off the event loop, within the
        query's time limit: a scan can start reading during it)."""
        started = time.monotonic()
        release = await _hold_memory(limits, started)
        try:
            remaining = (
                max(limits.timeout_secs - (time.monotonic() - started), 0.001)
                if limits.timeout_secs
                else None
            )
            stream = await asyncio.wait_for(asyncio.to_thread(dataframe.execute_stream), remaining)
        except TimeoutError:
            release()
            raise timed_out(limits) from None
        except Exception as exc:  # noqa: BLE001 - DataFusion raises one exception type for all
            release()
            raise classify(exc, snapshot) from None
        self = cls(stream, dataframe.schema(), limits, snapshot)
        self._started = started
        self._release = release
        weakref.finalize(self, release)  # a stream dropped without cancel() still gives it back
        return self

    def cancel(self) -> None:
        """Stop the query: dropping DataFusion's stream cancels its execution, and its memory
        pool goes back to the server's budget."""
        self._stream = None
        self._release()

    async def next(self) -> pa.RecordBatch | None:
        """The next batch, or None at the end. Raises QueryError."""
        if self._stream is None:
            return None
        remaining = None
        if self._limits.timeout_secs:
            remaining = max(self._limits.timeout_secs - (time.monotonic() - self._started), 0.0)
        try:
            batch = await asyncio.wait_for(self._stream.__anext__(), remaining)
        except StopAsyncIteration:
            self.cancel()
            return None
        except TimeoutError:
            self.cancel()
            raise timed_out(self._limits) from None
        except Exception as exc:  # noqa: BLE001 - DataFusion raises one exception type for all
            self.cancel()
            raise classify(exc, self._snapshot) from None
        return conform(batch.to_pyarrow(), self.schema)

    async def next_coalesced(self) -> pa.RecordBatch | None:
        """The next COALESCE_ROWS rows (or COALESCE_BYTES) as one batch, fewer at the end;
        None at the end. An error is raised once the rows before it are handed out."""
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed
        batch = await self.next()
        if batch is None or batch.num_rows >= COALESCE_ROWS:
            return batch
        parts, rows, size = [batch], batch.num_rows, batch.nbytes
        while rows < COALESCE_ROWS and size < COALESCE_BYTES:
            try:
                more = await self.next()
            except QueryError as exc:
                self._failed = exc
                break
            if more is None:
                break
            parts.append(more)
            rows, size = rows + more.num_rows, size + more.nbytes
        return parts[0] if len(parts) == 1 else pa.concat_batches(parts)

    async def __aiter__(self) -> AsyncIterator[pa.RecordBatch]:
        try:
            while (batch := await self.next()) is not None:
                yield batch
        finally:
            self.cancel()

    def iterate_from_thread(
        self, loop: asyncio.AbstractEventLoop, *, coalesce: bool = False
    ) -> Iterator[pa.RecordBatch]:
        """The batches for a caller on another thread (the Flight server), driven on `loop`;
        with `coalesce`, as `next_coalesced` makes them."""
        pull = self.next_coalesced if coalesce else self.next
        try:
            while (batch := asyncio.run_coroutine_threadsafe(pull(), loop).result()) is not None:
                yield batch
        finally:
            loop.call_soon_threadsafe(self.cancel)
