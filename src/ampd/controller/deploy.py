"""Deploying a dataset revision: validate the request, create the job and its segments.

Deploy is idempotent: the same revision already active with the same parameters returns
the same job; with other parameters it is a conflict.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ampd.controller.planning import plan_segments
from ampd.datasets.derived import DERIVED_KIND
from ampd.datasets.manifest import Manifest
from ampd.datasets.registry import Revision
from ampd.logs import get_logger
from ampd.metadb.db import MetadataDb, execute, fetch_all, fetch_one
from ampd.metadb.jobs import JOB_CHANGES_CHANNEL, Job, record_event
from ampd.metadb.workers import WorkerStore

log = get_logger("controller")

# Blocks this close to the head can be reorged (the depth after which Ethereum finalizes).
REORG_MARGIN = 64
WORKER_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.-]*\*?$|^\*$")
_END_BLOCK = re.compile(r"^(latest|-?\d+)$")

# Returns the chain head for a manifest's network (finalized when the manifest says so),
# or None when no provider can tell.
HeadSource = Callable[[Manifest], Awaitable[int | None]]


class DeployError(Exception):
    """A deploy the controller refuses; `code` and `status` go on the wire."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class DeployRequest:
    end_block: str | None = None
    parallelism: int = 1
    worker_id: str | None = None
    priority: int = 0
    depends_on: tuple[int, ...] = ()

    @classmethod
    def parse(cls, body: Any) -> DeployRequest:
        """Check a deploy body; raises DeployError(400, INVALID_BODY) naming the field."""

        def bad(field: str, value: Any, expected: str) -> DeployError:
            return DeployError(
                400, "INVALID_BODY", f"invalid {field} {value!r}: expected {expected}"
            )

        if not isinstance(body, dict):
            raise DeployError(400, "INVALID_BODY", "the deploy body must be a JSON object")
        known = {"end_block", "parallelism", "worker_id", "priority", "depends_on", "verify"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise DeployError(400, "INVALID_BODY", f"unknown field(s) {unknown} in deploy body")
        end_block = body.get("end_block")
        if end_block is not None and (
            not isinstance(end_block, str) or not _END_BLOCK.match(end_block)
        ):
            raise bad("end_block", end_block, 'null, "latest", "N" or "-N" as a string')
        parallelism = body.get("parallelism", 1)
        if (
            isinstance(parallelism, bool)
            or not isinstance(parallelism, int)
            or not 1 <= parallelism <= 10_000
        ):
            raise bad("parallelism", parallelism, "an integer from 1 to 10000")
        worker_id = body.get("worker_id")
        if worker_id is not None and (
            not isinstance(worker_id, str) or not WORKER_PATTERN.match(worker_id)
        ):
            raise bad("worker_id", worker_id, "a worker node id or a 'prefix*' pattern")
        priority = body.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > 2**31 - 1:
            raise bad("priority", priority, "a 32-bit integer")
        depends_on = body.get("depends_on", [])
        if not isinstance(depends_on, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in depends_on
        ):
            raise bad("depends_on", depends_on, "a list of positive job ids")
        return cls(end_block, parallelism, worker_id, priority, tuple(sorted(set(depends_on))))

    def descriptor(self, revision: Revision) -> dict[str, Any]:
        """The job descriptor as Amp describes a raw-dataset job, plus our extensions."""
        derived = revision.manifest.kind == DERIVED_KIND
        return {
            "kind": "materialize-derived" if derived else "materialize-raw",
            "end_block": self.end_block,
            "max_writers": self.parallelism,
            "dataset_namespace": revision.namespace,
            "dataset_name": revision.name,
            "manifest_hash": revision.manifest_hash,
            "verify": False,
            "priority": self.priority,
            "depends_on": list(self.depends_on),
            "worker_id": self.worker_id,
        }


def matches(pattern: str | None, node_id: str) -> bool:
    """Does a `worker_id` pin (exact id, `prefix*`, or none) admit this worker?"""
    if pattern is None or pattern == "*":
        return True
    if pattern.endswith("*"):
        return node_id.startswith(pattern[:-1])
    return node_id == pattern


class Deployer:
    def __init__(
        self,
        db: MetadataDb,
        workers: WorkerStore,
        head_source: HeadSource,
        *,
        segment_blocks: int,
    ) -> None:
        self.db = db
        self.workers = workers
        self.head_source = head_source
        self.segment_blocks = segment_blocks

    async def deploy(self, revision: Revision, request: DeployRequest) -> int:
        """Create (or find) the job for `revision`; returns its id."""
        descriptor = request.descriptor(revision)
        existing = await self._active_job(revision)
        if existing is not None:
            return self._same_or_conflict(existing, descriptor)
        if request.worker_id is not None:
            live = [w["node_id"] for w in await self.workers.live()]
            if not any(matches(request.worker_id, node) for node in live):
                raise DeployError(
                    400,
                    "WORKER_NOT_AVAILABLE",
                    f"no live worker matches worker_id {request.worker_id!r} (live: {live})",
                )
        manifest = revision.manifest
        start = await self._start(revision)
        head = None
        if (
            request.end_block is None
            or request.end_block == "latest"
            or request.end_block.startswith("-")
        ):
            head = await self._head(revision)
            if head is None and request.end_block is not None:
                raise DeployError(
                    400,
                    "PROVIDER_NOT_AVAILABLE"
                    if manifest.kind != DERIVED_KIND
                    else "DEPENDENCY_NOT_COMMITTED",
                    f"end_block {request.end_block!r} needs the chain head, but no provider for "
                    f"network {manifest.network!r} answered"
                    if manifest.kind != DERIVED_KIND
                    else f"end_block {request.end_block!r} needs the last block the "
                    "dependencies committed, and they have committed none",
                )
        end = _resolve_end(request.end_block, head)
        if end is not None and end < start - 1:
            raise DeployError(
                400,
                "INVALID_BODY",
                f"end_block {request.end_block!r} resolves to {end}, before start_block {start}",
            )
        try:
            return await self._create(revision, request, descriptor, start, end, head)
        except psycopg.errors.UniqueViolation:
            # A concurrent deploy of the same revision won the race.
            existing = await self._active_job(revision)
            if existing is None:
                raise
            return self._same_or_conflict(existing, descriptor)

    async def _start(self, revision: Revision) -> int:
        """The first block of the revision: its start_block; a derived one's dependencies'."""
        if revision.manifest.kind != DERIVED_KIND:
            return revision.manifest.start_block
        from ampd.controller.derived import dependencies_start
        from ampd.datasets.registry import DatasetRegistry

        return await dependencies_start(DatasetRegistry(self.db), revision.manifest)

    async def _head(self, revision: Revision) -> int | None:
        """The chain head for a raw dataset; for a derived one, the last block all its
        dependencies have committed."""
        if revision.manifest.kind != DERIVED_KIND:
            return await self.head_source(revision.manifest)  # type: ignore[arg-type]
        from ampd.controller.derived import dependencies_committed_through
        from ampd.datasets.registry import DatasetRegistry

        start = await self._start(revision)
        through = await dependencies_committed_through(
            self.db, DatasetRegistry(self.db), revision.manifest, start
        )
        return None if through is None or through < start else through

    async def _active_job(self, revision: Revision) -> Job | None:
        row = await self.db.fetch_one(
            "active_job_for_revision",
            {
                "namespace": revision.namespace,
                "name": revision.name,
                "manifest_hash": revision.manifest_hash,
            },
        )
        return None if row is None else Job.from_row(row)

    @staticmethod
    def _same_or_conflict(job: Job, descriptor: dict[str, Any]) -> int:
        if job.descriptor == descriptor:
            return job.id
        raise DeployError(
            409,
            "ACTIVE_JOB_CONFLICT",
            f"job {job.id} is already active for this dataset revision with other parameters; "
            "stop it first",
        )

    async def _create(
        self,
        revision: Revision,
        request: DeployRequest,
        descriptor: dict[str, Any],
        start: int,
        end: int | None,
        head: int | None,
    ) -> int:
        async with self.db.transaction() as conn:
            for dep in request.depends_on:
                if await fetch_one(conn, "get_job", {"id": dep}) is None:
                    raise DeployError(400, "INVALID_BODY", f"depends_on: job {dep} does not exist")
            revision_ids = await ensure_table_revisions(conn, revision)
            covered = await _covered_ranges(conn, revision_ids)
            job_row = await fetch_one(
                conn,
                "insert_job",
                {
                    "namespace": revision.namespace,
                    "name": revision.name,
                    "manifest_hash": revision.manifest_hash,
                    "descriptor": Jsonb(descriptor),
                    "start_block": start,
                    "end_block": end,
                    "parallelism": request.parallelism,
                    "priority": request.priority,
                    "depends_on": list(request.depends_on),
                    "worker_pattern": request.worker_id,
                },
            )
            job_id = job_row["id"]
            planned = plan_segments(
                start,
                end,
                covered=covered,
                segment_blocks=self.segment_blocks,
                parallelism=request.parallelism,
                head=_settled_head(head, revision.manifest.finalized_blocks_only),
            )
            for segment in planned:
                await execute(
                    conn,
                    "insert_segment",
                    {
                        "job_id": job_id,
                        "start_block": segment.start_block,
                        "end_block": segment.end_block,
                        "checkpoint_block": None,
                    },
                )
            await record_event(
                conn, job_id, "SCHEDULED", None, {"segments": len(planned), "end_block": end}
            )
            await conn.execute("SELECT pg_notify(%s, %s)", (JOB_CHANGES_CHANNEL, str(job_id)))
        log.info(
            "deployed %s as job %d: blocks %d..%s in %d segments",
            revision.reference,
            job_id,
            start,
            "head" if end is None else end,
            len(planned),
        )
        return job_id


async def ensure_table_revisions(
    conn: psycopg.AsyncConnection[Any], revision: Revision
) -> dict[str, int]:
    """The active table revision of each table of the dataset revision, created if missing."""
    for table in sorted(revision.manifest.schemas):
        rev = uuid.uuid4()
        await execute(
            conn,
            "insert_table_revision",
            {
                "namespace": revision.namespace,
                "name": revision.name,
                "manifest_hash": revision.manifest_hash,
                "table_name": table,
                "revision": rev,
                "path": f"{revision.namespace}/{revision.name}/{table}/{rev}",
            },
        )
    rows = await fetch_all(
        conn, "active_table_revisions", {"manifest_hash": revision.manifest_hash}
    )
    return {row["table_name"]: row["id"] for row in rows}


async def _covered_ranges(
    conn: psycopg.AsyncConnection[Any], revision_ids: dict[str, int]
) -> list[tuple[int, int]]:
    # Commits cover every table at once, so any block committed in one table is committed
    # in all; the union over tables guards against ever extracting a block twice.
    covered: list[tuple[int, int]] = []
    for revision_id in revision_ids.values():
        rows = await fetch_all(conn, "live_files_of_revision", {"table_revision_id": revision_id})
        covered.extend((row["start_block"], row["end_block"]) for row in rows)
    return covered


def _settled_head(head: int | None, finalized_only: bool) -> int | None:
    """Where a continuous job's bounded segments stop and its tail begins.

    Blocks within REORG_MARGIN of the head may still be replaced; they go to the tail, the
    only segment that watches for reorgs. The finalized tag is already settled.
    """
    if head is None or finalized_only:
        return head
    return head - REORG_MARGIN


def _resolve_end(end_block: str | None, head: int | None) -> int | None:
    if end_block is None:
        return None
    if end_block == "latest":
        assert head is not None
        return head
    value = int(end_block)
    if value < 0:
        assert head is not None
        return head + value
    return value
