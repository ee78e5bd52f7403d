"""The connection pool to the metadata database, and running named queries on it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from ampd.logs import get_logger
from ampd.metadb.connect import wait_for_database
from ampd.metadb.queries import query

log = get_logger("metadb")

Params = Mapping[str, Any] | Sequence[Any] | None

GETCONN_TIMEOUT_SECS = 30.0  # a call fails with PoolTimeout after waiting this long
RECONNECT_TIMEOUT_SECS = 1.0
NUDGE_INITIAL_SECS = 0.1
NUDGE_MAX_SECS = 0.5
# No ampd transaction sits idle between statements; one that does has a frozen or cut-off
# client whose row locks (a segment mid-commit) would stall the scheduler's failover.
IDLE_IN_TRANSACTION_TIMEOUT_SECS = 10.0


class MetadataDb:
    """A pool of connections plus helpers that run the queries of `queries.sql` by name.

    Connections are checked before use, so a PostgreSQL restart costs failed calls while it
    is down, not a broken pool afterwards; a call made during an outage waits (up to
    `GETCONN_TIMEOUT_SECS`) and gets a connection within a second of the database's return.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        name: str = "ampd",
        idle_in_transaction_timeout: float = IDLE_IN_TRANSACTION_TIMEOUT_SECS,
    ) -> None:
        self.url = url
        self.name = name
        self._waiting_since: float | None = None  # when calls started waiting for the database
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max(pool_size, 1),
            open=False,
            name=name,
            timeout=GETCONN_TIMEOUT_SECS,
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "connect_timeout": 5,
                "application_name": name,
                "options": "-c idle_in_transaction_session_timeout="
                f"{int(idle_in_transaction_timeout * 1000)}",
            },
            # Not 0 (psycopg_pool gives up after the 2nd attempt) nor long (its retries back off
            # 1, 2, 4 ... s): ~1 s, and `_wait_for_connection` starts fresh ones every <= 0.5 s.
            reconnect_timeout=RECONNECT_TIMEOUT_SECS,
        )

    async def open(self, timeout: float = 60.0) -> None:
        """Wait up to `timeout` s for the database (see `connect.wait_for_database`), then
        open the pool. Raises DatabaseUnavailable, or the psycopg error of a bad URL."""
        await wait_for_database(self.url, timeout)
        await self._pool.open()

    async def close(self, timeout: float = 5.0) -> None:
        await self._pool.close(timeout=timeout)

    async def __aenter__(self) -> MetadataDb:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        """A checked connection from the pool; raises PoolTimeout after
        `GETCONN_TIMEOUT_SECS` without one, PoolClosed once the pool is closed."""
        conn = await self._getconn()
        try:
            async with conn:
                yield conn
        finally:
            await self._pool.putconn(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        """A connection inside one transaction: committed on exit, rolled back on error."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def _getconn(self) -> psycopg.AsyncConnection[Any]:
        deadline = time.monotonic() + GETCONN_TIMEOUT_SECS
        while True:
            conn = await self._wait_for_connection(deadline)
            try:
                await conn.execute("")  # a connection a restart broke fails here, at once
            except psycopg.Error:
                await self._pool.putconn(conn)  # seen broken: the pool replaces it
                continue
            except BaseException:
                await self._pool.putconn(conn)
                raise
            if self._waiting_since is not None:
                log.info(
                    "pool %r serves metadata database connections again (after %.1fs)",
                    self.name,
                    time.monotonic() - self._waiting_since,
                )
                self._waiting_since = None
            return conn

    async def _wait_for_connection(self, deadline: float) -> psycopg.AsyncConnection[Any]:
        """Wait in the pool's queue, nudging it meanwhile: `check()` lets a pool whose
        reconnect attempt gave up start a new one (psycopg_pool has no other public way)."""
        waiter = asyncio.ensure_future(self._pool.getconn(max(deadline - time.monotonic(), 0)))
        delay = NUDGE_INITIAL_SECS
        try:
            while True:
                await asyncio.wait({waiter}, timeout=delay)
                if waiter.done():
                    return waiter.result()
                if delay >= NUDGE_MAX_SECS and self._waiting_since is None:
                    self._waiting_since = time.monotonic()
                    log.warning(
                        "calls wait for a metadata database connection (pool %r): the database "
                        "is unreachable or the pool is exhausted",
                        self.name,
                    )
                with contextlib.suppress(psycopg.Error):
                    await self._pool.check()
                delay = min(delay * 2, NUDGE_MAX_SECS)
        except BaseException:
            if waiter.done():
                self._return_if_served(waiter)
            else:
                waiter.cancel()
                waiter.add_done_callback(self._return_if_served)
            raise

    def _return_if_served(self, waiter: asyncio.Future[Any]) -> None:
        if not waiter.cancelled() and waiter.exception() is None:
            asyncio.ensure_future(self._pool.putconn(waiter.result()))

    async def fetch_all(self, name: str, params: Params = None) -> list[dict[str, Any]]:
        async with self.connection() as conn:
            return await fetch_all(conn, name, params)

    async def fetch_one(self, name: str, params: Params = None) -> dict[str, Any] | None:
        async with self.connection() as conn:
            return await fetch_one(conn, name, params)

    async def execute(self, name: str, params: Params = None) -> int:
        async with self.connection() as conn:
            return await execute(conn, name, params)

    async def notify(self, channel: str, payload: str) -> None:
        async with self.connection() as conn:
            await conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


async def fetch_all(
    conn: psycopg.AsyncConnection[Any], name: str, params: Params = None
) -> list[Any]:
    cursor = await conn.execute(query(name), params)
    return await cursor.fetchall()


async def fetch_one(conn: psycopg.AsyncConnection[Any], name: str, params: Params = None) -> Any:
    cursor = await conn.execute(query(name), params)
    return await cursor.fetchone()


async def execute(conn: psycopg.AsyncConnection[Any], name: str, params: Params = None) -> int:
    """Run a statement; returns the number of rows it touched."""
    cursor = await conn.execute(query(name), params)
    return cursor.rowcount
