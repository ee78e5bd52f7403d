"""Jobs, their segments and events: the rows, and every state transition on them.

Each transition is a conditional UPDATE (from the states it may leave) plus a `job_events`
row, in one transaction. The fenced segment updates live in `segments.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ampd.metadb.db import MetadataDb, execute, fetch_all, fetch_one

ACTIVE = ("SCHEDULED", "RUNNING", "STOP_REQUESTED", "STOPPING")
TERMINAL = ("COMPLETED", "STOPPED", "ERROR", "FATAL")
ALL_STATUSES = ACTIVE + TERMINAL
# Channel on which the controller tells workers about their segments.
JOB_ACTIONS_CHANNEL = "job_actions"
# Channel on which workers tell the controller (and servers) that something changed.
JOB_CHANGES_CHANNEL = "job_changes"


@dataclass(frozen=True)
class Job:
    id: int
    namespace: str
    name: str
    manifest_hash: str
    status: str
    descriptor: dict[str, Any]
    start_block: int
    end_block: int | None
    parallelism: int
    priority: int
    depends_on: list[int]
    worker_pattern: str | None
    retries: int
    detail: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    @property
    def continuous(self) -> bool:
        return self.end_block is None


@dataclass(frozen=True)
class Segment:
    id: int
    job_id: int
    start_block: int
    end_block: int | None
    checkpoint_block: int | None
    status: str
    node_id: str | None
    epoch: int
    attempts: int
    retry_at: datetime | None
    error: str | None
    updated_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Segment:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    @property
    def next_block(self) -> int:
        """Where extraction resumes: the block after the checkpoint."""
        return self.start_block if self.checkpoint_block is None else self.checkpoint_block + 1


async def record_event(
    conn: psycopg.AsyncConnection[Any],
    job_id: int,
    event_type: str,
    node_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    await execute(
        conn,
        "insert_job_event",
        {
            "job_id": job_id,
            "node_id": node_id,
            "event_type": event_type,
            "detail": Jsonb(detail) if detail is not None else None,
        },
    )


async def transition(
    conn: psycopg.AsyncConnection[Any],
    job_id: int,
    to: str,
    from_: Iterable[str],
    node_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> bool:
    """Move a job to `to` if it is in one of `from_`; records the event. Returns whether it moved."""
    row = await fetch_one(
        conn,
        "set_job_status",
        {
            "id": job_id,
            "status": to,
            "from": list(from_),
            "detail": Jsonb(detail) if detail is not None else None,
        },
    )
    if row is None:
        return False
    await record_event(conn, job_id, to, node_id, detail)
    await conn.execute("SELECT pg_notify(%s, %s)", (JOB_CHANGES_CHANNEL, str(job_id)))
    return True


class JobStore:
    """Reads of jobs, segments and events, and the transitions the Admin API asks for."""

    def __init__(self, db: MetadataDb) -> None:
        self.db = db

    async def get(self, job_id: int) -> Job | None:
        row = await self.db.fetch_one("get_job", {"id": job_id})
        return None if row is None else Job.from_row(row)

    async def list(
        self, limit: int, last_job_id: int | None, statuses: Sequence[str] | None
    ) -> list[Job]:
        rows = await self.db.fetch_all(
            "list_jobs",
            {
                "limit": limit,
                "last_job_id": last_job_id,
                "statuses": list(statuses) if statuses is not None else None,
            },
        )
        return [Job.from_row(row) for row in rows]

    async def of_revision(self, namespace: str, name: str, manifest_hash: str) -> list[Job]:
        rows = await self.db.fetch_all(
            "jobs_of_revision",
            {"namespace": namespace, "name": name, "manifest_hash": manifest_hash},
        )
        return [Job.from_row(row) for row in rows]

    async def with_status(self, statuses: Sequence[str]) -> list[Job]:
        rows = await self.db.fetch_all("jobs_with_status", {"statuses": list(statuses)})
        return [Job.from_row(row) for row in rows]

    async def segments(self, job_id: int) -> list[Segment]:
        rows = await self.db.fetch_all("job_segments", {"job_id": job_id})
        return [Segment.from_row(row) for row in rows]

    async def events(self, job_id: int) -> list[dict[str, Any]]:
        return await self.db.fetch_all("list_job_events", {"job_id": job_id})

    async def progress(self, manifest_hash: str, start_block: int) -> dict[str, dict[str, Any]]:
        """Per table: files, bytes, and `current_block`, the end of the unbroken run of
        committed blocks from `start_block` (None before the first one)."""
        tables: dict[str, dict[str, Any]] = {}
        for row in await self.db.fetch_all("table_progress", {"manifest_hash": manifest_hash}):
            entry = tables.setdefault(
                row["table_name"],
                {
                    "current_block": None,
                    "start_block": start_block,
                    "files_count": 0,
                    "total_size_bytes": 0,
                },
            )
            if row["start_block"] is None:
                continue
            entry["files_count"] += 1
            entry["total_size_bytes"] += row["object_size"]
            reached = start_block - 1 if entry["current_block"] is None else entry["current_block"]
            if row["start_block"] <= reached + 1 <= row["end_block"] + 1:
                entry["current_block"] = max(reached, row["end_block"])
        return tables

    async def request_stop(self, job_id: int) -> bool:
        """STOP_REQUESTED from SCHEDULED or RUNNING; a no-op in any other state."""
        async with self.db.transaction() as conn:
            return await transition(conn, job_id, "STOP_REQUESTED", ("SCHEDULED", "RUNNING"))

    async def delete(self, job_id: int) -> bool:
        """Delete a terminal job; False when it exists but is still active."""
        async with self.db.transaction() as conn:
            deleted = await execute(conn, "delete_job", {"id": job_id, "terminal": list(TERMINAL)})
            if deleted:
                return True
            return await fetch_one(conn, "get_job", {"id": job_id}) is None

    async def delete_with_status(self, statuses: Sequence[str]) -> int:
        return await self.db.execute("delete_jobs_with_status", {"statuses": list(statuses)})


async def segment_counts(conn: psycopg.AsyncConnection[Any], job_id: int) -> dict[str, int]:
    rows = await fetch_all(conn, "segment_counts", {"job_id": job_id})
    return {row["status"]: row["n"] for row in rows}
