"""The scheduler: runs on the leading controller only, a few times a second.

Each pass, in order:
1. take the segments of dead workers (heartbeat older than `worker_timeout_secs`) back;
2. assign waiting segments to live workers, most spare capacity first, most urgent job first;
3. ask the owner of a long running segment to split off half of its remainder for a worker
   left idle (the owner decides where, and records the new segment itself);
4. move jobs along: completion, stop requests, failures past `max_retries`.
Every pass is idempotent, so a new leader simply starts passing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from ampd.controller.deploy import matches
from ampd.logs import get_logger
from ampd.metadb.db import MetadataDb, fetch_all, fetch_one
from ampd.metadb.jobs import (
    ACTIVE,
    JOB_ACTIONS_CHANNEL,
    JOB_CHANGES_CHANNEL,
    Job,
    JobStore,
    record_event,
    segment_counts,
    transition,
)

log = get_logger("controller")

LEADER_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"ampd:controller:leader").digest()[:8], "big", signed=True
)


# The same segment (and epoch) is asked to split at most this often.
SPLIT_ASK_SECS = 2.0


def _action(node_id: str, segment_id: int, epoch: int, action: str, **fields: Any) -> str:
    return json.dumps(
        {"node_id": node_id, "segment_id": segment_id, "epoch": epoch, "action": action, **fields}
    )


def pick_worker(spare: Mapping[str, int], pattern: str | None) -> str | None:
    """The worker matching `pattern` with the most spare capacity (capacity minus running
    segments; ties: the lowest node id), or None when every matching worker is full."""
    candidates = [n for n, free in spare.items() if free > 0 and matches(pattern, n)]
    if not candidates:
        return None
    return min(candidates, key=lambda n: (-spare[n], n))


def split_key(seg: Mapping[str, Any]) -> tuple[int, int, int]:
    """What a split request was about: a segment's run (id, epoch) and its end. A split that
    landed moves the end, so the segment may be asked again at once; a request the owner
    declined (too little left) or has not answered yet keeps the key."""
    return (seg["id"], seg["epoch"], seg["end_block"])


def choose_splits(
    idle: Sequence[str],
    waiting_patterns: Sequence[str | None],
    running: Sequence[Mapping[str, Any]],
    recently_asked: set[tuple[int, int, int]],
) -> list[tuple[str, Mapping[str, Any], int]]:
    """Which running segment to split for which idle worker, and into how many parts:
    (idle node, segment, parts) triples.

    An idle worker that some waiting segment could go to gets nothing (assignment serves it).
    Each of the others gets the first segment of `running` (largest remainder first) whose
    job admits it, that no other idle worker got and that was not asked recently (by
    `split_key`); when that
    segment is still ASSIGNED (its run has not started, so it cannot split yet) the worker
    waits for it instead of splitting a smaller remainder. Idle workers left over (more of
    them than segments) count toward the first chosen segment that admits them: a segment
    split for k workers keeps 1/(k+1) of its remainder and hands the rest over as k new
    segments, one for each. So two workers joining a one-segment job end with a third of
    the remainder each, not with a half and two quarters.
    """
    chosen: list[list[Any]] = []
    taken = set(recently_asked)
    left: list[str] = []
    for node in idle:
        if any(matches(pattern, node) for pattern in waiting_patterns):
            continue
        for seg in running:
            key = split_key(seg)
            if key not in taken and matches(seg["worker_pattern"], node):
                taken.add(key)
                if seg["status"] == "RUNNING":
                    chosen.append([node, seg, 2])
                break
        else:
            left.append(node)
    for node in left:
        for entry in chosen:
            if matches(entry[1]["worker_pattern"], node):
                entry[2] += 1
                break
    return [(node, seg, parts) for node, seg, parts in chosen]


class Scheduler:
    def __init__(
        self,
        db: MetadataDb,
        *,
        worker_timeout_secs: float,
        max_retries: int,
        split_min_blocks: int = 1000,
        interval_secs: float = 0.3,
    ) -> None:
        self.db = db
        self.worker_timeout_secs = worker_timeout_secs
        self.max_retries = max_retries
        self.split_min_blocks = split_min_blocks
        self.interval_secs = interval_secs
        self._split_asked: dict[tuple[int, int, int], float] = {}  # split_key -> when

    async def run_pass(self) -> None:
        await self.reap_dead_workers()
        await self.assign_segments()
        await self.request_splits()
        await self.advance_jobs()

    async def reap_dead_workers(self) -> None:
        dead = await self.db.fetch_all(
            "dead_workers_with_segments", {"timeout": self.worker_timeout_secs}
        )
        for row in dead:
            node_id = row["node_id"]
            async with self.db.transaction() as conn:
                released = await fetch_all(conn, "release_segments_of", {"node_id": node_id})
                by_job: dict[int, list[int]] = {}
                for seg in released:
                    by_job.setdefault(seg["job_id"], []).append(seg["id"])
                for job_id, segment_ids in by_job.items():
                    await record_event(
                        conn, job_id, "WORKER_LOST", node_id, {"segments": segment_ids}
                    )
            if released:
                log.warning(
                    "worker %s missed its heartbeats for %.0fs: released %d segment(s) for reassignment",
                    node_id,
                    self.worker_timeout_secs,
                    len(released),
                )

    async def assign_segments(self) -> None:
        notices: list[str] = []
        async with self.db.transaction() as conn:
            waiting = await fetch_all(
                conn, "assignable_segments", {"max_retries": self.max_retries}
            )
            if not waiting:
                return
            live = await fetch_all(conn, "live_workers", {"timeout": self.worker_timeout_secs})
            spare = {w["node_id"]: w["capacity"] - w["load"] for w in live}
            started_jobs: set[int] = set()
            for seg in waiting:
                node_id = pick_worker(spare, seg["worker_pattern"])
                if node_id is None:
                    continue  # PENDING until a matching worker has room
                row = await fetch_one(
                    conn,
                    "assign_segment",
                    {"id": seg["id"], "epoch": seg["epoch"], "node_id": node_id},
                )
                if row is None:
                    continue
                spare[node_id] -= 1
                notices.append(_action(node_id, row["id"], row["epoch"], "start"))
                await record_event(
                    conn,
                    seg["job_id"],
                    "SEGMENT_ASSIGNED",
                    node_id,
                    {"segment_id": row["id"], "epoch": row["epoch"]},
                )
                if seg["job_id"] not in started_jobs:
                    started_jobs.add(seg["job_id"])
                    await transition(conn, seg["job_id"], "RUNNING", ("SCHEDULED",), node_id)
            for notice in notices:
                await conn.execute("SELECT pg_notify(%s, %s)", (JOB_ACTIONS_CHANNEL, notice))
        for notice in notices:
            log.info("assigned %s", notice)

    async def request_splits(self) -> None:
        """For each idle worker (running nothing, nothing waiting that it could take), ask
        the owner of the running bounded segment with the largest unfinished remainder (at
        least `split_min_blocks`) to split it. The owner splits where its extraction has not
        reached yet and records the new PENDING segment; assignment hands it out."""
        now = time.monotonic()
        self._split_asked = {
            key: at for key, at in self._split_asked.items() if now - at < SPLIT_ASK_SECS
        }
        notices: list[str] = []
        async with self.db.transaction() as conn:
            live = await fetch_all(conn, "live_workers", {"timeout": self.worker_timeout_secs})
            idle = [w["node_id"] for w in live if w["load"] == 0]
            if not idle:
                return
            running = await fetch_all(
                conn, "splittable_segments", {"min_blocks": self.split_min_blocks}
            )
            if not running:
                return
            waiting = await fetch_all(
                conn, "assignable_segments", {"max_retries": self.max_retries}
            )
            chosen = choose_splits(
                idle, [w["worker_pattern"] for w in waiting], running, set(self._split_asked)
            )
            for node_id, seg, parts in chosen:
                self._split_asked[split_key(seg)] = now
                notices.append(
                    _action(seg["node_id"], seg["id"], seg["epoch"], "split", parts=parts)
                )
                log.info(
                    "asking %s to split segment %d (%d blocks left) into %d parts for idle "
                    "worker %s",
                    seg["node_id"],
                    seg["id"],
                    seg["remaining"],
                    parts,
                    node_id,
                )
            for notice in notices:
                await conn.execute("SELECT pg_notify(%s, %s)", (JOB_ACTIONS_CHANNEL, notice))

    async def advance_jobs(self) -> None:
        for job in await JobStore(self.db).with_status(ACTIVE):
            async with self.db.transaction() as conn:
                await self._advance(conn, job)

    async def _advance(self, conn: psycopg.AsyncConnection[Any], job: Job) -> None:
        counts = await segment_counts(conn, job.id)
        running = counts.get("ASSIGNED", 0) + counts.get("RUNNING", 0)
        unfinished = running + counts.get("PENDING", 0) + counts.get("FAILED", 0)
        if job.status in ("SCHEDULED", "RUNNING"):
            if counts.get("FATAL"):
                failed = await self._first_error(conn, job.id, "FATAL")
                await transition(conn, job.id, "FATAL", (job.status,), None, failed)
                await self._stop_segments(conn, job)
                log.error("job %d failed fatally: %s", job.id, failed["error_message"])
                return
            exhausted = await fetch_one(
                conn,
                "exhausted_segment",
                {"job_id": job.id, "max_retries": self.max_retries},
            )
            if exhausted is not None:
                detail = {
                    "error_code": "SEGMENT_RETRIES_EXHAUSTED",
                    "error_message": exhausted["error"] or "segment failed",
                    "segment_id": exhausted["id"],
                    "attempts": exhausted["attempts"],
                }
                await transition(conn, job.id, "ERROR", (job.status,), None, detail)
                await self._stop_segments(conn, job)
                log.error(
                    "job %d failed after %d attempts: %s",
                    job.id,
                    exhausted["attempts"],
                    exhausted["error"],
                )
                return
            if unfinished == 0:
                await transition(conn, job.id, "COMPLETED", (job.status,))
                log.info("job %d completed", job.id)
            return
        if job.status == "STOP_REQUESTED":
            await self._stop_segments(conn, job)
            await transition(conn, job.id, "STOPPING", ("STOP_REQUESTED",))
            return
        if job.status == "STOPPING" and running == 0:
            await fetch_all(conn, "stop_idle_segments", {"job_id": job.id})
            await transition(conn, job.id, "STOPPED", ("STOPPING",))
            log.info("job %d stopped", job.id)

    async def _stop_segments(self, conn: psycopg.AsyncConnection[Any], job: Job) -> None:
        """Idle segments stop at once; running ones are told to stop after the file in hand."""
        await fetch_all(conn, "stop_idle_segments", {"job_id": job.id})
        for seg in await fetch_all(conn, "running_segments_of_job", {"job_id": job.id}):
            await conn.execute(
                "SELECT pg_notify(%s, %s)",
                (JOB_ACTIONS_CHANNEL, _action(seg["node_id"], seg["id"], seg["epoch"], "stop")),
            )

    @staticmethod
    async def _first_error(
        conn: psycopg.AsyncConnection[Any], job_id: int, status: str
    ) -> dict[str, Any]:
        row = await fetch_one(conn, "segment_error", {"job_id": job_id, "status": status})
        message = (row or {}).get("error") or "segment failed"
        return {
            "error_code": "EXTRACTION_FATAL",
            "error_message": message,
            "segment_id": (row or {}).get("id"),
        }


class Leadership:
    """Who schedules: the controller holding a session-level advisory lock.

    The lock lives on a dedicated connection; if that connection dies (controller killed,
    database restarted), the lock is gone and another controller takes it within a second.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.AsyncConnection[Any] | None = None

    @property
    def leading(self) -> bool:
        return self._conn is not None and not self._conn.closed

    async def try_lead(self) -> bool:
        if self.leading:
            try:
                await self._conn.execute("SELECT 1")  # type: ignore[union-attr]
                return True
            except psycopg.Error:
                await self.resign()
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=5
            )
        except psycopg.Error:
            return False
        try:
            cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK_KEY,))
            row = await cursor.fetchone()
        except psycopg.Error:
            await conn.close()
            return False
        if row and row[0]:
            self._conn = conn
            return True
        await conn.close()
        return False

    async def resign(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            try:
                await conn.close()
            except psycopg.Error:
                pass


async def run_scheduler(
    scheduler: Scheduler, leadership: Leadership, stop: asyncio.Event, *, node: str
) -> None:
    """Try to lead; while leading, run scheduling passes until `stop` is set: every
    `interval_secs`, and at once when `job_changes` is notified (a deploy, a split, a
    worker handing its segments back), so that new work is assigned in milliseconds."""
    was_leading = False
    wake = asyncio.Event()
    listener = asyncio.create_task(_listen(leadership.url, wake), name="scheduler-listen")
    try:
        while not stop.is_set():
            leading = await leadership.try_lead()
            if leading != was_leading:
                log.info(
                    "controller %s %s the scheduler",
                    node,
                    "now leads" if leading else "no longer leads",
                )
                was_leading = leading
            wake.clear()
            if leading:
                try:
                    await scheduler.run_pass()
                except (psycopg.Error, OSError) as exc:
                    log.warning("scheduling pass failed (will retry): %s", exc)
            waits = [asyncio.ensure_future(stop.wait())]
            if leading:  # a follower only tries to lead, once a second
                waits.append(asyncio.ensure_future(wake.wait()))
            timeout = scheduler.interval_secs if leading else 1.0
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()
    finally:
        listener.cancel()
        await asyncio.wait([listener])
        await leadership.resign()


async def _listen(url: str, wake: asyncio.Event) -> None:
    """Set `wake` on every `job_changes` notification; reconnect when the database goes."""
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                url, autocommit=True, connect_timeout=5
            ) as conn:
                await conn.execute(f"LISTEN {JOB_CHANGES_CHANNEL}")
                async for _ in conn.notifies():
                    wake.set()
        except (psycopg.Error, OSError):
            await asyncio.sleep(1.0)
