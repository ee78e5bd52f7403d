"""Worker rows: registration, heartbeats, liveness, and the node-id lock."""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ampd.metadb.db import MetadataDb, execute


def node_lock_key(node_id: str) -> int:
    """The advisory-lock key that makes a node id usable by one process at a time."""
    digest = hashlib.sha256(f"ampd:worker:{node_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def try_lock_node_id(conn: psycopg.AsyncConnection[Any], node_id: str) -> bool:
    """Take the session-level lock on `node_id` on `conn`; False if another session holds it."""
    cursor = await conn.execute(
        "SELECT pg_try_advisory_lock(%s) AS locked", (node_lock_key(node_id),)
    )
    row = await cursor.fetchone()
    return bool(row["locked"] if isinstance(row, dict) else row[0])


async def register(
    conn: psycopg.AsyncConnection[Any], node_id: str, info: dict[str, Any], capacity: int = 4
) -> None:
    """Mark the worker active with its build info and capacity (segments run at once)."""
    await execute(
        conn, "register_worker", {"node_id": node_id, "info": Jsonb(info), "capacity": capacity}
    )


async def heartbeat(conn: psycopg.AsyncConnection[Any], node_id: str) -> bool:
    return await execute(conn, "heartbeat", {"node_id": node_id}) == 1


class WorkerStore:
    """Reads of the workers table for the Admin API and the scheduler."""

    def __init__(self, db: MetadataDb, timeout_secs: float) -> None:
        self.db = db
        self.timeout_secs = timeout_secs

    async def list(self) -> list[dict[str, Any]]:
        return await self.db.fetch_all("list_workers", {"timeout": self.timeout_secs})

    async def get(self, node_id: str) -> dict[str, Any] | None:
        return await self.db.fetch_one("get_worker", {"node_id": node_id})

    async def live(self) -> list[dict[str, Any]]:
        """Live workers with their capacity and load (active segments), ordered by node id."""
        return await self.db.fetch_all("live_workers", {"timeout": self.timeout_secs})
