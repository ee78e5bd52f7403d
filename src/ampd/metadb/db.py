"""The connection pool to the metadata database, and running named queries on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from ampd.logs import get_logger
from ampd.metadb.queries import query

log = get_logger("metadb")

Params = Mapping[str, Any] | Sequence[Any] | None


class MetadataDb:
    """A pool of connections plus helpers that run the queries of `queries.sql` by name.

    Connections are checked before use, so a PostgreSQL restart costs failed calls while it
    is down, not a broken pool afterwards.
    """

    def __init__(self, url: str, *, pool_size: int = 10, name: str = "ampd") -> None:
        self.url = url
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max(pool_size, 1),
            open=False,
            name=name,
            check=AsyncConnectionPool.check_connection,
            kwargs={"autocommit": True, "row_factory": dict_row},
            reconnect_timeout=0,  # keep trying for ever: the database may come back
        )

    async def open(self, timeout: float = 30.0) -> None:
        await self._pool.open(wait=True, timeout=timeout)

    async def close(self) -> None:
        await self._pool.close()

    async def __aenter__(self) -> MetadataDb:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        async with self._pool.connection() as conn:
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        """A connection inside one transaction: committed on exit, rolled back on error."""
        async with self._pool.connection() as conn, conn.transaction():
            yield conn

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
